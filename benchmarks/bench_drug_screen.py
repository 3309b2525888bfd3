#!/usr/bin/env python
"""Benchmark of the population drug screen (cardiotwin.drugs.run_screen): the source study's
E-4031 experiment as far as this machine allows.

The source study (Yang et al. 2025, bioRxiv 10.1101/2025.09.03.674034) built 4000 cells at
+-20% around a twin, applied E-4031 (IKr, IC50 7 nM, Hill 1) at increasing concentrations and
reported EADs in ~3% of cells at 50 nM and APD90 403 +- 47 ms. Here, around the Kernik baseline
at 310 K:

1. calibration: a --calibration-cells screen (all concentrations) on local Ray with --workers
   CPUs measures cell-concentration simulations per second (Ray start-up excluded);
2. the largest n <= --n-cells (default 4000) whose projected time fits --max-minutes runs, and
   the projection for 4000 cells is printed when n is smaller;
3. per concentration: EAD incidence with its 95% Wilson interval, APD90 (full APs) mean +- SD,
   the fractions beating / arrested / quiescent / non-repolarizing, next to the study's figures;
4. simulations per second, per busy core (task seconds) and per allocated CPU.

Each simulation is --prepace-ms free-running at the concentration (from the model's initial
state) + --record-ms recorded and analysed (defaults 5000 + 5000 ms, 0.5 ms sampling).

    python benchmarks/bench_drug_screen.py --quick    # check that it runs (~1 min)
    python benchmarks/bench_drug_screen.py            # up to 4000 cells, <= 10 min
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _report import cpu_model, loadavg, table

STUDY_CELLS = 4000
STUDY_EAD_50NM = 0.03
STUDY_APD90 = (403.0, 47.0)


def run(args, n_cells: int, out: Path | None):
    from cardiotwin.drugs import ScreenConfig, run_screen

    cfg = ScreenConfig(drug="E-4031", concentrations_nM=args.concentrations, n_cells=n_cells,
                       spread=args.spread, seed=args.seed, temperature_K=310.0,
                       prepace_ms=args.prepace_ms, record_ms=args.record_ms,
                       batch_cells=args.batch_cells, out_dir=out, overwrite=True,
                       figures=out is not None)
    return run_screen(cfg, progress=False, echo=None)


def fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cells", type=int, default=STUDY_CELLS,
                    help=f"largest population to run (default {STUDY_CELLS})")
    ap.add_argument("--max-minutes", type=float, default=10.0,
                    help="time budget of the main run (default 10)")
    ap.add_argument("--calibration-cells", type=int, default=200)
    ap.add_argument("--concentrations", type=float, nargs="+",
                    default=[0.0, 10.0, 30.0, 50.0, 100.0], help="nM (default 0 10 30 50 100)")
    ap.add_argument("--spread", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prepace-ms", type=float, default=5000.0)
    ap.add_argument("--record-ms", type=float, default=5000.0)
    ap.add_argument("--batch-cells", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2, help="local Ray CPUs (default 2)")
    ap.add_argument("--out", default=None,
                    help="keep the main run's outputs here (default: a temporary directory, "
                         "deleted)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes to check that the script runs (100 + 400 cells)")
    a = ap.parse_args(argv)
    if a.quick:
        a.calibration_cells, a.n_cells = 100, 400
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    import cardiotwin

    n_conc = len(args.concentrations)
    print("cardiotwin drug screen benchmark: E-4031 on a population around the Kernik baseline")
    print(f"  host: {cpu_model()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, cardiotwin {cardiotwin.__version__}, ray "
          f"{ray.__version__}; load average at start: {loadavg()}")
    print(f"  cells: U({1 - args.spread:g}, {1 + args.spread:g}) multipliers on the 52 "
          f"parameters, seed {args.seed}; 310 K; each simulation {args.prepace_ms:g} ms "
          f"free-running + {args.record_ms:g} ms recorded at 0.5 ms; E-4031 at "
          f"{', '.join(f'{c:g}' for c in args.concentrations)} nM (IKr IC50 7 nM, Hill 1)")
    os.environ.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
    print(f"  local Ray with {args.workers} CPUs started in {time.perf_counter() - t0:.1f} s "
          "(excluded below)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-screen-"))
    try:
        print()
        cal = run(args, args.calibration_cells, None)
        tc = cal.summary["timing"]
        rate = tc["simulations_per_s"]
        print(f"1. Calibration: {args.calibration_cells} cells x {n_conc} concentrations = "
              f"{tc['n_simulations']} simulations in {tc['wall_s']:.1f} s: {rate:.1f} "
              f"simulations/s ({tc['simulations_per_s_per_busy_core']:.1f} per busy core)")
        budget = 60.0 * args.max_minutes
        fit = int(budget * rate / n_conc * 0.9)          # 10% margin
        n = max(args.calibration_cells, min(args.n_cells, fit // 100 * 100 or fit))
        proj = STUDY_CELLS * n_conc / rate
        why = ("" if n >= STUDY_CELLS else f" (--n-cells {args.n_cells})" if n == args.n_cells
               else f" (the largest multiple of 100 fitting {args.max_minutes:g} min)")
        print(f"   projected for {STUDY_CELLS} cells: {proj / 60:.1f} min on {args.workers} "
              f"CPUs -> running n = {n}{why}")
        out = Path(args.out) if args.out else tmp / "main"
        print()
        res = run(args, n, out)
        s, t = res.summary, res.summary["timing"]
        rows = s["concentrations"]
        print(f"2. Main run: {n} cells x {n_conc} = {t['n_simulations']} simulations in "
              f"{t['wall_s']:.1f} s ({t['wall_s'] / 60:.1f} min)")
        if n < STUDY_CELLS:
            sims = STUDY_CELLS * n_conc
            print(f"   projection for {STUDY_CELLS} cells at this run's rate: "
                  f"{sims / t['simulations_per_s'] / 60:.1f} min on {t['cpus']} CPUs; "
                  f"{sims / t['simulations_per_s_per_busy_core'] / 60:.1f} core-minutes")
        print()
        print("3. Per concentration. APD90 of full APs (MDP <= -60 mV); paired: the cells with "
              "one at every concentration;\n   EAD incidence over the analyzed cells; arrested: "
              "of the cells beating at 0 nM; beating (all) includes\n   the depolarized "
              "oscillations of the last column; quiescent (depol.): of which resting above "
              "-40 mV")
        trows = []
        for r in rows:
            a, p = r["apd90_ms"], r["apd90_paired_ms"]
            lo, hi = r["ead_ci"]
            trows.append([
                f"{r['concentration_nM']:g}", f"{100 * r['block']['IKr']:.0f}%",
                f"{r['n_ead']}/{r['n_analyzed']}", fmt_pct(r["ead_incidence"]),
                f"[{100 * lo:.2f}, {100 * hi:.2f}]%",
                "-" if a["mean"] is None else
                f"{a['mean']:.0f} +- {0 if a['sd'] is None else a['sd']:.0f}",
                str(a["n"]), "-" if p["mean"] is None else f"{p['mean']:.0f}",
                fmt_pct(r["fraction_beating"]), fmt_pct(r["fraction_arrested"]),
                f"{fmt_pct(r['fraction_quiescent'])} "
                f"({fmt_pct(r['fraction_quiescent_depolarized'])})",
                fmt_pct(r["fraction_non_repolarizing"]),
                fmt_pct(r["fraction_depolarized"])])
        print(table(["nM", "IKr block", "EAD cells", "EAD %", "95% CI (Wilson)",
                     "APD90 ms", "n APD", f"paired ({rows[0]['apd90_paired_ms']['n']})",
                     "beating (all)", "arrested", "quiescent (depol.)", "non-repol",
                     "depol. osc."],
                    trows))
        r0 = rows[0]
        r50 = next((r for r in rows if r["concentration_nM"] == 50.0), None)
        print()
        print("   next to the source study (4000 cells, +-20% around a twin):")
        cmp = [["APD90 at control (ms)", f"{STUDY_APD90[0]:.0f} +- {STUDY_APD90[1]:.0f}",
                f"{r0['apd90_ms']['mean']:.0f} +- {r0['apd90_ms']['sd']:.0f} "
                f"(n = {r0['apd90_ms']['n']} of {r0['n_cells']} cells: those beating with full "
                "APs)"]]
        if r50 is not None:
            lo, hi = r50["ead_ci"]
            inside = lo <= STUDY_EAD_50NM <= hi
            cmp.append(["EAD incidence at 50 nM", f"~{100 * STUDY_EAD_50NM:.0f}%",
                        f"{fmt_pct(r50['ead_incidence'])} [{100 * lo:.2f}, {100 * hi:.2f}]% "
                        f"of all {r50['n_analyzed']} cells "
                        f"({'contains' if inside else 'excludes'} 3%)"])
            lo, hi = r50["ead_beating_ci"]
            if lo is not None:
                inside = lo <= STUDY_EAD_50NM <= hi
                cmp.append(["  among cells still beating at 50 nM", "",
                            f"{r50['n_ead_beating']}/{r50['n_beating']} = "
                            f"{fmt_pct(r50['ead_incidence_beating'])} [{100 * lo:.2f}, "
                            f"{100 * hi:.2f}]% ({'contains' if inside else 'excludes'} 3%)"])
        print(table(["", "study", "this run (95% CI)"], cmp))
        print()
        print("4. Throughput (cell-concentration simulations of "
              f"{t['simulated_ms_each']:g} ms each, incl. analysis)")
        ts = t["task_seconds"]
        print(table(["measure", "value"], [
            ["simulations/s (wall, Ray start-up excluded)", f"{t['simulations_per_s']:.1f}"],
            ["simulations/s per allocated CPU", f"{t['simulations_per_s_per_cpu']:.1f}"],
            ["simulations/s per busy core (task seconds)",
             f"{t['simulations_per_s_per_busy_core']:.1f}"],
            ["task seconds: simulate / analyse / setup",
             f"{ts['simulate']:.1f} / {ts['analyze']:.1f} / {ts['setup']:.1f}"],
            ["ms per simulation per core (simulate only)",
             f"{1000 * ts['simulate'] / t['n_simulations']:.2f}"],
            ["ms per simulation per core (analysis only)",
             f"{1000 * ts['analyze'] / t['n_simulations']:.2f}"]]))
        print(f"  load average at end: {loadavg()}")
        if args.out:
            print(f"  outputs kept in {out}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
