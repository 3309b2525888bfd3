"""A conditional normalizing flow in Keras 3: the density of the 52 multipliers given an
embedding of the trace (``keras.layers`` and ``keras.ops`` only: any backend).

Variables: ``u = logit(y)``, with ``y`` the multipliers on the unit scale (0 and 1 are the ends
of the sampling range), so every sample lies inside the prior's support. The normalizing
direction maps ``u`` to a standard normal ``z`` through

1. :class:`ConditionalAffine`: ``(u - shift(c)) * exp(-log_scale(c))``, the posterior's
   location and scale given the context ``c`` (a diagonal Gaussian by itself), then
2. ``flow_layers`` :class:`AffineCoupling` layers: the dimensions where ``mask = 0`` are
   shifted and scaled by an MLP of the others and the context (RealNVP, Dinh et al. 2017);
   masks are random halves, complementary in consecutive layers.

``log p(u | c) = log N(z; 0, I) + sum of log-determinants`` (:class:`GaussianLogProb`). Sampling
runs the layers' ``inverse`` in reverse order from ``z ~ N(0, temperature^2 I)``. Log-scales are
soft-clipped (``limit * tanh(s / limit)``) so no step can overflow.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

PACKAGE = "cardiotwin"
LOGIT_EPS = 1e-4  # unit-scale values are clipped to [eps, 1 - eps] before the logit
ANCHOR_EPS = 0.02  # the anchor's clip (logit +-3.9)


def to_logit(y: np.ndarray) -> np.ndarray:
    """Unit-scale multipliers -> the flow's variables (float32)."""
    y = np.clip(np.asarray(y, np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(y / (1.0 - y)).astype(np.float32)


def from_logit(u: np.ndarray) -> np.ndarray:
    """The flow's variables -> unit-scale multipliers in (0, 1) (float64)."""
    from scipy.special import expit

    return expit(np.asarray(u, np.float64))


def _soft_clip(x, limit: float):
    return limit * ops.tanh(x / limit)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConditionalAffine(keras.layers.Layer):
    """``[u, c, a] -> (z, log_det)``: z = (u - a - shift(c)) * exp(-log_scale(c)), shift and
    log-scale linear in the context c; ``a`` is the anchor (:class:`LogitAnchor`), a point
    estimate the flow starts from."""

    def __init__(self, n_dims: int, scale_limit: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.n_dims = int(n_dims)
        self.scale_limit = float(scale_limit)
        self.net = keras.layers.Dense(2 * self.n_dims, kernel_initializer="zeros",
                                      name="shift_log_scale")

    def build(self, input_shape):
        self.net.build(tuple(input_shape[1]))

    def _params(self, c, anchor):
        h = self.net(c)
        return anchor + h[:, :self.n_dims], _soft_clip(h[:, self.n_dims:], self.scale_limit)

    def call(self, inputs):
        u, c, anchor = inputs
        shift, log_scale = self._params(c, anchor)
        return (u - shift) * ops.exp(-log_scale), -ops.sum(log_scale, axis=-1)

    def inverse(self, z, c, anchor):
        shift, log_scale = self._params(c, anchor)
        return z * ops.exp(log_scale) + shift

    def get_config(self):
        return {**super().get_config(), "n_dims": self.n_dims, "scale_limit": self.scale_limit}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogitAnchor(keras.layers.Layer):
    """The first ``n_dims`` features (a linear estimate on the unit scale) -> their logit,
    clipped to [ANCHOR_EPS, 1 - ANCHOR_EPS] first (a linear estimate often lands outside the
    range; a far anchor would start the flow far from every plausible value)."""

    def __init__(self, n_dims: int, **kwargs):
        super().__init__(**kwargs)
        self.n_dims = int(n_dims)

    def call(self, features):
        y = ops.clip(features[:, :self.n_dims], ANCHOR_EPS, 1.0 - ANCHOR_EPS)
        return ops.log(y) - ops.log(1.0 - y)

    def get_config(self):
        return {**super().get_config(), "n_dims": self.n_dims}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AffineCoupling(keras.layers.Layer):
    """``[x, c] -> (z, log_det)``: dimensions with ``mask = 1`` pass unchanged; the others
    become ``(x - t) * exp(-s)`` with ``s, t`` an MLP of the passed dimensions and ``c``."""

    def __init__(self, mask, hidden: int, activation: str = "gelu", scale_limit: float = 1.5,
                 **kwargs):
        super().__init__(**kwargs)
        self.mask = [float(m) for m in mask]
        self.hidden = int(hidden)
        self.activation = activation
        self.scale_limit = float(scale_limit)
        d = len(self.mask)
        self.hidden_layers = [keras.layers.Dense(self.hidden, activation=activation,
                                                 name=f"hidden_{i}") for i in range(2)]
        self.out = keras.layers.Dense(2 * d, kernel_initializer="zeros", name="shift_log_scale")

    def build(self, input_shape):
        shape = (None, int(input_shape[0][-1]) + int(input_shape[1][-1]))
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = (None, self.hidden)
        self.out.build(shape)

    def _shift_log_scale(self, x, c):
        d = len(self.mask)
        keep = ops.convert_to_tensor(np.asarray(self.mask, np.float32))
        h = ops.concatenate([x * keep, c], axis=-1)
        for layer in self.hidden_layers:
            h = layer(h)
        h = self.out(h)
        free = 1.0 - keep
        return h[:, d:] * free, _soft_clip(h[:, :d], self.scale_limit) * free

    def call(self, inputs):
        x, c = inputs
        t, s = self._shift_log_scale(x, c)
        return (x - t) * ops.exp(-s), -ops.sum(s, axis=-1)

    def inverse(self, z, c):
        t, s = self._shift_log_scale(z, c)   # z equals x on the passed dimensions
        return z * ops.exp(s) + t

    def get_config(self):
        return {**super().get_config(), "mask": self.mask, "hidden": self.hidden,
                "activation": self.activation, "scale_limit": self.scale_limit}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GaussianLogProb(keras.layers.Layer):
    """``[z, log_det_1, ...] -> log N(z; 0, I) + sum(log_det)`` per sample."""

    def call(self, inputs):
        z, *log_dets = inputs
        d = ops.shape(z)[-1]
        out = -0.5 * ops.sum(z * z, axis=-1) - 0.5 * math.log(2 * math.pi) * d
        for ld in log_dets:
            out = out + ld
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class NegativeLogLikelihood(keras.losses.Loss):
    """The loss of a model whose output is log p: its negative (targets are ignored)."""

    def call(self, y_true, y_pred):
        return -y_pred


def coupling_masks(n_dims: int, n_layers: int, seed: int) -> list[np.ndarray]:
    """Random halves, the complement in every second layer: each dimension is transformed in
    half of the layers and conditions the other half."""
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(n_layers):
        if i % 2:
            masks.append(1.0 - masks[-1])
            continue
        m = np.zeros(n_dims)
        m[rng.permutation(n_dims)[: n_dims // 2]] = 1.0
        masks.append(m)
    return masks


def build_flow(context, anchor, theta, *, n_layers: int, hidden: int, activation: str,
               seed: int):
    """The flow's log-density output of the Keras tensors ``context`` (n, c), ``anchor``
    (n, d) and ``theta`` (n, d) (the logit variables)."""
    d = int(theta.shape[-1])
    z, log_det = ConditionalAffine(d, name="flow_base")([theta, context, anchor])
    log_dets = [log_det]
    for i, mask in enumerate(coupling_masks(d, n_layers, seed)):
        z, log_det = AffineCoupling(mask.tolist(), hidden, activation, name=f"flow_{i}")(
            [z, context])
        log_dets.append(log_det)
    return GaussianLogProb(name="log_prob")([z, *log_dets])


def _activation(name: str):
    """The numpy form of a Keras activation (exact GELU, as Keras' default)."""
    from scipy.special import erf, expit

    table = {"gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
             "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0),
             "swish": lambda x: x * expit(x), "linear": lambda x: x, None: lambda x: x}
    if name not in table:
        raise ValueError(f"activation {name!r}: no numpy form (expected {sorted(map(str, table))})")
    return table[name]


def _soft_clip_np(x: np.ndarray, limit: float) -> np.ndarray:
    return limit * np.tanh(x / limit)


class FlowSampler:
    """Sampling of a trained flow model (a model with inputs [features, theta] whose graph
    has the ``context`` and ``anchor`` layers of :func:`build_flow`'s inputs). The condition
    (context and anchor) is computed by the Keras layers; the inverse pass over the samples,
    the expensive part, runs in numpy (float32) from the layers' weights: the same algebra as
    the layers' ``inverse`` methods (tested equal), without per-op framework overhead."""

    def __init__(self, model, n_layers: int):
        self.condition_model = keras.Model(model.inputs[0], [model.get_layer("context").output,
                                                             model.get_layer("anchor").output])
        self.base = model.get_layer("flow_base")
        self.couplings = [model.get_layer(f"flow_{i}") for i in range(n_layers)]
        self._base_w = [np.asarray(w, np.float32) for w in self.base.net.get_weights()]
        self._coupling_w = []
        for layer in self.couplings:
            dense = [*layer.hidden_layers, layer.out]
            self._coupling_w.append((np.asarray(layer.mask, np.float32),
                                     [[np.asarray(w, np.float32) for w in d.get_weights()]
                                      for d in dense], _activation(layer.activation),
                                     layer.scale_limit))

    def condition(self, features: np.ndarray) -> np.ndarray:
        """(n, c + d): the context and the anchor of each feature row, side by side."""
        c, a = self.condition_model(np.asarray(features, np.float32), training=False)
        return np.concatenate([ops.convert_to_numpy(c), ops.convert_to_numpy(a)],
                              axis=1).astype(np.float32)

    def _coupling_inverse(self, k: int, z: np.ndarray, c: np.ndarray) -> np.ndarray:
        keep, weights, act, limit = self._coupling_w[k]
        d = len(keep)
        h = np.concatenate([z * keep, c], axis=1)
        for w, b in weights[:-1]:
            h = act(h @ w + b)
        w, b = weights[-1]
        h = h @ w + b
        free = 1.0 - keep
        t, s = h[:, d:] * free, _soft_clip_np(h[:, :d], limit) * free
        return z * np.exp(s) + t

    def _base_inverse(self, z: np.ndarray, c: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        w, b = self._base_w
        d = self.base.n_dims
        h = c @ w + b
        return z * np.exp(_soft_clip_np(h[:, d:], self.base.scale_limit)) + anchor + h[:, :d]

    def sample(self, condition: np.ndarray, n_samples: int, rng: np.random.Generator,
               temperature: float = 1.0, chunk_rows: int = 1 << 16) -> np.ndarray:
        """Logit samples (n, n_samples, d) for each row of :meth:`condition` (n, c + d)."""
        n = len(condition)
        d = self.base.n_dims
        cond = np.repeat(np.asarray(condition, np.float32), n_samples, axis=0)
        z = (rng.standard_normal((n * n_samples, d)) * temperature).astype(np.float32)
        out = np.empty_like(z)
        for a in range(0, len(z), chunk_rows):
            zz = z[a:a + chunk_rows]
            cc, anchor = cond[a:a + chunk_rows, :-d], cond[a:a + chunk_rows, -d:]
            for k in reversed(range(len(self.couplings))):
                zz = self._coupling_inverse(k, zz, cc)
            out[a:a + chunk_rows] = self._base_inverse(zz, cc, anchor)
        return out.reshape(n, n_samples, d)
