"""The ``cardiotwin`` command.

  cardiotwin simulate vc --protocol P.csv [--multipliers M.csv] [--temperature-k 310] --out OUT.csv
  cardiotwin simulate ap --duration-ms 6000 [--multipliers M.csv] [--temperature-k 310] --out OUT.csv
  cardiotwin features TRACE.csv
  cardiotwin demo [--n-cells 200] [--out-dir out/demo]
  cardiotwin generate --n-cells N --out DIR [--range 0.4] [--protocol P] ...  (on Ray)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _inputs(multipliers_csv: str | None) -> np.ndarray:
    from .model import BASELINE, inputs_from_named, read_multipliers_csv

    if multipliers_csv is None:
        return BASELINE[None, :].copy()
    return inputs_from_named(read_multipliers_csv(multipliers_csv))[None, :]


def _write_csv(path: str, columns: dict[str, np.ndarray], formats: list[str]) -> None:
    out = Path(path)
    if out.parent and not out.parent.exists():
        raise ValueError(f"output directory does not exist: {out.parent}")
    data = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    np.savetxt(out, data, delimiter=",", header=",".join(columns), comments="", fmt=formats)


def _warn_unstable(unstable: np.ndarray) -> None:
    if unstable.any():
        print("warning: the cell became numerically unstable; its trace is NaN from then on",
              file=sys.stderr)


def _cmd_vc(a: argparse.Namespace) -> int:
    from .protocols import load_protocol
    from .simulate import simulate_voltage_clamp

    protocol = load_protocol(a.protocol, sample_interval_ms=a.sample_interval_ms,
                             temperature_K=a.temperature_k)
    res = simulate_voltage_clamp(protocol, _inputs(a.multipliers), record_currents=a.currents)
    cols = {"t_ms": res.t_ms, "v_mV": res.v_mV, "I_total": res.i_total[0]}
    if a.currents:
        cols.update({k: v[0] for k, v in res.currents.items()})
    _write_csv(a.out, cols, ["%.4f", "%.4f"] + ["%.7g"] * (len(cols) - 2))
    _warn_unstable(res.unstable)
    print(f"wrote {a.out}: {res.t_ms.size} samples, protocol_hash {res.protocol_hash}")
    return 0


def _cmd_ap(a: argparse.Namespace) -> int:
    from .simulate import Pacing, simulate_current_clamp

    pacing = Pacing(period_ms=a.pace_period_ms, amplitude=a.pace_amplitude) \
        if a.pace_period_ms else None
    res = simulate_current_clamp(a.duration_ms, _inputs(a.multipliers),
                                 temperature_K=a.temperature_k,
                                 record_interval_ms=a.sample_interval_ms, pacing=pacing,
                                 prepace_ms=a.prepace_ms)
    _write_csv(a.out, {"t_ms": res.t_ms, "v_mV": res.v_mV[0], "Cai_mM": res.cai_mM[0]},
               ["%.4f", "%.5f", "%.7g"])
    _warn_unstable(res.unstable)
    print(f"wrote {a.out}: {res.t_ms.size} samples")
    return 0


def _cmd_features(a: argparse.Namespace) -> int:
    from .features import analyze_trace, load_trace_csv

    t, v = load_trace_csv(a.trace)
    print(json.dumps(analyze_trace(t, v).to_dict(), indent=2))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(n_cells=a.n_cells, spread=a.range, seed=a.seed,
                        beating_ms=a.beating_ms, out_dir=Path(a.out_dir)))
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from .population.generate import run_from_args

    run_from_args(a)
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from .learn.cli_args import run_from_args

    run_from_args(a)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cardiotwin", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="simulate one cell (voltage clamp or free-running AP)")
    simsub = sim.add_subparsers(dest="mode", required=True)

    def common(q):
        q.add_argument("--multipliers", metavar="M.csv",
                       help="CSV of name,multiplier rows (names of kernik_parameters.csv); "
                            "unnamed parameters stay at baseline")
        q.add_argument("--temperature-k", type=float, default=310.0,
                       help="temperature in K (gating kinetics scale with Q10 = 3; default 310)")
        q.add_argument("--sample-interval-ms", type=float, default=0.1,
                       help="output sample interval in ms (default 0.1)")
        q.add_argument("--out", required=True, metavar="OUT.csv", help="output CSV path")

    vc = simsub.add_parser("vc", help="voltage clamp: t_ms, v_mV, I_total (pA/pF)")
    vc.add_argument("--protocol", required=True, metavar="P.csv",
                    help="protocol file: CSV (duration_ms,v_start_mV,v_end_mV or "
                         "time_ms,voltage_mV) or canonical JSON")
    vc.add_argument("--currents", action="store_true",
                    help="also write the 13 membrane currents (pA/pF)")
    common(vc)
    vc.set_defaults(func=_cmd_vc)

    ap = simsub.add_parser("ap", help="free-running (or paced) AP: t_ms, v_mV, Cai_mM")
    ap.add_argument("--duration-ms", type=float, required=True, help="duration in ms")
    ap.add_argument("--prepace-ms", type=float, default=0.0,
                    help="run this long (ms) first and record from the state reached")
    ap.add_argument("--pace-period-ms", type=float, default=None,
                    help="pace with a stimulus every this many ms (default: free-running)")
    ap.add_argument("--pace-amplitude", type=float, default=3.0,
                    help="stimulus amplitude in pA/pF (default 3, 5 ms wide)")
    common(ap)
    ap.set_defaults(func=_cmd_ap)

    ft = sub.add_parser("features", help="AP biomarkers and cell status of a V trace, as JSON")
    ft.add_argument("trace", metavar="TRACE.csv",
                    help="CSV(.gz) with t_ms,v_mV or time_s,voltage_mV columns")
    ft.set_defaults(func=_cmd_features)

    demo = sub.add_parser("demo", help="the embedded default run: a small population, summary "
                                       "and figure")
    demo.add_argument("--n-cells", type=int, default=200, help="population size (default 200)")
    demo.add_argument("--range", type=float, default=0.4,
                      help="multiplier range r: U(1-r, 1+r) (default 0.4)")
    demo.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    demo.add_argument("--beating-ms", type=float, default=6000.0,
                      help="free-running duration in ms (default 6000)")
    demo.add_argument("--out-dir", default="out/demo", help="output directory")
    demo.set_defaults(func=_cmd_demo)

    from .population.config import add_generate_arguments

    gen = sub.add_parser("generate", help="generate a synthetic population into a Parquet store "
                                          "on Ray (resumable; same options as "
                                          "jobs/generate_population.py)")
    add_generate_arguments(gen)
    gen.set_defaults(func=_cmd_generate)

    from .learn.cli_args import add_train_arguments

    tr = sub.add_parser("train", help="train the parameter network on population store(s) "
                                      "into a model artifact (same options as "
                                      "jobs/train_model.py)")
    add_train_arguments(tr)
    tr.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"cardiotwin: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
