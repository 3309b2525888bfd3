#!/usr/bin/env python
"""Benchmark of iAP reconstruction from eAPs (cardiotwin.reconstruct) against the targets of
issue 25 (after Rahmani et al., Nat Commun 2025, PIA-UNET: MAE ~0.04 on the normalized iAP,
APD errors ~5 %): MAE <= 0.04, APD50/APD90 errors <= 5 %, 90 % band coverage 0.88-0.92, 50 %
band 0.48-0.52, p99 latency per window < 10 ms in a batch and < 50 ms alone.

1. data: pair stores made with ``generate_pairs`` on a local Ray cluster (--workers tasks),
   cached under --cache-dir and reused when complete:
   - training/held-out: two populations, +-40 % and +-60 % (--cells cells each), 60 % of the
     cells with one of six training drugs at 10^U(-1, 1) x the drug's lowest IC50,
     --junctions electrode couplings per cell (junction, high-pass, S/N 10-200 and noise
     drawn per coupling), --duration-ms recorded per cell; windows of 1024 samples at 1 kHz
     from 200 ms before the eAP spike. Split by cell: 70 % train, 10 % conformal calibration,
     10 % validation (early stopping), 10 % test (held-out cells).
   - unseen drug: --drug-cells cells at +-40 %, every one with quinidine (a multi-channel
     blocker not among the training drugs).
2. training (or --model DIR: an artifact trained before, e.g. by
   ``python -m cardiotwin.reconstruct.train``): quantile heads 0.05/0.25/0.5/0.75/0.95, the
   training windows streamed shard by shard (bounded memory), a wall-time budget
   (--budget-min), then conformal calibration (CQR per phase of the beat) on the calibration
   split.
3. evaluation on held-out cells and on the unseen drug: MAE, median |APD error| (%) at APD50
   and APD90 (all levels listed), coverage of the 90 % and 50 % bands before and after
   calibration, per phase of the beat and per APD level.
4. physics term (--physics-seeds S > 0): the same small network trained with beta = --beta
   and beta = 0 for S seeds on the first --physics-windows training windows
   (--physics-epochs epochs), mean and SD over seeds of MAE, APD90 error and coverage.
5. latency of the compiled predictor (``Reconstructor.predict_windows``, conformal offsets
   included): p50/p99 per window for one window per call and in batches of 64, and the old
   ``model.predict`` for one window.

    python benchmarks/bench_reconstruct.py --quick              # check that it runs
    python benchmarks/bench_reconstruct.py --model out/recon    # evaluate a trained artifact
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _report import cpu_model, loadavg, table

TARGETS = {"mae": 0.04, "apd_pct": 5.0, "cov90": (0.88, 0.92), "cov50": (0.48, 0.52),
           "p99_batch_ms": 10.0, "p99_single_ms": 50.0}
TRAIN_DRUGS = ("e4031", "verapamil", "nifedipine", "lidocaine", "cisapride", "quinine")
UNSEEN_DRUG = "quinidine"


def progress(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def store_configs(a):
    from cardiotwin.reconstruct.electrode import ElectrodeConfig
    from cardiotwin.reconstruct.pairs import PairConfig

    el = ElectrodeConfig(snr_range=(10.0, 200.0))
    common = dict(prepace_ms=5000.0, electrode=el, shard_size=50)
    train = {f"r{round(s * 100)}": PairConfig(
        n_cells=a.cells, spread=s, seed=a.seed + 11 + i, drugs=TRAIN_DRUGS,
        duration_ms=a.duration_ms, junctions_per_cell=a.junctions, **common)
        for i, s in enumerate((0.4, 0.6))}
    drug = PairConfig(n_cells=a.drug_cells, spread=0.4, seed=a.seed + 13, drugs=(UNSEEN_DRUG,),
                      drug_fraction=1.0, duration_ms=8000.0, junctions_per_cell=3, **common)
    return train, drug


def get_store(cache: Path, name: str, cfg, workers: int) -> tuple[Path, dict, float]:
    from cardiotwin.reconstruct.pairs import generate_pairs

    out = cache / name
    t0 = time.perf_counter()
    m = generate_pairs(cfg, out, n_workers=workers, num_cpus=workers, log=progress)
    return out, m, time.perf_counter() - t0


def evaluate_set(est, x, y, window) -> dict:
    """Metrics of an artifact's raw and calibrated bands on windows (n, length, 1)."""
    from cardiotwin.reconstruct.conformal import coverage_report
    from cardiotwin.reconstruct.evaluate import evaluate, without_arrays

    q = est.quantiles
    raw = est.network(x[..., 0])[..., :len(q)]
    out = {"raw": without_arrays(evaluate(y[..., 0], raw, window, q))}
    out["raw"]["coverage"] = coverage_report(y[..., 0], raw, q, window)
    if est.conformal is not None:
        cal = est.conformal.apply(raw, window)
        out["cal"] = without_arrays(evaluate(y[..., 0], cal, window, q))
        out["cal"]["coverage"] = coverage_report(y[..., 0], cal, q, window)
    return out


