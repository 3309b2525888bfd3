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
    transform = InputTransform.fit(data.i_total["train"], info["pool"], info["n_stored"],
                                   tuple(info["store_decimation"]),
                                   noise_pA_per_pF=noise_pA_per_pF, edges=info.get("edges"))
    if "prior_bounds" in info:
        scaling = OutputScaling.from_bounds(info["prior_bounds"])
    else:
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
            shown = "  ".join(f"{k} {float(v):.5f}" for k, v in (logs or {}).items()
                              if k in ("loss", "val_loss", "val_mae"))
            log(f"epoch {epoch + 1:4d}  {shown}  {dt:.1f} s  {n_train / dt:.0f} samples/s")

    return EpochLog()


def fit_network(cfg: TrainConfig, prep: Prepared, log: Callable[[str], None] = print,
                extra_callbacks: list | None = None, verbose: bool = True):
    """Build and train the network of ``cfg`` with early stopping on the validation loss
    (best weights restored). Returns (model, history dict, seconds training)."""
    import keras

    from .networks import build_network, ridge_mlp_init

    if cfg.architecture == "flow":
        return fit_flow(cfg, prep, log, extra_callbacks, verbose)
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


def fit_flow(cfg: TrainConfig, prep: Prepared, log: Callable[[str], None] = print,
             extra_callbacks: list | None = None, verbose: bool = True):
    """Fit the posterior flow by maximum likelihood (fresh recording noise in every batch, a
    fixed noisy copy of the validation split), early stopping on the validation loss (best
    weights restored). Returns (the full model, history dict, seconds training)."""
    import keras

    from .batches import NoisyBatches, add_noise, projected_noise_factor
    from .flow import to_logit
    from .linear import out_of_fold_ridge
    from .networks import build_flow_network, flow_projection, ridge_mlp_init

    t0 = time.perf_counter()
    init = ridge_mlp_init(cfg, prep.x["train"], prep.y["train"], prep.x["val"], prep.y["val"],
                          prep.noise_sd)
    if verbose:
        log(f"ridge and whitening fitted in {time.perf_counter() - t0:.1f} s (penalty "
            f"{init['ridge_lambda']:.3g})")
    trainer, full = build_flow_network(cfg, prep.x["train"].shape[1], prep.y["train"].shape[1],
                                       init)
    w, b = flow_projection(init)
    factor = projected_noise_factor(w, prep.noise_sd)
    feats = {s: prep.x[s] @ w + b for s in ("train", "val")}
    # the flow learns how far to trust the ridge estimate from out-of-fold estimates
    feats["train"][:, :prep.y["train"].shape[1]] = out_of_fold_ridge(
        prep.x["train"], prep.y["train"], init["ridge_lambda"], prep.noise_sd, seed=cfg.seed)
    theta = {s: to_logit(prep.y[s]) for s in ("train", "val")}
    n_train = len(feats["train"])
    batches = NoisyBatches(feats["train"], theta["train"], cfg.batch_size_for(n_train), factor,
                           cfg.seed)
    f_val = add_noise(feats["val"], factor, np.random.default_rng(cfg.seed + 1))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    cbs = [stop] + ([epoch_logger(n_train, log)] if verbose else []) + (extra_callbacks or [])
    t0 = time.perf_counter()
    hist = trainer.fit(batches, epochs=cfg.epochs, callbacks=cbs, verbose=0,
                       validation_data=((f_val, theta["val"]),
                                        np.zeros(len(f_val), np.float32)))
    wall = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return full, history, wall


def predict_unit(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float64)


def evaluate_split(model, prep: Prepared, split: str = "test",
                   config: TrainConfig | None = None) -> dict[str, Any]:
    """Metrics of ``model`` on a split (see :func:`evaluate_predictions`); a flow (``config``
    of architecture flow) is scored by its posterior mean."""
    from ..model.parameters import INFERRED_NAMES

    if config is not None and config.architecture == "flow":
        from .posterior import POINT_SAMPLES, FlowPosterior

        y_pred = FlowPosterior(model, config.flow_layers).sample_unit_chunked(
            prep.x[split], POINT_SAMPLES, config.seed).mean(axis=1)
    else:
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
                        max_cells=max_cells, multirate=config.multirate_widths())
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
    files: dict[str, Callable[[Path], Any]] = {}
    posterior_block = None
    if config.architecture == "flow":
        from .calibration import plot_calibration, write_identifiability_table
        from .posterior import evaluate_posterior

        idx, y_pred, posterior_block, report = evaluate_posterior(model, prep, config)
        cal = posterior_block["calibration"]
        raw = posterior_block["uncalibrated"]["coverage"]
        log(f"posterior: test coverage 50% {cal['coverage']['0.5']:.3f}, 90% "
            f"{cal['coverage']['0.9']:.3f} (before recalibration {raw['0.5']:.3f}, "
            f"{raw['0.9']:.3f}); SBC chi2 "
            f"{cal['sbc']['chi2']:.1f} ({cal['sbc']['dof']} dof); {cal['n_identifiable']}/52 "
            f"with contraction >= {cal['identifiable_contraction']}; OOD flag rate on test "
            f"{posterior_block['ood']['test_flag_rate']:.3f}")
        files.update({
            "evaluation/calibration.json": lambda p: write_json_atomic(p, jsonable(report)),
            "evaluation/identifiability.csv": lambda p: write_identifiability_table(report, p),
            "evaluation/calibration.png": lambda p: plot_calibration(report, p)})
    else:
        idx = np.arange(len(prep.x["test"]))
        y_pred = predict_unit(model, prep.x["test"])
    m_pred = prep.scaling.from_unit(y_pred)
    m_true = data.multipliers["test"][idx].astype(np.float64)
    metrics = evaluate_predictions(list(INFERRED_NAMES), prep.y["test"][idx], y_pred, m_true,
                                   m_pred, prep.y["train"].mean(axis=0))
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
                                           "sampling_range", "prior_bounds", "vc_artefacts",
                                           "i_total")
                 if k in data.info},
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
        **({"posterior": posterior_block} if posterior_block is not None else {}),
    })
    files.update({
        "evaluation/metrics.json": lambda p: write_json_atomic(p, jsonable(metrics)),
        "evaluation/parameter_errors.csv": lambda p: write_error_table(metrics, p),
        "evaluation/parameter_recovery.png": lambda p: plot_recovery(
            list(INFERRED_NAMES), m_true, m_pred, metrics, p),
    })
    out = save_artifact(out_dir, model, meta, files, overwrite=overwrite)
    log(f"model artifact: {out}")
    return meta
