"""Configuration of the Mitchell-Schaeffer + residual-network hybrid
(:class:`cardiotwin.settings.Settings`: declared constraints, unknown fields refused).

Units: time ms; the membrane potential ``v`` and the gate ``h`` are normalized (v = 0 at the
beat's maximum diastolic potential, 1 at its peak; h in [0, 1]); derivatives in normalized
units per ms. A ``ValidationError`` is a ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from ..settings import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    NonNegativeMs,
    PositiveFloat,
    PositiveInt,
    PositiveMs,
    Settings,
)

# the physical parameters of F_p, in this order everywhere (vectors, tables, JSON)
PHYS_NAMES = ("tau_in_ms", "tau_out_ms", "tau_open_ms", "tau_close_ms", "v_gate")


class Bound(Settings):
    """A bounded physical parameter: ``value`` = lo + (hi - lo) * sigmoid(theta) (linear) or
    exp(log lo + (log hi - log lo) * sigmoid(theta)) (log, for time constants)."""

    init: float = Field(description="initial value (units of the parameter)")
    lo: float = Field(description="lower bound (excluded)")
    hi: float = Field(description="upper bound (excluded)")
    log: bool = Field(True, description="sigmoid in log space (time constants)")
    trainable: bool = Field(True, description="False: held at init")

    @model_validator(mode="after")
    def _check(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"bounds must satisfy lo < hi, found lo={self.lo}, hi={self.hi}")
        if self.log and self.lo <= 0:
            raise ValueError(f"log-scaled bound needs lo > 0, found lo={self.lo}")
        if not (self.lo < self.init < self.hi):
            raise ValueError(f"init {self.init} must lie strictly inside ({self.lo}, {self.hi})")
        return self


class PhysicsConfig(Settings):
    """Mitchell-Schaeffer F_p: dv/dt = h v^2 (1 - v) / tau_in - v / tau_out + J_stim(t);
    dh/dt = (1 - h) / tau_open below v_gate, -h / tau_close above it (the switch is a
    sigmoid of width ``gate_width`` so the right-hand side is smooth and differentiable).

    Bounds: the defaults bracket iPSC-CM beats (APD90 ~50-600 ms) and keep RK4 at 0.1 ms
    stable (tau_in >= 0.05 ms: |dt * eigenvalue| <= 2 < 2.78).
    """

    tau_in_ms: Bound = Field(Bound(init=0.3, lo=0.05, hi=5.0),
                             description="inward (depolarizing) time constant (ms)")
    tau_out_ms: Bound = Field(Bound(init=6.0, lo=0.5, hi=100.0),
                              description="outward (repolarizing) time constant (ms)")
    tau_open_ms: Bound = Field(Bound(init=120.0, lo=10.0, hi=2000.0, trainable=False),
                               description="gate recovery time constant below v_gate (ms)")
    tau_close_ms: Bound = Field(Bound(init=150.0, lo=10.0, hi=3000.0),
                                description="gate closing time constant above v_gate (ms); "
                                            "sets the AP duration")
    v_gate: Bound = Field(Bound(init=0.13, lo=0.02, hi=0.5, log=False, trainable=False),
                          description="gate switch potential (normalized)")
    gate_width: PositiveFloat = Field(0.005, le=0.05,
                              description="width of the smooth gate switch (normalized v)")
    stim_amplitude: NonNegativeFloat = Field(0.0, description="J_stim amplitude (normalized/ms); 0 "
                                                         "for spontaneous beats")
    stim_duration_ms: PositiveMs = Field(1.0, description="J_stim is on for t in [0, this) "
                                                            "after the beat start (ms)")

    def bounds(self) -> list[Bound]:
        return [getattr(self, n) for n in PHYS_NAMES]


class NetworkConfig(Settings):
    """F_dl: residual MLP (v, h) -> (dv/dt, dh/dt) correction (normalized/ms)."""

    width: int = Field(16, ge=2, le=256, description="hidden units")
    blocks: NonNegativeInt = Field(1, le=8, description="residual blocks after the input layer")
    seed: NonNegativeInt = Field(0, description="weight initialization seed")
    output_scale: PositiveFloat = Field(0.01, description="fixed factor on the output layer "
                                                        "(normalized/ms)")


class DataConfig(Settings):
    """How beats are cut from a trace and normalized."""

    start_level: Fraction = Field(0.5, description="a beat starts where its "
                               "normalized upstroke crosses this level (above v_gate; 0.5 "
                               "leaves out the slow foot of iPSC-CM upstrokes)")
    window_ms: PositiveMs = Field(500.0, description="beat window after the start (ms); "
                                                      "shorter when the next beat comes first")
    next_beat_margin_ms: NonNegativeMs = Field(20.0, description="the window ends this long "
                                       "before the next beat's start (ms)")
    output_ms: PositiveMs = Field(0.1, description="observation interval of the fit (ms); a "
                             "multiple of dt_ms (0.1: every RK4 step, the recordings' 10 kHz; "
                             "one observation per RK4 step also compiles fastest)")
    smooth_ms: PositiveMs = Field(1.0, description="moving average used to find beat starts "
                                                    "and the normalization levels (ms)")
    min_beats: PositiveInt = Field(1, description="fewer complete beats: the trace is refused")
    min_window_ms: PositiveMs = Field(50.0, description="shorter beat windows are skipped (ms)")
    max_beats: PositiveInt = Field(3, description="beats per fit (the first ones; fixed batch)")


class FitConfig(Settings):
    """Training of the hybrid: physics-only warm-up, then F_p and F_dl together.

    Loss of the joint stage: lambda_j * L_traj + ||F_dl||, with
    lambda_{j+1} = lambda_j + gamma * L_traj (after each step j). L_traj: masked MSE of v
    (normalized^2); ||F_dl||: RMS of F_dl over the fitted trajectories (normalized/ms).
    """

    physics: PhysicsConfig = PhysicsConfig()
    network: NetworkConfig = NetworkConfig()
    data: DataConfig = DataConfig()
    dt_ms: PositiveMs = Field(0.1, le=0.5, description="RK4 step (ms)")
    use_dl: bool = Field(True, description="False: physics only (F_dl switched off)")
    physics_optimizer: Literal["lbfgs", "adam"] = Field(
        "lbfgs", description="physics-only stage: L-BFGS (scipy, gradients through the "
                             "integrator) or Adam")
    physics_steps: NonNegativeInt = Field(200, description="iterations of the physics-only stage")
    hybrid_steps: NonNegativeInt = Field(120, description="Adam steps of the joint stage")
    lr_physics: PositiveFloat = Field(0.05, description="Adam rate of the physics logits (the "
                              "joint stage uses lr_physics * lr_final_fraction)")
    lr_network: PositiveFloat = Field(1e-2, description="Adam rate of the F_dl weights")
    warmup_steps: NonNegativeInt = Field(20, description="joint stage: the rates ramp up linearly "
                              "over this many steps (the network's first Adam steps are not "
                              "too large)")
    lr_final_fraction: PositiveFloat = Field(0.1, le=1, description="each stage's rate decays "
                                     "exponentially to this fraction of its start")
    lambda0: PositiveFloat = Field(100.0, description="initial weight of L_traj (1/ms per "
                           "normalized^2: it trades L_traj against ||F_dl||)")
    gamma: NonNegativeFloat = Field(1000.0, description="lambda update rate: lambda += gamma "
                                                        "* L_traj after every step")
    spike_factor: float = Field(1.5, gt=1, description="joint stage: a step with L_traj above "
                                "this x the best so far is undone and the rates halved")
    learn_h0: bool = Field(False, description="fit the gate h at the beat start (else fixed "
                           "at h0_init). Off by default: started above v_gate, h(t) = h0 "
                           "exp(-t/tau_close) and only h0/tau_in is identifiable")
    h0_init: PositiveFloat = Field(1.0, le=1, description="h at the beat start (fixed, or the "
                           "initial value when learned); 1: gate fully recovered")

    @model_validator(mode="after")
    def _check(self):
        k = self.data.output_ms / self.dt_ms
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise ValueError(f"data.output_ms ({self.data.output_ms}) must be a whole multiple "
                             f"of dt_ms ({self.dt_ms})")
        return self

    @property
    def substeps(self) -> int:
        """RK4 steps per observation."""
        return int(round(self.data.output_ms / self.dt_ms))

    @property
    def n_out(self) -> int:
        """Observations per beat window."""
        return int(round(self.data.window_ms / self.data.output_ms))