def latency(est, x: np.ndarray, calls: int) -> dict:
    """p50/p99 per window (ms): one window per call, and batches of 64."""
    x1 = x[:1, :, 0]
    xb = np.repeat(x[:1, :, 0], 64, axis=0)
    for _ in range(5):
        est.predict_windows(x1)
        est.predict_windows(xb)
    single, batch, net1 = [], [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        est.predict_windows(x1)
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        est.network(x1)
        net1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        est.predict_windows(xb)
        batch.append((time.perf_counter() - t0) / 64)
    old = []
    for _ in range(min(calls, 20)):
        t0 = time.perf_counter()
        est.model.predict(x[:1], verbose=0)
        old.append(time.perf_counter() - t0)
    ms = lambda v, p: float(np.percentile(v, p) * 1e3)  # noqa: E731
    return {"single_p50": ms(single, 50), "single_p99": ms(single, 99),
            "batch_p50": ms(batch, 50), "batch_p99": ms(batch, 99),
            "network_single_p50": ms(net1, 50), "model_predict_single_p50": ms(old, 50),
            "calls": calls}


def physics_comparison(stream, unseen, a) -> dict:
    """The same small network with and without the physics term over seeds."""
    from cardiotwin.reconstruct.evaluate import evaluate
    from cardiotwin.reconstruct.train import PairData, ReconTrainConfig, fit, predict
    from cardiotwin.reconstruct.unet import NetConfig

    n = a.physics_windows
    xs, ys = [], []
    for x, y in stream.batches("train", 256, seed=0, shuffle=True):
        xs.append(x)
        ys.append(y)
        if sum(len(v) for v in xs) >= n:
            break
    x, y = np.concatenate(xs)[:n], np.concatenate(ys)[:n]
    val, test = stream.load("val"), stream.load("test")
    rng = np.random.default_rng(0)
    iv = rng.permutation(len(val["x"]))[:1000]
    it = rng.permutation(len(test["x"]))[:a.physics_test_windows]
    test = {"x": test["x"][it], "y": test["y"][it]}
    data = PairData({"train": x, "val": val["x"][iv]}, {"train": y, "val": val["y"][iv]},
                    {}, {}, stream.window, {})
    out: dict = {"train_windows": int(len(x)), "test_windows": int(len(it)), "runs": []}
    for seed in range(a.physics_seeds):
        for beta in (a.beta, 0.0):
            cfg = ReconTrainConfig(beta=beta, epochs=a.physics_epochs, seed=seed, patience=5,
                                   net=NetConfig(filters=a.physics_filters, depth=a.depth))
            model, hist, wall = fit(cfg, data)
            q = cfg.net.quantile_levels
            r = {"seed": seed, "beta": beta, "epochs": len(hist["loss"]), "wall_s": wall}
            for name, (xx, yy) in {"held-out": (test["x"], test["y"]),
                                   "unseen": (unseen["x"], unseen["y"])}.items():
                m = evaluate(yy[..., 0], predict(model, xx, len(q)), stream.window, q)
                r[name] = {"mae": m["mae"], "apd90": m["apd"]["APD90"].get("median_abs_pct"),
                           "apd50": m["apd"]["APD50"].get("median_abs_pct"),
                           "cov90": m.get("coverage_90"), "cov50": m.get("coverage_50")}
            progress(f"physics comparison: seed {seed} beta {beta}: {r['held-out']}")
            out["runs"].append(r)
    return out


def _ms(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"


def report(res: dict) -> None:
    print("iAP reconstruction from eAPs (cardiotwin.reconstruct) vs the issue 25 targets")
    print(f"host: {res['host']}, load average {res['load']}")
    for name, d in res["stores"].items():
        t = d["totals"]
        print(f"data {name}: {t['cells']} cells -> {t['cells_kept']} ok, {t['windows']} windows "
              f"(status {t['status_counts']}); {d['wall_s']:.0f} s on Ray here")
    print(f"training windows: {res['split_windows']}")
    tr = res.get("training", {})
    if tr:
        print(f"training: {tr.get('epochs')} epochs in {tr.get('wall_s', float('nan')):.0f} s, "
              f"{tr.get('train_windows_per_s')} windows/s (streamed, "
              f"{tr.get('shards_in_memory')} shards in memory); config {tr.get('net')}, beta "
              f"{tr.get('beta')}")
    rows = [["target", "", f"<= {TARGETS['mae']}", f"<= {TARGETS['apd_pct']:g}",
             f"<= {TARGETS['apd_pct']:g}", "0.88-0.92", "0.48-0.52", "", ""]]
    for set_name, d in res["eval"].items():
        for kind, m in d.items():
            rows.append([f"{set_name} ({kind})", str(m["n_windows"]), f"{m['mae']:.4f}",
                         _ms(m["apd"]["APD50"].get("median_abs_pct")),
                         _ms(m["apd"]["APD90"].get("median_abs_pct")),
                         f"{m.get('coverage_90', float('nan')):.3f}",
                         f"{m.get('coverage_50', float('nan')):.3f}",
                         f"{m['correlation']:.3f}", f"{m.get('band_width_mean', 0):.3f}"])
    print(table(["test set (bands)", "windows", "MAE", "APD50 %", "APD90 %", "cover 90",
                 "cover 50", "r", "width 90"], rows))
    for set_name, d in res["eval"].items():
        m = d.get("cal", d["raw"])
        kind = "calibrated" if "cal" in d else "raw"
        cov = m["coverage"]
        print(f"\ncoverage on {set_name} ({kind}) per phase of the beat (median's phases):")
        print(table(["band"] + list(cov["by_phase"]["0.9"]),
                    [[b] + [f"{v:.3f}" for v in r.values()] for b, r in cov["by_phase"].items()]))
        print("per APD level (samples of the true AP between APD(x-10) and APDx), and true APDx "
              "inside [APDx(lower edge), APDx(upper edge)]:")
        lv = list(cov["by_apd_level_samples"]["0.9"])
        print(table(["band"] + lv, [[f"{b} samples"] + [_ms(v) for v in r.values()]
                                    for b, r in cov["by_apd_level_samples"].items()]
                    + [[f"{b} APD"] + [_ms(v) for v in r.values()]
                       for b, r in cov["apd_interval"].items()]))
        print("median |APD error| (%) per level: " + ", ".join(
            f"APD{k[3:]} {_ms(v.get('median_abs_pct'))}" for k, v in m["apd"].items()))
    if res.get("physics"):
        ph = res["physics"]
        print(f"\nphysics term ({ph['train_windows']} training windows, "
              f"{ph['test_windows']} held-out windows, {len(ph['runs']) // 2} seeds; mean +- SD "
              "over seeds):")
        rows = []
        for beta in sorted({r["beta"] for r in ph["runs"]}, reverse=True):
            rs = [r for r in ph["runs"] if r["beta"] == beta]
            for set_name in ("held-out", "unseen"):
                cells = []
                for k in ("mae", "apd50", "apd90", "cov90", "cov50"):
                    v = np.array([r[set_name][k] if r[set_name][k] is not None else np.nan
                                  for r in rs], float)
                    cells.append(f"{np.nanmean(v):.4f} +- {np.nanstd(v):.4f}")
                rows.append([f"beta {beta:g}", set_name] + cells)
        betas = sorted({r["beta"] for r in ph["runs"]}, reverse=True)
        if len(betas) == 2:          # paired by seed: physics minus none
            by = {(r["seed"], r["beta"]): r for r in ph["runs"]}
            seeds = sorted({r["seed"] for r in ph["runs"]})
            for set_name in ("held-out", "unseen"):
                cells = []
                for k in ("mae", "apd50", "apd90", "cov90", "cov50"):
                    d = np.array([(by[(sd, betas[0])][set_name][k] or np.nan)
                                  - (by[(sd, betas[1])][set_name][k] or np.nan)
                                  for sd in seeds], float)
                    cells.append(f"{np.nanmean(d):+.4f} +- {np.nanstd(d):.4f}")
                rows.append([f"difference {betas[0]:g} - 0", set_name] + cells)
        print(table(["loss", "set", "MAE", "APD50 %", "APD90 %", "cover 90", "cover 50"], rows))
    if res.get("latency"):
        lt = res["latency"]
        print(f"\nlatency per window ({lt['calls']} calls, CPU, compiled predictor with "
              "conformal offsets):")
        print(table(["call", "p50 ms", "p99 ms", "target p99"], [
            ["one window", f"{lt['single_p50']:.2f}", f"{lt['single_p99']:.2f}", "< 50"],
            ["batch of 64, per window", f"{lt['batch_p50']:.3f}", f"{lt['batch_p99']:.3f}",
             "< 10"],
            ["network only, one window", f"{lt['network_single_p50']:.2f}", "", ""],
            ["model.predict, one window (before)", f"{lt['model_predict_single_p50']:.1f}",
             "", ""]]))
    print(f"\ntotal wall time {res['wall_s']:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=1200, help="cells per training population")
    p.add_argument("--junctions", type=int, default=6, help="electrode couplings per cell")
    p.add_argument("--duration-ms", type=float, default=12000.0, help="recorded ms per cell")
    p.add_argument("--drug-cells", type=int, default=120, help="cells of the unseen-drug store")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="evaluate this artifact instead of training")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--budget-min", type=float, default=20.0, help="training minutes")
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--beta", type=float, default=0.01, help="weight of log(L_physics)")
    p.add_argument("--main-beta", type=float, default=0.0,
                   help="beta of the main model (default 0: the physics term did not help)")
    p.add_argument("--physics-seeds", type=int, default=3, help="0: no physics comparison")
    p.add_argument("--physics-windows", type=int, default=3000)
    p.add_argument("--physics-epochs", type=int, default=8)
    p.add_argument("--physics-filters", type=int, default=8)
    p.add_argument("--physics-test-windows", type=int, default=2000,
                   help="held-out windows (a random subset) of the physics comparison")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency-calls", type=int, default=200)
    p.add_argument("--skip-main", action="store_true", help="only the physics comparison")
    p.add_argument("--physics-from", default=None, metavar="RESULTS",
                   help="take the physics comparison from an earlier results.json")
    p.add_argument("--cache-dir", default="/tmp/reconstruct/bench")
    p.add_argument("--out-dir", default=None, help="results.json (default: CACHE)")
    p.add_argument("--quick", action="store_true", help="small sizes: check that it runs")
    a = p.parse_args(argv)
    if a.quick:
        a.cells, a.drug_cells, a.junctions, a.duration_ms = 40, 20, 2, 4000.0
        a.epochs, a.budget_min, a.latency_calls = 2, 1.0, 20
        a.physics_seeds, a.physics_windows, a.physics_epochs = 1, 64, 1

    from cardiotwin.reconstruct.infer import load_reconstructor
    from cardiotwin.reconstruct.stream import PairStream
    from cardiotwin.reconstruct.train import ReconTrainConfig, train_model
    from cardiotwin.reconstruct.unet import NetConfig

    cache = Path(a.cache_dir)
    out_dir = Path(a.out_dir) if a.out_dir else cache
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    train_cfgs, drug_cfg = store_configs(a)
    res: dict = {"host": cpu_model(), "load": loadavg(), "stores": {}, "eval": {}}
    dirs = []
    for name, cfg in [*train_cfgs.items(), (UNSEEN_DRUG, drug_cfg)]:
        d, m, wall = get_store(cache, f"{name}_{cfg.config_hash()[:10]}", cfg, a.workers)
        res["stores"][name] = {"totals": m["totals"], "wall_s": wall, "dir": str(d)}
        dirs.append(d)
    stream = PairStream(dirs[:-1])
    unseen_stream = PairStream(dirs[-1:], calibration=False)
    unseen = {k: np.concatenate([unseen_stream.load(s)[k] for s in ("train", "val", "test")])
              for k in ("x", "y")}
    res["split_windows"] = stream.info["split_windows"]

    if a.physics_from:
        res["physics"] = json.loads(Path(a.physics_from).read_text())["physics"]
    elif a.physics_seeds > 0:
        res["physics"] = physics_comparison(stream, unseen, a)
    if not a.skip_main:
        model_dir = Path(a.model) if a.model else out_dir / "model"
        if not a.model:
            cfg = ReconTrainConfig(beta=a.main_beta, epochs=a.epochs, seed=a.seed,
                                   time_budget_min=a.budget_min,
                                   net=NetConfig(filters=a.filters, depth=a.depth))
            train_model(dirs[:-1], model_dir, cfg, overwrite=True, log=progress)
        est = load_reconstructor(model_dir)
        meta = est.metadata
        tr = meta.get("training", {})
        res["training"] = {"epochs": tr.get("epochs"), "wall_s": tr.get("wall_s"),
                           "train_windows_per_s": tr.get("train_windows_per_s"),
                           "shards_in_memory": meta["config"].get("shards_in_memory"),
                           "net": meta["config"]["net"], "beta": meta["config"]["beta"],
                           "data": meta.get("data", {}).get("split_windows")}
        test = stream.load("test")
        res["eval"]["held-out cells"] = evaluate_set(est, test["x"], test["y"], stream.window)
        res["eval"][f"unseen drug ({UNSEEN_DRUG})"] = evaluate_set(est, unseen["x"], unseen["y"],
                                                                   stream.window)
        res["conformal"] = est.conformal.to_json() if est.conformal else None
        res["latency"] = latency(est, test["x"], a.latency_calls)
    res["wall_s"] = time.perf_counter() - t_all
    from cardiotwin.storage.atomic import jsonable

    (out_dir / "results.json").write_text(json.dumps(jsonable(res), indent=1))
    report(res)
    print(f"results: {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
