"""Command-line arguments of the protocol search (``cardiotwin protocol-search``, added by
:func:`register`, and tune/protocol_search.py). Options left out keep the study's defaults (or
the values of ``--config FILE.json``, a JSON object of :class:`SearchConfig` fields)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..validation import read_settings_file
from .config import SCORES, SearchConfig, parse_candidates

# option dest -> SearchConfig field (and a converter of the parsed value)
_FIELDS: dict[str, tuple[str, Any]] = {
    "candidates": ("candidates_mV", parse_candidates),
    "step_ms": ("step_ms", None), "holding_mv": ("holding_mV", None),
    "holding_ms": ("holding_ms", None), "sample_interval_ms": ("sample_interval_ms", None),
    "temperature_k": ("temperature_K", None), "n_cells": ("n_cells", None),
    "spread": ("spread", None), "sampler": ("sampler", None), "seed": ("seed", None),
    "statuses": ("statuses", lambda s: tuple(x.strip() for x in s.split(",") if x.strip())),
    "ap_duration_ms": ("ap_duration_ms", None), "network": ("network", None),
    "network_overrides": ("network_overrides", None), "epochs": ("epochs", None),
    "input_pool": ("input_pool", None), "scorer": ("scorer", None),
    "fisher_cells": ("fisher_cells", None), "noise_pa_per_pf": ("noise_pA_per_pF", None),
    "fd_step": ("fd_step", None), "criterion": ("criterion", None),
    "score": ("score", None), "max_steps": ("max_steps", None),
    "max_duration_ms": ("max_duration_ms", None),
    "stop_when_no_improvement": ("stop_when_no_improvement", None),
    "min_improvement": ("min_improvement", None), "cpus_per_trial": ("cpus_per_trial", None),
    "gpus_per_trial": ("gpus_per_trial", None),
}


def _json_object(text: str) -> dict:
    try:
        d = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"width\": 128}'")
    return d


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Add the protocol-search options to an argparse parser."""
    p.add_argument("--out", required=True, metavar="DIR",
                   help="search directory: state, cache, history, optimized protocol, figure. "
                        "Running again with the same settings resumes (a larger budget may "
                        "be given)")
    p.add_argument("--config", metavar="FILE.json", default=None,
                   help="JSON object of search settings (field names as in SearchConfig); "
                        "options given on the command line override it")
    g = p.add_argument_group("protocol pieces (study defaults)")
    g.add_argument("--candidates", metavar="SPEC", default=None,
                   help="candidate test potentials in mV: START:STOP:STEP (STOP included) or "
                        "a comma list (default -120:50:10; write --candidates=-120:50:10, "
                        "as the value starts with a minus)")
    g.add_argument("--step-ms", type=float, default=None, help="test step duration, ms (250)")
    g.add_argument("--holding-mv", type=float, default=None, help="holding potential, mV (-100)")
    g.add_argument("--holding-ms", type=float, default=None,
                   help="hold before each step, ms (250; 0: none)")
    g.add_argument("--sample-interval-ms", type=float, default=None, help="ms (0.1)")
    g.add_argument("--temperature-k", type=float, default=None, help="K (310)")
    g = p.add_argument_group("population")
    g.add_argument("--n-cells", type=int, default=None, help="cells simulated for every "
                                                             "candidate (2000)")
    g.add_argument("--range", "--spread", dest="spread", type=float, default=None,
                   help="multipliers span [1-r, 1+r] (0.4)")
    g.add_argument("--sampler", choices=("uniform", "lhs", "sobol"), default=None)
    g.add_argument("--seed", type=int, default=None, help="sampling seed (0)")
    g.add_argument("--statuses", default=None, metavar="LIST",
                   help="train only on cells of these AP statuses (comma list of ok, "
                        "quiescent, non_repolarizing; costs one AP run per cell); default: "
                        "every cell stable under the voltage clamp")
    g.add_argument("--ap-duration-ms", type=float, default=None,
                   help="classification AP run with --statuses, ms (4000)")
    g = p.add_argument_group("scorer")
    g.add_argument("--scorer", choices=("fisher", "network"), default=None,
                   help="fisher (default): Fisher information of I_total w.r.t. the 52 "
                        "multipliers, seconds per cycle; network: train a network per "
                        "candidate (the study's score)")
    g.add_argument("--fisher-cells", type=int, default=None,
                   help="base cells of the Fisher score, each with 52 perturbed copies (200)")
    g.add_argument("--noise-pa-per-pf", type=float, default=None,
                   help="recording noise sigma per sample, pA/pF (0.5)")
    g.add_argument("--fd-step", type=float, default=None,
                   help="finite-difference step on the unit scale (0.005)")
    g.add_argument("--criterion", choices=("trace", "logdet"), default=None,
                   help="Fisher score: trace (A-optimal, default) or logdet (D-optimal)")
    g = p.add_argument_group("network and score (--scorer network)")
    g.add_argument("--network", default=None, metavar="PRESET",
                   help="learn preset: ridge_mlp (default), small_fc, study_fc")
    g.add_argument("--input-pool", type=int, default=None, metavar="K",
                   help="I_total samples averaged per network input (20 = 2 ms)")
    g.add_argument("--network-overrides", type=_json_object, default=None, metavar="JSON",
                   help="TrainConfig fields over the preset, e.g. '{\"width\": 128}'")
    g.add_argument("--epochs", type=int, default=None, help="at most, per trial (100)")
    g.add_argument("--score", choices=SCORES, default=None,
                   help="what picks the candidate, lowest wins (test_mse)")
    g = p.add_argument_group("budget (may grow on resume)")
    g.add_argument("--max-steps", type=int, default=None, help="appended steps (10)")
    g.add_argument("--max-duration-ms", type=float, default=None, help="protocol length, ms")
    g.add_argument("--no-stop-when-no-improvement", dest="stop_when_no_improvement",
                   action="store_false", default=None,
                   help="keep appending when a cycle does not improve the score")
    g.add_argument("--min-improvement", type=float, default=None,
                   help="relative improvement a cycle must bring (0)")
    g = p.add_argument_group("resources and Ray")
    g.add_argument("--cpus-per-trial", type=int, default=None, help="(1)")
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="default: 1 when the cluster has GPUs, else 0")
    g.add_argument("--ray-address", default=None, help="Ray cluster (default $RAY_ADDRESS)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    g.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto",
                   help="ship cardiotwin to the workers as py_modules (default auto)")
    g = p.add_argument_group("comparison")
    g.add_argument("--compare", action="store_true",
                   help="afterwards compare the optimized protocol with protocol_a and a "
                        "naive protocol of the same duration (comparison.json/.png)")
    g.add_argument("--compare-cells", type=int, default=None,
                   help="cells of the comparison population (default: --n-cells)")
    g.add_argument("--compare-seed", type=int, default=None,
                   help="seed of the comparison population (default: seed + 1)")
    p.add_argument("--no-figure", action="store_true", help="skip the figures")


