"""Batched simulation of the Kernik model: voltage clamp and current clamp.

Inputs are model input sets (n_cells, 87), e.g. from ``model.inputs_from_multipliers``; one call
simulates all cells, numba-parallel over cells. Double precision inside (float32 with
precision="float32"), float32 traces out.
Units: ms, mV, pA/pF, mM, K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.artefacts import VoltageClampArtefacts, propagators, recording_noise
from ..model.equations import CURRENT_NAMES, N_CURRENTS, cell_constants
from ..model.late_sodium import LateSodium
from ..model.late_sodium import hl_inf as nal_hl_inf
from ..model.late_sodium import ml_inf as nal_ml_inf
from ..model.parameters import BASELINE, INITIAL_STATE, N_INPUTS, N_STATES
from ..model.temperature import tau_factor
from ..protocols import Protocol
from . import kernels
from .precision import float32_module

PRECISIONS = ("float64", "float32")  # arithmetic of the kernels (simulate.precision)
MAX_DT_MS = 0.1  # integration step of voltage clamp, and the outer step of current clamp


@dataclass(frozen=True)
class Pacing:
    """Stimulus train: ``amplitude`` pA/pF (depolarizing) for ``width_ms`` every ``period_ms``
    from ``start_ms``."""

    period_ms: float = 1000.0
    amplitude: float = 3.0
    width_ms: float = 5.0
    start_ms: float = 0.0

    def __post_init__(self):
        for name in ("period_ms", "amplitude", "width_ms"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"pacing {name} must be a positive number, found "
                                 f"{getattr(self, name)!r}")
        if self.width_ms >= self.period_ms:
            raise ValueError(f"pacing width_ms ({self.width_ms}) must be shorter than period_ms "
                             f"({self.period_ms})")

    def is_on(self, t_ms: float) -> bool:
        """Whether the stimulus is on at t (ms) (the kernels' rule: from each onset for
        ``width_ms``)."""
        x = t_ms - self.start_ms
        return bool(x >= 0.0 and x - self.period_ms * np.floor(x / self.period_ms) < self.width_ms)

    def edges(self, duration_ms: float) -> list[float]:
        """Stimulus onsets and offsets (ms) in (0, duration_ms), in order."""
        out: list[float] = []
        k = max(0, int(np.floor(-self.start_ms / self.period_ms)))
        while (onset := self.start_ms + k * self.period_ms) < duration_ms:
            out += [t for t in (onset, onset + self.width_ms) if 0.0 < t < duration_ms]
            k += 1
        return out


@dataclass(frozen=True)
class SealLeak:
    """The seal leak of a current-clamp recording, I_seal = g (V - E) (pA/pF): current through
    the pipette-membrane seal, which the amplifier's current clamp cannot tell from the cell's
    own. ``conductance_nS_per_pF`` g = 1 / (R_seal Cm) and ``reversal_mV`` E (near 0 mV for a
    seal), each a scalar or one value per cell. Depolarizes the diastolic potential and shortens
    the AP of cells with small I_K1 (iPSC-CMs: Clark et al. 2022)."""

    conductance_nS_per_pF: Any = 0.0
    reversal_mV: Any = 0.0

    @classmethod
    def from_resistance(cls, resistance_MOhm, cm_pF, reversal_mV=0.0) -> SealLeak:
        """From the seal resistance (MOhm) and membrane capacitance (pF): g = 1000 / (R Cm)
        nS/pF."""
        r = np.asarray(resistance_MOhm, dtype=np.float64)
        cm = np.asarray(cm_pF, dtype=np.float64)
        for name, x in (("seal resistance (MOhm)", r), ("Cm (pF)", cm)):
            if not (np.all(np.isfinite(x)) and np.all(x > 0)):
                raise ValueError(f"{name} must be positive and finite, found {x!r}")
        return cls(1e3 / (r * cm), reversal_mV)

    def per_cell(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(g nS/pF, E mV) as (n,) float64 arrays; ValueError for a negative or non-finite
        conductance, a non-finite reversal or a length that is neither 1 nor n."""
        out = []
        for name, x in (("seal conductance (nS/pF)", self.conductance_nS_per_pF),
                        ("seal reversal (mV)", self.reversal_mV)):
            a = np.asarray(x, dtype=np.float64).reshape(-1)
            if a.size not in (1, n):
                raise ValueError(f"{name}: expected one value or {n} (one per cell), found "
                                 f"{a.size}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite, found {a!r}")
            out.append(np.broadcast_to(a, (n,)).astype(np.float64))
        if np.any(out[0] < 0):
            raise ValueError(f"seal conductance must be >= 0 nS/pF, found {out[0].min()}")
        return out[0], out[1]


