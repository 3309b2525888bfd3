"""Training: pair store(s) -> reconstruction model artifact.

Artifact directory::

    MODEL/model.keras       the network (built-in layers only; load with compile=False)
    MODEL/metadata.json     format ``cardiotwin.reconstruct-model/1``: window config,
                            quantiles, physics config, train config, data (stores, config
                            hashes, split sizes), training history, test metrics, and
                            ``conformal`` (:mod:`.conformal` offsets, applied in use; null
                            for a model trained without calibration)

Splits by cell (``pairs.split_of``): 70 % train, 10 % conformal calibration (``cal``), 10 %
validation (early stopping), 10 % test; without calibration 80/10/10. ``train_model`` streams
the training windows from the store(s) shard by shard (:mod:`.stream`, bounded memory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..settings import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Settings
from ..storage.atomic import atomic_directory, jsonable, recover_directory, write_json_atomic
from ..storage.identity import canonical_json
from .physics import PhysicsConfig
from .unet import NetConfig
from .windows import WindowConfig, normalize_eap, normalize_iap

ARTIFACT_FORMAT = "cardiotwin.reconstruct-model/1"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


class ReconTrainConfig(Settings):
    """Loss weights, optimizer and architecture of one training run."""

    alpha: NonNegativeFloat = Field(1.0, description="weight of the data term (L1 / pinball)")
    beta: NonNegativeFloat = Field(0.0, description="weight of log(L_physics); 0 (default): no "
                                   "physics term, which did not help in "
                                   "benchmarks/bench_reconstruct.py (3 seeds: MAE 0.161 with "
                                   "beta 0.01 vs 0.147 without, APD90 error and band coverage "
                                   "alike)")
    learning_rate: PositiveFloat = Field(2e-3, description="Adam learning rate")
    batch_size: PositiveInt = Field(32, description="windows per batch")
    epochs: PositiveInt = Field(30, description="maximum epochs")
    patience: PositiveInt = Field(10, description="early stopping patience (epochs, val loss)")
    seed: NonNegativeInt = Field(0, description="weights and shuffling seed")
    net: NetConfig = Field(default_factory=NetConfig)
    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    calibrate: bool = Field(True, description="conformal calibration of the bands on the "
                                              "calibration split (cell_id % 10 == 7)")
    time_budget_min: NonNegativeFloat = Field(0.0, description="stop training before an epoch "
                                              "that would end past this many minutes (0: none)")
    shards_in_memory: PositiveInt = Field(8, description="pair store shards read at a time "
                                                         "while streaming")


@dataclass
class PairData:
    """Normalized network inputs x (n, length, 1) and targets y (n, length, 1) per split, with
    the rows' drug and cell ids."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    cell_id: dict[str, np.ndarray]
    drug: dict[str, np.ndarray]
    window: WindowConfig
    info: dict[str, Any]


