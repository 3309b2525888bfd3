"""The ``cardiotwin`` command.

  cardiotwin simulate vc --protocol P.csv [--multipliers M.csv] [--temperature-k 310] --out OUT.csv
  cardiotwin simulate ap --duration-ms 6000 [--multipliers M.csv] [--temperature-k 310] --out OUT.csv
  cardiotwin features TRACE.csv
  cardiotwin demo [--size default|smallest] [--out-dir out/demo]   (the whole pipeline)
  cardiotwin generate --n-cells N --out DIR [--range 0.4] [--protocol P] ...  (on Ray)
  cardiotwin train | twin | screen | protocol-search ...
  cardiotwin reconstruct EAP.csv --model DIR --out DIR   (intracellular AP from an eAP)
  cardiotwin hybrid fit TRACE... --out DIR                (Mitchell-Schaeffer + network)
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
    from .demo import demo_config, run_demo

    cfg = demo_config(a.size, out_dir=a.out_dir, n_cells=a.n_cells, spread=a.range, seed=a.seed,
                      epochs=a.epochs, screen_cells=a.screen_cells,
                      concentrations_nM=a.concentrations_nm, num_cpus=a.num_cpus)
    run_demo(cfg)
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from .population.generate import run_from_args

    run_from_args(a)
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from .learn.cli_args import run_from_args

    run_from_args(a)
    return 0


def _cmd_twin(a: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .learn import load_estimator
    from .twin import read_abf, read_ap_abf, read_ap_csv, read_trace_csv
    from .twin.inference import make_twin, plot_twin

    est = load_estimator(a.model)
    kw = dict(capacitance_pF=a.capacitance_pf, protocol=est.protocol)
    rec = (read_trace_csv(a.recording, **kw) if a.recording.lower().endswith((".csv", ".gz"))
           else read_abf(a.recording, sweep=a.sweep if a.sweep == "mean" else int(a.sweep),
                         **kw))
    ap = None
    if a.ap_recording:
        ap = (read_ap_csv(a.ap_recording) if a.ap_recording.lower().endswith((".csv", ".gz"))
              else read_ap_abf(a.ap_recording))
    tw = make_twin(est, rec, temperature_K=a.temperature_k, ap_duration_ms=a.ap_duration_ms,
                   ap_recording=ap)
    out = tw.to_json()
    text = json.dumps(out, indent=1)
    if a.out:
        Path(a.out).write_text(text)
        png = Path(a.out).with_suffix(".png")
        png.write_bytes(plot_twin(tw))
        print(f"twin: {a.out}, figure: {png}; fit relative RMS "
              f"{tw.fit['relative_rms']:.3f}, AP {tw.status}")
    else:
        print(text)
    return 0


def _cmd_screen(a: argparse.Namespace) -> int:
    from .drugs.screen import run_from_args

    run_from_args(a)
    return 0


def _cmd_protocol_search(a: argparse.Namespace) -> int:
    from .protocol_search.cli_args import run_from_args

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

    demo = sub.add_parser("demo", help="the whole pipeline on an embedded default (local Ray): "
                                       "population, network, twin of the example ABF, E-4031 "
                                       "screen, HTML report")
    demo.add_argument("--size", choices=("default", "smallest"), default="default",
                      help="named sizes: default (4000 cells, 400-cell screen; a few minutes on "
                           "2 cores) or smallest (300 cells, 8-cell screen)")
    demo.add_argument("--out-dir", default=None, help="output directory (default out/demo)")
    demo.add_argument("--n-cells", type=int, default=None, help="training population size")
    demo.add_argument("--range", type=float, default=None,
                      help="multiplier range r: U(1-r, 1+r) (default 0.2)")
    demo.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs at most")
    demo.add_argument("--screen-cells", type=int, default=None, help="screen population size")
    demo.add_argument("--concentrations-nm", type=float, nargs="+", default=None,
                      help="E-4031 concentrations (nM)")
    demo.add_argument("--num-cpus", type=int, default=None,
                      help="CPUs of the local Ray cluster (default: all)")
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

    tw = sub.add_parser("twin", help="the digital twin of a recorded cell: parameters, fit, AP "
                                     "(offline; the Serve app does the same live)")
    tw.add_argument("recording", help="voltage-clamp recording of the model's protocol: ABF "
                                      "(ABF1/ABF2) or CSV (t_ms, command_mV, i_pA_per_pF)")
    tw.add_argument("--model", required=True, metavar="DIR", help="model artifact directory")
    tw.add_argument("--capacitance-pf", type=float, default=None,
                    help="membrane capacitance in pF (default: from the ABF header)")
    tw.add_argument("--sweep", default="0", help="sweep index or 'mean' (default 0)")
    tw.add_argument("--ap-recording", default=None, metavar="FILE",
                    help="current-clamp recording of the same cell (ABF or CSV) to compare")
    tw.add_argument("--temperature-k", type=float, default=None,
                    help="temperature of the twin's AP in K (default: the protocol's)")
    tw.add_argument("--ap-duration-ms", type=float, default=10000.0,
                    help="free-running AP duration in ms (default 10000)")
    tw.add_argument("--out", default=None, metavar="TWIN.json",
                    help="write the twin JSON here and the figure beside it (default: print)")
    tw.set_defaults(func=_cmd_twin)

    from .drugs.config import add_screen_arguments

    sc = sub.add_parser("screen", help="drug screen of a population around a twin (Ray; same "
                                       "options as jobs/drug_screen.py)")
    add_screen_arguments(sc)
    sc.set_defaults(func=_cmd_screen)

    from .protocol_search.cli_args import add_search_arguments

    ps = sub.add_parser("protocol-search", help="greedy voltage-protocol search on Ray Tune "
                                                "(resumable; same options as "
                                                "tune/protocol_search.py)")
    add_search_arguments(ps)
    ps.set_defaults(func=_cmd_protocol_search)

    from .hybrid.cli_args import add_hybrid_parser
    from .reconstruct.cli_args import add_reconstruct_parser

    add_hybrid_parser(sub)
    add_reconstruct_parser(sub)
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
