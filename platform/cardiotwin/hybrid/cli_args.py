"""Command line of the hybrid: ``cardiotwin hybrid fit TRACE...`` (and jobs/hybrid_fit.py).
:func:`register` adds ``hybrid`` with its ``fit`` subcommand; ``func`` returns the exit code.

Options left out keep the FitConfig defaults (or the values of ``--config FILE.json``, a JSON
object of FitConfig fields, nested for physics / network / data).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..validation import read_settings_file
from .config import FitConfig

# option dest -> (section or None, FitConfig field)
_FIELDS: dict[str, tuple[str | None, str]] = {
    "window_ms": ("data", "window_ms"), "output_ms": ("data", "output_ms"),
    "max_beats": ("data", "max_beats"), "start_level": ("data", "start_level"),
    "physics_steps": (None, "physics_steps"), "hybrid_steps": (None, "hybrid_steps"),
    "lambda0": (None, "lambda0"), "gamma": (None, "gamma"),
    "lr_network": (None, "lr_network"), "width": ("network", "width"),
    "blocks": ("network", "blocks"), "seed": ("network", "seed"),
}


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hybrid fit`` (shared with jobs/hybrid_fit.py)."""
    p.add_argument("traces", nargs="+", metavar="TRACE",
                   help="AP recordings, CSV(.gz) with time_s,voltage_mV (10 kHz real data) or "
                        "t_ms,v_mV; quiescent or depolarized cells are skipped with the reason")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write summary.json (tau's per recording, pre/post-drug table) and one "
                        "figure per fitted recording here")
    p.add_argument("--config", metavar="FILE.json", default=None,
                   help="JSON object of FitConfig fields; options below override it")
    p.add_argument("--physics-only", action="store_true",
                   help="switch F_dl off: fit the Mitchell-Schaeffer parameters alone")
    g = p.add_argument_group("data (ms; v normalized per beat)")
    g.add_argument("--window-ms", type=float, default=None, help="beat window (500)")
    g.add_argument("--output-ms", type=float, default=None,
                   help="observation interval, a multiple of the 0.1 ms RK4 step (0.1)")
    g.add_argument("--max-beats", type=int, default=None, help="beats fitted per recording (3)")
    g.add_argument("--start-level", type=float, default=None,
                   help="beat start on the upstroke, normalized (0.5, above v_gate 0.13)")
    g = p.add_argument_group("training")
    g.add_argument("--physics-steps", type=int, default=None,
                   help="L-BFGS iterations of the physics-only stage (200)")
    g.add_argument("--hybrid-steps", type=int, default=None,
                   help="Adam steps of the joint stage (120)")
    g.add_argument("--lambda0", type=float, default=None, help="initial weight of L_traj (100)")
    g.add_argument("--gamma", type=float, default=None,
                   help="lambda update: lambda += gamma * L_traj after each step (1000)")
    g.add_argument("--lr-network", type=float, default=None, help="Adam rate of F_dl (1e-2)")
    g.add_argument("--width", type=int, default=None, help="F_dl hidden units (16)")
    g.add_argument("--blocks", type=int, default=None, help="F_dl residual blocks (1)")
    g.add_argument("--seed", type=int, default=None, help="F_dl initialization seed (0)")
    g = p.add_argument_group("output")
    g.add_argument("--horizon-ms", type=float, default=300.0,
                   help="forecast horizon of the figures (ms; default 300)")
    g.add_argument("--no-figure", action="store_true", help="skip the figures")
    g = p.add_argument_group("resources and Ray")
    g.add_argument("--ray", action="store_true",
                   help="fit the recordings as parallel Ray tasks (one CPU each)")
    g.add_argument("--ray-address", default=None, help="Ray cluster (default $RAY_ADDRESS)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    g.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto",
                   help="ship cardiotwin to the workers as py_modules (default auto)")
    g.add_argument("--threads", type=int, default=1,
                   help="TensorFlow threads of this process without --ray (default 1)")


def config_from_args(a: argparse.Namespace) -> FitConfig:
    """The FitConfig of parsed arguments (ValueError, one line, on invalid values)."""
    fields: dict[str, Any] = read_settings_file(a.config, "FitConfig fields") if a.config else {}
    for dest, (section, name) in _FIELDS.items():
        v = getattr(a, dest, None)
        if v is None:
            continue
        if section is None:
            fields[name] = v
        else:
            fields.setdefault(section, {})[name] = v
    if a.physics_only:
        fields["use_dl"] = False
    return FitConfig.create(**fields)


def run_fit(a: argparse.Namespace) -> int:
    """``hybrid fit``: 0 when at least one recording was fitted, 1 when none could be."""
    from .parallel import fit_recordings

    cfg = config_from_args(a)
    missing = [t for t in a.traces if not Path(t).is_file()]
    if missing:
        raise FileNotFoundError(f"trace(s) not found: {', '.join(missing)}")
    if not a.ray:
        from .fit import configure_threads

        configure_threads(a.threads)
    rows = fit_recordings(a.traces, cfg, use_ray=a.ray, num_cpus=a.num_cpus,
                          ray_address=a.ray_address, ship_package=a.ship_package,
                          out_dir=a.out, figure=not a.no_figure and a.out is not None,
                          horizon_ms=a.horizon_ms)
    n_fit = sum(r["status"] == "fitted" for r in rows)
    print(f"hybrid fit: {n_fit} of {len(rows)} recordings fitted"
          + (f"; summary and figures in {a.out}" if a.out else ""))
    return 0 if n_fit else 1


def register(subparsers) -> None:
    """Add ``hybrid`` (with ``hybrid fit``) to the ``cardiotwin`` subcommands."""
    add_hybrid_parser(subparsers)


def add_hybrid_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``hybrid`` (with its ``fit`` subcommand) to a ``cardiotwin`` subparsers object; the
    ``fit`` parser's ``func`` default takes the Namespace and returns the exit code."""
    hy = subparsers.add_parser("hybrid", help="Mitchell-Schaeffer + residual-network hybrid of "
                                              "AP dynamics: fitted tau's, forecasts")
    sub = hy.add_subparsers(dest="hybrid_command", required=True)
    fit = sub.add_parser("fit", help="fit the hybrid to AP recordings (tau's per recording, "
                                     "pre/post-drug table; same options as jobs/hybrid_fit.py)")
    add_fit_arguments(fit)
    fit.set_defaults(func=run_fit)
    return hy
