"""The two-variable Mitchell-Schaeffer model F_p and its bounded parameterization.

State X = (v, h), both normalized (v: 0 at the maximum diastolic potential, 1 at the peak;
h: gate in [0, 1]); time in ms; derivatives in normalized units per ms::

    dv/dt = h v^2 (1 - v) / tau_in  -  v / tau_out  +  J_stim(t)
    dh/dt = (1 - s(v)) (1 - h) / tau_open  -  s(v) h / tau_close,
    s(v)  = sigmoid((v - v_gate) / gate_width)

(s is the smooth form of the model's switch at v_gate, so F_p is differentiable in v and in
v_gate). J_stim(t) = stim_amplitude for 0 <= t < stim_duration_ms after the beat start.

Physical parameters are bounded by construction: each is a sigmoid of an unconstrained logit
theta mapped onto (lo, hi), in log space for the time constants (see ``config.Bound``).
"""

from __future__ import annotations

import numpy as np

from .config import PHYS_NAMES, PhysicsConfig


def _spec(cfg: PhysicsConfig):
    b = cfg.bounds()
    lo = np.array([np.log(x.lo) if x.log else x.lo for x in b])
    hi = np.array([np.log(x.hi) if x.log else x.hi for x in b])
    is_log = np.array([x.log for x in b])
    return lo, hi, is_log


def to_logits(cfg: PhysicsConfig, values=None) -> np.ndarray:
    """Unconstrained logits of physical ``values`` (default: the configured inits), (5,)."""
    lo, hi, is_log = _spec(cfg)
    vals = np.array([x.init for x in cfg.bounds()] if values is None else values, float)
    z = np.where(is_log, np.log(vals), vals)
    u = np.clip((z - lo) / (hi - lo), 1e-7, 1 - 1e-7)
    return np.log(u / (1 - u))


def from_logits(cfg: PhysicsConfig, theta) -> np.ndarray:
    """Physical values (ms, or normalized for v_gate) of logits ``theta`` (numpy)."""
    lo, hi, is_log = _spec(cfg)
    z = lo + (hi - lo) / (1 + np.exp(-np.asarray(theta, float)))
    return np.where(is_log, np.exp(z), z)


def from_logits_tf(cfg: PhysicsConfig, theta):
    """As :func:`from_logits`, with TensorFlow ops (differentiable)."""
    import tensorflow as tf

    lo, hi, is_log = _spec(cfg)
    z = tf.constant(lo, tf.float32) + tf.constant(hi - lo, tf.float32) * tf.sigmoid(theta)
    return tf.where(tf.constant(is_log), tf.exp(z), z)


def trainable_mask(cfg: PhysicsConfig) -> np.ndarray:
    return np.array([float(b.trainable) for b in cfg.bounds()], np.float32)


def as_dict(values) -> dict[str, float]:
    return {n: float(v) for n, v in zip(PHYS_NAMES, values, strict=True)}


def rhs_tf(t, x, p, gate_width, stim_amplitude, stim_duration_ms):
    """F_p(t, X) for a batch: x (B, 2), p (5,) physical values (tensor), t scalar (ms since the
    beat start) -> (B, 2) normalized/ms."""
    import tensorflow as tf

    v, h = x[:, 0:1], x[:, 1:2]
    tau_in, tau_out, tau_open, tau_close, v_gate = p[0], p[1], p[2], p[3], p[4]
    s = tf.sigmoid((v - v_gate) / gate_width)
    j = tf.where(t < stim_duration_ms, tf.constant(stim_amplitude, x.dtype),
                 tf.constant(0.0, x.dtype))
    dv = h * v * v * (1.0 - v) / tau_in - v / tau_out + j
    dh = (1.0 - s) * (1.0 - h) / tau_open - s * h / tau_close
    return tf.concat([dv, dh], axis=1)


def rhs_numpy(t, x, p, gate_width, stim_amplitude=0.0, stim_duration_ms=1.0):
    """F_p for one state x (2,) (reference for scipy.integrate.solve_ivp; same equations)."""
    v, h = x
    tau_in, tau_out, tau_open, tau_close, v_gate = p
    s = 1.0 / (1.0 + np.exp(-(v - v_gate) / gate_width))
    j = stim_amplitude if t < stim_duration_ms else 0.0
    return np.array([h * v * v * (1 - v) / tau_in - v / tau_out + j,
                     (1 - s) * (1 - h) / tau_open - s * h / tau_close])
