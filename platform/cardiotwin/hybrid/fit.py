"""Fitting the hybrid dX/dt = F_p(X) + F_dl(X) to normalized beats, and forecasting.

Two stages, both through the same compiled (XLA) step, RK4 at ``dt_ms`` (0.1 ms):

1. Physics only (F_dl switched off): Adam on the logits of the trainable Mitchell-Schaeffer
   parameters (and h0) minimizing L_traj. This is also the "physics-only" model.
2. Joint (when ``use_dl``): F_p and F_dl together, minimizing lambda_j * L_traj + ||F_dl||, then
   lambda_{j+1} = lambda_j + gamma * L_traj,j (the APHYNITY / APHYN-EP rule: the physics explains
   as much as it can, the network only the rest). Threshold dynamics make the trajectory loss
   rough: a step whose L_traj exceeds ``spike_factor`` x the best so far is undone (back to the
   best iterate, learning rates halved; lambda still follows the rule), and the stage returns
   the iterate with the lowest L_traj.

L_traj: mean squared error of the forecast v against the observed normalized v over every
beat's window (masked; normalized^2). ||F_dl||: RMS of F_dl over the forecast states at the
observation times (normalized/ms). Each beat is forecast from one initial state: v0 = the
start level on its upstroke (``data.start_level``, 0.5, above v_gate) and h0 (``h0_init``,
1 = gate fully recovered, fixed by default). A spontaneous beat has no stimulus, so the model
starts from the measured state past threshold instead of being stimulated. Started above
v_gate, h(t) = h0 exp(-t / tau_close) as long as v stays above v_gate, so only h0 / tau_in is
identifiable: the fitted tau_in is the inward time constant for h0 = ``h0_init``.

Parameters are passed to the compiled step as tensors (Adam written out here), so a process
compiles once per architecture and window shape and then fits any number of recordings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import mitchell_schaeffer as ms
from .config import PHYS_NAMES, FitConfig, PhysicsConfig
from .data import BeatSet
from .integrate import integrate
from .network import apply as net_apply
from .network import initial_weights, template

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8
_CACHE: dict[Any, Any] = {}


@dataclass
class ModelState:
    """One fitted model: physical values (ms; v_gate normalized), h0 at the beat start, and the
    F_dl weights (None: physics only)."""

    physics: dict[str, float]
    h0: float
    weights: list[np.ndarray] | None = None


@dataclass
class HybridFit:
    """Result of :func:`fit_beats`. ``physics_only``: after stage 1; ``hybrid``: after stage 2
    (None when F_dl is off). Histories per step: ``l_traj`` (normalized^2), ``fdl_norm``
    (normalized/ms), ``lam`` (lambda used at that step; one more entry: the value after the
    last update), ``loss``."""

    name: str
    config: FitConfig
    physics_only: ModelState
    hybrid: ModelState | None
    n_beats: int
    history_physics: dict[str, list[float]] = field(default_factory=dict)
    history_hybrid: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = math.nan
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> ModelState:
        return self.hybrid if self.hybrid is not None else self.physics_only

    @property
    def fdl_norm(self) -> float:
        h = self.history_hybrid.get("fdl_norm")
        return float(h[-1]) if h else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary (no network weights)."""
        def state(s):
            return None if s is None else {"physics": s.physics, "h0": s.h0}

        hp, hh = self.history_physics, self.history_hybrid
        return {
            "name": self.name, "n_beats": self.n_beats, "seconds": round(self.seconds, 2),
            "physics_only": state(self.physics_only), "hybrid": state(self.hybrid),
            "l_traj_physics_only": hp["l_traj"][-1] if hp.get("l_traj") else None,
            "l_traj_hybrid": hh["l_traj"][-1] if hh.get("l_traj") else None,
            "fdl_norm": self.fdl_norm if hh else None,
            "lambda_final": hh["lam"][-1] if hh.get("lam") else None,
            "units": "tau in ms; v, h, v_gate normalized; l_traj normalized^2; fdl_norm "
                     "normalized/ms",
            "config": self.config.model_dump(), **self.meta,
        }


def configure_threads(n: int = 1) -> None:
    """Limit TensorFlow to ``n`` threads (call before the first TensorFlow op; later calls are
    ignored)."""
    from ..runtime.threads import limit_tensorflow_threads

    limit_tensorflow_threads(n)


