"""Training: pair store(s) -> reconstruction model artifact.

Artifact directory::

    MODEL/model.keras       the network (built-in layers only; load with compile=False)
    MODEL/metadata.json     format ``cardiotwin.reconstruct-model/1``: window config,
                            quantiles, physics config, train config, data (stores, config
                            hashes, split sizes), training history, test metrics

Splits by cell (``pairs.split_of``): 80 % train, 10 % validation (early stopping), 10 % test.
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
    beta: NonNegativeFloat = Field(0.01, description="weight of log(L_physics); 0: no physics")
    learning_rate: PositiveFloat = Field(2e-3, description="Adam learning rate")
    batch_size: PositiveInt = Field(32, description="windows per batch")
    epochs: PositiveInt = Field(30, description="maximum epochs")
    patience: PositiveInt = Field(10, description="early stopping patience (epochs, val loss)")
    seed: NonNegativeInt = Field(0, description="weights and shuffling seed")
    net: NetConfig = Field(default_factory=NetConfig)
    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)


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


def load_pair_data(stores, splits: tuple[str, ...] = ("train", "val", "test")) -> PairData:
    """Read and normalize pair store(s) (same window config), split by cell."""
    from .pairs import load_pairs

    stores = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
    if not stores:
        raise ValueError("no pair store given")
    parts = [load_pairs(s) for s in stores]
    windows = {canonical_json(p["manifest"]["config"]["window"]) for p in parts}
    if len(windows) > 1:
        raise ValueError("pair stores with different window configs cannot be combined")
    window = WindowConfig(**parts[0]["manifest"]["config"]["window"])
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


def fit(cfg: ReconTrainConfig, data: PairData, *, verbose: bool = False,
        extra_callbacks=(), log: Callable[[str], None] | None = None):
    """Train on data's train split with early stopping on val (best weights restored):
    (model, history dict, wall s)."""
    import keras

    if len(data.x.get("train", ())) == 0:
        raise ValueError("no training windows")
    model = compile_model(cfg, data.window)
    has_val = len(data.x.get("val", ())) > 0
    cbs = list(extra_callbacks)
    if has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                                 restore_best_weights=True))
    if log:
        class _Log(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        cbs.append(_Log())
    t0 = time.perf_counter()
    h = model.fit(data.x["train"], data.y["train"], batch_size=cfg.batch_size,
                  epochs=cfg.epochs, shuffle=True, verbose=2 if verbose else 0,
                  validation_data=(data.x["val"], data.y["val"]) if has_val else None,
                  callbacks=cbs)
    wall = time.perf_counter() - t0
    return model, {k: [float(v) for v in vals] for k, vals in h.history.items()}, wall


def predict(model, x: np.ndarray, n_q: int, batch_size: int = 64) -> np.ndarray:
    """iAP quantiles (n, length, n_q) of normalized eAP windows x (n, length, 1)."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))[..., :n_q]


def save_artifact(out_dir: str | os.PathLike, model, cfg: ReconTrainConfig,
                  window: WindowConfig, *, history: dict | None = None,
                  data_info: dict | None = None, test_metrics: dict | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Write the model artifact crash-safely: built in a temporary sibling directory and
    swapped in (:func:`cardiotwin.storage.atomic.atomic_directory`), so an overwrite keeps the
    old model until the new one is complete and loaders (which call
    :func:`~cardiotwin.storage.atomic.recover_directory`) always find one. Returns the
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
                     "backend": keras.backend.backend(), "keras_version": keras.__version__,
                     "code_version": code_version()})
    with atomic_directory(out) as tmp:
        model.save(tmp / MODEL_FILE)
        write_json_atomic(tmp / METADATA_FILE, meta)
    return meta


def _finite(obj):
    """Replace NaN/inf by None (JSON); see :func:`cardiotwin.storage.atomic.jsonable`."""
    return jsonable(obj)


def train_model(stores, out_dir: str | os.PathLike, cfg: ReconTrainConfig | None = None, *,
                overwrite: bool = False, log: Callable[[str], None] | None = print
                ) -> dict[str, Any]:
    """Train on pair store(s), evaluate on the test split, write the artifact; returns its
    metadata."""
    from .evaluate import evaluate, without_arrays

    cfg = cfg or ReconTrainConfig()
    recover_directory(out_dir)
    if Path(out_dir).exists() and not overwrite:
        raise ValueError(f"model directory {out_dir} exists; pass overwrite=True (--overwrite)")
    data = load_pair_data(stores)
    if log:
        log(f"windows per split: {data.info['split_windows']}")
    model, hist, wall = fit(cfg, data, log=log)
    metrics = {}
    if len(data.x["test"]):
        q = cfg.net.quantile_levels
        pred = predict(model, data.x["test"], len(q))
        metrics = without_arrays(evaluate(data.y["test"][..., 0], pred, data.window, q))
    history = {"history": hist, "epochs": len(hist.get("loss", [])), "wall_s": round(wall, 2)}
    meta = save_artifact(out_dir, model, cfg, data.window, history=_finite(history),
                         data_info=data.info, test_metrics=_finite(metrics),
                         overwrite=overwrite)
    if log and metrics:
        log(f"test: MAE {metrics['mae']:.4f}, APD90 median error "
            f"{metrics['apd']['APD90'].get('median_abs_pct', float('nan')):.1f} % -> {out_dir}")
    return meta


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
    for name in ("alpha", "beta", "learning_rate", "batch_size", "epochs", "patience", "seed"):
        f = ReconTrainConfig.model_fields[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=f.annotation, default=None,
                       help=f.description)
    for name in ("filters", "depth", "kernel_size"):
        f = NetConfig.model_fields[name]
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f.description)
    p.add_argument("--median-only", action="store_true", help="no quantile heads")
    a = p.parse_args(argv)
    top = {k: getattr(a, k) for k in ("alpha", "beta", "learning_rate", "batch_size", "epochs",
                                      "patience", "seed") if getattr(a, k) is not None}
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
