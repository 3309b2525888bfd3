#!/usr/bin/env python
"""Benchmark of iAP reconstruction from eAPs (cardiotwin.reconstruct) next to the study
(Rahmani et al., Nat Commun 2025, PIA-UNET: MAE ~0.04 on the normalized iAP, APD errors
~5 %).

1. data: two pair stores made with ``generate_pairs`` on a local Ray cluster (--workers
   tasks), cached under --cache-dir and reused when complete:
   - train/held-out: --cells cells at +-40 % (seed --seed), 60 % of them with one of the
     training drugs (E-4031, verapamil, nifedipine, lidocaine, cisapride, quinine) at
     10^U(-1, 1) x the drug's lowest IC50; windows of 1024 samples at 1 kHz starting 200 ms
     before the eAP spike; eAP S/N 20-200. Split by cell: 80 % train, 10 % validation
     (early stopping, patience 10), 10 % test (held-out cells).
   - unseen drug: --drug-cells cells (another seed), every one with quinidine (a
     multi-channel blocker not among the training drugs) at the same relative doses.
2. training: the same network (quantile heads 0.05/0.5/0.95; --filters, --depth) twice, with
   the physics term (beta = --beta) and without it (beta = 0), at most --epochs epochs with
   early stopping and a wall-time budget per model (--budget-min).
3. evaluation on held-out cells and on the unseen drug: MAE (normalized iAP [0.1, 1]), median
   |APD error| (ms and %) at APD10 ... APD100 (APD90 in the summary), mean Pearson r, coverage
   of the 90 % band; figures under --out-dir (overlays with the band, APD error boxplots).
4. inference time per window: one window per call (p50 of --latency-calls) and a batch of 64.

    python benchmarks/bench_reconstruct.py --quick     # check that it runs (~4 min)
    python benchmarks/bench_reconstruct.py             # ~15-20 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _report import cpu_model, loadavg, table

STUDY = {"mae": 0.04, "apd_err_pct": 5.0}
TRAIN_DRUGS = ("e4031", "verapamil", "nifedipine", "lidocaine", "cisapride", "quinine")
UNSEEN_DRUG = "quinidine"


def progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def get_store(out: Path, cfg, workers: int):
    from cardiotwin.reconstruct.pairs import generate_pairs

    t0 = time.perf_counter()
    m = generate_pairs(cfg, out, n_workers=workers, num_cpus=workers, log=progress)
    return m, time.perf_counter() - t0


def budget_callback(budget_s: float):
    import keras

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0, self.epoch_s, self.hit = time.perf_counter(), [], False

        def on_epoch_begin(self, epoch, logs=None):
            self.te = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epoch_s.append(now - self.te)
            if now - self.t0 + float(np.median(self.epoch_s)) > budget_s:
                self.hit = True
                self.model.stop_training = True

    return Budget()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=1800, help="cells of the train/held-out store")
    p.add_argument("--drug-cells", type=int, default=120, help="cells of the unseen-drug store")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--budget-min", type=float, default=6.0, help="training minutes per model")
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--beta", type=float, default=0.01, help="weight of log(L_physics)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency-calls", type=int, default=50)
    p.add_argument("--cache-dir", default="/tmp/reconstruct/bench")
    p.add_argument("--out-dir", default=None, help="figures (default: CACHE/figures)")
    p.add_argument("--quick", action="store_true", help="small sizes: check that it runs")
    a = p.parse_args(argv)
    if a.quick:
        a.cells, a.drug_cells, a.epochs, a.budget_min, a.latency_calls = 60, 20, 2, 1.0, 5

    from cardiotwin.reconstruct.evaluate import evaluate, without_arrays
    from cardiotwin.reconstruct.figures import plot_apd_errors, plot_overlays
    from cardiotwin.reconstruct.pairs import PairConfig
    from cardiotwin.reconstruct.train import ReconTrainConfig, fit, load_pair_data, predict
    from cardiotwin.reconstruct.unet import NetConfig
    from cardiotwin.reconstruct.windows import APD_LEVELS

    cache = Path(a.cache_dir)
    figs = Path(a.out_dir) if a.out_dir else cache / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    train_cfg = PairConfig(n_cells=a.cells, seed=a.seed, drugs=TRAIN_DRUGS, shard_size=30)
    drug_cfg = PairConfig(n_cells=a.drug_cells, seed=a.seed + 1000, drugs=(UNSEEN_DRUG,),
                          drug_fraction=1.0, shard_size=30)
    train_dir = cache / f"pairs_train_n{a.cells}_s{a.seed}_{train_cfg.config_hash()[:10]}"
    drug_dir = cache / f"pairs_{UNSEEN_DRUG}_n{a.drug_cells}_s{a.seed}_" \
                       f"{drug_cfg.config_hash()[:10]}"
    m_train, w_train = get_store(train_dir, train_cfg, a.workers)
    m_drug, w_drug = get_store(drug_dir, drug_cfg, a.workers)
    data = load_pair_data(train_dir)
    unseen = load_pair_data(drug_dir)
    x_unseen = np.concatenate([unseen.x[s] for s in ("train", "val", "test")])
    y_unseen = np.concatenate([unseen.y[s] for s in ("train", "val", "test")])
    win = data.window

    models, results, train_info = {}, {}, {}
    for name, beta in (("physics", a.beta), ("no physics", 0.0)):
        cfg = ReconTrainConfig(beta=beta, epochs=a.epochs, seed=a.seed,
                               net=NetConfig(filters=a.filters, depth=a.depth))
        progress(f"training '{name}' (beta {beta}) on {len(data.x['train'])} windows")
        cb = budget_callback(a.budget_min * 60)
        model, hist, wall = fit(cfg, data, extra_callbacks=[cb],
                                log=lambda s, name=name: progress(f"{name}: {s}"))
        models[name] = (model, cfg)
        train_info[name] = {"epochs": len(hist["loss"]), "wall": wall, "budget": cb.hit,
                            "params": model.count_params(),
                            "epoch_s": float(np.median(cb.epoch_s[1:] or cb.epoch_s))}
        q = cfg.net.quantile_levels
        results[name] = {
            "held-out cells": evaluate(data.y["test"][..., 0],
                                       predict(model, data.x["test"], 3), win, q),
            f"unseen drug ({UNSEEN_DRUG})": evaluate(y_unseen[..., 0],
                                                     predict(model, x_unseen, 3), win, q)}

    # ---- report ----
    print("iAP reconstruction from eAPs (cardiotwin.reconstruct) vs the study (PIA-UNET)")
    print(f"host: {cpu_model()}, load average {loadavg()}")
    t = m_train["totals"]
    print(f"\ndata: train/held-out store {t['cells']} cells at +-40 % -> {t['cells_kept']} "
          f"ok cells, {t['windows']} windows (status {t['status_counts']}); generated/"
          f"checked in {w_train:.0f} s on {a.workers} Ray workers")
    td = m_drug["totals"]
    print(f"      unseen-drug store ({UNSEEN_DRUG}, every cell): {td['cells']} cells -> "
          f"{td['cells_kept']} ok, {td['windows']} windows ({w_drug:.0f} s)")
    print(f"      split by cell: {data.info['split_windows']} windows; window 1024 samples at "
          f"{win.sample_interval_ms:g} ms, 200 ms before the eAP spike")
    print("\ntraining (same network and seed; quantile heads 0.05/0.5/0.95):")
    rows = [[n, f"{ti['params']:,}", str(ti['epochs']), f"{ti['epoch_s']:.1f}",
             f"{ti['wall']:.0f}", "budget" if ti["budget"] else "early stop/max epochs"]
            for n, ti in train_info.items()]
    print(table(["model", "parameters", "epochs", "s/epoch", "wall s", "ended by"], rows))
    print("\naccuracy (MAE on the normalized iAP [0.1, 1]; APD error = median over windows of "
          "|APD(pred) - APD(true)|):")
    rows = [["study (PIA-UNET, NEA/MEA data)", "", f"{STUDY['mae']:.3f}", "", "",
             f"~{STUDY['apd_err_pct']:.0f}", "", ""]]
    for name, by_set in results.items():
        for set_name, r in by_set.items():
            a90 = r["apd"]["APD90"]
            rows.append([f"{name}: {set_name}", str(r["n_windows"]), f"{r['mae']:.4f}",
                         f"{r['correlation']:.4f}", f"{a90.get('median_abs_ms', np.nan):.1f}",
                         f"{a90.get('median_abs_pct', np.nan):.2f}",
                         f"{r['apd']['APD50'].get('median_abs_pct', np.nan):.2f}",
                         f"{r.get('coverage_90', np.nan):.3f}"])
    print(table(["model: test set", "windows", "MAE", "r", "APD90 ms", "APD90 %",
                 "APD50 %", "90% cover"], rows))
    print("\nmedian |APD error| (%) at every level, held-out cells:")
    rows = [[name] + [f"{held['apd'][f'APD{x}'].get('median_abs_pct', np.nan):.2f}"
                      for x in APD_LEVELS]
            for name, held in ((n, s["held-out cells"]) for n, s in results.items())]
    print(table(["model"] + [f"APD{x}" for x in APD_LEVELS], rows))

    # ---- latency ----
    model, cfg = models["physics"]
    x1 = data.x["test"][:1]
    for _ in range(3):
        model.predict(x1, verbose=0)
    ts = []
    for _ in range(a.latency_calls):
        t0 = time.perf_counter()
        model.predict(x1, verbose=0)
        ts.append(time.perf_counter() - t0)
    xb = np.repeat(data.x["test"][:1], 64, axis=0)
    model.predict(xb, batch_size=64, verbose=0)
    t0 = time.perf_counter()
    model.predict(xb, batch_size=64, verbose=0)
    tb = (time.perf_counter() - t0) / 64
    ts_direct = []
    for _ in range(a.latency_calls):
        t0 = time.perf_counter()
        model(x1, training=False)
        ts_direct.append(time.perf_counter() - t0)
    print("\ninference time per window (CPU, TensorFlow backend):")
    print(table(["call", "per window"],
                [["model.predict, 1 window (p50)", f"{np.median(ts) * 1e3:.1f} ms"],
                 ["model(x) direct, 1 window (p50)", f"{np.median(ts_direct) * 1e3:.1f} ms"],
                 ["model.predict, batch of 64", f"{tb * 1e3:.2f} ms"]]))

    # ---- figures ----
    test = results["physics"]["held-out cells"]
    pred = predict(model, data.x["test"][:6], 3)
    (figs / "overlays_heldout.png").write_bytes(plot_overlays(
        data.x["test"][:6, :, 0], data.y["test"][:6, :, 0], pred, win.sample_interval_ms,
        title="held-out cells: true iAP, median and 90 % band (physics)"))
    pred_u = predict(model, x_unseen[:6], 3)
    (figs / f"overlays_{UNSEEN_DRUG}.png").write_bytes(plot_overlays(
        x_unseen[:6, :, 0], y_unseen[:6, :, 0], pred_u, win.sample_interval_ms,
        title=f"unseen drug ({UNSEEN_DRUG})"))
    errs = {f"{n}: {s}": r["per_window"]["abs_pct"] for n, by in results.items()
            for s, r in by.items()}
    (figs / "apd_errors.png").write_bytes(plot_apd_errors(errs, "|APD error| (%)"))
    print(f"\nfigures: {figs}/overlays_heldout.png, overlays_{UNSEEN_DRUG}.png, apd_errors.png")
    print(f"held-out metrics (physics) as JSON keys: {sorted(without_arrays(test))}")
    print(f"total wall time {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