# ----------------------------------------------------------------------------- compiled parts

def _rhs(cfg: FitConfig, p, w, with_net: bool):
    """dX/dt = F_p (+ F_dl when ``with_net``) as a closure over tensors."""
    phys = cfg.physics
    model = template(cfg.network.width, cfg.network.blocks, cfg.network.output_scale)

    def f(t, x):
        fp = ms.rhs_tf(t, x, p, phys.gate_width, phys.stim_amplitude, phys.stim_duration_ms)
        return fp + net_apply(model, w, x) if with_net else fp

    return f


def _key(cfg: FitConfig, what: str, with_net: bool):
    return (what, with_net, cfg.physics.model_dump_json(),
            cfg.network.model_dump_json(exclude={"seed"}), cfg.substeps, cfg.dt_ms)


def _adam(p, g, m, v, it, lr):
    import tensorflow as tf

    m = _ADAM_B1 * m + (1 - _ADAM_B1) * g
    v = _ADAM_B2 * v + (1 - _ADAM_B2) * g * g
    mh = m / (1 - tf.pow(_ADAM_B1, it))
    vh = v / (1 - tf.pow(_ADAM_B2, it))
    return p - lr * mh / (tf.sqrt(vh) + _ADAM_EPS), m, v


def _train_step(cfg: FitConfig, with_net: bool):
    """The compiled Adam step; without the network for the physics-only stage (a smaller graph,
    faster to compile and to run)."""
    key = _key(cfg, "train", with_net)
    if key in _CACHE:
        return _CACHE[key]
    import tensorflow as tf

    model = template(cfg.network.width, cfg.network.blocks, cfg.network.output_scale)
    sub, dt = cfg.substeps, cfg.dt_ms

    @tf.function(jit_compile=True)
    def step(s, batch, lam, lr_p, lr_n):
        theta, h0u, w = s["theta"], s["h0u"], s["w"]
        x0v, y, mask = batch["x0v"], batch["y"], batch["mask"]
        n_out = y.shape[0]
        with tf.GradientTape() as tape:
            tape.watch([theta, h0u, *w])
            p = ms.from_logits_tf(cfg.physics, theta)
            h0 = tf.sigmoid(h0u)
            x0 = tf.stack([x0v, h0 * tf.ones_like(x0v)], axis=1)
            traj = integrate(_rhs(cfg, p, w, with_net), x0, n_out, sub, dt)[1:]
            n = tf.reduce_sum(mask)
            l_traj = tf.reduce_sum(mask * tf.square(traj[:, :, 0] - y)) / n
            if with_net:
                fdl = net_apply(model, w, tf.reshape(traj, (-1, 2)))
                ms2 = tf.reduce_sum(tf.reshape(mask, (-1,))
                                    * tf.reduce_sum(tf.square(fdl), 1)) / n
                norm = tf.sqrt(ms2 + 1e-12)
                loss = lam * l_traj + norm
            else:
                norm = tf.constant(0.0)
                loss = lam * l_traj
        g_theta, g_h0, *g_w = tape.gradient(loss, [theta, h0u, *w])
        g_theta = g_theta * batch["phys_mask"]
        g_h0 = g_h0 * batch["h0_train"]
        finite = tf.math.is_finite(loss) & tf.reduce_all(tf.math.is_finite(g_theta)) \
            & tf.math.is_finite(g_h0)
        for g in g_w:
            finite &= tf.reduce_all(tf.math.is_finite(g))
        it = s["it"] + 1.0
        th2, mth, vth = _adam(theta, g_theta, s["m_theta"], s["v_theta"], it, lr_p)
        h02, mh0, vh0 = _adam(h0u, g_h0, s["m_h0"], s["v_h0"], it, lr_p)
        w2, mw, vw = [], [], []
        for wi, gi, mi, vi in zip(w, g_w, s["m_w"], s["v_w"], strict=True):
            a, b, c = _adam(wi, gi, mi, vi, it, lr_n)
            w2.append(a)
            mw.append(b)
            vw.append(c)
        new = {"theta": th2, "h0u": h02, "w": w2, "m_theta": mth, "v_theta": vth,
               "m_h0": mh0, "v_h0": vh0, "m_w": mw, "v_w": vw, "it": it}
        new = tf.nest.map_structure(lambda a, b: tf.where(finite, a, b), new, s)
        return new, l_traj, norm, loss

    _CACHE[key] = step
    return step


