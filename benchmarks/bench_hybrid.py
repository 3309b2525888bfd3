#!/usr/bin/env python
"""Benchmark of the Mitchell-Schaeffer + residual-network hybrid (cardiotwin.hybrid).

1. Held-out simulated traces: Kernik cells (multipliers U(0.8, 1.2), seed), free-running after a
   pre-run, normalized per beat, observations with 5% Gaussian noise (the study's). Per cell the
   hybrid is fitted on the first ``--train-beats`` beats; every later beat is held out and
   forecast from its initial state over 300 ms; MSE (normalized^2) against the clean trace, for
   the physics-only model (stage 1) and the hybrid (stage 2). Also ||F_dl|| (RMS over the fitted
   trajectories, normalized/ms), lambda at the end, the fitted tau's, seconds per fit.
   The study (APHYN-EP, its validation set): hybrid 5.7e-3 vs physics-only 1e-2.
2. Real iPSC-CM recordings (../shared/data/real-ipsc-ap, spontaneous, 10 kHz): every pre-drug /
   post-drug recording of cisapride, quinidine, quinine, verapamil (and the time controls) is
   screened; cells whose pre and post recordings both beat are fitted (hybrid, 500 ms windows
   or up to the next beat)
   and their tau_close change is printed next to the APD90 change measured by
   cardiotwin.features and the change of the model's own APD estimate tau_close ln(h0 tau_out /
   (4 tau_in)); the others are listed with the reason.

    python benchmarks/bench_hybrid.py --quick     # check that it runs (~3 min)
    python benchmarks/bench_hybrid.py             # 8 simulated cells, all real pairs (~7 min)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from _report import SHARED, cpu_model, loadavg, table

REAL = SHARED / "data" / "real-ipsc-ap"


def _f(x, fmt="{:.3g}"):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else \
        fmt.format(x)


def simulated(a, log) -> None:
    from cardiotwin.hybrid import DataConfig, FitConfig, simulate_beats
    from cardiotwin.hybrid.fit import fit_beats, forecast_mse

    data = DataConfig(window_ms=a.sim_window_ms, max_beats=a.train_beats)
    cfg = FitConfig(data=data, hybrid_steps=a.hybrid_steps)
    t0 = time.perf_counter()
    sets, skipped = simulate_beats(a.n_cells, spread=0.2, seed=a.seed,
                                   duration_ms=a.sim_duration_ms, prepace_ms=3000.0,
                                   noise_sd=0.05, cfg=data)
    print(f"\n1. held-out simulated traces: {a.n_cells} Kernik cells (+-20%, seed {a.seed}), "
          f"{a.sim_duration_ms:g} ms after a 3000 ms pre-run, 5% noise, windows "
          f"{a.sim_window_ms:g} ms observed every {data.output_ms:g} ms, RK4 dt {cfg.dt_ms:g} ms; "
          f"{len(sets)} beating ({time.perf_counter() - t0:.1f} s to simulate)")
    for s in skipped:
        print(f"   skipped: {s}")
    rows, mse_p, mse_h, norms = [], [], [], []
    for bs in sets:
        n = len(bs.beats)
        if n <= a.train_beats:
            print(f"   {bs.name}: only {n} beats, none left to hold out; skipped")
            continue
        train, test = bs.subset(range(a.train_beats)), bs.subset(range(a.train_beats, n))
        fit = fit_beats(train, cfg, log=log)
        mp = forecast_mse(fit.physics_only, cfg, test, a.horizon_ms)
        mh = forecast_mse(fit.hybrid, cfg, test, a.horizon_ms)
        mse_p.append(mp)
        mse_h.append(mh)
        norms.append(fit.fdl_norm)
        ph, pp = fit.hybrid.physics, fit.physics_only.physics
        rows.append([bs.name, str(n - a.train_beats), f"{bs.features['apd90_ms']:.0f}",
                     f"{pp['tau_in_ms']:.3f}/{ph['tau_in_ms']:.3f}",
                     f"{pp['tau_out_ms']:.2f}/{ph['tau_out_ms']:.2f}",
                     f"{pp['tau_close_ms']:.1f}/{ph['tau_close_ms']:.1f}",
                     f"{mp:.2e}", f"{mh:.2e}", f"{fit.fdl_norm:.2e}",
                     f"{fit.history_hybrid['lam'][-1]:.3g}", f"{fit.seconds:.0f}"])
        if a.figures:
            from cardiotwin.hybrid.figures import plot_fit

            out = Path(a.figures)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{bs.name}_heldout.png").write_bytes(plot_fit(fit, test, a.horizon_ms))
    print(table(["cell", "held out", "APD90 ms", "tau_in ms phys/hyb", "tau_out ms phys/hyb",
                 "tau_close ms phys/hyb", "MSE phys", "MSE hybrid", "||F_dl||", "lambda", "s"],
                rows))
    if mse_p:
        print(f"   forecast MSE over {a.horizon_ms:g} ms on held-out beats (normalized^2, mean "
              f"over {len(mse_p)} cells): physics-only {np.mean(mse_p):.2e}, hybrid "
              f"{np.mean(mse_h):.2e} (ratio {np.mean(mse_h) / np.mean(mse_p):.2f}; hybrid better "
              f"in {sum(h < p for h, p in zip(mse_h, mse_p, strict=True))} of {len(mse_p)} cells); "
              f"||F_dl|| at the end {np.mean(norms):.2e} /ms (mean)")
        print("   study (APHYN-EP validation set): hybrid 5.7e-3 vs physics-only 1e-2 (ratio 0.57)")


def real(a, log) -> None:
    from cardiotwin.hybrid import DataConfig, FitConfig, TraceError, load_beats
    from cardiotwin.hybrid.parallel import fit_recording
    from cardiotwin.hybrid.readout import drug_table, parse_recording_name, skipped_row

    if not REAL.is_dir():
        print(f"\n2. real recordings: {REAL} not found; skipped")
        return
    data = DataConfig(window_ms=a.real_window_ms, max_beats=a.train_beats)
    cfg = FitConfig(data=data, hybrid_steps=a.hybrid_steps)
    drugs = ("cisapride", "quinidine", "quinine", "verapamil") + (("control",)
                                                                  if a.controls else ())
    files = sorted(p for p in REAL.glob("*__*-drug_spont.csv.gz")
                   if parse_recording_name(p)[1] in drugs)
    print(f"\n2. real recordings: {len(files)} pre/post-drug spontaneous recordings of "
          f"{', '.join(drugs)}; windows {a.real_window_ms:g} ms; screening")
    screen = {}
    for p in files:
        try:
            load_beats(p, data)
            screen[p] = None
        except TraceError as e:
            screen[p] = str(e).split(": ", 1)[1]
    cells: dict[str, dict[str, Path]] = {}
    for p in files:
        cell, _, cond, _ = parse_recording_name(p)
        cells.setdefault(cell, {})[cond] = p
    rows = []
    t0 = time.perf_counter()
    for _cell, conds in sorted(cells.items()):
        pair = [conds.get("pre-drug"), conds.get("post-drug")]
        if all(p is not None and screen[p] is None for p in pair):
            for p in pair:
                row, _ = fit_recording(p, cfg, figure=False, log=log)
                rows.append(row)
        else:
            for p in pair:
                if p is not None:
                    rows.append(skipped_row(p, screen[p]
                                            or "beating, but its partner recording is not"))
    print(f"   fitted {sum(r['status'] == 'fitted' for r in rows)} recordings in "
          f"{time.perf_counter() - t0:.0f} s")
    for d in drug_table(rows, drugs):
        print(f"\n   {d['drug']}: {d['n_pairs']} cell(s) with pre and post beating; mean change "
              f"tau_close {_f(d['tau_close_change_pct'], '{:+.1f}%')}, APD90 "
              f"{_f(d['apd90_change_pct'], '{:+.1f}%')}")
        if d["pairs"]:
            print(table(["cell", "tau_close pre ms", "post ms", "change", "APD90 pre ms",
                         "post ms", "change", "model APD change"],
                        [[p["cell"], f"{p['tau_close_pre_ms']:.1f}",
                          f"{p['tau_close_post_ms']:.1f}",
                          f"{p['tau_close_change_pct']:+.1f}%", f"{p['apd90_pre_ms']:.0f}",
                          f"{p['apd90_post_ms']:.0f}", f"{p['apd90_change_pct']:+.1f}%",
                          _f(p["apd_model_change_pct"], "{:+.1f}%")]
                         for p in d["pairs"]], indent="     "))
        if d["note"]:
            print(f"     {d['note']}")
    fitted = [r for r in rows if r["status"] == "fitted"]
    if fitted:
        print("\n   per recording (hybrid): " + "; ".join(
            f"{Path(r['file']).name.split('.')[0]}: tau_in {r['tau_in_ms']:.2f}, tau_out "
            f"{r['tau_out_ms']:.1f}, tau_close {r['tau_close_ms']:.1f} ms (phys "
            f"{r['tau_close_ms_phys']:.1f}), h0 {r['h0']:.3f}, L_traj "
            f"{r['l_traj']:.1e} (phys {r['l_traj_phys']:.1e}), ||F_dl|| {r['fdl_norm']:.1e}"
            for r in fitted))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 cells, 40 joint steps, no controls")
    p.add_argument("--n-cells", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-beats", type=int, default=3)
    p.add_argument("--sim-duration-ms", type=float, default=5000.0)
    p.add_argument("--sim-window-ms", type=float, default=500.0)
    p.add_argument("--real-window-ms", type=float, default=500.0)
    p.add_argument("--horizon-ms", type=float, default=300.0)
    p.add_argument("--hybrid-steps", type=int, default=120)
    p.add_argument("--no-controls", dest="controls", action="store_false")
    p.add_argument("--no-real", dest="real", action="store_false")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow threads (default 1)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="write one held-out forecast figure per simulated cell here")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.n_cells, a.hybrid_steps, a.controls = 2, 40, False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cardiotwin.hybrid.fit import configure_threads

    configure_threads(a.threads)
    print(f"host: {cpu_model()}, {os.cpu_count()} CPUs, load {loadavg()}; TensorFlow threads "
          f"{a.threads}")
    print(f"fit: L-BFGS physics stage (<= 200 iterations), then {a.hybrid_steps} joint Adam "
          f"steps (lambda0 100, gamma 1000, Adam 1e-2 with 20 warm-up steps, F_dl 16 wide, 1 "
          f"residual block); beats start at "
          f"v0 = 0.5 on the upstroke with h0 = 1")
    log = print if a.verbose else None
    t0 = time.perf_counter()
    simulated(a, log)
    if a.real:
        real(a, log)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