def normalize_pairs(eap: np.ndarray, iap: np.ndarray, window: WindowConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Network input and target (float32, (n, length, 1)) from raw windows."""
    x = normalize_eap(eap, window).astype(np.float32)[..., None]
    y = normalize_iap(iap, window).astype(np.float32)[..., None]
    return x, y


def load_pair_data(stores, splits: tuple[str, ...] = ("train", "val", "test"), *,
                   calibration: bool = False) -> PairData:
    """Read and normalize pair store(s) (same window config) into memory, split by cell
    (``calibration``: with the ``cal`` split, ``pairs.split_of``)."""
    from .pairs import load_pairs

    stores = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
    if not stores:
        raise ValueError("no pair store given")
    parts = [load_pairs(s) for s in stores]
    windows = {canonical_json(p["manifest"]["config"]["window"]) for p in parts}
    if len(windows) > 1:
        raise ValueError("pair stores with different window configs cannot be combined")
    window = WindowConfig(**parts[0]["manifest"]["config"]["window"])
    if calibration:
        from .pairs import split_of

        for p in parts:
            p["split"] = split_of(p["cell_id"], calibration=True)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in
           ("eap_uV", "iap_mV", "cell_id", "drug", "split")}
    # cell ids of different stores may coincide: keep them apart
    store_of = np.concatenate([np.full(len(p["cell_id"]), i) for i, p in enumerate(parts)])
    if len(cat["eap_uV"]) == 0:
        raise ValueError(f"the pair store(s) {', '.join(map(str, stores))} hold no windows")
    x, y = normalize_pairs(cat["eap_uV"], cat["iap_mV"], window)
    out = PairData({}, {}, {}, {}, window, {
        "stores": [str(Path(s).resolve()) for s in stores],
        "config_hashes": [p["manifest"]["config_hash"] for p in parts]})
    for s in splits:
        sel = cat["split"] == s
        out.x[s], out.y[s] = x[sel], y[sel]
        out.cell_id[s] = cat["cell_id"][sel] + 10**9 * store_of[sel]
        out.drug[s] = cat["drug"][sel]
    out.info["split_windows"] = {s: int(len(out.x[s])) for s in splits}
    return out


def compile_model(cfg: ReconTrainConfig, window: WindowConfig):
    """The compiled network of ``cfg`` for windows of ``window``."""
    import keras

    from .losses import make_loss, make_metrics
    from .unet import build_unet

    keras.utils.set_random_seed(cfg.seed)
    model = build_unet(cfg.net, window.length)
    q = cfg.net.quantile_levels
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=make_loss(q, cfg.alpha, cfg.beta, window.sample_interval_ms, cfg.physics),
                  metrics=make_metrics(q))
    return model


def time_budget(budget_s: float):
    """A Keras callback that stops training once ``budget_s`` seconds have passed (checked
    after every batch: with a large streamed store one epoch can outlast the budget); its
    ``hit`` tells whether it stopped training."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0, self.hit = time.perf_counter(), False

        def on_train_batch_end(self, batch, logs=None):
            if time.perf_counter() - self.t0 > budget_s:
                self.hit = True
                self.model.stop_training = True

    return TimeBudget()


def _window_counter():
    """A Keras callback counting the training windows seen (``seen``, per epoch end too)."""
    import keras

    class Counter(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen, self.per_epoch = 0, []

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1

        def on_epoch_end(self, epoch, logs=None):
            self.per_epoch.append(self.seen)

    return Counter()


def fit(cfg: ReconTrainConfig, data, *, verbose: bool = False,
        extra_callbacks=(), log: Callable[[str], None] | None = None):
    """Train on data's train split with early stopping on val (best weights restored):
    (model, history dict, wall s). ``data``: a :class:`PairData` (arrays) or a
    :class:`~.stream.PairStream` (the train split streamed, val read into memory)."""
    import keras

    from .stream import PairStream

    streaming = isinstance(data, PairStream)
    if streaming:
        n_train = data.count("train")
        val = data.load("val")
        x_val, y_val = val["x"], val["y"]
    else:
        n_train = len(data.x.get("train", ()))
        x_val, y_val = data.x.get("val", ()), data.y.get("val", ())
    if n_train == 0:
        raise ValueError("no training windows")
    model = compile_model(cfg, data.window)
    has_val = len(x_val) > 0
    cbs = list(extra_callbacks)
    if has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                                 restore_best_weights=True))
    if cfg.time_budget_min:
        cbs.append(time_budget(cfg.time_budget_min * 60.0))
    if log:
        class _Log(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        cbs.append(_Log())
    counter = _window_counter()
    cbs.append(counter)
    t0 = time.perf_counter()
    val_data = (x_val, y_val) if has_val else None
    if streaming:
        ds = data.dataset("train", cfg.batch_size, seed=cfg.seed)
        h = model.fit(ds, epochs=cfg.epochs, verbose=2 if verbose else 0,
                      validation_data=val_data, validation_batch_size=256, callbacks=cbs)
    else:
        h = model.fit(data.x["train"], data.y["train"], batch_size=cfg.batch_size,
                      epochs=cfg.epochs, shuffle=True, verbose=2 if verbose else 0,
                      validation_data=val_data, callbacks=cbs)
    wall = time.perf_counter() - t0
    hist = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    hist["train_batches"] = [float(v) for v in counter.per_epoch]
    return model, hist, wall


def predict(model, x: np.ndarray, n_q: int, batch_size: int = 256) -> np.ndarray:
    """iAP quantiles (n, length, n_q) of normalized eAP windows x (n, length, 1), by the
    compiled predictor (:mod:`.fast`), uncalibrated."""
    from .fast import compiled_predictor

    x = np.asarray(x, dtype=np.float32)
    return compiled_predictor(model, x.shape[1], batch_size=batch_size)(x)[..., :n_q]


def calibrate(model, cfg: ReconTrainConfig, window: WindowConfig, x_cal: np.ndarray,
              y_cal: np.ndarray):
    """The :class:`~.conformal.Conformal` offsets of ``model`` on calibration windows."""
    from .conformal import Conformal

    q = cfg.net.quantile_levels
    return Conformal.fit(y_cal[..., 0], predict(model, x_cal, len(q)), q, window)


def save_artifact(out_dir: str | os.PathLike, model, cfg: ReconTrainConfig,
                  window: WindowConfig, *, history: dict | None = None,
                  data_info: dict | None = None, test_metrics: dict | None = None,
                  conformal=None, overwrite: bool = False) -> dict[str, Any]:
    """Write the model artifact crash-safely: built in a temporary sibling directory and
    swapped in (:func:`cardiotwin.storage.atomic.atomic_directory`), so an overwrite keeps the
    old model until the new one is complete and loaders (which call
    :func:`~cardiotwin.storage.atomic.recover_directory`) always find one. ``conformal``: a
    :class:`~.conformal.Conformal` stored as ``metadata["conformal"]``. Returns the
    metadata (strict JSON: NaN and inf in history or metrics become null)."""
    import keras

    from ..runtime.versions import code_version

    out = Path(out_dir)
    recover_directory(out)
    if out.exists() and not overwrite:
        raise ValueError(f"model directory {out} exists; pass overwrite=True (--overwrite)")
    meta = jsonable({"format": ARTIFACT_FORMAT, "window": window.model_dump(mode="json"),
                     "quantiles": list(cfg.net.quantile_levels),
                     "config": cfg.model_dump(mode="json"),
                     "physics": cfg.physics.model_dump(mode="json"), "data": data_info or {},
                     "training": history or {}, "test_metrics": test_metrics or {},
                     "conformal": conformal.to_json() if conformal is not None else None,
                     "backend": keras.backend.backend(), "keras_version": keras.__version__,
                     "code_version": code_version()})
    with atomic_directory(out) as tmp:
        model.save(tmp / MODEL_FILE)
        write_json_atomic(tmp / METADATA_FILE, meta)
    return meta


def _finite(obj):
    """Replace NaN/inf by None (JSON); see :func:`cardiotwin.storage.atomic.jsonable`."""
    return jsonable(obj)


def evaluate_model(model, cfg: ReconTrainConfig, window: WindowConfig, x: np.ndarray,
                   y: np.ndarray, conformal=None) -> dict[str, Any]:
    """Test metrics (:func:`.evaluate.evaluate` and :func:`.conformal.coverage_report`) of the
    network's bands and, with ``conformal``, of the calibrated bands (``calibrated``)."""
    from .conformal import coverage_report
    from .evaluate import evaluate, without_arrays

    q = cfg.net.quantile_levels
    raw = predict(model, x, len(q))
    out = without_arrays(evaluate(y[..., 0], raw, window, q))
    if len(q) >= 3:
        out["coverage"] = coverage_report(y[..., 0], raw, q, window)
        if conformal is not None:
            cal = conformal.apply(raw, window)
            m = without_arrays(evaluate(y[..., 0], cal, window, q))
            out["calibrated"] = {k: m[k] for k in m if k.startswith(("coverage", "band"))}
            out["calibrated"]["coverage"] = coverage_report(y[..., 0], cal, q, window)
    return out


def train_model(stores, out_dir: str | os.PathLike, cfg: ReconTrainConfig | None = None, *,
                overwrite: bool = False, log: Callable[[str], None] | None = print
                ) -> dict[str, Any]:
    """Train on pair store(s) streamed shard by shard, calibrate the bands on the calibration
    split, evaluate on the test split, write the artifact; returns its metadata."""
    from .stream import PairStream

    cfg = cfg or ReconTrainConfig()
    recover_directory(out_dir)
    if Path(out_dir).exists() and not overwrite:
        raise ValueError(f"model directory {out_dir} exists; pass overwrite=True (--overwrite)")
    data = PairStream(stores, calibration=cfg.calibrate, shards_in_memory=cfg.shards_in_memory)
    if log:
        log(f"windows per split: {data.info['split_windows']}")
    model, hist, wall = fit(cfg, data, log=log)
    q = cfg.net.quantile_levels
    conformal = None
    if cfg.calibrate and len(q) >= 3:
        cal = data.load("cal")
        if len(cal["x"]):
            conformal = calibrate(model, cfg, data.window, cal["x"], cal["y"])
        elif log:
            log("no calibration windows (cell_id % 10 == 7): the bands are not calibrated")
    metrics = {}
    test = data.load("test")
    if len(test["x"]):
        metrics = evaluate_model(model, cfg, data.window, test["x"], test["y"], conformal)
    epochs = len(hist.get("loss", []))
    seen = int(hist["train_batches"][-1] * cfg.batch_size) if hist["train_batches"] else 0
    history = {"history": hist, "epochs": epochs, "wall_s": round(wall, 2),
               "train_windows": data.count("train"), "windows_seen": seen,
               "train_windows_per_s": round(seen / wall, 1) if wall > 0 else None}
    meta = save_artifact(out_dir, model, cfg, data.window, history=_finite(history),
                         data_info=data.summary(), test_metrics=_finite(metrics),
                         conformal=conformal, overwrite=overwrite)
    if log and metrics:
        cov = metrics.get("calibrated", metrics).get("coverage_90", float("nan"))
        log(f"test: MAE {metrics['mae']:.4f}, APD90 median error "
            f"{metrics['apd']['APD90'].get('median_abs_pct', float('nan')):.1f} %, 90 % band "
            f"coverage {cov:.3f} -> {out_dir}")
    return meta


TOP_OPTIONS = ("alpha", "beta", "learning_rate", "batch_size", "epochs", "patience", "seed",
               "time_budget_min")


def main(argv=None) -> int:
    """``python -m cardiotwin.reconstruct.train STORE [STORE ...] --out DIR [--beta B] ...``"""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m cardiotwin.reconstruct.train",
                                description="train the iAP reconstruction network on pair "
                                            "store(s) into a model artifact")
    p.add_argument("stores", nargs="+", metavar="STORE", help="pair store directories")
    p.add_argument("--out", required=True, metavar="DIR", help="model artifact directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    for name in TOP_OPTIONS:
        f = ReconTrainConfig.model_fields[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=f.annotation, default=None,
                       help=f.description)
    for name in ("filters", "depth", "kernel_size"):
        f = NetConfig.model_fields[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f.description)
    p.add_argument("--median-only", action="store_true", help="no quantile heads")
    p.add_argument("--no-calibration", action="store_true",
                   help="no conformal calibration (80/10/10 split)")
    a = p.parse_args(argv)
    top = {k: getattr(a, k) for k in TOP_OPTIONS if getattr(a, k) is not None}
    if a.no_calibration:
        top["calibrate"] = False
    net = {k: getattr(a, k) for k in ("filters", "depth", "kernel_size")
           if getattr(a, k) is not None}
    if a.median_only:
        net["quantiles"] = False
    try:
        train_model(a.stores, a.out, ReconTrainConfig.create(**top, net=NetConfig.create(**net)),
                    overwrite=a.overwrite)
    except (ValueError, FileNotFoundError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