def _physics_loss_grad(cfg: FitConfig):
    """Compiled L_traj and its gradient in (theta, h0u), physics only (for L-BFGS)."""
    key = _key(cfg, "loss_grad", False)
    if key in _CACHE:
        return _CACHE[key]
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def run(z, batch):
        with tf.GradientTape() as tape:
            tape.watch(z)
            p = ms.from_logits_tf(cfg.physics, z[:5])
            h0 = tf.sigmoid(z[5])
            x0 = tf.stack([batch["x0v"], h0 * tf.ones_like(batch["x0v"])], axis=1)
            traj = integrate(_rhs(cfg, p, [], False), x0, batch["y"].shape[0], cfg.substeps,
                             cfg.dt_ms)[1:]
            mask = batch["mask"]
            l_traj = tf.reduce_sum(mask * tf.square(traj[:, :, 0] - batch["y"])) \
                / tf.reduce_sum(mask)
        g = tape.gradient(l_traj, z)
        return l_traj, g * tf.concat([batch["phys_mask"], batch["h0_train"][None]], 0)

    _CACHE[key] = run
    return run


def _forecast_fn(cfg: FitConfig, with_net: bool):
    key = _key(cfg, "forecast", with_net)
    if key in _CACHE:
        return _CACHE[key]
    import tensorflow as tf

    model = template(cfg.network.width, cfg.network.blocks, cfg.network.output_scale)
    phys = cfg.physics

    @tf.function(jit_compile=True)
    def run(p, w, x0, t_grid):
        n_out = t_grid.shape[0] - 1
        traj = integrate(_rhs(cfg, p, w, with_net), x0, n_out, cfg.substeps, cfg.dt_ms)
        flat = tf.reshape(traj, (-1, 2))
        t_flat = tf.reshape(tf.repeat(t_grid[:, None], tf.shape(x0)[0], axis=1), (-1,))
        fp = _fp_pointwise(t_flat, flat, p, phys)
        fdl = net_apply(model, w, flat) if with_net else tf.zeros_like(flat)
        shape = tf.shape(traj)
        return traj, tf.reshape(fp, shape), tf.reshape(fdl, shape)

    _CACHE[key] = run
    return run


def _fp_pointwise(t, x, p, phys: PhysicsConfig):
    """F_p at many (t, x) pairs: t (N,), x (N, 2)."""
    import tensorflow as tf

    v, h = x[:, 0], x[:, 1]
    s = tf.sigmoid((v - p[4]) / phys.gate_width)
    j = tf.where(t < phys.stim_duration_ms, phys.stim_amplitude, 0.0)
    dv = h * v * v * (1.0 - v) / p[0] - v / p[1] + j
    dh = (1.0 - s) * (1.0 - h) / p[2] - s * h / p[3]
    return tf.stack([dv, dh], axis=1)


# ----------------------------------------------------------------------------- fitting

def _logit(x: float) -> float:
    x = min(max(x, 1e-7), 1 - 1e-7)     # h0 = 1 (fixed): sigmoid(16.1) = 1 in float32
    return math.log(x / (1 - x))


def _schedule(lr: float, final_fraction: float, j: int, n: int, warmup: int = 0) -> float:
    """Exponential decay to ``final_fraction`` over n steps, after a linear warm-up."""
    ramp = min(1.0, (j + 1) / warmup) if warmup > 0 else 1.0
    return ramp * lr * final_fraction ** (j / max(n - 1, 1))


