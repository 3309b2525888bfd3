#!/usr/bin/env python
"""Benchmark of the amortized posterior (issue 17): the source study's dataset-size experiment
with the posterior_flow preset, its calibration, the twin's AP prediction on held-out synthetic
cells, and latency.

Data: one or more population stores of one protocol (--store, repeatable; incomplete stores
are read as far as their shards are complete, which is said). Without --store a small +-20%
protocol_a store is generated under --cache-dir (10 kHz, every status kept) and reused.
Only status "ok" cells are trained on; the split is 70:10:20 by cell_id (learn.split_of).

1. sizes: for each noise level (--noise, pA/pF per 0.1 ms sample) and training size N
   (--sizes): ``preset("posterior_flow", input_noise_pA_per_pF=noise)`` trained on the first N
   training cells by cell_id, with the validation cells among the same id range (so both grow
   with N, as if the store had been that large), and scored on a FIXED test set: the first
   --test-cells ok test cells of the store. The artifact is written by the trainer's own
   writer (``write_model_artifact``: recalibration on the validation cells, posterior-mean
   metrics and the calibration report on the test set, with the model's recording noise added
   to the test inputs, seeded, as ``evaluate_posterior`` does). ridge_mlp with multi-rate input
   (--no-ridge skips it) is trained on the same cells and scored on the same noisy test inputs.
   Median MAE over the 52 parameters on the unit scale ([0, 1] over the sampling range) and
   on the multiplier scale (unit x (high - low) = x 0.4 at +-20%), against the study's
   0.041 / 0.038 / 0.020 (1k / 10k / 200k, noise-free) and the targets <= 0.030 (1k) and
   <= 0.020 (10k). Throughput: N x epochs / fit wall (validation included) and the median
   training samples/s of the epochs after the first.
2. calibration: the largest flow of each noise level on the fixed test set
   (``calibration_report``, as the artifact's evaluation/calibration.json holds it): coverage
   of the 50/90% intervals, SBC chi2 / p / max deviation, contraction per parameter (52 rows,
   most contracted first), parameters identifiable (contraction >= 0.5).
3. ap: the twin's AP prediction on --ap-cells held-out cells (test split, any stored status
   but unstable, first by cell_id): the posterior of each stored I_total (1,000 samples,
   ``at="stored"``), its posterior mean and first --ap-samples samples simulated free-running
   for the store's classification run (manifest: duration and temperature, 0.1 ms recording,
   the model's initial state), analysed by ``features.analyze_trace`` and summarized by
   ``twin.inference.ap_prediction``, many cells per simulator call. Compared with the store's
   truth: status right when (p_beating >= 0.5) equals "truth beats" (status ok and ``beating``;
   target >= 90%); truth cycle length and APD90 inside the 90% predictive band [q05, q95]
   (target >= 85% of the beating cells). The stored trace is used as is (noise-free).
4. latency: on this machine, after warm-up: the posterior of one trace (10 kHz, as recorded)
   with 1,000 samples and its summaries (target p99 < 100 ms); the full twin (``make_twin``:
   posterior, voltage-clamp fit and the AP band of 64 posterior samples) for each
   --twin-ap-ms (the CLI's default 10,000 ms and shorter; target p99 < 1.5 s).

    python benchmarks/bench_posterior.py --quick        # check that it runs (~3 min idle)
    cardiotwin generate --n-cells 110000 --range 0.2 --out STORE   # the figures' store
    python benchmarks/bench_posterior.py --store STORE
    python benchmarks/bench_posterior.py --store S --parts ap,latency --reuse

Results go to --out as JSON, rewritten after every run, so a long run keeps what it has done.
Artifacts go under --cache-dir/models; --reuse takes an artifact there instead of training
when its configuration and data (store manifests, split sizes) are the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _report import cpu_model, loadavg, table, timing_callback

STUDY_MAE = {1000: 0.041, 10000: 0.038, 200000: 0.020}  # source study, +-20%, multiplier scale
TARGET_MAE = {1000: 0.030, 10000: 0.020}                 # issue 17, multiplier scale
PARTS = ("sizes", "calibration", "ap", "latency")
QUICK = dict(store_cells=1500, sizes="400", max_epochs=3, test_cells=200, ap_cells=8,
             ap_samples=8, ap_batch=8, latency_calls=50, latency_warmup=5, twin_calls=3,
             twin_warmup=1, twin_ap_ms="4000")  # --quick: a smoke run (~2.5 min)
FLOW, RIDGE = "posterior_flow", "ridge_mlp"
TEST_NOISE_KEY = 13  # evaluate_posterior's seed offset of the test split's noise


def progress(msg: str) -> None:
    """Status lines: stderr, so stdout holds only the report."""
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Results:
    """The results dict, written to ``path`` (strict JSON, atomically) after every change."""

    def __init__(self, path: Path):
        self.path, self.data = path, {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        from cardiotwin.storage.atomic import jsonable, write_json_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, jsonable(self.data))


# ---------------------------------------------------------------------------------------------
# stores and the cell plan

def get_stores(args) -> tuple[list, list[dict]]:
    """(opened stores, one description each)."""
    from cardiotwin.population.store import open_store

    if args.store:
        stores = [open_store(p, allow_incomplete=True) for p in args.store]
        return stores, [describe_store(s, "given (--store)") for s in stores]
    from cardiotwin.population import generate_population
    from cardiotwin.population.config import GenerationConfig

    out = Path(args.cache_dir) / f"pop_pm20_seed{args.seed}_n{args.store_cells}_all"
    cfg = GenerationConfig(n_cells=args.store_cells, spread=0.2, seed=args.seed,
                           protocol="protocol_a", keep_rejected=True, shard_size=500,
                           n_workers=args.workers, out_dir=out)
    chash = cfg.config_hash(cfg.load_protocol().protocol_hash)
    try:
        store = open_store(out)
        if store.manifest.get("config_hash") == chash:
            return [store], [describe_store(store, "generated earlier (same config hash)")]
    except (ValueError, OSError):
        pass
    progress(f"generating {args.store_cells} cells into {out} (resumes if partial)")
    os.environ.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    store = generate_population(cfg, progress=False, echo=progress)
    return [store], [describe_store(store, f"generated now in {time.perf_counter() - t0:.0f} s")]


def describe_store(store, how: str) -> dict:
    m = store.manifest
    sim = m.get("simulation", {}).get("ap_classification", {})
    return {"path": str(store.path), "how": how, "status": m.get("status"),
            "shards_read": len(store.files), "n_shards": m.get("n_shards"),
            "spread": m["sampling"]["spread"], "seed": m["sampling"]["seed"],
            "range": m["sampling"]["range"], "status_counts": m["totals"]["status_counts"],
            "keep_rejected": m["config"].get("keep_rejected"),
            "i_total_n": m["i_total"]["n_samples"],
            "i_total_dt_ms": m["i_total"]["sample_interval_ms"],
            "ap_duration_ms": sim.get("duration_ms") or m["config"].get("ap_duration_ms"),
            "temperature_K": sim.get("temperature_K") or m["config"].get("temperature_K")}


def read_index(stores) -> tuple[np.ndarray, np.ndarray]:
    """(cell_id, status) of every stored row, sorted by cell_id."""
    ids, status = [], []
    for st in stores:
        for b in st.iter_batches(["cell_id", "status"], 65536):
            ids.append(b.column("cell_id").to_numpy())
            status.append(np.asarray(b.column("status").to_pylist(), dtype=object))
    i, s = np.concatenate(ids), np.concatenate(status).astype(str)
    order = np.argsort(i, kind="stable")
    return i[order], s[order]


def read_cells(stores, ids, columns: list[str]) -> dict[str, np.ndarray]:
    """``columns`` of the cells ``ids`` (sorted by cell_id); list columns as 2-D arrays."""
    import pyarrow.dataset as pads

    from cardiotwin.population.store import list_to_numpy

    want = [int(i) for i in ids]
    parts: dict[str, list] = {c: [] for c in ["cell_id", *columns]}
    for st in stores:
        for b in st.iter_batches(["cell_id", *columns], 64, pads.field("cell_id").isin(want)):
            for c in parts:
                col = b.column(c)
                parts[c].append(list_to_numpy(col) if hasattr(col.type, "list_size")
                                else col.to_numpy(zero_copy_only=False))
    out = {c: np.concatenate(v) for c, v in parts.items()}
    order = np.argsort(out["cell_id"], kind="stable")
    return {c: v[order] for c, v in out.items()}


@dataclasses.dataclass
class Plan:
    sizes: list[int]         # training cells per run (capped at what the stores hold)
    test_ids: np.ndarray     # the fixed test set (ok cells)
    max_cells: int           # cell_id bound of everything read
    n_train_ok: int
    notes: list[str]


def make_plan(ids: np.ndarray, status: np.ndarray, args) -> Plan:
    from cardiotwin.learn.dataset import split_of

    ok = ids[status == "ok"]
    sp = split_of(ok)
    train, test = ok[sp == 0], ok[sp == 2]
    notes = []
    if len(train) < 2 or len(test) < 1:
        raise ValueError(f"stores: {len(train)} ok training and {len(test)} ok test cells; "
                         "expected at least 2 and 1 (generate a larger store)")
    test_ids = test[:args.test_cells]
    if len(test_ids) < args.test_cells:
        notes.append(f"fixed test set: {len(test_ids)} ok test cells (fewer than "
                     f"--test-cells {args.test_cells})")
    sizes = sorted({min(n, len(train)) for n in args.sizes})
    if any(n > len(train) for n in args.sizes):
        notes.append(f"sizes above the stores' {len(train)} ok training cells replaced by all "
                     "of them (give a larger store, or more --store)")
    bound = max(int(train[max(sizes) - 1]), int(test_ids[-1])) + 1
    return Plan(sizes, test_ids, bound, len(train), notes)


def subset(data, n_train: int, test_ids: np.ndarray):
    """The dataset with its first ``n_train`` training cells (by cell_id), the validation
    cells up to the last of them, and the test cells ``test_ids``."""
    from cardiotwin.learn.dataset import SPLITS, Dataset

    last = data.cell_ids["train"][n_train - 1]
    keep = {"train": np.arange(len(data.cell_ids["train"])) < n_train,
            "val": data.cell_ids["val"] <= last,
            "test": np.isin(data.cell_ids["test"], test_ids)}
    if not keep["val"].any():
        keep["val"][:1] = True
    sub = Dataset(*({s: d[s][keep[s]] for s in SPLITS}
                    for d in (data.i_total, data.multipliers, data.cell_ids)), dict(data.info))
    sub.info["split_sizes"] = sub.sizes()
    return sub


# ---------------------------------------------------------------------------------------------
# training



def make_config(name: str, noise: float, args):
    from cardiotwin.learn.config import preset

    over: dict[str, Any] = {"input_noise_pA_per_pF": noise, "seed": args.train_seed}
    if name == RIDGE:
        over["input"] = "multirate"
    if args.max_epochs:
        over["epochs"] = args.max_epochs
    return preset(name, **over)


def fit(cfg, prep, args) -> dict:
    """Train ``cfg`` on ``prep``: (model, run record)."""
    from cardiotwin.learn.train import fit_network

    timing = timing_callback(args.budget_min * 60.0 if args.budget_min else None)
    n = len(prep.x["train"])
    progress(f"{cfg.architecture}: {n} training / {len(prep.x['val'])} validation cells, "
             f"{prep.x['train'].shape[1]} inputs, noise {cfg.input_noise_pA_per_pF:g} pA/pF, "
             f"batch {cfg.batch_size_for(n)}, max {cfg.epochs} epochs")
    model, history, wall = fit_network(cfg, prep, log=progress, extra_callbacks=[timing],
                                       verbose=args.verbose)
    n_epochs = len(history["loss"])
    stop = ("time budget" if timing.hit_budget else "epoch cap" if n_epochs >= cfg.epochs
            else f"early stop (patience {cfg.patience})")
    rates = [n / (e - v) for e, v in zip(timing.epoch_s, timing.val_s, strict=True) if e > v]
    return model, {"n_train": n, "n_val": len(prep.x["val"]), "epochs": n_epochs,
                   "best_epoch": int(np.argmin(history["val_loss"])) + 1, "stop": stop,
                   "fit_s": wall, "samples_per_s": n * n_epochs / wall if wall > 0 else None,
                   "train_samples_per_s": float(np.median(rates[1:] or rates)) if rates
                   else None, "history": history}


def artifact_dir(args, noise: float, n: int) -> Path:
    return Path(args.cache_dir) / "models" / f"{FLOW}_noise{noise:g}_n{n}_seed{args.train_seed}"


def reusable(path: Path, cfg, prep) -> dict | None:
    """The metadata of the artifact at ``path`` when it was trained with ``cfg`` on the data
    of ``prep`` (same manifests and split sizes), else None."""
    import json

    from cardiotwin.storage.atomic import jsonable

    try:
        meta = json.loads((path / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    d = prep.data.info
    same = (meta.get("config") == jsonable(cfg.model_dump(mode="json"))
            and meta.get("data", {}).get("split_sizes") == d["split_sizes"]
            and meta.get("data", {}).get("manifest_hashes") == d["manifest_hashes"])
    return meta if same else None


def noisy_test(prep, seed: int):
    """``prep`` with the test inputs evaluate_posterior scores: its seeded recording noise
    added (unchanged without noise)."""
    if prep.noise_sd is None:
        return prep
    x = prep.x["test"]
    rng = np.random.default_rng(seed + TEST_NOISE_KEY)
    x = (x + rng.standard_normal(x.shape, np.float32) * prep.noise_sd).astype(np.float32)
    return dataclasses.replace(prep, x={**prep.x, "test": x})


def run_flow(prep, noise: float, args) -> dict:
    """Train (or reuse) the flow on ``prep`` and write its artifact; the run record."""
    import keras

    from cardiotwin.learn.train import write_model_artifact

    cfg = make_config(FLOW, noise, args)
    out = artifact_dir(args, noise, len(prep.x["train"]))
    t0 = time.perf_counter()
    meta = reusable(out, cfg, prep) if args.reuse else None
    if meta is not None:
        tr = meta["training"]
        rec = {"n_train": len(prep.x["train"]), "n_val": len(prep.x["val"]),
               "epochs": tr["epochs"], "best_epoch": tr["best_epoch"], "stop": "reused",
               "fit_s": tr["wall_s"], "samples_per_s": tr["samples_per_s"],
               "train_samples_per_s": None}
        progress(f"reusing {out}")
    else:
        model, rec = fit(cfg, prep, args)
        meta = write_model_artifact(out, model, prep, cfg, rec.pop("history"), rec["fit_s"],
                                    overwrite=True, log=progress)
        del model
        keras.backend.clear_session()
    tm, post = meta["test_metrics"], meta["posterior"]
    rec.update(preset=FLOW, noise=noise, artifact=str(out), total_s=time.perf_counter() - t0,
               n_test=tm["n_test"], mae_unit=tm["median_mae_unit"],
               trivial_unit=tm["trivial"]["median_mae_unit"], r2=tm["median_r2"],
               coverage=post["calibration"]["coverage"],
               n_identifiable=post["calibration"]["n_identifiable"], load=loadavg())
    return rec


def run_ridge(prep, noise: float, args) -> dict:
    import keras

    from cardiotwin.learn.train import evaluate_split

    cfg = make_config(RIDGE, noise, args)
    t0 = time.perf_counter()
    model, rec = fit(cfg, prep, args)
    rec.pop("history")
    tm = evaluate_split(model, noisy_test(prep, args.train_seed), "test")
    del model
    keras.backend.clear_session()
    rec.update(preset=f"{RIDGE} (multirate)", noise=noise, total_s=time.perf_counter() - t0,
               n_test=tm["n_test"], mae_unit=tm["median_mae_unit"],
               trivial_unit=tm["trivial"]["median_mae_unit"], r2=tm["median_r2"],
               coverage=None, n_identifiable=None, load=loadavg())
    return rec


# ---------------------------------------------------------------------------------------------
# 1. dataset size

def load_data(stores, plan: Plan):
    from cardiotwin.learn import load_dataset

    flow, ridge = make_config(FLOW, 0.0, _NS), make_config(RIDGE, 0.0, _NS)
    if flow.multirate_widths() != ridge.multirate_widths():
        raise ValueError("presets: posterior_flow and ridge_mlp multi-rate bins differ; the "
                         "benchmark reads the store once for both")
    t0 = time.perf_counter()
    data = load_dataset(stores, pool_k=flow.input_pool, statuses=("ok",),
                        max_cells=plan.max_cells, multirate=flow.multirate_widths())
    sz = data.sizes()
    progress(f"read {sum(sz.values())} ok cells with cell_id < {plan.max_cells} in "
             f"{time.perf_counter() - t0:.0f} s: {data.i_total['train'].shape[1]} multi-rate "
             "inputs")
    return data


_NS = argparse.Namespace(train_seed=0, max_epochs=None)  # config lookups that need no options


def part_sizes(data, plan: Plan, args, res: Results, scale: float) -> dict[float, dict]:
    """Train every (noise, size); returns the largest flow run of each noise level."""
    from cardiotwin.learn.train import prepare

    runs: list[dict] = []
    largest: dict[float, dict] = {}
    for noise in args.noise:
        for n in plan.sizes:
            prep = prepare(subset(data, n, plan.test_ids), noise)
            r = run_flow(prep, noise, args)
            runs.append(r)
            largest[noise] = r
            progress(f"flow noise {noise:g} N={r['n_train']}: median MAE "
                     f"{r['mae_unit'] * scale:.4f} (multiplier), {r['epochs']} epochs "
                     f"({r['stop']}); load {r['load']}")
            res.put("sizes", runs)
            if not args.no_ridge:
                r = run_ridge(prep, noise, args)
                runs.append(r)
                progress(f"ridge noise {noise:g} N={r['n_train']}: median MAE "
                         f"{r['mae_unit'] * scale:.4f} (multiplier)")
                res.put("sizes", runs)
    for noise in args.noise:
        rows = [[r["preset"], str(r["n_train"]), str(r["n_val"]), f"{r['mae_unit']:.4f}",
                 f"{r['mae_unit'] * scale:.4f}", _study(r["n_train"]), _target(r, scale),
                 f"{r['trivial_unit'] * scale:.4f}", f"{r['r2']:.2f}",
                 _cov(r["coverage"]), str(r["epochs"]), r["stop"],
                 f"{r['fit_s'] / 60:.1f}", f"{r['total_s'] / 60:.1f}",
                 _rate(r["samples_per_s"]), _rate(r["train_samples_per_s"])]
                for r in runs if r["noise"] == noise]
        print()
        print(f"  noise {noise:g} pA/pF (test inputs with the same seeded noise):")
        print(table(["model", "N train", "N val", "MAE unit", "MAE mult", "study", "target",
                     "trivial mult", "median R2", "cov 50/90", "epochs", "ended by",
                     "fit min", "total min", "samples/s", "train samples/s"], rows))
    print(f"  fixed test set: {len(plan.test_ids)} ok test cells (the first by cell_id); MAE: "
          f"median over the 52 parameters of the posterior mean's (flow; ridge: its "
          f"estimate's) mean absolute error; mult = unit x {scale:g}. study: the source "
          "study's figure at the nearest size (1k / 10k / 200k; noise-free). target: issue 17 "
          "(1k <= 0.030, 10k <= 0.020). trivial: the training mean for every cell. cov: test "
          "coverage of the recalibrated 50% / 90% intervals. samples/s: N x epochs / fit wall "
          "(validation included); train samples/s: median of the epochs after the first, "
          "without the validation pass. total: fit plus evaluation and artifact.")
    return largest


def _nearest(table_: dict[int, float], n: int) -> int:
    return min(table_, key=lambda k: abs(np.log(k / n)))


def _study(n: int) -> str:
    k = _nearest(STUDY_MAE, n)
    return f"{STUDY_MAE[k]:.3f} ({k // 1000}k)"


def _target(r: dict, scale: float) -> str:
    """The issue's target at this size (within a factor 2 of 1k or 10k), met or missed."""
    k = _nearest(TARGET_MAE, r["n_train"])
    if r["preset"] != FLOW or not 0.5 <= r["n_train"] / k <= 2:
        return "-"
    t = TARGET_MAE[k]
    return f"<= {t:.3f} {'met' if r['mae_unit'] * scale <= t else 'missed'}"


