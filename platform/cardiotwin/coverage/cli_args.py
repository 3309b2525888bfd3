"""Command line of the coverage check: ``cardiotwin coverage STORE --real FILES_OR_DIR ...``.
:func:`register` adds the subcommand; ``func`` returns the exit code (bad input: ValueError,
exit 2 by :func:`cardiotwin.cli.main`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .match import MatchCriterion

SHOW_UNMATCHED = 10     # real cells not matched printed (all are in coverage.json)


def add_coverage_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``coverage``."""
    d = MatchCriterion()
    p.add_argument("store", metavar="STORE", help="population store directory")
    p.add_argument("--real", nargs="+", required=True, metavar="FILES_OR_DIR",
                   help="real AP recordings: CSV(.gz) traces (time_s,voltage_mV or t_ms,v_mV) "
                        "or directories of them (their *.csv, *.csv.gz; CSVs there without a "
                        "time and a voltage column are skipped)")
    p.add_argument("--include", metavar="GLOB", default=None,
                   help="only the files whose name matches this glob, e.g. '*pre-drug*'")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write coverage.json and coverage.png here (default: print only)")
    p.add_argument("--cl-tol", type=float, default=d.cl_rel, metavar="FRACTION",
                   help=f"cycle-length tolerance, relative (default {d.cl_rel:g})")
    p.add_argument("--apd90-tol", type=float, default=d.apd90_rel, metavar="FRACTION",
                   help=f"APD90 tolerance, relative (default {d.apd90_rel:g})")
    p.add_argument("--mdp-tol-mv", type=float, default=d.mdp_abs_mV, metavar="MV",
                   help=f"MDP tolerance in mV (default {d.mdp_abs_mV:g})")
    p.add_argument("--statuses", nargs="+", default=["ok"], metavar="STATUS",
                   help="synthetic cells of these statuses (default ok)")
    p.add_argument("--no-figure", action="store_true", help="write coverage.json only")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another coverage report in --out")


def run_from_args(a: argparse.Namespace) -> int:
    from .report import REPORT, run_coverage

    t0 = time.perf_counter()
    crit = MatchCriterion(cl_rel=a.cl_tol, apd90_rel=a.apd90_tol, mdp_abs_mV=a.mdp_tol_mv)
    rep = run_coverage(a.store, a.real, a.out, crit, a.include, statuses=tuple(a.statuses),
                       figure=not a.no_figure, overwrite=a.overwrite)
    print(rep["summary"])
    missed = [c for c in rep["cells"] if c["counted"] and not c["matched"]]
    for c in missed[:SHOW_UNMATCHED]:
        n = c["nearest"]
        where = (f"nearest synthetic cell {n['cell_id']} at scaled distance "
                 f"{c['scaled_distance']:.2f}") if n else "no synthetic cell"
        v = c["values"]
        print(f"  not matched: {c['name']} (CL {v['cycle_length_ms']:.0f} ms, APD90 "
              f"{v['apd90_ms']:.0f} ms, MDP {v['mdp_mV']:.1f} mV): {where}")
    if len(missed) > SHOW_UNMATCHED:
        print(f"  ... and {len(missed) - SHOW_UNMATCHED} more not matched "
              + ("(all in coverage.json)" if a.out is not None else "(--out: all in a report)"))
    if rep["real"]["skipped_not_traces"]:
        print("skipped (not AP traces): "
              + ", ".join(Path(s).name for s in rep["real"]["skipped_not_traces"]))
    if a.out is not None:
        files = [REPORT] + ([rep["figure"]] if rep.get("figure") else [])
        print(f"wrote {', '.join(str(Path(a.out) / f) for f in files)} "
              f"({time.perf_counter() - t0:.1f} s)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``coverage`` to the ``cardiotwin`` subcommands."""
    p = subparsers.add_parser(
        "coverage", help="real AP phenotypes (CL, APD90, MDP, amplitude, dV/dt max) against a "
                         "population store's: the fraction of real beating cells matched by "
                         "some synthetic cell (criterion stated), coverage.json and a figure")
    add_coverage_arguments(p)
    p.set_defaults(func=run_from_args)
