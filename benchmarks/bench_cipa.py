#!/usr/bin/env python
"""Benchmark of the CiPA risk run (cardiotwin.cipa.run_cipa): the 28 CiPA drugs (and
flecainide) on a twin population, the leave-one-out classifier against the two baselines, and
the E-4031 EAD incidence at 50 nM next to the source study's ~3%.

1. the late-sodium variant's baseline AP against the default model (APD90, APD50, CL, MDP;
   paced at --pacing-hz and free-running);
2. the CiPA run at the default size (--cells 100 around the Kernik baseline, +-20%, paced at
   1 Hz, doses 1 2 5 10 20 25 x free Cmax, late-sodium variant, 5 s pre-pacing + 5 s recorded):
   LOO accuracy, AUCs and confusion matrix with bootstrap intervals over cells, next to the
   hERG safety margin and the block-weighted score; wall time and simulations/s/core on local
   Ray with --workers CPUs;
3. E-4031 at 0 and 50 nM on --e4031-cells cells, paced at 1 Hz and free-running, the default
   model (the source study's) and the variant: EAD incidence (95% Wilson), beating and arrested
   fractions.

    python benchmarks/bench_cipa.py --quick      # check that it runs (a few minutes)
    python benchmarks/bench_cipa.py              # the default size (target < 30 min, 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import cpu_model, loadavg, table

STUDY_EAD_50NM = 0.03
TARGETS = {"accuracy": 0.8, "auc_high_vs_rest": 0.9}


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def ci(s: dict, k: str) -> str:
    c = s.get(f"{k}_ci")
    v = s[k]
    if v is None:
        return "-"
    return f"{v:.2f}" + ("" if not c or c[0] is None else f" [{c[0]:.2f}, {c[1]:.2f}]")


def baseline_ap(pacing_hz: float) -> list[list[str]]:
    """APD90, APD50, CL, MDP of the baseline cell: default model vs late-sodium variant."""
    from cardiotwin.drugs.analysis import analyze_cell
    from cardiotwin.model.late_sodium import LateSodium
    from cardiotwin.simulate import Pacing, simulate_current_clamp

    rows = []
    for mode, pacing in (("free-running", None),
                         (f"paced {pacing_hz:g} Hz", Pacing(period_ms=1000.0 / pacing_hz))):
        out = {}
        for name, kw in (("default", {}), ("late sodium", {"late_sodium": LateSodium()})):
            r = simulate_current_clamp(10000.0, None, record_interval_ms=0.1, pacing=pacing,
                                       prepace_ms=20000.0, **kw)
            out[name] = analyze_cell(r.t_ms, r.v_mV[0])
        for k, unit in (("apd90_ms", "ms"), ("apd50_ms", "ms"), ("cycle_length_ms", "ms"),
                        ("mdp_mV", "mV")):
            a, b = out["default"][k], out["late sodium"][k]
            rows.append([f"{mode}: {k[:-3]} ({unit})", f"{a:.1f}", f"{b:.1f}", f"{b - a:+.1f}"])
    return rows


def e4031(args) -> list[dict]:
    from cardiotwin.drugs import ScreenConfig
    from cardiotwin.drugs.screen import run_screens

    cfgs, labels = [], []
    for late in (False, True):
        for hz in (args.pacing_hz, 0.0):
            cfgs.append(ScreenConfig(
                drug="E-4031", concentrations_nM=[0.0, 50.0], n_cells=args.e4031_cells,
                seed=args.seed, pacing_period_ms=None if hz == 0 else 1000.0 / hz,
                late_sodium=late, figures=False, n_keep_traces=0))
            labels.append(("late sodium" if late else "default",
                           "free-running" if hz == 0 else f"paced {hz:g} Hz"))
    res = run_screens(cfgs, progress=False, echo=None)
    out = []
    for (model, mode), r in zip(labels, res, strict=True):
        c0, c50 = r.summary["concentrations"]
        out.append({"model": model, "mode": mode, "n_cells": c50["n_cells"],
                    "ead_incidence": c50["ead_incidence"], "ead_ci": c50["ead_ci"],
                    "ead_incidence_beating": c50["ead_incidence_beating"],
                    "n_ead": c50["n_ead"], "n_beating": c50["n_beating"],
                    "fraction_beating_control": c0["fraction_beating"],
                    "fraction_beating": c50["fraction_beating"],
                    "fraction_arrested": c50["fraction_arrested"],
                    "fraction_depolarized": c50["fraction_depolarized"],
                    "apd90_control_ms": c0["apd90_ms"]["mean"],
                    "apd90_50nM_ms": c50["apd90_ms"]["mean"]})
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100, help="population (default 100)")
    ap.add_argument("--pacing-hz", type=float, default=1.0)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--e4031-cells", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="local Ray CPUs (default 2)")
    ap.add_argument("--drugs", nargs="+", default=None)
    ap.add_argument("--out", default=None, help="keep the CiPA run here (default: deleted)")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--skip-e4031", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes to check that the script runs (12 cells, 100 E-4031)")
    a = ap.parse_args(argv)
    if a.quick:
        a.cells, a.e4031_cells, a.bootstrap = 12, 100, 20
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    import cardiotwin
    from cardiotwin.cipa import CipaConfig, run_cipa

    print("cardiotwin CiPA benchmark: the 28 CiPA drugs on a population around the Kernik "
          "baseline")
    print(f"  host: {cpu_model()}, {os.cpu_count()} CPUs; python {platform.python_version()},"
          f" cardiotwin {cardiotwin.__version__}, ray {ray.__version__}; load average at "
          f"start: {loadavg()}")
    report: dict = {"args": vars(args)}
    print("\n1. The late-sodium variant (ORd 2011 INaL, G_NaL 0.01996 nS/pF) on the baseline "
          "cell (20 s to steady state, 10 s analysed):")
    rows = baseline_ap(args.pacing_hz)
    report["baseline_ap"] = rows
    print(table(["", "default", "late sodium", "change"], rows))

    os.environ.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
    print(f"\n  local Ray with {args.workers} CPUs started in {time.perf_counter() - t0:.1f} s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-cipa-"))
    try:
        out = Path(args.out) if args.out else tmp / "cipa"
        cfg = CipaConfig(out_dir=out, n_cells=args.cells, pacing_hz=args.pacing_hz,
                         seed=args.seed, n_bootstrap=args.bootstrap, drugs=args.drugs,
                         overwrite=True)
        t0 = time.perf_counter()
        s = run_cipa(cfg, progress=False, echo=None)
        wall = time.perf_counter() - t0
        c, b, t = s["classifier"], s["baselines"], s["timing"]
        print(f"\n2. CiPA run: {len(s['drugs'])} drugs x {len(cfg.multiples)} doses on "
              f"{cfg.n_cells} cells ({s['model']['pacing']}, {s['model']['variant']} model), "
              f"{t['n_simulations']} simulations of {t['simulated_ms_each']:g} ms: wall "
              f"{wall:.0f} s ({wall / 60:.1f} min; simulations {t['simulation_wall_s']:.0f} s),"
              f" {t['simulations_per_s_per_cpu']:.2f} simulations/s/core")
        print(f"   leave-one-out over {c['n_drugs']} drugs; features {', '.join(c['features'])}"
              f" (mean over doses); intervals: {c['ci_method']}")
        trows = []
        for name, sc in (("twin population", c), ("hERG safety margin", b["herg_margin"]),
                         ("block-weighted score", b["block_score"])):
            trows.append([name, ci(sc, "accuracy"), ci(sc, "auc_high_vs_rest"),
                          ci(sc, "auc_low_vs_rest"), str(sc["confusion_matrix"])])
        print(table(["method", "accuracy", "AUC high vs rest", "AUC low vs rest",
                     "confusion (rows: low, int, high)"], trows))
        met = {k: (c[k] is not None and c[k] >= v) for k, v in TARGETS.items()}
        above = all(c[k] is not None and all(c[k] > (bl[k] or 0) for bl in b.values())
                    for k in TARGETS)
        print(f"   targets: accuracy >= 0.8 {'met' if met['accuracy'] else 'NOT met'}, AUC "
              f"high >= 0.9 {'met' if met['auc_high_vs_rest'] else 'NOT met'}, above both "
              f"baselines {'yes' if above else 'no'}")
        drows = [[d["drug"], d["cipa_category"], d["predicted_category"],
                  f"{d['risk_score']:.2f}",
                  "-" if d["risk_score_ci"][0] is None else
                  f"[{d['risk_score_ci'][0]:.2f}, {d['risk_score_ci'][1]:.2f}]",
                  *[f"{d['features'][k]:.3g}" for k in c["features"]]] for d in s["drugs"]]
        print(table(["drug", "CiPA", "predicted", "risk", "95% CI", *c["features"]], drows))
        report["cipa"] = {"classifier": c, "baselines": b, "timing": t, "wall_s": wall,
                          "drugs": [{k: d[k] for k in ("drug", "cipa_category",
                                                       "predicted_category", "risk_score",
                                                       "risk_score_ci", "features")}
                                    for d in s["drugs"]]}
        if not args.skip_e4031:
            t0 = time.perf_counter()
            rows = e4031(args)
            print(f"\n3. E-4031 50 nM (IKr block 88%) on {args.e4031_cells} cells "
                  f"({time.perf_counter() - t0:.0f} s); the source study: ~3% of 4000 cells")
            print(table(["model", "mode", "EAD % [95% CI]", "EAD % of beating", "beating 0 nM",
                         "beating 50 nM", "arrested", "depol. osc."],
                        [[r["model"], r["mode"],
                          f"{pct(r['ead_incidence'])} [{100 * r['ead_ci'][0]:.1f}, "
                          f"{100 * r['ead_ci'][1]:.1f}]", pct(r["ead_incidence_beating"]),
                          pct(r["fraction_beating_control"]), pct(r["fraction_beating"]),
                          pct(r["fraction_arrested"]), pct(r["fraction_depolarized"])]
                         for r in rows]))
            report["e4031"] = rows
        print(f"\n  load average at end: {loadavg()}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