def _cov(c: dict | None) -> str:
    return "-" if c is None else f"{c['0.5']:.2f} / {c['0.9']:.2f}"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def largest_models(data, plan: Plan, args, noises: list[float]) -> dict[float, dict]:
    """Without the sizes part: the flow of the largest size per noise level of ``noises``
    (trained, or reused with --reuse)."""
    from cardiotwin.learn.train import prepare

    out = {}
    for noise in noises:
        out[noise] = run_flow(prepare(subset(data, max(plan.sizes), plan.test_ids), noise),
                              noise, args)
    return out


# ---------------------------------------------------------------------------------------------
# 2. calibration

def model_record(path: str) -> dict:
    """The run record parts 2-4 need of a flow artifact given by --model."""
    import json

    meta = json.loads((Path(path) / "metadata.json").read_text())
    if meta.get("config", {}).get("architecture") != "flow":
        raise ValueError(f"--model {path}: expected a posterior (flow) artifact, found "
                         f"architecture {meta.get('config', {}).get('architecture')!r}")
    return {"artifact": str(path), "noise": float(meta["config"]["input_noise_pA_per_pF"]),
            "n_train": meta["data"]["split_sizes"]["train"]}


def part_calibration(models: dict[float, dict], res: Results) -> None:
    import json

    block = {}
    for noise, r in models.items():
        path = Path(r["artifact"])
        rep = json.loads((path / "evaluation" / "calibration.json").read_text())
        meta = json.loads((path / "metadata.json").read_text())
        raw = meta["posterior"]["uncalibrated"]
        sbc = rep["sbc"]
        print()
        print(f"  noise {noise:g} pA/pF: {path.name}, N train {r['n_train']}, "
              f"{rep['n_cells']} test cells x {rep['n_samples']} posterior samples")
        print(table(["", "recalibrated", "before recalibration", "calibrated value"], [
            ["coverage 50%", f"{rep['coverage']['0.5']:.3f}", f"{raw['coverage']['0.5']:.3f}",
             "0.500"],
            ["coverage 90%", f"{rep['coverage']['0.9']:.3f}", f"{raw['coverage']['0.9']:.3f}",
             "0.900"],
            [f"SBC chi2 ({sbc['dof']} dof)", f"{sbc['chi2']:.1f}", f"{raw['sbc']['chi2']:.1f}",
             f"~{sbc['dof']}"],
            ["SBC p-value", f"{sbc['p_value']:.3g}", f"{raw['sbc']['p_value']:.3g}", "> 0.05"],
            ["SBC max deviation", f"{sbc['max_rel_deviation']:.1%}",
             f"{raw['sbc']['max_rel_deviation']:.1%}", "0%"],
            ["median contraction", f"{rep['median_contraction']:.3f}", "", ""],
            ["n identifiable", f"{rep['n_identifiable']}/52", "",
             f"contraction >= {rep['identifiable_contraction']:g}"]]))
        per = sorted(rep["per_parameter"], key=lambda p: -p["contraction"])
        print(table(["parameter", "contraction", "cov 50", "cov 90", "SBC chi2", "SBC p",
                     "identifiable"],
                    [[p["parameter"], f"{p['contraction']:.3f}", f"{p['coverage_50']:.3f}",
                      f"{p['coverage_90']:.3f}", f"{p['sbc_chi2']:.1f}",
                      f"{p['sbc_p_value']:.3g}", "yes" if p["identifiable"] else "no"]
                     for p in per]))
        block[f"{noise:g}"] = {"artifact": str(path), "n_train": r["n_train"],
                               **{k: rep[k] for k in ("n_cells", "n_samples", "coverage", "sbc",
                                                      "median_contraction", "n_identifiable")},
                               "uncalibrated": raw, "per_parameter": per}
        res.put("calibration", block)
    print("  coverage: fraction of (cell, parameter) pairs inside the central interval; SBC: "
          "ranks of the truth among each cell's samples in 10 bins, chi2 against uniform; "
          "contraction: 1 - posterior SD / prior SD (uniform prior), averaged over cells; "
          "noise as in part 1 (test inputs with the model's seeded recording noise).")


