"""Pseudo-physics of the reconstruction loss: the modified Aliev-Panfilov (AP) model as one
second-order equation in the (normalized, dimensionless) membrane potential v.

The two AP equations (no diffusion, no stimulus; dimensionless time t~ = t / time_unit_ms)::

    dv/dt~ = -k v (v - a)(v - 1) - v w                          (1)
    dw/dt~ = eps(v) (-w - k v (v - a - 1))                       (2)

with a smooth recovery rate ``eps(v) = eps_plateau + (eps_rest - eps_plateau) * s(n (x - v))``
(s the logistic sigmoid, sharpness n = 1000): slow recovery (eps_plateau) while v is above the
threshold x, fast (eps_rest) below it. Eliminating w: (1) gives ``w = -(v' + f) / v`` with
``f = k v (v - a)(v - 1)``; differentiating and inserting into (2), times v^2 (no division, so
it is defined at v = 0 too)::

    F_AP = -[(v'' + f'(v) v') v - (v' + f) v'] - eps(v) [v (v' + f) - k v^3 (v - a - 1)] = 0

``f'(v) = k (3 v^2 - 2 (1 + a) v + a)``. F_AP vanishes on every solution of (1)-(2) (tested
against scipy's solve_ivp); the network's loss uses the mean of F_AP^2 over a window, with v',
v'' by central differences on the predicted trace. The same code works on NumPy arrays and on
Keras tensors (only arithmetic and ``tanh``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..settings import PositiveFloat, PositiveMs, Settings


class PhysicsConfig(Settings):
    """Constants and the ranges of the per-sample parameters (a, k, x) of the AP residual."""

    time_unit_ms: PositiveMs = Field(8.0, description="ms per dimensionless AP time unit")
    eps_rest: PositiveFloat = Field(0.2, description="recovery rate below the threshold x "
                                                     "(1 / AP time unit)")
    eps_plateau: PositiveFloat = Field(0.02, description="recovery rate above the threshold x "
                                                         "(1 / AP time unit)")
    sharpness: PositiveFloat = Field(1000.0, description="sigmoid sharpness n of eps(v) "
                                                        "(1 / normalized voltage)")
    log_floor: PositiveFloat = Field(1e-3, description="the loss uses log(L_physics + "
                             "log_floor): below this level (the residual that simulated Kernik "
                             "iAPs leave with their best-fitting a, k, x: median ~1e-3) the "
                             "log flattens, so the term cannot reward a flat trace "
                             "(L_physics ~1e-10) without bound")
    a_range: tuple[float, float] = Field((0.01, 0.5), description="range of the excitation "
                                         "threshold a (normalized voltage)")
    k_range: tuple[float, float] = Field((1.0, 20.0), description="range of the excitability "
                                         "k (dimensionless)")
    x_range: tuple[float, float] = Field((0.1, 1.0), description="range of the eps(v) switch "
                                         "voltage x (normalized voltage)")

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("a_range", "k_range", "x_range"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"{name} must be (low, high) with low < high, found {(lo, hi)}")
        return self

    def from_unit(self, u, which: str):
        """Map the network's unit-interval output to the parameter's range."""
        lo, hi = getattr(self, f"{which}_range")
        return lo + (hi - lo) * u


def sigmoid(z, tanh=np.tanh):
    """Logistic sigmoid via tanh (no overflow at large |z|)."""
    return 0.5 * (1.0 + tanh(0.5 * z))


def epsilon(v, x, cfg: PhysicsConfig, tanh=np.tanh):
    """Smooth recovery rate eps(v) (1 / AP time unit)."""
    return cfg.eps_plateau + (cfg.eps_rest - cfg.eps_plateau) * sigmoid(
        cfg.sharpness * (x - v), tanh)


def ap_rhs(v, w, a, k, x, cfg: PhysicsConfig, tanh=np.tanh):
    """Right-hand side (dv/dt~, dw/dt~) of the two AP equations (1)-(2)."""
    dv = -k * v * (v - a) * (v - 1.0) - v * w
    dw = epsilon(v, x, cfg, tanh) * (-w - k * v * (v - a - 1.0))
    return dv, dw


def ap_residual(v, dv, d2v, a, k, x, cfg: PhysicsConfig, tanh=np.tanh):
    """F_AP(v, dv/dt~, d2v/dt~2; a, k, x) of the module docstring (zero on AP solutions)."""
    f = k * v * (v - a) * (v - 1.0)
    fp = k * (3.0 * v * v - 2.0 * (1.0 + a) * v + a)
    eps = epsilon(v, x, cfg, tanh)
    return (-((d2v + fp * dv) * v - (dv + f) * dv)
            - eps * (v * (dv + f) - k * v * v * v * (v - a - 1.0)))


def finite_differences(v, h: float):
    """Central differences of v along the last axis with step h (AP time units): (v, v', v'')
    at the interior samples 1 .. n-2."""
    vm, vc, vp = v[..., :-2], v[..., 1:-1], v[..., 2:]
    return vc, (vp - vm) / (2.0 * h), (vp - 2.0 * vc + vm) / (h * h)


def residual_of_trace(v, dt_ms: float, a, k, x, cfg: PhysicsConfig, tanh=np.tanh):
    """F_AP at the interior samples of traces v (..., n) sampled every ``dt_ms`` ms; a, k, x
    broadcast against v[..., :1]."""
    vc, dv, d2v = finite_differences(v, dt_ms / cfg.time_unit_ms)
    return ap_residual(vc, dv, d2v, a, k, x, cfg, tanh)


def physics_loss_numpy(v: np.ndarray, dt_ms: float, a, k, x, cfg: PhysicsConfig) -> Any:
    """Mean of F_AP^2 over the interior samples of each trace (NumPy)."""
    r = residual_of_trace(np.asarray(v, dtype=np.float64), dt_ms, a, k, x, cfg)
    return np.mean(r * r, axis=-1)
