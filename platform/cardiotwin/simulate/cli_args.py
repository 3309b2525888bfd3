"""Command line of single-cell simulation and trace analysis::

  cardiotwin simulate vc --protocol P.csv [--multipliers M.csv] [--temperature-k 310] --out OUT.csv
  cardiotwin simulate ap --duration-ms 6000 [--multipliers M.csv] --out OUT.csv
  cardiotwin features TRACE.csv

Output CSVs are written atomically (a crash never leaves a half-written file at ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _inputs(multipliers_csv: str | None) -> np.ndarray:
    """The (1, 52) parameter multipliers: baseline, or named ones from a CSV."""
    from ..model import BASELINE, inputs_from_named, read_multipliers_csv

    if multipliers_csv is None:
        return np.asarray(BASELINE[None, :].copy())
    return np.asarray(inputs_from_named(read_multipliers_csv(multipliers_csv))[None, :])


def write_csv(path: str, columns: dict[str, np.ndarray], formats: list[str]) -> None:
    """Columns as a CSV with a header row, written atomically; ValueError when the output
    directory does not exist."""
    from ..storage.atomic import atomic_path

    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--out {path}: output directory does not exist: {parent}")
    data = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    with atomic_path(out) as tmp:
        np.savetxt(tmp, data, delimiter=",", header=",".join(columns), comments="",
                   fmt=formats)


def _warn_unstable(unstable: np.ndarray) -> None:
    if unstable.any():
        print("warning: the cell became numerically unstable; its trace is NaN from then on",
              file=sys.stderr)


def run_vc(a: argparse.Namespace) -> int:
    """``simulate vc``: t_ms, v_mV, I_total (pA/pF) [and the membrane currents]."""
    from ..protocols import load_protocol
    from . import simulate_voltage_clamp

    protocol = load_protocol(a.protocol, sample_interval_ms=a.sample_interval_ms,
                             temperature_K=a.temperature_k)
    res = simulate_voltage_clamp(protocol, _inputs(a.multipliers), record_currents=a.currents)
    cols = {"t_ms": res.t_ms, "v_mV": res.v_mV, "I_total": res.i_total[0]}
    if a.currents and res.currents is not None:
        cols.update({k: v[0] for k, v in res.currents.items()})
    write_csv(a.out, cols, ["%.4f", "%.4f"] + ["%.7g"] * (len(cols) - 2))
    _warn_unstable(res.unstable)
    print(f"wrote {a.out}: {res.t_ms.size} samples, protocol_hash {res.protocol_hash}")
    return 0


def run_ap(a: argparse.Namespace) -> int:
    """``simulate ap``: t_ms, v_mV, Cai_mM of a free-running or paced cell."""
    from . import Pacing, simulate_current_clamp

    pacing = (Pacing(period_ms=a.pace_period_ms, amplitude=a.pace_amplitude)
              if a.pace_period_ms else None)
    res = simulate_current_clamp(a.duration_ms, _inputs(a.multipliers),
                                 temperature_K=a.temperature_k,
                                 record_interval_ms=a.sample_interval_ms, pacing=pacing,
                                 prepace_ms=a.prepace_ms)
    write_csv(a.out, {"t_ms": res.t_ms, "v_mV": res.v_mV[0], "Cai_mM": res.cai_mM[0]},
              ["%.4f", "%.5f", "%.7g"])
    _warn_unstable(res.unstable)
    print(f"wrote {a.out}: {res.t_ms.size} samples")
    return 0


def run_features(a: argparse.Namespace) -> int:
    """``features``: AP biomarkers and cell status of a V trace, printed as JSON."""
    from ..features import analyze_trace, load_trace_csv

    t, v = load_trace_csv(a.trace)
    print(json.dumps(analyze_trace(t, v).to_dict(), indent=2))
    return 0


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument("--multipliers", metavar="M.csv",
                   help="CSV of name,multiplier rows (names of kernik_parameters.csv); "
                        "unnamed parameters stay at baseline")
    q.add_argument("--temperature-k", type=float, default=310.0,
                   help="temperature in K (gating kinetics scale with Q10 = 3; default 310)")
    q.add_argument("--sample-interval-ms", type=float, default=0.1,
                   help="output sample interval in ms (default 0.1)")
    q.add_argument("--out", required=True, metavar="OUT.csv", help="output CSV path")


def register(subparsers: Any) -> None:
    """Add ``simulate vc``, ``simulate ap`` and ``features`` to the ``cardiotwin`` commands."""
    sim = subparsers.add_parser("simulate",
                                help="simulate one cell (voltage clamp or free-running AP)")
    simsub = sim.add_subparsers(dest="mode", required=True)

    vc = simsub.add_parser("vc", help="voltage clamp: t_ms, v_mV, I_total (pA/pF)")
    vc.add_argument("--protocol", required=True, metavar="P.csv",
                    help="protocol file: CSV (duration_ms,v_start_mV,v_end_mV or "
                         "time_ms,voltage_mV) or canonical JSON")
    vc.add_argument("--currents", action="store_true",
                    help="also write the 13 membrane currents (pA/pF)")
    _common(vc)
    vc.set_defaults(func=run_vc)

    ap = simsub.add_parser("ap", help="free-running (or paced) AP: t_ms, v_mV, Cai_mM")
    ap.add_argument("--duration-ms", type=float, required=True, help="duration in ms")
    ap.add_argument("--prepace-ms", type=float, default=0.0,
                    help="run this long (ms) first and record from the state reached")
    ap.add_argument("--pace-period-ms", type=float, default=None,
                    help="pace with a stimulus every this many ms (default: free-running)")
    ap.add_argument("--pace-amplitude", type=float, default=3.0,
                    help="stimulus amplitude in pA/pF (default 3, 5 ms wide)")
    _common(ap)
    ap.set_defaults(func=run_ap)

    ft = subparsers.add_parser("features",
                               help="AP biomarkers and cell status of a V trace, as JSON")
    ft.add_argument("trace", metavar="TRACE.csv",
                    help="CSV(.gz) with t_ms,v_mV or time_s,voltage_mV columns")
    ft.set_defaults(func=run_features)