# ---------------------------------------------------------------------------------------------
# 3. AP prediction

def part_ap(stores, ids, status, model: dict, args, res: Results, info: dict) -> None:
    from cardiotwin.features import analyze_trace
    from cardiotwin.learn import load_estimator, split_of
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.population.config import AP_RECORD_INTERVAL_MS
    from cardiotwin.simulate import simulate_current_clamp
    from cardiotwin.twin.inference import POSTERIOR_SAMPLES, ap_prediction

    ap_ms, temp = float(info["ap_duration_ms"]), float(info["temperature_K"])
    sel = ids[(split_of(ids) == 2) & (status != "unstable")][:args.ap_cells]
    cells = read_cells(stores, sel, ["status", "beating", "cycle_length_ms", "apd90_ms",
                                     "I_total"])
    est = load_estimator(model["artifact"])
    s = args.ap_samples
    n = len(sel)
    truth_beats = (cells["status"] == "ok") & cells["beating"].astype(bool)
    progress(f"AP prediction: {n} test cells, 1 + {s} simulations each, {ap_ms:g} ms at "
             f"{temp:g} K, {args.ap_batch} cells per simulator call")
    rows, t_post, t_sim, t_an = [], 0.0, 0.0, 0.0
    for a in range(0, n, args.ap_batch):
        b = min(a + args.ap_batch, n)
        t0 = time.perf_counter()
        posts = est.posterior(cells["I_total"][a:b], est.protocol_hash, at="stored",
                              n_samples=POSTERIOR_SAMPLES, seed=args.train_seed)
        t1 = time.perf_counter()
        m = np.concatenate([np.vstack([p.mean, p.samples[:s]]) for p in posts])
        cc = simulate_current_clamp(ap_ms, inputs_from_multipliers(m), temperature_K=temp,
                                    record_interval_ms=AP_RECORD_INTERVAL_MS)
        t2 = time.perf_counter()
        for k, p in enumerate(posts):
            j = np.arange(k * (s + 1), (k + 1) * (s + 1))
            feats = [analyze_trace(cc.t_ms, cc.v_mV[i]) for i in j]
            bad = [bool(cc.unstable[i]) for i in j]
            pred = ap_prediction(feats[1:], bad[1:])
            i = a + k
            point = "unstable" if bad[0] else feats[0].status
            rows.append({"cell_id": int(sel[i]), "truth_status": str(cells["status"][i]),
                         "truth_beating": bool(truth_beats[i]),
                         "truth_cycle_length_ms": _f(cells["cycle_length_ms"][i]),
                         "truth_apd90_ms": _f(cells["apd90_ms"][i]),
                         "point_status": point,
                         "point_beating": bool(point == "ok" and feats[0].beating),
                         "ood": bool(p.ood.get("flag")), **pred})
        t_an += time.perf_counter() - t2
        t_post, t_sim = t_post + t1 - t0, t_sim + t2 - t1
        progress(f"  {b}/{n} cells, {t_sim:.0f} s simulating")
    pb = np.array([r["p_beating"] for r in rows], np.float64)
    right = (pb >= 0.5) == truth_beats
    point_right = np.array([r["point_beating"] for r in rows]) == truth_beats
    beat = [r for r in rows if r["truth_beating"]]

    def inside(r, k):
        band, t = r[k], r[f"truth_{k}"]
        return band is not None and t is not None and band["q05"] <= t <= band["q95"]

    def frac(xs):
        return float(np.mean(xs)) if len(xs) else float("nan")

    cl = [inside(r, "cycle_length_ms") for r in beat]
    apd = [inside(r, "apd90_ms") for r in beat]
    both = [c and d for c, d in zip(cl, apd, strict=True)]

    def rel_width(k):
        w = [(r[k]["q95"] - r[k]["q05"]) / r[f"truth_{k}"] for r in beat
             if r[k] is not None and r[f"truth_{k}"]]
        return float(np.median(w)) if w else float("nan")

    def rel_err(k):
        e = [abs(r[k]["q50"] - r[f"truth_{k}"]) / r[f"truth_{k}"] for r in beat
             if r[k] is not None and r[f"truth_{k}"]]
        return float(np.median(e)) if e else float("nan")

    summary = {"artifact": model["artifact"], "noise": model["noise"], "n_cells": n,
               "ap_samples": s, "ap_duration_ms": ap_ms, "temperature_K": temp,
               "truth_statuses": {str(k): int(v) for k, v in
                                  zip(*np.unique(cells["status"], return_counts=True),
                                      strict=True)},
               "n_truth_beating": len(beat), "status_right": frac(right),
               "status_right_point_twin": frac(point_right),
               "cycle_length_in_band": frac(cl), "apd90_in_band": frac(apd),
               "both_in_band": frac(both), "median_rel_band_width": {
                   k: rel_width(k) for k in ("cycle_length_ms", "apd90_ms")},
               "median_rel_error_q50": {k: rel_err(k) for k in ("cycle_length_ms", "apd90_ms")},
               "ood_flag_rate": frac([r["ood"] for r in rows]),
               "posterior_s": t_post, "simulation_s": t_sim, "analysis_s": t_an,
               "traces_per_s": n * (s + 1) / t_sim if t_sim > 0 else None, "cells": rows}
    res.put("ap", summary)
    tb = int(truth_beats.sum())
    print(table(["figure", "value", "target"], [
        ["status right: P(beating) >= 0.5 vs truth beats", f"{frac(right):.1%}", ">= 90%"],
        ["status right: posterior-mean twin", f"{frac(point_right):.1%}", ""],
        ["truth cycle length in [q05, q95]", f"{frac(cl):.1%}", ""],
        ["truth APD90 in [q05, q95]", f"{frac(apd):.1%}", ">= 85%"],
        ["both in their bands", f"{frac(both):.1%}", ">= 85%"],
        ["median band width / truth: cycle length", f"{rel_width('cycle_length_ms'):.1%}", ""],
        ["median band width / truth: APD90", f"{rel_width('apd90_ms'):.1%}", ""],
        ["median |q50 - truth| / truth: cycle length", f"{rel_err('cycle_length_ms'):.1%}",
         ""],
        ["median |q50 - truth| / truth: APD90", f"{rel_err('apd90_ms'):.1%}", ""],
        ["recordings flagged out of distribution", f"{summary['ood_flag_rate']:.1%}", ""]]))
    print(f"  {n} test cells ({summary['truth_statuses']}; {tb} beat: status ok with >= 2 APs), "
          f"model {Path(model['artifact']).name}; stored I_total as is (noise-free); "
          f"{s} posterior samples per cell simulated {ap_ms:g} ms free-running at {temp:g} K "
          f"(the store's classification run); bands over the beating samples (a cell whose "
          f"samples never beat has no band: counted outside). Wall: posterior {t_post:.1f} s, "
          f"simulation {t_sim:.1f} s ({summary['traces_per_s'] or 0:,.0f} traces/s, "
          f"{args.ap_batch} cells x {s + 1} per call), analysis {t_an:.1f} s.")


