"""Keras 3 networks: normalized I_total (n_inputs,) -> 52 outputs on the [0, 1] scale.

Only ``keras.layers`` and ``keras.ops`` are used, so the same code runs on the TensorFlow, JAX
and PyTorch backends. ``ridge_mlp`` needs the training data to set its fixed layers
(:func:`ridge_mlp_init`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import TrainConfig

MAX_LINEAR_INPUTS = 16384  # inputs of the closed-form (ridge, whitening) layers: 2 GiB covariance


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

    if x.shape[1] > MAX_LINEAR_INPUTS:
        raise ValueError(f"{x.shape[1]} network inputs: the closed-form layers need a d x d "
                         f"covariance ({x.shape[1] ** 2 * 8 / 2 ** 30:.0f} GiB); at most "
                         f"{MAX_LINEAR_INPUTS} inputs: pool them (--input-pool) or use the "
                         "multi-rate input (--input multirate)")
    cov = Covariance.fit(x, noise_sd)
    w, b, lam = fit_ridge(x, y, x_val, y_val, cov)
    pw, pb, sd = whitening(cov, cfg.pca_components)
    return {"ridge": (w.astype(np.float32), b.astype(np.float32)), "ridge_lambda": lam,
            "whiten": (pw.astype(np.float32), pb.astype(np.float32)), "whiten_sd": sd}


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
    if cfg.architecture == "flow":
        raise ValueError("the flow is built by build_flow_network (it is fitted by likelihood)")
    if cfg.architecture == "ridge_mlp" and init is None:
        raise ValueError("ridge_mlp needs its data-dependent layers: pass "
                         "init=ridge_mlp_init(cfg, x_train, y_train, x_val, y_val)")
    builder = {"fc": build_fc, "ridge_mlp": build_ridge_mlp}[cfg.architecture]
    model = builder(cfg, n_inputs, n_outputs, init)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse",
                  metrics=["mae"])
    return model


def flow_projection(init: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The fixed linear front of the flow: [ridge estimate (unit scale) | whitened principal
    components] of the normalized trace, as one (d, 52 + k) matrix and bias."""
    (wr, br), (ww, bw) = init["ridge"], init["whiten"]
    return (np.concatenate([wr, ww], axis=1).astype(np.float32),
            np.concatenate([br, bw]).astype(np.float32))


def build_flow_network(cfg: TrainConfig, n_inputs: int, n_outputs: int, init):
    """The posterior network (see the config module), as two models sharing their layers:
    ``trainer`` ([projected features, logit multipliers] -> log density; what is fitted, with
    the recording noise added in the projected space) and ``full`` ([normalized trace, logit
    multipliers] -> log density: the fixed ``projection`` layer, then ``trainer``; what the
    artifact stores). Returns (trainer, full), the trainer compiled."""
    import keras

    from .flow import LogitAnchor, NegativeLogLikelihood, build_flow

    keras.utils.set_random_seed(cfg.seed)
    L = keras.layers
    w, b = flow_projection(init)
    f_in = keras.Input((w.shape[1],), name="features")
    theta = keras.Input((n_outputs,), name="theta")
    h = L.GaussianNoise(cfg.feature_noise, seed=cfg.seed)(f_in) if cfg.feature_noise else f_in
    context = L.Dense(cfg.context_dim, name="context")(_hidden(h, cfg, "embed"))
    anchor = LogitAnchor(n_outputs, name="anchor")(f_in)
    log_p = build_flow(context, anchor, theta, n_layers=cfg.flow_layers, hidden=cfg.flow_hidden,
                       activation=cfg.activation, seed=cfg.seed)
    trainer = keras.Model([f_in, theta], log_p, name="posterior")
    x_in = keras.Input((n_inputs,), name="i_total")
    theta_full = keras.Input((n_outputs,), name="theta")
    proj = L.Dense(w.shape[1], trainable=False, name="projection")
    full = keras.Model([x_in, theta_full], trainer([proj(x_in), theta_full]),
                       name=f"posterior_flow_{cfg.flow_layers}x{cfg.flow_hidden}")
    proj.set_weights([w, b])
    optimizer = (keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)
                 if cfg.weight_decay > 0 else keras.optimizers.Adam(cfg.learning_rate))
    trainer.compile(optimizer=optimizer,
                    loss=NegativeLogLikelihood())
    return trainer, full
