"""Command line of the population stage: ``cardiotwin generate`` (also
jobs/generate_population.py) and ``cardiotwin store verify DIR``.

``store verify`` prints one line per damaged or missing shard and a summary; exit code 0 when
the store is intact, 1 when damage is found, 2 for a user error (not a population store).
"""

from __future__ import annotations

import argparse
from typing import Any

from .artefact_prior import ArtefactPrior
from .prior import PRIOR_PRESETS, prior_preset

DEVICE_CHOICES = ("auto", "cpu", "gpu")
SAMPLER_CHOICES = ("uniform", "lhs", "sobol")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """Add the generation options to an argparse parser."""
    g = p.add_argument_group("population")
    g.add_argument("--n-cells", type=int, required=True, metavar="N",
                   help="number of synthetic cells to simulate (> 0)")
    g.add_argument("--range", "--spread", dest="spread", type=float, default=0.4, metavar="R",
                   help="multiplier range r, a fraction in (0, 1): each of the 52 parameter "
                        "multipliers spans [1-r, 1+r] (default 0.4 = +-40%%)")
    g.add_argument("--sampler", choices=SAMPLER_CHOICES, default="uniform",
                   help="uniform: iid per cell (cell i from (seed, i)); lhs: Latin hypercube "
                        "of the whole population (held in memory: 208 bytes per cell); sobol: "
                        "scrambled Sobol' points (cell i from (seed, i)) (default uniform)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed, >= 0 (default 0)")
    pr = p.add_argument_group("prior and calibration (population/prior.py, calibration.py)")
    pr.add_argument("--prior-preset", choices=PRIOR_PRESETS, default=None,
                    help="a shipped prior, which sets every prior option below (and the AP run "
                         "length unless --ap-duration-ms is given): real_ipsc, recommended for "
                         "twins of real iPSC-CM recordings (log-uniform conductances with raised "
                         "g_Kr, shifted ICaL/IKr kinetics, varied non-inferred currents, a seal "
                         "leak of 0.003-0.05 nS/pF, 8 s AP runs)")
    pr.add_argument("--prior", choices=("uniform", "log_uniform"), default="uniform",
                    help="uniform: all 52 multipliers in [1-r, 1+r]; log_uniform: the 6 "
                         "conductances log-uniform in [1/f, f], the kinetic ones in [1-r, 1+r] "
                         "(default uniform)")
    pr.add_argument("--conductance-factor", type=float, default=3.0, metavar="F",
                    help="log_uniform prior: conductance multipliers in [1/F, F] (default 3)")
    pr.add_argument("--nuisance-factor", type=float, default=1.0, metavar="F",
                    help="scale the non-inferred conductances, pumps and fluxes of each cell "
                         "log-uniformly in [1/F, F] (default 1: not varied)")
    pr.add_argument("--seal-g", type=_pair, default=None, metavar="LO:HI",
                    help="seal leak of the AP run: conductance range in nS/pF, log-uniform "
                         "(g = 1000 / (R_seal[MOhm] Cm[pF]); e.g. 0.003:0.1); default none")
    pr.add_argument("--seal-e", type=_pair, default=(0.0, 0.0), metavar="LO:HI",
                    help="seal reversal range in mV, uniform (default 0:0)")
    pr.add_argument("--calibrate-to", nargs="+", default=None, metavar="FILE_OR_DIR",
                    help="population calibration: keep as 'ok' only beating cells near the "
                         "phenotype (CL, APD90, MDP) of one of these real AP recordings (CSV "
                         "traces or directories); the others get status off_target")
    pr.add_argument("--calibrate-include", default=None, metavar="GLOB",
                    help="with --calibrate-to: only recordings whose file name matches, e.g. "
                         "'*pre-drug*'")
    pr.add_argument("--calibrate-tolerance", type=_triple, default=(0.2, 0.2, 6.0),
                    metavar="CL:APD90:MDP",
                    help="calibration tolerances: CL and APD90 fractions, MDP in mV (default "
                         "0.2:0.2:6)")
    add_artefact_arguments(p.add_argument_group(
        "voltage-clamp artefacts (amplifier, series resistance, seal)"),
        "simulate the voltage clamp as a real recording (Lei et al. 2020 artefact model), "
        "each cell's Cm, R_s, leak, offset, amplifier estimates and compensation drawn from "
        "the default patch-clamp prior (population/artefact_prior.py) and stored with the "
        "cell")
    s = p.add_argument_group("simulation")
    s.add_argument("--protocol", default="protocol_a", metavar="P",
                   help="voltage-clamp protocol: a .csv (duration_ms,v_start_mV,v_end_mV or "
                        "time_ms,voltage_mV) or canonical .json file, or the built-in name "
                        "protocol_a (default protocol_a, 4950 ms)")
    s.add_argument("--temperature-k", type=float, default=310.0, metavar="K",
                   help="temperature in K of the voltage clamp and the AP run, 250-330 "
                        "(default 310; 298 for room temperature)")
    s.add_argument("--ap-duration-ms", type=float, default=None, metavar="MS",
                   help="length in ms of the free-running AP run that classifies each cell "
                        "(ok / quiescent / non_repolarizing / unstable) and gives its "
                        "biomarkers (default 4000 at >= 305 K, 6000 below)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; on a cluster a path on a filesystem that "
                        "every node mounts at the same place). Re-running the same command "
                        "resumes (damaged shards are named and redone); a different "
                        "configuration there is refused, and so is a second run while one "
                        "writes there")
    o.add_argument("--keep-rejected", action="store_true",
                   help="also store cells that fail the physiological filter (status column "
                        "tells); default: store only status ok, count the others")
    o.add_argument("--decimate-to-hz", type=float, default=None, metavar="HZ",
                   help="store I_total at this rate in Hz, a whole divisor of the protocol's "
                        "rate (10000 Hz at 0.1 ms), e.g. 1000 (default: as sampled)")
    o.add_argument("--decimation", choices=("mean", "take"), default="mean",
                   help="with --decimate-to-hz: mean of each block of k samples, or every "
                        "k-th sample (default mean)")
    o.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="cells per Parquet shard, the unit of work and of resumption "
                        "(default 1000: ~90 MB per shard on protocol_a without decimation)")
    o.add_argument("--allow-code-change", action="store_true",
                   help="resume a store written by another cardiotwin version (refused by "
                        "default: one dataset, one code version); the manifest's runs list "
                        "records each run's version")
    o.add_argument("--precision", choices=("float64", "float32"), default="float64",
                   help="arithmetic of the voltage clamp and the AP run: float32 is "
                        "about twice as fast, I_total within 0.03%% of float64, 99.75%% of "
                        "statuses equal (CPU only; default float64)")
    r = p.add_argument_group("Ray")
    r.add_argument("--workers", dest="n_workers", type=int, default=None, metavar="N",
                   help="number of simulation actors, 1 CPU each (default: the CPUs available "
                        "in the Ray cluster)")
    r.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="auto: simulate on GPU actors (one GPU each, numba-cuda) when the Ray "
                        "cluster has GPUs, else on CPU actors; cpu; gpu (refused when the "
                        "cluster has no GPU). Use a large --shard-size on GPUs (e.g. 16384): a "
                        "shard is one GPU batch (default auto)")
    r.add_argument("--shard-timeout-s", type=float, default=None, metavar="S",
                   help="a shard running longer than S seconds has its actor killed as hung "
                        "and is retried on a new one (default: 10 x the longest shard so far, "
                        "at least 120 s)")
    r.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to connect to (default $RAY_ADDRESS, set by ray job "
                        "submit; else a local cluster is started)")
    r.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local cluster started when there is no address "
                        "(default: all)")
    r.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto",
                   help="ship the cardiotwin package to the workers as a runtime_env "
                        "py_modules entry: auto = when connecting to a cluster and cardiotwin "
                        "is not installed in site-packages (default auto)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    parts = text.split(":")
    try:
        if len(parts) != n:
            raise ValueError
        return tuple(float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None


def _pair(text: str) -> tuple[float, ...]:
    return _floats(text, 2, "LO:HI (two numbers)")


def _triple(text: str) -> tuple[float, ...]:
    return _floats(text, 3, "CL:APD90:MDP (three numbers)")


def _artefact_range(text: str) -> tuple[str, tuple[float, float]]:
    name, sep, value = text.partition("=")
    if not sep or name not in ArtefactPrior.range_names():
        raise argparse.ArgumentTypeError(
            f"expected NAME=LO:HI or NAME=VALUE with NAME one of "
            f"{', '.join(ArtefactPrior.range_names())}, found {text!r}")
    lo_hi = _floats(value, 2, "LO:HI") if ":" in value else _floats(value, 1, "a number") * 2
    return name, (lo_hi[0], lo_hi[1])


def add_artefact_arguments(group: Any, what: str) -> None:
    """--vc-artefacts (``what`` it does), --vc-artefact NAME=LO:HI|VALUE, --vc-metadata CSV:
    shared by ``generate`` and ``twin``."""
    group.add_argument("--vc-artefacts", action="store_true", help=what)
    group.add_argument("--vc-artefact", action="append", default=[], type=_artefact_range,
                       metavar="NAME=LO:HI|NAME=VALUE",
                       help="set one artefact range (implies --vc-artefacts; repeatable), "
                            "e.g. compensation=0.7 (a known amplifier setting) or "
                            "cm_pF=35:50; names: " + ", ".join(ArtefactPrior.range_names()))
    group.add_argument("--vc-metadata", default=None, metavar="CSV",
                       help="narrow Cm, R_s and the leak to a lab's cell metadata (a CSV with "
                            "Cm (pF), Ra (MOhm) and Rm (MOhm) columns, or a JSON object "
                            "cm_pF, rs_MOhm, rm_MOhm; implies --vc-artefacts)")


def artefact_prior_from_args(a: argparse.Namespace) -> ArtefactPrior | None:
    """The population's ArtefactPrior from --vc-artefacts, --vc-metadata and --vc-artefact
    (in that order: explicit ranges win), or None for the ideal clamp."""
    from ..recording_metadata import artefact_ranges, read_cell_metadata

    ranges = dict(getattr(a, "vc_artefact", []) or [])
    meta = getattr(a, "vc_metadata", None)
    if not (getattr(a, "vc_artefacts", False) or ranges or meta):
        return None
    known = artefact_ranges(read_cell_metadata(meta)) if meta else {}
    return ArtefactPrior().narrowed(**{**known, **ranges})


def config_from_args(a: argparse.Namespace):
    """The GenerationConfig of parsed arguments (ValueError on invalid values)."""
    from .calibration import calibration_from_real
    from .config import GenerationConfig

    calibration = None
    if getattr(a, "calibrate_to", None):
        cl, apd, mdp = a.calibrate_tolerance
        calibration = calibration_from_real(a.calibrate_to, a.calibrate_include, cl_rel=cl,
                                            apd90_rel=apd, mdp_abs_mV=mdp)
    prior: dict[str, Any] = dict(
        prior=getattr(a, "prior", "uniform"),
        conductance_factor=getattr(a, "conductance_factor", 3.0),
        nuisance_factor=getattr(a, "nuisance_factor", 1.0),
        seal_g_nS_per_pF=getattr(a, "seal_g", None), seal_e_mV=getattr(a, "seal_e", (0.0, 0.0)),
        spread=a.spread, ap_duration_ms=a.ap_duration_ms)
    if getattr(a, "prior_preset", None):
        preset = prior_preset(a.prior_preset)
        if a.ap_duration_ms is not None:
            preset.pop("ap_duration_ms", None)
        prior.update(preset)
    return GenerationConfig.create(
        **prior, calibration=calibration, vc_artefacts=artefact_prior_from_args(a),
        n_cells=a.n_cells, sampler=a.sampler, seed=a.seed,
        protocol=a.protocol, temperature_K=a.temperature_k,
        keep_rejected=a.keep_rejected, decimate_to_hz=a.decimate_to_hz,
        decimation=a.decimation, shard_size=a.shard_size, n_workers=a.n_workers,
        precision=getattr(a, "precision", "float64"),
        out_dir=a.out, device=getattr(a, "device", "auto"),
        shard_timeout_s=getattr(a, "shard_timeout_s", None))


def generate_from_args(a: argparse.Namespace):
    """Generate the population described by parsed arguments; the opened store."""
    from .generate import generate_population

    return generate_population(config_from_args(a), progress=not a.no_progress,
                               num_cpus=a.num_cpus, ray_address=a.ray_address,
                               ship_package=a.ship_package,
                               allow_code_change=getattr(a, "allow_code_change", False))


def run_generate(a: argparse.Namespace) -> int:
    generate_from_args(a)
    return 0


def run_verify(a: argparse.Namespace) -> int:
    """``store verify``: 0 intact, 1 damaged (ValueError, exit 2 by the caller, when the path
    is not a population store)."""
    from .store import verify_store

    report = verify_store(a.store)
    for c in report.problems:
        print(c.line())
    print(report.summary())
    return 0 if report.ok else 1


def register(subparsers: Any) -> None:
    """Add ``generate`` and ``store verify`` to the ``cardiotwin`` subcommands."""
    gen = subparsers.add_parser("generate", help="generate a synthetic population into a "
                                                 "Parquet store on Ray (resumable; same options "
                                                 "as jobs/generate_population.py)")
    add_generate_arguments(gen)
    gen.set_defaults(func=run_generate)
    st = subparsers.add_parser("store", help="population stores: verify")
    ssub = st.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    ver = ssub.add_parser("verify", help="check every shard of a population store against "
                                         "its checksum; exit 0 intact, 1 damaged, 2 not a "
                                         "store")
    ver.add_argument("store", metavar="DIR", help="population store directory")
    ver.set_defaults(func=run_verify)