def _f(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# 4. latency

def stats(ts: list[float]) -> dict:
    a = np.asarray(ts)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "max": float(a.max())}


def part_latency(stores, plan: Plan, model: dict, args, res: Results) -> None:
    from cardiotwin.learn import load_estimator
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.simulate import simulate_voltage_clamp
    from cardiotwin.twin import recording_from_arrays
    from cardiotwin.twin.inference import DEFAULT_AP_SAMPLES, POSTERIOR_SAMPLES, make_twin

    t0 = time.perf_counter()
    est = load_estimator(model["artifact"])
    load_s = time.perf_counter() - t0
    m = read_cells(stores, plan.test_ids[:1], ["multipliers"])["multipliers"]
    sim = simulate_voltage_clamp(est.protocol, inputs_from_multipliers(m.astype(np.float64)))
    trace = sim.i_total[0]
    h = est.protocol_hash
    for _ in range(args.latency_warmup):
        est.posterior(trace, h, n_samples=POSTERIOR_SAMPLES)[0].summaries()
    post_s, summ_s, total_s = [], [], []
    for _ in range(args.latency_calls):
        t0 = time.perf_counter()
        p = est.posterior(trace, h, n_samples=POSTERIOR_SAMPLES)[0]
        t1 = time.perf_counter()
        p.summaries()
        t2 = time.perf_counter()
        post_s.append(t1 - t0)
        summ_s.append(t2 - t1)
        total_s.append(t2 - t0)
    out: dict[str, Any] = {"artifact": model["artifact"], "load_s": load_s,
                           "trace_samples": len(trace),
                           "posterior": {"total": stats(total_s), "sampling": stats(post_s),
                                         "summaries": stats(summ_s)}}
    res.put("latency", out)
    rows = [[f"posterior, {POSTERIOR_SAMPLES} samples + summaries", str(len(total_s)),
             *_ms(stats(total_s)), "p99 < 100 ms"],
            ["  of which sampling (posterior call)", "", *_ms(stats(post_s)), ""],
            ["  of which summaries", "", *_ms(stats(summ_s)), ""]]
    rec = recording_from_arrays(trace, sample_interval_ms=est.protocol.sample_interval_ms,
                                protocol=est.protocol, source="bench_posterior")
    out["twin"] = {}
    for ap_ms in args.twin_ap_ms:
        for _ in range(args.twin_warmup):
            make_twin(est, rec, ap_duration_ms=ap_ms)
        ts, parts = [], []
        for _ in range(args.twin_calls):
            t0 = time.perf_counter()
            tw = make_twin(est, rec, ap_duration_ms=ap_ms)
            ts.append(time.perf_counter() - t0)
            parts.append(tw.timings_s)
        breakdown = {k: float(np.median([p[k] for p in parts])) for k in parts[0]}
        breakdown["untimed"] = float(np.median([t - p["total"] for t, p in
                                                zip(ts, parts, strict=True)]))
        out["twin"][f"{ap_ms:g}"] = {"ap_duration_ms": ap_ms, **stats(ts),
                                     "median_stage_s": breakdown}
        res.put("latency", out)
        rows.append([f"twin, AP band of {DEFAULT_AP_SAMPLES} samples, {ap_ms:g} ms AP",
                     str(len(ts)), *_ms(stats(ts)),
                     "p99 < 1.5 s" if ap_ms == args.twin_ap_ms[0] else ""])
        rows.append(["  median stages: " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in
                                                     breakdown.items() if k != "total"),
                     "", "", "", "", "", ""])
    print(table(["call", "calls", "p50 ms", "p99 ms", "mean ms", "max ms", "target"], rows))
    print(f"  one trace of {len(trace)} samples at the protocol's rate (as recorded), model "
          f"{Path(model['artifact']).name} (loaded in {load_s:.1f} s); after "
          f"{args.latency_warmup} (posterior) and {args.twin_warmup} (twin) warm-up calls. "
          f"The twin simulates 1 + {DEFAULT_AP_SAMPLES} cells: the voltage-clamp protocol and "
          "the free-running AP of the given length (the CLI's default: 10,000 ms); stages in "
          "ms (Twin.timings_s; untimed: the call's wall minus their total).")