def fit_beats(beats: BeatSet, config: FitConfig | None = None, *,
              log: Callable[[str], None] | None = None) -> HybridFit:
    """Fit the hybrid (or, with ``config.use_dl`` False, the physics alone) to the beats of
    one recording. Returns the physics-only and the hybrid model, histories and timings."""
    import tensorflow as tf

    cfg = config or FitConfig()
    t_start = time.perf_counter()
    arrays = beats.arrays(cfg.n_out, cfg.data.max_beats)
    if arrays["n_beats"] == 0:
        raise ValueError(f"{beats.name}: no beat to fit")
    batch = {"x0v": tf.constant(arrays["x0v"], tf.float32),
             "y": tf.constant(arrays["y"], tf.float32),
             "mask": tf.constant(arrays["mask"], tf.float32),
             "phys_mask": tf.constant(ms.trainable_mask(cfg.physics)),
             "h0_train": tf.constant(float(cfg.learn_h0))}
    w0 = initial_weights(cfg.network)

    def fresh(theta, h0u, w):
        z = [tf.zeros_like(x) for x in w]
        return {"theta": tf.constant(theta, tf.float32), "h0u": tf.constant(h0u, tf.float32),
                "w": [tf.constant(x, tf.float32) for x in w],
                "m_theta": tf.zeros(5), "v_theta": tf.zeros(5), "m_h0": tf.constant(0.0),
                "v_h0": tf.constant(0.0), "m_w": z, "v_w": list(z), "it": tf.constant(0.0)}

    def run_stage(s, n_steps, with_net, lam0, gamma, lr_p, lr_n, warmup=0):
        step = _train_step(cfg, with_net)
        hist: dict[str, list[float]] = {"l_traj": [], "fdl_norm": [], "lam": [lam0],
                                        "loss": [], "reverted": []}
        lam, scale = lam0, 1.0
        best_l, best_s = math.inf, s
        for j in range(n_steps):
            s_new, l_traj, norm, loss = step(
                s, batch, tf.constant(lam, tf.float32),
                tf.constant(scale * _schedule(lr_p, cfg.lr_final_fraction, j, n_steps,
                                              warmup), tf.float32),
                tf.constant(scale * _schedule(lr_n, cfg.lr_final_fraction, j, n_steps,
                                              warmup), tf.float32))
            lt = float(l_traj)              # at s, before this step's update
            hist["l_traj"].append(lt)
            hist["fdl_norm"].append(float(norm))
            hist["loss"].append(float(loss))
            if math.isfinite(lt):
                lam = lam + gamma * lt
            hist["lam"].append(lam)
            if lt < best_l:
                best_l, best_s = lt, s
            elif not lt <= cfg.spike_factor * best_l:
                s_new, scale = best_s, 0.5 * scale   # loss spike: back to the best, slower
                hist["reverted"].append(j)
            s = s_new
            if log and (j % 50 == 0 or j == n_steps - 1):
                log(f"  step {j:4d}  L_traj {lt:.3e}  ||F_dl|| {float(norm):.3e}  "
                    f"lambda {hist['lam'][-2]:.3g}  ({time.perf_counter() - t_start:.1f} s)")
        return (best_s if n_steps else s), hist

    def state_of(s, with_net):
        vals = ms.from_logits(cfg.physics, s["theta"].numpy())
        return ModelState(ms.as_dict(vals), float(tf.sigmoid(s["h0u"])),
                          [w.numpy() for w in s["w"]] if with_net else None)

    s = fresh(ms.to_logits(cfg.physics), _logit(cfg.h0_init), [])
    if log:
        log(f"{beats.name}: physics-only stage, {cfg.physics_optimizer} <= {cfg.physics_steps} "
            f"steps")
    if cfg.physics_optimizer == "lbfgs":
        s, hist_p = _lbfgs_stage(cfg, s, batch, log)
    else:
        s, hist_p = run_stage(s, cfg.physics_steps, False, 1.0, 0.0, cfg.lr_physics,
                              cfg.lr_network)
    physics_only = state_of(s, False)
    hybrid, hist_h = None, {}
    if cfg.use_dl and cfg.hybrid_steps > 0:
        if log:
            log(f"{beats.name}: joint stage, {cfg.hybrid_steps} steps")
        s = fresh(s["theta"].numpy(), float(s["h0u"]), w0)
        s, hist_h = run_stage(s, cfg.hybrid_steps, True, cfg.lambda0, cfg.gamma,
                              cfg.lr_physics * cfg.lr_final_fraction, cfg.lr_network,
                              cfg.warmup_steps)
        hybrid = state_of(s, True)
    return HybridFit(beats.name, cfg, physics_only, hybrid, arrays["n_beats"], hist_p, hist_h,
                     time.perf_counter() - t_start)


