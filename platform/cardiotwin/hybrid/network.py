"""F_dl: a small residual network (Keras 3) for what Mitchell-Schaeffer misses.

(v, h) -> Dense(width, tanh) -> ``blocks`` x [z + Dense(width, tanh)(z)] -> Dense(2) x
``output_scale``, the output layer initialized at zero (the hybrid starts as pure physics).
Output: corrections to (dv/dt, dh/dt) in normalized units per ms. The fixed output scale
(0.01/ms) matches the size of what the physics misses on the plateau (~1e-3/ms), so that Adam's
steps on the weights move F_dl by small amounts.

The fit calls the model statelessly (``stateless_call``) with weights passed as tensors, so one
compiled training step serves every fit of the same architecture.
"""

from __future__ import annotations

import functools

import numpy as np

from .config import NetworkConfig


def build_network(cfg: NetworkConfig):
    """A fresh Keras model (weights drawn from ``cfg.seed``)."""
    import keras

    L = keras.layers
    init = keras.initializers.GlorotUniform(seed=cfg.seed)
    x_in = keras.Input((2,), name="state")
    z = L.Dense(cfg.width, activation="tanh", kernel_initializer=init, name="dl_in")(x_in)
    for i in range(cfg.blocks):
        blk = L.Dense(cfg.width, activation="tanh", name=f"dl_block{i}",
                      kernel_initializer=keras.initializers.GlorotUniform(seed=cfg.seed + i + 1))
        z = L.Add(name=f"dl_skip{i}")([z, blk(z)])
    out = L.Dense(2, kernel_initializer="zeros", bias_initializer="zeros", name="dl_out")(z)
    out = L.Rescaling(cfg.output_scale, name="dl_scale")(out)
    return keras.Model(x_in, out, name=f"f_dl_{cfg.width}x{cfg.blocks}")


@functools.lru_cache(maxsize=8)
def template(width: int, blocks: int, output_scale: float):
    """One shared model per architecture, used as a stateless function of its weights."""
    return build_network(NetworkConfig(width=width, blocks=blocks, output_scale=output_scale))


def initial_weights(cfg: NetworkConfig) -> list[np.ndarray]:
    """Initial trainable weights (float32 arrays, in the model's order)."""
    return [np.asarray(w, np.float32) for w in build_network(cfg).get_weights()]


def apply(cfg_or_model, weights, x):
    """F_dl(x) with ``weights`` (a list of tensors in the model's order): x (N, 2) -> (N, 2)."""
    model = (cfg_or_model if not isinstance(cfg_or_model, NetworkConfig)
             else template(cfg_or_model.width, cfg_or_model.blocks, cfg_or_model.output_scale))
    y, _ = model.stateless_call(list(weights), [], x)
    return y


def weight_count(cfg: NetworkConfig) -> int:
    return int(sum(w.size for w in initial_weights(cfg)))