def _ms(s: dict) -> list[str]:
    return [f"{s[k] * 1e3:.1f}" for k in ("p50", "p99", "mean", "max")]


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", action="append", default=None,
                    help="population store (repeatable); default: generate a small one")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated, of {','.join(PARTS)} (default: all)")
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="training cells per run (default 1000,10000,100000; capped at the "
                         "stores' ok training cells)")
    ap.add_argument("--noise", default="0,0.5",
                    help="recording noise levels, pA/pF per 0.1 ms sample (default 0,0.5)")
    ap.add_argument("--test-cells", type=int, default=2000,
                    help="the fixed test set: the first ok test cells (default 2000)")
    ap.add_argument("--no-ridge", action="store_true", help="skip the ridge_mlp comparison")
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="epoch cap (default: the preset's)")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="training wall-time budget per run, minutes (default: none)")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true",
                    help="reuse flow artifacts under --cache-dir trained on the same data and "
                         "configuration")
    ap.add_argument("--model", default=None,
                    help="flow artifact for the ap and latency parts (default: the largest "
                         "flow of --ap-noise)")
    ap.add_argument("--ap-noise", type=float, default=None,
                    help="noise level of the flow used for ap and latency (default: the "
                         "largest of --noise)")
    ap.add_argument("--ap-cells", type=int, default=200)
    ap.add_argument("--ap-samples", type=int, default=64,
                    help="posterior samples simulated per cell (default 64, as the twin)")
    ap.add_argument("--ap-batch", type=int, default=16,
                    help="cells per simulator call (default 16)")
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--latency-warmup", type=int, default=20)
    ap.add_argument("--twin-ap-ms", default="10000,4000",
                    help="AP durations of the twin latency, ms (default 10000,4000)")
    ap.add_argument("--twin-calls", type=int, default=50)
    ap.add_argument("--twin-warmup", type=int, default=3)
    ap.add_argument("--store-cells", type=int, default=6000,
                    help="cells of the generated store without --store (default 6000)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of the generated store")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors for generation")
    ap.add_argument("--cache-dir", default="/tmp/bench-posterior")
    ap.add_argument("--out", default=None,
                    help="results JSON (default: <cache-dir>/results.json)")
    ap.add_argument("--verbose", action="store_true", help="one line per epoch")
    ap.add_argument("--quick", action="store_true",
                    help="check that it runs: 1500-cell store, size 400, 3 epochs, 200 test "
                         "cells, 8 AP cells x 8 samples, 50 posterior and 3 twin calls (4000 "
                         "ms AP)")
    if "--quick" in (sys.argv[1:] if argv is None else argv):   # defaults: options still win
        ap.set_defaults(**QUICK)
    a = ap.parse_args(argv)
    try:
        a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
        a.sizes = sorted({int(x) for x in a.sizes.split(",")})
        a.noise = [float(x) for x in a.noise.split(",")]
        a.twin_ap_ms = [float(x) for x in a.twin_ap_ms.split(",")]
    except ValueError as e:
        ap.error(f"--sizes, --noise, --twin-ap-ms: comma-separated numbers ({e})")
    from cardiotwin.learn.posterior import EVALUATION_TEST_CELLS

    bad = set(a.parts) - set(PARTS)
    if bad:
        ap.error(f"--parts: unknown {sorted(bad)}; expected some of {','.join(PARTS)}")
    if min(a.sizes) < 2 or min(a.noise) < 0 or min(a.twin_ap_ms) <= 0:
        ap.error("--sizes >= 2, --noise >= 0, --twin-ap-ms > 0")
    if not 1 <= a.test_cells <= EVALUATION_TEST_CELLS:
        ap.error(f"--test-cells: expected 1..{EVALUATION_TEST_CELLS} (the test cells "
                 f"evaluate_posterior scores), found {a.test_cells}")
    if min(a.ap_cells, a.ap_samples, a.ap_batch, a.latency_calls, a.twin_calls) < 1:
        ap.error("--ap-cells, --ap-samples, --ap-batch, --latency-calls, --twin-calls >= 1")
    a.out = Path(a.out or Path(a.cache_dir) / "results.json")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras

    import cardiotwin

    res = Results(args.out)
    host = {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "keras": keras.__version__,
            "backend": keras.backend.backend(), "cardiotwin": cardiotwin.__version__,
            "load_at_start": loadavg()}
    res.put("host", host)
    res.put("options", {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in vars(args).items()})
    print("cardiotwin posterior benchmark (issue 17)")
    print(f"  host: {host['cpu']}, {host['cpus']} CPUs; python {host['python']}, numpy "
          f"{host['numpy']}, keras {host['keras']} ({host['backend']}), cardiotwin "
          f"{host['cardiotwin']}; load average at start {host['load_at_start']}")
    print(f"  parts: {','.join(args.parts)}; results: {args.out}")

    stores, infos = get_stores(args)
    res.put("stores", infos)
    print()
    print("Stores")
    for d in infos:
        state = ("complete" if d["status"] == "complete" else
                 f"{d['status']}: {d['shards_read']} of {d['n_shards']} shards complete, read "
                 "so far")
        print(f"  {d['path']}: {d['how']}; {state}; +-{d['spread']:g} (seed {d['seed']}), "
              f"statuses {d['status_counts']} (keep_rejected {d['keep_rejected']}); I_total "
              f"{d['i_total_n']} samples every {d['i_total_dt_ms']:g} ms; classification run "
              f"{d['ap_duration_ms']:g} ms at {d['temperature_K']:g} K")
    ids, status = read_index(stores)
    plan = make_plan(ids, status, args)
    print(f"  {len(ids)} rows, {int(np.sum(status == 'ok'))} ok; {plan.n_train_ok} ok training "
          f"cells; fixed test set {len(plan.test_ids)} ok test cells (cell_id "
          f"{plan.test_ids[0]}..{plan.test_ids[-1]}); sizes {plan.sizes}")
    for note in plan.notes:
        print(f"  note: {note}")
    res.put("plan", {"sizes": plan.sizes, "n_test": len(plan.test_ids),
                     "test_id_range": [int(plan.test_ids[0]), int(plan.test_ids[-1])],
                     "max_cells": plan.max_cells, "notes": plan.notes})
    lo, hi = infos[0]["range"]
    scale = hi - lo

    ap_noise = args.ap_noise if args.ap_noise is not None else max(args.noise)
    models: dict[float, dict] = {}
    need_models = [p for p in args.parts if p != "sizes"]
    if "sizes" in args.parts or (need_models and args.model is None):
        data = load_data(stores, plan)
        if "sizes" in args.parts:
            print()
            print(f"1. Dataset size: posterior_flow{'' if args.no_ridge else ' and ridge_mlp'} "
                  f"on the first N ok training cells, fixed test set")
            models = part_sizes(data, plan, args, res, scale)
        else:
            models = largest_models(data, plan, args, args.noise if "calibration" in args.parts
                                    else [ap_noise])
        del data
    picked: dict = {}
    if args.model is not None:
        picked = model_record(args.model)
    elif need_models:
        if ap_noise not in models:
            raise ValueError(f"--ap-noise: {ap_noise:g} is not one of --noise {args.noise}")
        picked = models[ap_noise]

    if "calibration" in args.parts:
        print()
        print("2. Calibration of the largest flow per noise level on the fixed test set")
        part_calibration(models or {picked["noise"]: picked}, res)
    if "ap" in args.parts:
        print()
        print("3. Twin AP prediction on held-out synthetic cells")
        part_ap(stores, ids, status, picked, args, res, infos[0])
    if "latency" in args.parts:
        print()
        print("4. Latency on this machine")
        part_latency(stores, plan, picked, args, res)
    print()
    print(f"load average at end: {loadavg()}")
    res.put("load_at_end", loadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