def _lbfgs_stage(cfg: FitConfig, s: dict, batch: dict, log):
    """Physics-only stage by L-BFGS (scipy) on the logits, gradients through the integrator.
    Non-finite evaluations (a trial point far outside the data) count as a large loss."""
    import tensorflow as tf
    from scipy.optimize import minimize

    run = _physics_loss_grad(cfg)
    hist: dict[str, list[float]] = {"l_traj": [], "fdl_norm": [], "lam": [1.0], "loss": []}

    last: dict[str, Any] = {}

    def fg(z):
        l_traj, g = run(tf.constant(z, tf.float32), batch)
        lt, g = float(l_traj), g.numpy().astype(float)
        if not (math.isfinite(lt) and np.all(np.isfinite(g))):
            lt, g = 1e3, np.zeros_like(z)
        last["z"], last["f"] = np.array(z), lt
        return lt, g

    def record(z):
        lt = last["f"] if "z" in last and np.array_equal(last["z"], z) else fg(z)[0]
        for k, v in (("l_traj", lt), ("fdl_norm", 0.0), ("loss", lt), ("lam", 1.0)):
            hist[k].append(v)
        if log and len(hist["l_traj"]) % 25 == 1:
            log(f"  iteration {len(hist['l_traj']):4d}  L_traj {lt:.3e}")

    z0 = np.concatenate([s["theta"].numpy(), [float(s["h0u"])]]).astype(float)
    res = minimize(fg, z0, jac=True, method="L-BFGS-B", callback=record,
                   options={"maxiter": cfg.physics_steps, "ftol": 1e-12, "gtol": 1e-10})
    z = res.x if np.isfinite(res.fun) else z0
    if not hist["l_traj"]:
        record(z)
    s = dict(s, theta=tf.constant(z[:5], tf.float32), h0u=tf.constant(z[5], tf.float32))
    return s, hist


# ----------------------------------------------------------------------------- forecasting

@dataclass
class Forecast:
    """Forecast from one initial state: t_ms (n,), v and h (n, B) normalized, and the F_p and
    F_dl contributions to dv/dt along the trajectory (n, B) (normalized/ms)."""

    t_ms: np.ndarray
    v: np.ndarray
    h: np.ndarray
    fp_v: np.ndarray
    fdl_v: np.ndarray


def forecast(state: ModelState, config: FitConfig, v0, horizon_ms: float) -> Forecast:
    """Integrate the fitted model from v0 (scalar or (B,), normalized) and h0 = ``state.h0``
    over ``horizon_ms``, observed every ``config.data.output_ms``."""
    import tensorflow as tf

    cfg = config
    n_out = int(round(horizon_ms / cfg.data.output_ms))
    if n_out < 1:
        raise ValueError(f"horizon_ms must be at least output_ms ({cfg.data.output_ms}), "
                         f"found {horizon_ms}")
    v0 = np.atleast_1d(np.asarray(v0, np.float32))
    x0 = np.stack([v0, np.full_like(v0, state.h0)], axis=1)
    with_net = state.weights is not None
    w = state.weights if with_net else []
    p = np.array([state.physics[n] for n in PHYS_NAMES], np.float32)
    t_grid = np.arange(n_out + 1, dtype=np.float32) * cfg.data.output_ms
    traj, fp, fdl = _forecast_fn(cfg, with_net)(
        tf.constant(p), [tf.constant(x, tf.float32) for x in w], tf.constant(x0),
        tf.constant(t_grid))
    traj, fp, fdl = traj.numpy(), fp.numpy(), fdl.numpy()
    return Forecast(t_grid.astype(float), traj[:, :, 0], traj[:, :, 1], fp[:, :, 0],
                    fdl[:, :, 0])


def forecast_mse(state: ModelState, config: FitConfig, beats: BeatSet, horizon_ms: float,
                 clean: bool = True) -> float:
    """MSE (normalized^2) of forecasts of ``beats`` from their initial states over
    ``horizon_ms`` (or each beat's window if shorter), against the clean trace when the beats
    carry one (simulations), else the observation."""
    n = int(round(horizon_ms / config.data.output_ms))
    fc = forecast(state, config, [b.v0 for b in beats.beats], horizon_ms)
    se, count = 0.0, 0
    for i, b in enumerate(beats.beats):
        ref = b.v_clean if (clean and b.v_clean is not None) else b.v_obs
        k = min(n, ref.size - 1)
        se += float(np.sum((fc.v[1:k + 1, i] - ref[1:k + 1]) ** 2))
        count += k
    return se / max(count, 1)
