"""Command line of the drug screen: ``cardiotwin screen`` (:func:`register`) and
jobs/drug_screen.py (:func:`add_screen_arguments`). Units: nM, ms, mV, K; the range is a
fraction (0.2 = +-20%)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.replace(",", " ").split()]


def add_screen_arguments(p: argparse.ArgumentParser) -> None:
    """Add the screen options to an argparse parser."""
    d = p.add_argument_group("drug")
    d.add_argument("--drug", default=None, metavar="NAME",
                   help="drug name from the catalog (see --list-drugs) or from --drug-file")
    d.add_argument("--drug-file", default=None, metavar="FILE",
                   help="user-defined drugs: CSV drug,current,ic50_nM,hill[,source,note] or "
                        "JSON {'drugs': [{'name', 'blocks': [{'current', 'ic50_nM', 'hill'}]}]}")
    d.add_argument("--concentrations-nm", "--concentrations", dest="concentrations",
                   nargs="+", default=["0", "10", "30", "50", "100"], metavar="C",
                   help="concentrations in nM (space or comma separated; default 0 10 30 50 "
                        "100)")
    d.add_argument("--list-drugs", action="store_true",
                   help="print the drug catalog (currents, IC50, Hill, source) and exit")
    g = p.add_argument_group("population")
    g.add_argument("--n-cells", type=int, default=200, metavar="N",
                   help="cells around the twin (default 200)")
    g.add_argument("--range", "--spread", dest="spread", type=float, default=0.2, metavar="R",
                   help="multiplier range r of the 52 parameters: [1-r, 1+r] (default 0.2)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument("--sampler", choices=("uniform", "lhs", "sobol"), default="uniform")
    g.add_argument("--twin-multipliers", default=None, metavar="FILE",
                   help="the twin: its JSON (cardiotwin twin --out, /twin) or a "
                        "name,multiplier CSV (default: the model baseline)")
    g.add_argument("--twin-name", default=None, help="label of the twin in the outputs")
    s = p.add_argument_group("simulation")
    s.add_argument("--temperature-k", type=float, default=310.0, metavar="K")
    s.add_argument("--prepace-ms", type=float, default=5000.0, metavar="MS",
                   help="unrecorded run at each concentration towards steady state "
                        "(default 5000)")
    s.add_argument("--record-ms", type=float, default=5000.0, metavar="MS",
                   help="recorded run analysed for APs and EADs (default 5000)")
    s.add_argument("--record-interval-ms", type=float, default=0.5, metavar="MS")
    s.add_argument("--pacing-period-ms", type=float, default=None, metavar="MS",
                   help="pace at this period (default: free-running)")
    s.add_argument("--pacing-amplitude", type=float, default=3.0, metavar="PA_PER_PF")
    s.add_argument("--depolarized-mdp-mv", default="-60", metavar="MV",
                   help="beats with an MDP above this are depolarized oscillations, excluded "
                        "from APD90 ('none' to disable; default -60)")
    s.add_argument("--ead-min-repolarization", type=float, default=0.3, metavar="F",
                   help="count a re-depolarization as an EAD only after the AP has repolarized "
                        "this fraction of its amplitude (default 0.3, the APD30 level: excludes "
                        "the phase-1 notch of spike-and-dome APs; 0: from the peak)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (results.parquet, cells.parquet, traces.parquet, "
                        "summary.json, figures)")
    o.add_argument("--keep-traces", type=int, default=4, metavar="N",
                   help="AP traces kept per concentration for the overlay figure (default 4)")
    o.add_argument("--no-figures", action="store_true")
    o.add_argument("--overwrite", action="store_true",
                   help="replace a finished screen in --out")
    r = p.add_argument_group("Ray")
    r.add_argument("--batch-cells", type=int, default=250, metavar="N",
                   help="cells per Ray task (default 250)")
    r.add_argument("--ray-address", default=None, metavar="ADDR")
    r.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of a local cluster started here (default: all)")
    r.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto")
    r.add_argument("--no-progress", action="store_true")


def config_from_args(a: argparse.Namespace):
    """The :class:`~cardiotwin.drugs.config.ScreenConfig` of parsed arguments (ValueError on
    invalid values)."""
    from ..model.parameters import read_multipliers_csv
    from .config import ScreenConfig

    if not a.drug:
        raise ValueError("--drug is required (see --list-drugs)")
    if a.out is None:
        raise ValueError("--out is required")
    try:
        concs = [c for x in a.concentrations for c in _floats(x)]
    except ValueError:
        raise ValueError(f"--concentrations-nm: not numbers: {' '.join(a.concentrations)}"
                         ) from None
    dep = str(a.depolarized_mdp_mv).strip().lower()
    twin = None
    if a.twin_multipliers:
        from ..twin.inference import read_twin_multipliers

        twin = (read_twin_multipliers(a.twin_multipliers)
                if str(a.twin_multipliers).lower().endswith(".json")
                else read_multipliers_csv(a.twin_multipliers))
    name = a.twin_name or (Path(a.twin_multipliers).stem if a.twin_multipliers else "baseline")
    return ScreenConfig.create(
        drug=a.drug, drug_file=a.drug_file, concentrations_nM=concs, n_cells=a.n_cells,
        spread=a.spread, seed=a.seed, sampler=a.sampler, twin_multipliers=twin, twin_name=name,
        temperature_K=a.temperature_k, prepace_ms=a.prepace_ms, record_ms=a.record_ms,
        record_interval_ms=a.record_interval_ms, pacing_period_ms=a.pacing_period_ms,
        pacing_amplitude=a.pacing_amplitude,
        depolarized_mdp_mV=None if dep in ("none", "off") else float(dep),
        ead_min_repolarization=a.ead_min_repolarization,
        n_keep_traces=a.keep_traces, batch_cells=a.batch_cells, out_dir=a.out,
        figures=not a.no_figures, overwrite=a.overwrite)


def run(a: argparse.Namespace) -> int:
    """The ``screen`` command: run the screen of parsed arguments (``--list-drugs``: print the
    catalog). User errors propagate as ValueError for the caller to report."""
    from .screen import run_from_args

    run_from_args(a)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``screen`` subcommand to an argparse subparsers object."""
    sc = subparsers.add_parser("screen", help="drug screen of a population around a twin (Ray; "
                                              "same options as jobs/drug_screen.py)",
                               epilog="Units: nM, ms, mV, K; the range is a fraction "
                                      "(0.2 = +-20%).")
    add_screen_arguments(sc)
    sc.set_defaults(func=run)
