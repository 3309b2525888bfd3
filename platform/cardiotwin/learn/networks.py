"""Keras 3 networks: normalized I_total (n_inputs,) -> 52 outputs on the [0, 1] scale.

Only ``keras.layers`` and ``keras.ops`` are used, so the same code runs on the TensorFlow, JAX
and PyTorch backends. ``ridge_mlp`` needs the training data to set its fixed layers
(:func:`ridge_mlp_init`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import TrainConfig


def _hidden(x, cfg: TrainConfig, prefix: str):
    import keras

    for i in range(cfg.depth):
        x = keras.layers.Dense(cfg.width, activation=cfg.activation, name=f"{prefix}_{i}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, seed=cfg.seed + i)(x)
    return x


def build_fc(cfg: TrainConfig, n_inputs: int, n_outputs: int, init=None):
    """Fully connected: ``depth`` hidden layers of ``width`` units, linear output."""
    import keras

    x_in = keras.Input((n_inputs,), name="i_total")
    out = keras.layers.Dense(n_outputs, name="parameters")(_hidden(x_in, cfg, "hidden"))
    return keras.Model(x_in, out, name=f"fc_{cfg.depth}x{cfg.width}")


def ridge_mlp_init(cfg: TrainConfig, x: np.ndarray, y: np.ndarray, x_val: np.ndarray,
                   y_val: np.ndarray, noise_sd: np.ndarray | None = None) -> dict[str, Any]:
    """The fixed layers of ``ridge_mlp`` from the training (and validation) data: ridge
    weights, penalty, and the PCA whitening; ``noise_sd`` (normalized, per input) the
    recording noise they must tolerate."""
    from .linear import Covariance, fit_ridge, whitening

    cov = Covariance.fit(x, noise_sd)
    w, b, lam = fit_ridge(x, y, x_val, y_val, cov)
    pw, pb = whitening(cov, cfg.pca_components)
    return {"ridge": (w.astype(np.float32), b.astype(np.float32)), "ridge_lambda": lam,
            "whiten": (pw.astype(np.float32), pb.astype(np.float32))}


def build_ridge_mlp(cfg: TrainConfig, n_inputs: int, n_outputs: int, init=None):
    """Fixed ridge map + MLP correction on the whitened trace (see the config module)."""
    import keras

    L = keras.layers
    x_in = keras.Input((n_inputs,), name="i_total")
    k = min(cfg.pca_components, n_inputs)
    linear = L.Dense(n_outputs, trainable=False, name="ridge")(x_in)
    z = L.Dense(k, trainable=False, name="whiten")(x_in)
    corr = L.Dense(n_outputs, kernel_initializer="zeros", name="correction")(
        _hidden(z, cfg, "mlp"))
    model = keras.Model(x_in, L.Add(name="parameters")([linear, corr]),
                        name=f"ridge_mlp_{cfg.depth}x{cfg.width}")
    if init is not None:
        model.get_layer("ridge").set_weights(list(init["ridge"]))
        model.get_layer("whiten").set_weights(list(init["whiten"]))
    return model


def build_network(cfg: TrainConfig, n_inputs: int, n_outputs: int = 52, init=None):
    """The compiled network of ``cfg`` (Adam at ``cfg.learning_rate``, MSE loss, MAE metric).
    ``init``: :func:`ridge_mlp_init` for ``ridge_mlp`` (required there)."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    if cfg.architecture == "ridge_mlp" and init is None:
        raise ValueError("ridge_mlp needs its data-dependent layers: pass "
                         "init=ridge_mlp_init(cfg, x_train, y_train, x_val, y_val)")
    builder = {"fc": build_fc, "ridge_mlp": build_ridge_mlp}[cfg.architecture]
    model = builder(cfg, n_inputs, n_outputs, init)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse",
                  metrics=["mae"])
    return model
