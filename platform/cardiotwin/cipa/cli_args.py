"""Command line of the CiPA risk run: ``cardiotwin cipa`` (:func:`register`) and jobs/cipa.py.
Units: Hz, ms, K; the range is a fraction (0.2 = +-20%); doses in multiples of free Cmax."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the CiPA options to an argparse parser."""
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (risk.csv, summary.json, figures, index.html, "
                        "screens/<drug>)")
    p.add_argument("--cells", "--n-cells", dest="cells", type=int, default=100, metavar="N",
                   help="cells in the population (default 100)")
    p.add_argument("--pacing-hz", type=float, default=1.0, metavar="HZ",
                   help="pacing rate (default 1 Hz; 0: free-running)")
    p.add_argument("--drugs", nargs="+", default=None, metavar="NAME",
                   help="CiPA table drugs (default: all 28 and flecainide)")
    p.add_argument("--multiples", nargs="+", type=float, default=None, metavar="X",
                   help="doses in multiples of free Cmax (default 1 2 5 10 20 25)")
    p.add_argument("--range", "--spread", dest="spread", type=float, default=0.2, metavar="R",
                   help="multiplier range r of the 52 parameters: [1-r, 1+r] (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--twin-multipliers", default=None, metavar="FILE",
                   help="the twin the population is around: its JSON (cardiotwin twin --out) "
                        "or a name,multiplier CSV (default: the model baseline)")
    p.add_argument("--no-late-sodium", action="store_true",
                   help="the default model (no INaL; the table's INaL block not applied)")
    p.add_argument("--features", nargs="+", default=None, metavar="METRIC",
                   help="classifier features (default qnet apd90 ead)")
    p.add_argument("--feature-multiples", nargs="+", type=float, default=None, metavar="X",
                   help="the doses the features average over (default: all --multiples)")
    p.add_argument("--bootstrap", type=int, default=100, metavar="B",
                   help="bootstrap replicates over cells (default 100)")
    p.add_argument("--prepace-ms", type=float, default=5000.0, metavar="MS")
    p.add_argument("--record-ms", type=float, default=5000.0, metavar="MS")
    p.add_argument("--batch-cells", type=int, default=250, metavar="N")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="recompute finished screens")
    r = p.add_argument_group("Ray")
    r.add_argument("--ray-address", default=None, metavar="ADDR")
    r.add_argument("--num-cpus", type=int, default=None, metavar="N")
    r.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto")
    r.add_argument("--no-progress", action="store_true")


def config_from_args(a: argparse.Namespace):
    """The :class:`~cardiotwin.cipa.config.CipaConfig` of parsed arguments (ValueError)."""
    from .config import CipaConfig

    twin, name = None, "baseline"
    if a.twin_multipliers:
        from ..model.parameters import read_multipliers_csv
        from ..twin.inference import read_twin_multipliers

        twin = (read_twin_multipliers(a.twin_multipliers)
                if str(a.twin_multipliers).lower().endswith(".json")
                else read_multipliers_csv(a.twin_multipliers))
        name = Path(a.twin_multipliers).stem
    kw: dict[str, Any] = {}
    if a.multiples is not None:
        kw["multiples"] = a.multiples
    if a.features is not None:
        kw["features"] = a.features
    if a.feature_multiples is not None:
        kw["feature_multiples"] = a.feature_multiples
    return CipaConfig.create(
        out_dir=a.out, drugs=a.drugs, n_cells=a.cells, spread=a.spread, seed=a.seed,
        twin_multipliers=twin, twin_name=name, pacing_hz=a.pacing_hz,
        late_sodium=not a.no_late_sodium, n_bootstrap=a.bootstrap, prepace_ms=a.prepace_ms,
        record_ms=a.record_ms, batch_cells=a.batch_cells, figures=not a.no_figures,
        overwrite=a.overwrite, **kw)


def run(a: argparse.Namespace) -> int:
    """The ``cipa`` command."""
    from .run import run_cipa

    run_cipa(config_from_args(a), progress=not a.no_progress, num_cpus=a.num_cpus,
             ray_address=a.ray_address, ship_package=a.ship_package)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``cipa`` subcommand to an argparse subparsers object."""
    sc = subparsers.add_parser(
        "cipa", help="torsade risk of the CiPA drugs from a twin population: screens on Ray, "
                     "risk metrics, leave-one-out classifier and baselines",
        epilog="Units: Hz, ms; doses in multiples of each drug's free Cmax; the range is a "
               "fraction (0.2 = +-20%%).")
    add_arguments(sc)
    sc.set_defaults(func=run)
