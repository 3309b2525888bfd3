"""Training: population store(s) -> model artifact (see :mod:`cardiotwin.learn.artifact`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..storage.atomic import jsonable, recover_directory, write_json_atomic
from .artifact import check_protocol_hash, save_artifact
from .config import TrainConfig
from .dataset import Dataset, InputTransform, OutputScaling, load_dataset
from .evaluate import evaluate_predictions, plot_recovery, write_error_table


@dataclass
class Prepared:
    """Normalized network inputs ``x[s]`` and unit-scale targets ``y[s]`` per split."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    transform: InputTransform
    scaling: OutputScaling
    data: Dataset
    noise_sd: np.ndarray | None = None


def prepare(data: Dataset, noise_pA_per_pF: float = 0.0) -> Prepared:
    """Fit the input transform on the training split and scale the outputs.
    ``noise_pA_per_pF``: recording noise SD per 0.1 ms sample (see TrainConfig)."""
    info = data.info
    n_avg = info["pool"] * info["store_decimation"][0]
    transform = InputTransform.fit(data.i_total["train"], info["pool"], info["n_stored"],
                                   tuple(info["store_decimation"]),
                                   noise_sd=noise_pA_per_pF / np.sqrt(n_avg))
    lo, hi = info["sampling_range"]
    p = data.multipliers["train"].shape[1]
    scaling = OutputScaling(np.full(p, lo, np.float64), np.full(p, hi, np.float64))
    x = {s: transform.normalize(v) for s, v in data.i_total.items()}
    y = {s: scaling.to_unit(v) for s, v in data.multipliers.items()}
    noise = transform.noise_per_input(noise_pA_per_pF) if noise_pA_per_pF > 0 else None
    return Prepared(x, y, transform, scaling, data, noise)


def _devices() -> list[str]:
    try:
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    except Exception:  # other backends
        return []


def epoch_logger(n_train: int, log: Callable[[str], None]):
    """A Keras callback logging one line per epoch: losses, epoch time, samples/s."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t_start = time.perf_counter()
            self.train_s = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            dt = time.perf_counter() - self.t0
            self.train_s += dt
            logs = logs or {}
            log(f"epoch {epoch + 1:4d}  loss {logs.get('loss', np.nan):.5f}  val_loss "
                f"{logs.get('val_loss', np.nan):.5f}  val_mae {logs.get('val_mae', np.nan):.4f}"
                f"  {dt:.1f} s  {n_train / dt:.0f} samples/s")

    return EpochLog()


def fit_network(cfg: TrainConfig, prep: Prepared, log: Callable[[str], None] = print,
                extra_callbacks: list | None = None, verbose: bool = True):
    """Build and train the network of ``cfg`` with early stopping on the validation loss
    (best weights restored). Returns (model, history dict, seconds training)."""
    import keras

    from .networks import build_network, ridge_mlp_init

    n_train = len(prep.x["train"])
    init = None
    if cfg.architecture == "ridge_mlp":
        t0 = time.perf_counter()
        init = ridge_mlp_init(cfg, prep.x["train"], prep.y["train"], prep.x["val"],
                              prep.y["val"], prep.noise_sd)
        if verbose:
            log(f"ridge fitted in {time.perf_counter() - t0:.1f} s (penalty "
                f"{init['ridge_lambda']:.3g})")
    model = build_network(cfg, prep.x["train"].shape[1], prep.y["train"].shape[1], init)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    cbs = [stop] + ([epoch_logger(n_train, log)] if verbose else []) + (extra_callbacks or [])
    x_train = prep.x["train"]
    if prep.noise_sd is not None:    # a noisy copy: the network must read noisy recordings
        rng = np.random.default_rng(cfg.seed)
        x_train = (x_train + rng.standard_normal(x_train.shape, np.float32) * prep.noise_sd)
    t0 = time.perf_counter()
    hist = model.fit(x_train, prep.y["train"], batch_size=cfg.batch_size_for(n_train),
                     epochs=cfg.epochs, validation_data=(prep.x["val"], prep.y["val"]),
                     callbacks=cbs, shuffle=True, verbose=0)
    wall = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return model, history, wall


def predict_unit(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float64)


def evaluate_split(model, prep: Prepared, split: str = "test") -> dict[str, Any]:
    """Metrics of ``model`` on a split (see :func:`evaluate_predictions`)."""
    from ..model.parameters import INFERRED_NAMES

    y_pred = predict_unit(model, prep.x[split])
    return evaluate_predictions(list(INFERRED_NAMES), prep.y[split], y_pred,
                                prep.data.multipliers[split].astype(np.float64),
                                prep.scaling.from_unit(y_pred),
                                prep.y["train"].mean(axis=0))


def train_model(stores, out_dir: str | Path, config: TrainConfig, *, protocol=None,
                max_cells: int | None = None, overwrite: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on population store(s) and write the model artifact to ``out_dir``.

    ``protocol``: a Protocol (or its hash) the stores must have been simulated with (refused
    otherwise); default: whatever the stores share. ``max_cells``: use only cells with
    cell_id < max_cells. Returns the metadata written (with ``test_metrics``)."""
    import keras

    recover_directory(out_dir)
    if Path(out_dir).exists() and not overwrite:
        raise ValueError(f"{out_dir}: exists; choose another output or pass overwrite")
    t0 = time.perf_counter()
    prep = load_prepared(stores, config, protocol=protocol, max_cells=max_cells)
    sizes = prep.data.sizes()
    log(f"data: {sizes['train']} train / {sizes['val']} validation / {sizes['test']} test "
        f"cells, {prep.x['train'].shape[1]} inputs; backend {keras.backend.backend()}, "
        f"devices {_devices()}; read in {time.perf_counter() - t0:.1f} s")
    model, history, wall = fit_network(config, prep, log)
    return write_model_artifact(out_dir, model, prep, config, history, wall, overwrite, log)


