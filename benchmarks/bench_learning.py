#!/usr/bin/env python
"""Benchmark of learning (cardiotwin.learn): the source study's dataset-size experiment at +-20%
as far as this CPU machine allows, training throughput, and inference latency for one trace.

1. store: one +-20% population store (``generate_population``: uniform multipliers
   U(0.8, 1.2), --seed, I_total decimated to 1 kHz = 4950 samples on protocol_a,
   keep_rejected False, so only status "ok" cells are stored and used, shards of 1000), made
   once under --cache-dir and reused when it is already complete there. Split 70:10:20 by
   cell_id (``cardiotwin.learn.split_of``). The default 23,000 cells give ~15,000 ok cells,
   ~10,700 of them in the training split (at +-20% about 2/3 of the cells are ok).
2. dataset-size experiment: for each preset (study_fc: 26 x 1024 tanh, Adam 1e-4, batch 1% of
   the training cells, early stopping with patience 20; ridge_mlp) and each training size N
   (--sizes), train on the first N training cells (by cell_id, so the sizes are nested), with
   the validation split and the test split of the full store fixed; the input normalization is
   refitted on the N cells, as training does. Median MAE over the 52 parameters on the test
   split, on two scales:
     unit:        |predicted - true| on [0, 1] over the sampling range (the scale the network
                  is trained on): unit = (multiplier - 0.8) / 0.4;
     multiplier:  |predicted - true multiplier| = unit x 0.4 at +-20%.
   The trivial predictor (the training cells' mean for every cell) is given on both scales; on
   uniform multipliers it is ~range/4: 0.25 unit, 0.10 multiplier. The source study reports
   0.041 / 0.038 / 0.020 for 1k / 10k / 200k training cells.
   Training stops at the first of: early stopping (patience of the preset), --max-epochs, or
   the per-run wall-time budget (--budget-min; checked at the end of each epoch: training stops
   when the next epoch would end past the budget). The best validation epoch's weights are
   restored in every case. The table says which of the three ended each run.
3. throughput: training samples/s = N / (epoch wall time - validation pass), median over the
   epochs after the first (the first includes graph tracing); also N x epochs / fit wall time
   (validation included, as in the artifact's metadata).
4. latency: each preset's smallest-N model is written as a model artifact by the writer
   ``train_model`` uses (``write_model_artifact``: test evaluation, metadata, error table,
   recovery figure), loaded with ``load_estimator``, and ``ParameterEstimator.predict`` is timed
   on one trace: a test cell simulated at the protocol's 10 kHz (as recorded; predict averages
   it to the store's 1 kHz) and the stored 1 kHz row; --latency-warmup calls, then
   --latency-calls timed calls (p50, p99, mean).

    python benchmarks/bench_learning.py --quick    # check that it runs (~4 min)
    python benchmarks/bench_learning.py            # 1k, 10k: ~25 min (+4 min: the store, once)
    python benchmarks/bench_learning.py --store-cells 45000 --sizes 1000 10000 20000

Run on an otherwise idle machine (the load average is printed). Artifacts go under
--cache-dir/models (overwritten by the next run).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _report import cpu_model, loadavg, table, timing_callback

STUDY_MAE = {1000: 0.041, 10000: 0.038, 200000: 0.020}  # source study, +-20%, median MAE
PRESET_NAMES = ("study_fc", "ridge_mlp")


def progress(msg: str) -> None:
    """Per-epoch and status lines: stderr, so stdout holds only the report."""
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# 1. the store

def get_store(args):
    """(opened store, dict describing how it was obtained)."""
    from cardiotwin.population import generate_population
    from cardiotwin.population.config import GenerationConfig
    from cardiotwin.population.store import open_store

    if args.store:
        return open_store(args.store), {"how": "given (--store)"}
    out = Path(args.cache_dir) / (f"pop_pm{round(args.spread * 100)}_seed{args.seed}_"
                                  f"n{args.store_cells}_1000hz")
    cfg = GenerationConfig(n_cells=args.store_cells, spread=args.spread, seed=args.seed,
                           protocol="protocol_a", decimate_to_hz=1000.0, keep_rejected=False,
                           shard_size=1000, n_workers=args.workers, out_dir=out)
    chash = cfg.config_hash(cfg.load_protocol().protocol_hash)
    try:
        store = open_store(out)
        if store.manifest.get("config_hash") == chash:
            return store, {"how": "reused (complete, same config hash)"}
    except (ValueError, OSError):
        pass
    progress(f"generating {args.store_cells} cells into {out} (resumes if partial)")
    t0 = time.perf_counter()
    store = generate_population(cfg, progress=False, echo=progress)
    wall = time.perf_counter() - t0
    return store, {"how": f"generated now in {wall:.0f} s (this run simulated "
                          f"{store.manifest['runs'][-1]['cells_simulated']} cells)"}


# ---------------------------------------------------------------------------------------------
# 2. training

def subsample(data, n: int):
    """The dataset with only its first ``n`` training cells (by cell_id)."""
    from cardiotwin.learn.dataset import SPLITS, Dataset

    def cut(d):
        return {s: (v[:n] if s == "train" else v) for s, v in d.items()}

    out = Dataset(cut(data.i_total), cut(data.multipliers), cut(data.cell_ids), dict(data.info))
    out.info["split_sizes"] = {s: len(out.cell_ids[s]) for s in SPLITS}
    return out




def run_one(name: str, n: int, data, args) -> dict:
    from cardiotwin.learn.config import preset
    from cardiotwin.learn.train import fit_network, prepare, write_model_artifact

    cfg = preset(name, input_pool=args.input_pool, epochs=args.max_epochs, seed=args.train_seed)
    prep = prepare(subsample(data, n))
    n_train = len(prep.x["train"])
    timing = timing_callback(args.budget_min * 60.0)
    progress(f"{name}: {n_train} training cells, batch {cfg.batch_size_for(n_train)}, "
             f"{prep.x['train'].shape[1]} inputs; budget {args.budget_min:g} min, "
             f"max {cfg.epochs} epochs")
    t0 = time.perf_counter()
    model, history, fit_wall = fit_network(cfg, prep, log=progress, extra_callbacks=[timing],
                                           verbose=True)
    total_wall = time.perf_counter() - t0
    n_epochs = len(history["loss"])
    best = int(np.argmin(history["val_loss"])) + 1
    if timing.hit_budget:
        stop = "time budget"
    elif n_epochs >= cfg.epochs:
        stop = "epoch cap"
    else:
        stop = f"early stop (patience {cfg.patience})"
    out_dir = Path(args.cache_dir) / "models" / f"{name}_n{n_train}"
    meta = write_model_artifact(out_dir, model, prep, cfg, history, fit_wall, overwrite=True,
                                log=progress)
    tm = meta["test_metrics"]
    m_train = prep.data.multipliers["train"].astype(np.float64)
    m_test = prep.data.multipliers["test"].astype(np.float64)
    trivial_mult = float(np.median(np.mean(np.abs(m_test - m_train.mean(axis=0)), axis=0)))
    train_rate = [n_train / (e - v)
                  for e, v in zip(timing.epoch_s, timing.val_s, strict=True) if e > v]
    del model
    import keras

    keras.backend.clear_session()
    return {"preset": name, "n": n_train, "batch": cfg.batch_size_for(n_train),
            "epochs": n_epochs, "best": best, "stop": stop, "fit_s": fit_wall,
            "total_s": total_wall, "n_test": tm["n_test"],
            "mae_unit": tm["median_mae_unit"], "mae_mult": tm["median_mae_pct_baseline"] / 100,
            "trivial_unit": tm["trivial"]["median_mae_unit"], "trivial_mult": trivial_mult,
            "r2": tm["median_r2"], "n_ident": tm["n_identifiable"],
            "train_rate": float(np.median(train_rate[1:] or train_rate)),
            "overall_rate": n_train * n_epochs / fit_wall, "first_epoch_s": timing.epoch_s[0],
            "epoch_s": float(np.median(timing.epoch_s[1:] or timing.epoch_s)),
            "artifact": out_dir, "load": loadavg()}


# ---------------------------------------------------------------------------------------------
# 4. latency

def stored_row(store, cell_id: int) -> np.ndarray:
    """The stored I_total row of one cell."""
    import pyarrow.dataset as pads

    from cardiotwin.population.store import list_to_numpy

    for b in store.iter_batches(["I_total"], 16, pads.field("cell_id") == int(cell_id)):
        return list_to_numpy(b.column("I_total"))[0]
    raise KeyError(cell_id)


def latency(path: Path, data, store, args) -> dict:
    from cardiotwin.learn import load_estimator
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.simulate import simulate_voltage_clamp

    t0 = time.perf_counter()
    est = load_estimator(path)
    load_s = time.perf_counter() - t0
    m = data.multipliers["test"][:1].astype(np.float64)
    sim = simulate_voltage_clamp(est.protocol, inputs_from_multipliers(m))
    if sim.protocol_hash != est.protocol_hash:
        raise RuntimeError("simulated trace's protocol differs from the model's")
    traces = {"protocol": sim.i_total[0], "stored": stored_row(store, data.cell_ids["test"][0])}
    out = {"load_s": load_s, "n_protocol": len(traces["protocol"]),
           "n_stored": len(traces["stored"])}
    preds = {}
    for at, tr in traces.items():
        for _ in range(args.latency_warmup):
            est.predict(tr, est.protocol_hash, at=at)
        ts = np.empty(args.latency_calls)
        for i in range(args.latency_calls):
            t = time.perf_counter()
            preds[at] = est.predict(tr, est.protocol_hash, at=at)
            ts[i] = time.perf_counter() - t
        out[at] = {"p50": np.percentile(ts, 50), "p99": np.percentile(ts, 99),
                   "mean": ts.mean()}
    out["max_diff"] = float(np.max(np.abs(preds["protocol"] - preds["stored"])))
    return out


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                    help="training cells per run (default 1000 10000)")
    ap.add_argument("--presets", nargs="+", default=list(PRESET_NAMES),
                    choices=list(PRESET_NAMES), help="default: study_fc ridge_mlp")
    ap.add_argument("--max-epochs", type=int, default=500, help="epoch cap (default 500)")
    ap.add_argument("--budget-min", type=float, default=10.0,
                    help="training wall-time budget per run, minutes (default 10)")
    ap.add_argument("--input-pool", type=int, default=1,
                    help="stored 1 kHz samples averaged per network input (default 1: 4950 "
                         "inputs)")
    ap.add_argument("--store-cells", type=int, default=23000,
                    help="cells of the generated store (default 23000: ~10,700 ok training "
                         "cells)")
    ap.add_argument("--spread", type=float, default=0.2, help="default 0.2 (+-20%%)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of the store")
    ap.add_argument("--train-seed", type=int, default=0, help="weights init and shuffling")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors for generation")
    ap.add_argument("--cache-dir", default="/tmp/bench-learning",
                    help="store and model artifacts (default /tmp/bench-learning)")
    ap.add_argument("--store", default=None,
                    help="use this existing store instead of generating one")
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--latency-warmup", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="check that the script runs: 2000-cell store, sizes 200 600, "
                         "3 epochs, 0.5 min budget, 50 latency calls")
    a = ap.parse_args(argv)
    if a.quick:
        a.store_cells, a.sizes, a.max_epochs, a.budget_min = 2000, [200, 600], 3, 0.5
        a.latency_calls, a.latency_warmup = 50, 5
    a.sizes = sorted(set(a.sizes))
    if min(a.sizes) < 2 or a.max_epochs < 1 or a.budget_min <= 0 or a.latency_calls < 1:
        ap.error("--sizes >= 2, --max-epochs >= 1, --budget-min > 0, --latency-calls >= 1")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.pop("RAY_ADDRESS", None)

    import keras

    import cardiotwin
    from cardiotwin.learn import load_dataset
    from cardiotwin.learn.config import PRESETS

    print("cardiotwin learning benchmark")
    print(f"  host: {cpu_model()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
          f"numpy {np.__version__}, keras {keras.__version__} ({keras.backend.backend()} "
          f"backend), cardiotwin {cardiotwin.__version__}")
    print(f"  load average at start: {loadavg()}")

    # 1. store and data
    t0 = time.perf_counter()
    store, how = get_store(args)
    m = store.manifest
    print()
    print(f"1. Store: {store.path}: {how['how']}")
    print(f"  {m['totals']['n_cells']} cells, spread +-{m['sampling']['spread']:g} "
          f"({m['sampling']['sampler']}, seed {m['sampling']['seed']}), statuses "
          f"{m['totals']['status_counts']}; {m['totals']['rows']} rows stored "
          f"(keep_rejected {m['config'].get('keep_rejected')}); I_total "
          f"{m['i_total']['n_samples']} samples every {m['i_total']['sample_interval_ms']:g} ms "
          f"on {m['run'].get('protocol_source', 'the protocol')}")
    print(f"  generation (manifest): {m.get('wall_s', float('nan')):.0f} s, "
          f"{m.get('cells_per_s') or float('nan'):.1f} cells/s; load average now {loadavg()}")
    t0 = time.perf_counter()
    data = load_dataset(store, pool_k=args.input_pool, statuses=("ok",))
    sz = data.sizes()
    print(f"  status ok cells, split 70:10:20 by cell_id: {sz['train']} train / {sz['val']} "
          f"validation / {sz['test']} test (read in {time.perf_counter() - t0:.1f} s, "
          f"{data.i_total['train'].shape[1]} network inputs at input_pool {args.input_pool})")
    sizes = [n for n in args.sizes if n <= sz["train"]]
    if len(sizes) < len(args.sizes):
        sizes.append(sz["train"])
        print(f"  note: sizes above the {sz['train']} training cells replaced by all of them "
              f"(raise --store-cells)")
    sizes = sorted(set(sizes))
    lo, hi = m["sampling"]["range"]

    # 2./3. training runs
    print()
    print(f"2. Dataset-size experiment: train on the first N training cells; validation "
          f"({sz['val']}) and test ({sz['test']}) splits fixed")
    for name in args.presets:
        p = PRESETS[name]
        print(f"  {name}: {p}")
    print(f"  stops at the first of: early stopping, --max-epochs {args.max_epochs}, budget "
          f"{args.budget_min:g} min of training per run (best validation weights restored)")
    runs = []
    for name in args.presets:
        for n in sizes:
            runs.append(run_one(name, n, data, args))
            r = runs[-1]
            progress(f"{name} N={r['n']}: median MAE {r['mae_unit']:.4f} unit, "
                     f"{r['epochs']} epochs ({r['stop']}); load {r['load']}")
    rows = [[r["preset"], str(r["n"]), str(r["epochs"]), str(r["best"]), r["stop"],
             f"{r['total_s'] / 60:.1f}", f"{r['mae_unit']:.4f}", f"{r['trivial_unit']:.4f}",
             f"{r['mae_mult']:.4f}", f"{r['trivial_mult']:.4f}", f"{r['r2']:.2f}",
             str(r["n_ident"])] for r in runs]
    print(table(["preset", "N train", "epochs", "best", "ended by", "train min",
                 "MAE unit", "trivial unit", "MAE mult", "trivial mult", "median R2",
                 "R2>=0.5"], rows))
    print(f"  median MAE over the 52 parameters on the {runs[0]['n_test']} test cells. unit: "
          f"[0, 1] over the sampling range [{lo:g}, {hi:g}] (network scale); mult: "
          f"|predicted - true multiplier| = unit x {hi - lo:g}. trivial: the training cells' "
          f"mean for every cell. R2>=0.5: parameters counted identifiable (of 52). train min: "
          f"the whole training call (ridge_mlp: with its closed-form setup); best: the epoch "
          f"whose weights are kept.")
    print("  source study (+-20%): " + " / ".join(f"{v:.3f}" for v in STUDY_MAE.values())
          + " for " + " / ".join(f"{k // 1000}k" for k in STUDY_MAE)
          + " training cells (reads as the mult scale here: trivial ~0.10 there, ~0.25 unit)")

    print()
    print("3. Training throughput on CPU (samples/s = N / (epoch wall - validation pass), "
          "median of the epochs after the first; overall = N x epochs / fit wall, validation "
          "included)")
    rows = [[r["preset"], str(r["n"]), str(r["batch"]), f"{r['first_epoch_s']:.1f}",
             f"{r['epoch_s']:.2f}", f"{r['train_rate']:,.0f}", f"{r['overall_rate']:,.0f}",
             f"{r['total_s'] - r['fit_s']:.1f}", r["load"]] for r in runs]
    print(table(["preset", "N train", "batch", "1st epoch s", "epoch s", "train samples/s",
                 "overall samples/s", "setup s", "loadavg after"], rows))
    print("  setup s: before fit (ridge_mlp: covariance, ridge and PCA in closed form; "
          "study_fc: building the network)")

    # 4. latency
    print()
    print(f"4. Inference latency, one trace through ParameterEstimator.predict "
          f"({args.latency_warmup} warm-up calls, then {args.latency_calls} timed)")
    rows = []
    for name in args.presets:
        r = min((r for r in runs if r["preset"] == name), key=lambda r: r["n"])
        lat = latency(r["artifact"], data, store, args)
        for at, what in (("protocol", f"{lat['n_protocol']} samples at the protocol's rate"),
                         ("stored", f"{lat['n_stored']} samples as stored")):
            s = lat[at]
            rows.append([name, what, f"{lat['load_s']:.1f}", f"{s['p50'] * 1e3:.2f}",
                         f"{s['p99'] * 1e3:.2f}", f"{s['mean'] * 1e3:.2f}"])
        progress(f"{name}: protocol-rate vs stored-row predictions differ by at most "
                 f"{lat['max_diff']:.2e}")
        rows[-1].append(f"{lat['max_diff']:.1e}")
        rows[-2].append("")
    print(table(["preset", "trace", "load s", "p50 ms", "p99 ms", "mean ms",
                 "max |diff|"], rows))
    print(f"  artifacts: {Path(args.cache_dir) / 'models'} (written by write_model_artifact, "
          "the writer train_model uses); max |diff|: largest difference in multiplier between "
          "the predictions from the simulated 10 kHz trace and from the stored 1 kHz row")
    print()
    print(f"load average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