@dataclass
class VoltageClampResult:
    """t_ms (n_samples,), v_mV command (n_samples,), i_total (n_cells, n_samples) pA/pF float32,
    currents {name: (n_cells, n_samples)} when requested, final_state (n_cells, 23) (NaN for
    unstable cells), unstable (n_cells,) bool, protocol_hash. With artefacts, i_total is the
    recorded current (pA/pF of the amplifier's Cm*, noise included) and v_membrane
    (n_cells, n_samples) the membrane potential (mV) when requested."""

    t_ms: np.ndarray
    v_mV: np.ndarray
    i_total: np.ndarray
    currents: dict[str, np.ndarray] | None
    final_state: np.ndarray
    unstable: np.ndarray
    protocol_hash: str
    v_membrane: np.ndarray | None = None


@dataclass
class CurrentClampResult:
    """t_ms (n_samples,), v_mV and cai_mM (n_cells, n_samples) float32, final_state (n_cells, 23)
    (NaN for unstable cells), unstable (n_cells,) bool; with ``record_charge``, charge
    {current: (n_cells,)} pA/pF ms carried by each of kernels.CHARGE_CURRENTS over the recorded
    run (inward negative; NaN for unstable cells), else None."""

    t_ms: np.ndarray
    v_mV: np.ndarray
    cai_mM: np.ndarray
    final_state: np.ndarray
    unstable: np.ndarray
    charge: dict[str, np.ndarray] | None = None


def _as_inputs(inputs) -> np.ndarray:
    if inputs is None:
        return BASELINE[None, :].copy()
    p = np.array(inputs, dtype=np.float64, ndmin=2)
    if p.ndim != 2 or p.shape[1] != N_INPUTS:
        raise ValueError(f"inputs: expected shape (n_cells, {N_INPUTS}) (or ({N_INPUTS},) for "
                         f"one cell), found {np.shape(inputs)}")
    if p.shape[0] == 0:
        raise ValueError("inputs: no cells (n_cells = 0)")
    if not np.all(np.isfinite(p)):
        cell, col = np.argwhere(~np.isfinite(p))[0]
        raise ValueError(f"inputs: non-finite value in cell {cell}, input {col}")
    return p