def config_from_args(a: argparse.Namespace) -> SearchConfig:
    """The SearchConfig of parsed arguments (ValueError on invalid values)."""
    fields: dict[str, Any] = read_settings_file(a.config, "search settings") if a.config else {}
    for dest, (name, conv) in _FIELDS.items():
        v = getattr(a, dest, None)
        if v is not None:
            fields[name] = conv(v) if conv else v
    return SearchConfig.create(**fields)


def run_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) the search of parsed arguments, then the comparison with --compare."""
    from .search import run_search

    config = config_from_args(a)
    started = False
    if a.compare:  # one Ray session for the search and the comparison
        from ..runtime import init_ray

        started = init_ray(a.num_cpus, a.ray_address, a.ship_package)
    try:
        summary = run_search(config, a.out, num_cpus=a.num_cpus, ray_address=a.ray_address,
                             ship_package=a.ship_package, figure=not a.no_figure)
        if a.compare and summary["protocol"] is not None:
            from .compare import run_comparison

            summary["comparison"] = run_comparison(a.out, config, n_cells=a.compare_cells,
                                                   seed=a.compare_seed, use_ray=True,
                                                   figure=not a.no_figure)
    finally:
        if started:
            import ray

            ray.shutdown()
    return summary


def run(a: argparse.Namespace) -> int:
    """The ``protocol-search`` command (user errors propagate as ValueError)."""
    run_from_args(a)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``protocol-search`` subcommand to an argparse subparsers object."""
    ps = subparsers.add_parser("protocol-search", help="greedy voltage-protocol search on Ray "
                                                       "Tune (resumable; same options as "
                                                       "tune/protocol_search.py)")
    add_search_arguments(ps)
    ps.set_defaults(func=run)