def load_prepared(stores, config: TrainConfig, *, protocol=None,
                  max_cells: int | None = None) -> Prepared:
    """Read the stores for ``config`` (pooling, statuses) and prepare the splits; stores of
    another protocol than ``protocol`` (a Protocol or its hash) are refused."""
    data = load_dataset(stores, pool_k=config.input_pool, statuses=config.statuses,
                        max_cells=max_cells)
    want = getattr(protocol, "protocol_hash", protocol)
    if want is not None:
        check_protocol_hash(data.info["protocol_hash"], want, f"store {data.info['stores'][0]}")
    return prepare(data, config.input_noise_pA_per_pF)


def write_model_artifact(out_dir: str | Path, model, prep: Prepared, config: TrainConfig,
                         history: dict[str, list[float]], wall_s: float,
                         overwrite: bool = False,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate ``model`` on the test split and write the artifact (model, metadata,
    evaluation table and figure). Returns the metadata."""
    import keras

    from ..model.parameters import INFERRED_NAMES, REGISTRY_VERSION

    data = prep.data
    metrics = evaluate_split(model, prep, "test")
    log(f"test: median MAE {metrics['median_mae_unit']:.4f} (unit scale; trivial "
        f"{metrics['trivial']['median_mae_unit']:.4f}), {metrics['median_mae_pct_baseline']:.2f}"
        f"% of baseline; {metrics['n_identifiable']}/52 parameters with R² ≥ 0.5")
    n_epochs = len(history.get("loss", []))
    best = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else n_epochs
    n_train = data.sizes()["train"]
    meta = jsonable({
        "parameter_names": list(INFERRED_NAMES), "registry_version": REGISTRY_VERSION,
        "protocol_hash": data.info["protocol_hash"], "protocol": data.info["protocol"],
        "data": {k: data.info[k] for k in ("stores", "manifest_hashes", "config_hashes",
                                           "statuses", "max_cells", "split_sizes",
                                           "sampling_range", "i_total")},
        "input": prep.transform.to_json(), "output": prep.scaling.to_json(),
        "config": config.model_dump(mode="json"),
        "training": {"epochs": n_epochs, "best_epoch": best, "wall_s": wall_s,
                     "samples_per_s": n_train * n_epochs / wall_s if wall_s > 0 else None,
                     "backend": keras.backend.backend(), "keras": keras.__version__,
                     "devices": _devices(), "history": history},
        "test_metrics": {k: v for k, v in metrics.items() if k != "per_parameter"},
        "uncertainty": {"what": "per-parameter RMSE on the test split, as a multiplier",
                        "rmse_multiplier": [r["rmse_multiplier"]
                                            for r in metrics["per_parameter"]]},
    })
    y_pred = predict_unit(model, prep.x["test"])
    m_pred = prep.scaling.from_unit(y_pred)
    m_true = data.multipliers["test"].astype(np.float64)
    files = {
        "evaluation/metrics.json": lambda p: write_json_atomic(p, jsonable(metrics)),
        "evaluation/parameter_errors.csv": lambda p: write_error_table(metrics, p),
        "evaluation/parameter_recovery.png": lambda p: plot_recovery(
            list(INFERRED_NAMES), m_true, m_pred, metrics, p),
    }
    out = save_artifact(out_dir, model, meta, files, overwrite=overwrite)
    log(f"model artifact: {out}")
    return meta