def _as_state(initial_state, n: int) -> np.ndarray:
    if initial_state is None:
        return np.repeat(INITIAL_STATE[None, :], n, axis=0)
    y = np.array(initial_state, dtype=np.float64, ndmin=2)
    if y.shape == (1, N_STATES):
        y = np.repeat(y, n, axis=0)
    if y.shape != (n, N_STATES):
        raise ValueError(f"initial_state: expected ({N_STATES},) or ({n}, {N_STATES}), found "
                         f"{np.shape(initial_state)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("initial_state: non-finite values")
    return y


def _steps_per_sample(interval_ms: float, what: str) -> tuple[int, float]:
    """Integration steps per output sample and the step (ms): dt <= MAX_DT_MS dividing the
    interval exactly."""
    if not (np.isfinite(interval_ms) and interval_ms > 0):
        raise ValueError(f"{what} must be a positive number of ms, found {interval_ms!r}")
    k = int(np.ceil(interval_ms / MAX_DT_MS - 1e-9))
    return k, interval_ms / k


def vc_setup(protocol: Protocol, inputs, temperature_K: float | None, initial_state):
    """Checked inputs of a voltage-clamp run (shared by the CPU and GPU simulators):
    (protocol at its temperature, cell constants (n, N_CP), initial states (n, 23), steps per
    sample, dt (ms), segment steps, segment start and end voltages)."""
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a cardiotwin Protocol, found {type(protocol).__name__}")
    p = _as_inputs(inputs)
    n = p.shape[0]
    if temperature_K is not None and temperature_K != protocol.temperature_K:
        tau_factor(temperature_K)  # validates, with a hint about kelvin
        protocol = protocol.with_temperature(temperature_K)  # the hash must say which
    cp = cell_constants(p, tau_factor(protocol.temperature_K))
    y0 = _as_state(initial_state, n)
    rec_every, dt = _steps_per_sample(protocol.sample_interval_ms, "sample_interval_ms")
    seg_n, v0, v1 = protocol.segment_steps()
    return protocol, cp, y0, rec_every, dt, seg_n, v0, v1


def cc_setup(duration_ms: float, inputs, temperature_K: float, record_interval_ms: float,
             pacing: Pacing | None, prepace_ms: float, initial_state,
             seal: SealLeak | None = None):
    """Checked inputs of a current-clamp run (shared by the CPU and GPU simulators):
    (cell constants with the seal leak, initial states, steps per sample, dt (ms), number of
    samples after t = 0, stimulus amplitude (0 when free-running), Pacing)."""
    p = _as_inputs(inputs)
    n = p.shape[0]
    if seal is not None and not isinstance(seal, SealLeak):
        raise TypeError(f"seal must be a SealLeak, found {type(seal).__name__}")
    g_seal, e_seal = (seal or SealLeak()).per_cell(n)
    cp = cell_constants(p, tau_factor(temperature_K), g_seal, e_seal)
    y0 = _as_state(initial_state, n)
    if not (np.isfinite(duration_ms) and duration_ms > 0):
        raise ValueError(f"duration_ms must be a positive number, found {duration_ms!r}")
    if not (np.isfinite(prepace_ms) and prepace_ms >= 0):
        raise ValueError(f"prepace_ms must be >= 0, found {prepace_ms!r}")
    rec_every, dt = _steps_per_sample(record_interval_ms, "record_interval_ms")
    n_rec = int(round(duration_ms / record_interval_ms))
    if abs(n_rec * record_interval_ms - duration_ms) > 1e-9 * max(1.0, duration_ms):
        raise ValueError(f"duration_ms ({duration_ms}) must be a whole number of "
                         f"record_interval_ms ({record_interval_ms})")
    stim = pacing or Pacing()
    amp = stim.amplitude if pacing is not None else 0.0
    return cp, y0, rec_every, dt, n_rec, amp, stim


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, found {precision!r}")


def _kernels(precision: str):
    """The kernels module of a precision and its float type."""
    if precision == "float32":
        return float32_module("cardiotwin.simulate.kernels"), np.float32
    return kernels, np.float64


def simulate_voltage_clamp(protocol: Protocol, inputs=None, *, temperature_K: float | None = None,
                           record_currents: bool = False, initial_state=None,
                           artefacts: VoltageClampArtefacts | None = None,
                           record_membrane: bool = False, noise_seed: int = 0,
                           precision: str = "float64") -> VoltageClampResult:
    """Clamp every cell to ``protocol``'s command and record I_total (pA/pF), sampled every
    ``protocol.sample_interval_ms`` (integrated with dt <= 0.1 ms).

    ``temperature_K`` defaults to the protocol's; gating kinetics follow Q10 = 3. Starts from the
    model's initial state unless ``initial_state`` (23,) or (n_cells, 23) is given.
    ``artefacts``: the amplifier, series resistance and seal of a real recording
    (:class:`~cardiotwin.model.artefacts.VoltageClampArtefacts`, per cell or shared); i_total is
    then the recorded current, with its noise drawn from ``noise_seed``, and
    ``record_membrane`` also returns V_m. None: the ideal clamp (V_m = command).
    ``precision``: "float64" (default) or "float32" arithmetic (the float32 twin of the
    kernels, simulate.precision: about twice as fast, I_total within 0.1% of float64 on
    protocol_a; final_state is then float32 values in float64).
    """
    _check_precision(precision)
    protocol, cp, y0, rec_every, dt, seg_n, v0, v1 = vc_setup(protocol, inputs, temperature_K,
                                                              initial_state)
    n = cp.shape[0]
    n_rec = protocol.n_samples
    itot = np.empty((n, n_rec), np.float32)
    cur = np.empty((n, N_CURRENTS, n_rec) if record_currents else (1, 1, 1), np.float32)
    final = np.empty((n, N_STATES))
    unstable = np.zeros(n, np.bool_)
    vm = None
    k, f = _kernels(precision)
    final_f = np.empty((n, N_STATES), f)
    if artefacts is None:
        k.voltage_clamp_kernel[bool(record_currents)](
            k.workspace(n, dtype=f), cp.astype(f), y0.astype(f), seg_n * rec_every,
            v0.astype(f), v1.astype(f), f(dt), rec_every, itot, cur, final_f, unstable)
    else:
        if not isinstance(artefacts, VoltageClampArtefacts):
            raise TypeError(f"artefacts must be VoltageClampArtefacts, found "
                            f"{type(artefacts).__name__}")
        table = artefacts.per_cell(n)
        prop = propagators(table, dt)
        prop_fine = propagators(table, dt / kernels.EDGE_SUBSTEPS)
        vm = np.empty((n, n_rec) if record_membrane else (1, 1), np.float32)
        k.artefact_clamp_kernel[bool(record_currents)](
            k.workspace(n, k.N_WS_ARTEFACT, f), cp.astype(f), y0.astype(f), prop.astype(f),
            prop_fine.astype(f), seg_n * rec_every, v0.astype(f), v1.astype(f), f(dt),
            rec_every, int(round(kernels.EDGE_MS / dt)), itot, bool(record_membrane), vm, cur,
            final_f, unstable)
        noise = recording_noise(protocol.times_ms(), n, artefacts.noise_sd,
                                artefacts.hum_amplitude, artefacts.hum_hz, noise_seed)
        if noise is not None:
            itot += noise.astype(np.float32)
        vm = vm if record_membrane else None
    final[:] = final_f
    currents = ({name: cur[:, i, :] for i, name in enumerate(CURRENT_NAMES)}
                if record_currents else None)
    return VoltageClampResult(protocol.times_ms(), protocol.command_voltage(), itot, currents,
                              final, unstable, protocol.protocol_hash, vm)


def simulate_current_clamp(duration_ms: float, inputs=None, *, temperature_K: float = 310.0,
                           record_interval_ms: float = 0.1, pacing: Pacing | None = None,
                           prepace_ms: float = 0.0, initial_state=None, dv_max_mV: float = 0.5,
                           max_substeps: int = 64, seal: SealLeak | None = None,
                           late_sodium: LateSodium | None = None, record_charge: bool = False,
                           precision: str = "float64") -> CurrentClampResult:
    """Free-running (or paced) membrane potential for ``duration_ms``, recorded every
    ``record_interval_ms`` at t = 0 ... duration (inclusive).

    ``prepace_ms`` > 0 first runs the same conditions (free-running or paced) for that long
    without recording and starts the recording from the state reached (towards steady state).
    Adaptive sub-steps keep V changes below ``dv_max_mV`` per step around upstrokes.
    ``seal``: the recording's seal leak (:class:`SealLeak`, per cell or shared; None: none).
    ``late_sodium``: the model's late-sodium variant (model.late_sodium.LateSodium: G_NaL and a
    per-cell scale; its gates start at steady state at each cell's initial V); None: the
    default model. ``record_charge``: also the charge of each CiPA current over the recorded
    run (``CurrentClampResult.charge``). Both run a variant of the kernel; without them the
    default kernel runs, unchanged. ``precision``: "float64" (default) or "float32" arithmetic
    (simulate.precision; final_state, charge are then float32 values in float64).
    """
    _check_precision(precision)
    cp, y0, rec_every, dt, n_rec, amp, stim = cc_setup(
        duration_ms, inputs, temperature_K, record_interval_ms, pacing, prepace_ms,
        initial_state, seal)
    n = cp.shape[0]
    if late_sodium is not None and not isinstance(late_sodium, LateSodium):
        raise TypeError(f"late_sodium must be a LateSodium, found {type(late_sodium).__name__}")
    variant = (late_sodium is not None, bool(record_charge))
    nal_g = late_sodium.per_cell(n) if late_sodium is not None else np.zeros(n)
    nal0 = np.stack([nal_ml_inf(y0[:, 0]), nal_hl_inf(y0[:, 0])], axis=1)

    k, f = _kernels(precision)

    def run(y_start, nal_start, n_steps, every, n_out, start_ms):
        v_out = np.empty((n, n_out), np.float32)
        cai_out = np.empty((n, n_out), np.float32)
        final = np.empty((n, N_STATES), f)
        unstable = np.zeros(n, np.bool_)
        args = (cp.astype(f), y_start.astype(f), n_steps, f(dt), every, f(amp),
                f(stim.start_ms - start_ms), f(stim.period_ms), f(stim.width_ms), f(dv_max_mV),
                max_substeps, v_out, cai_out, final, unstable)
        if variant == (False, False):
            k.current_clamp_kernel(k.workspace(n, dtype=f), *args)
            return v_out, cai_out, final.astype(float), unstable, nal_start, None
        nal_final = np.empty((n, 2), f)
        q = np.empty((n, k.N_Q), f)
        k.current_clamp_kernel_variant[variant](
            k.workspace(n, k.N_WS_CC_VARIANT, f), *args, nal_start.astype(f), nal_g.astype(f),
            nal_final, q)
        return v_out, cai_out, final.astype(float), unstable, nal_final.astype(float), \
            q.astype(float)

    pre_unstable = np.zeros(n, np.bool_)
    if prepace_ms > 0:
        n_pre = int(round(prepace_ms / dt))
        _, _, y_pre, pre_unstable, nal_pre, _ = run(y0, nal0, n_pre, n_pre + 1, 1, 0.0)
        y0 = np.where(pre_unstable[:, None], y0, y_pre)
        nal0 = np.where(pre_unstable[:, None], nal0, nal_pre)
        offset = n_pre * dt
    else:
        offset = 0.0
    v, cai, final, unstable, _, q = run(y0, nal0, n_rec * rec_every, rec_every, n_rec + 1,
                                        offset)
    unstable |= pre_unstable
    v[pre_unstable] = np.nan
    cai[pre_unstable] = np.nan
    final[pre_unstable] = np.nan
    t = np.arange(n_rec + 1) * record_interval_ms
    charge = None
    if record_charge:
        q[unstable] = np.nan
        charge = {name: q[:, i] for i, name in enumerate(kernels.CHARGE_CURRENTS)}
    return CurrentClampResult(t, v, cai, final, unstable, charge)
