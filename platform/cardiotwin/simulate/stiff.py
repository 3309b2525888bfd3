"""Reference integration of the same equations by a stiff solver (scipy ``solve_ivp``, BDF or
Radau at tight tolerances), one cell at a time: the check on the batched kernels' fixed-step
scheme (Rush-Larsen gates, forward Euler with a backward Euler RyR where it is stiff; with
voltage-clamp artefacts, the exact linear amplifier step coupled to the cell by a predictor).

The right-hand side is built from ``model.equations`` itself (``voltage_terms`` and ``rates``),
so the two differ only in how they integrate: gate rates are (x_inf - x) / tau with tau
recovered from the Rush-Larsen decay of a tiny probe step, fCa moves at its pull / tau_fCa, and
the other states at their rates. Integration restarts at every protocol segment and every
stimulus edge (the right-hand side jumps there). Slow (milliseconds per simulated ms): for
tests and for checking single cells, not for populations.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.integrate import solve_ivp

from ..model.artefacts import VoltageClampArtefacts, state_space
from ..model.equations import (
    CAI,
    CASR,
    CP0,
    CP_ESEAL,
    CP_GSEAL,
    CP_TFAC,
    DEC0,
    FCA,
    GATE_STATES,
    INF0,
    KI,
    N_GATES,
    N_ROWS,
    N_STATE_ROWS,
    NAI,
    RYR_I,
    RYR_O,
    RYR_R,
    TAU_FCA,
    V_,
    rates,
    voltage_terms,
)
from ..model.parameters import N_STATES
from ..protocols import Protocol
from .api import Pacing, SealLeak, cc_setup, vc_setup

TAU_PROBE_MS = 1e-5  # probe step whose Rush-Larsen decay gives each gate's tau
_GATE_STATES = np.array(GATE_STATES, dtype=np.int64)
METHODS = ("BDF", "Radau", "LSODA")


@numba.njit(cache=True, error_model="numpy")
def derivatives(y, cp, v, clamped, i_stim, out):
    """dy/dt (23,) into ``out`` of one cell at state y (23,) with per-cell constants cp (N_CP,)
    at membrane potential v (mV; the command when clamped, else y[V]) and stimulus i_stim
    (pA/pF). Returns I_ion (pA/pF)."""
    ws = np.zeros(N_ROWS)
    ws[:N_STATE_ROWS] = y
    ws[CP0:] = cp
    voltage_terms(ws, 0, 1, v, TAU_PROBE_MS)
    for g in range(N_GATES):
        row = _GATE_STATES[g]
        out[row] = (ws[INF0 + g] - y[row]) * (-np.log(ws[DEC0 + g]) / TAU_PROBE_MS)
    (i_ion, d_casr, d_cai, d_nai, d_ki, d_r, d_o, d_i, fca_pull, _a,
     _b) = rates(ws, 0, 1, v, False)
    for r in range(N_STATE_ROWS):
        is_gate = False
        for g in range(N_GATES):
            is_gate = is_gate or _GATE_STATES[g] == r
        if not is_gate:
            out[r] = 0.0
    out[V_] = 0.0 if clamped else i_stim - i_ion - ws[CP_GSEAL] * (v - ws[CP_ESEAL])
    out[CASR] = d_casr
    out[CAI] = d_cai
    out[NAI] = d_nai
    out[KI] = d_ki
    out[FCA] = fca_pull / (TAU_FCA * ws[CP_TFAC])
    out[RYR_R] = d_r
    out[RYR_O] = d_o
    out[RYR_I] = d_i
    return i_ion


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, found {method!r}")


def _solve(fun, t0, t1, y0, t_eval, method, rtol, atol, what):
    try:
        sol = solve_ivp(fun, (t0, t1), y0, method=method, t_eval=t_eval, rtol=rtol, atol=atol)
    except ValueError as e:  # non-finite Jacobian: the equations themselves left their domain
        raise RuntimeError(f"stiff reference failed {what}: {e}") from e
    if sol.status != 0:
        raise RuntimeError(f"stiff reference failed {what}: {sol.message}")
    return sol


def simulate_voltage_clamp_stiff(protocol: Protocol, inputs=None, *,
                                 temperature_K: float | None = None, initial_state=None,
                                 method: str = "BDF", rtol: float = 1e-8, atol: float = 1e-10
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """I_total (pA/pF) of ONE cell (inputs (87,) or (1, 87)) clamped to ``protocol``, sampled
    like ``simulate_voltage_clamp`` (sample k: I_ion at t_k with the command of the segment that
    contains t_k and the state reached at t_k). Returns (t_ms, i_total) float64.
    RuntimeError when the solver fails."""
    _check_method(method)
    protocol, cp, y0, _, _, seg_n, seg_v0, seg_v1 = vc_setup(protocol, inputs, temperature_K,
                                                             initial_state)
    if cp.shape[0] != 1:
        raise ValueError(f"the stiff reference integrates one cell, found {cp.shape[0]}")
    cp0 = cp[0]
    interval = protocol.sample_interval_ms
    t_all = protocol.times_ms()
    i_out = np.empty(t_all.size)
    dy = np.empty(N_STATES)
    y = y0[0].copy()
    bounds = np.concatenate([[0], np.cumsum(seg_n)])
    for s in range(seg_n.size):
        k0, k1 = int(bounds[s]), int(bounds[s + 1])
        if k1 == k0:
            continue
        t0, t1 = k0 * interval, k1 * interval
        slope = (seg_v1[s] - seg_v0[s]) / (t1 - t0)

        def command(t, v_start=seg_v0[s], slope=slope, t0=t0):
            return v_start + slope * (t - t0)

        def fun(t, yy, command=command):
            derivatives(yy, cp0, command(t), True, 0.0, dy)
            return dy.copy()

        t_eval = np.append(t_all[k0:k1], t1)
        y[V_] = command(t0)
        sol = _solve(fun, t0, t1, y, t_eval, method, rtol, atol, f"in segment {s}")
        for j in range(k1 - k0):
            i_out[k0 + j] = derivatives(sol.y[:, j], cp0, command(t_eval[j]), True, 0.0, dy)
        y = sol.y[:, -1].copy()
    return t_all, i_out


def simulate_current_clamp_stiff(duration_ms: float, inputs=None, *,
                                 temperature_K: float = 310.0, record_interval_ms: float = 0.1,
                                 pacing: Pacing | None = None, seal: SealLeak | None = None,
                                 initial_state=None,
                                 method: str = "BDF", rtol: float = 1e-8, atol: float = 1e-10
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """Membrane potential (mV) of ONE cell, free-running or paced, recorded every
    ``record_interval_ms`` at t = 0 ... duration like ``simulate_current_clamp`` (without
    prepacing). Returns (t_ms, v_mV) float64. RuntimeError when the solver fails."""
    _check_method(method)
    cp, y0, _, _, n_rec, amp, stim = cc_setup(duration_ms, inputs, temperature_K,
                                              record_interval_ms, pacing, 0.0, initial_state,
                                              seal)
    if cp.shape[0] != 1:
        raise ValueError(f"the stiff reference integrates one cell, found {cp.shape[0]}")
    cp0 = cp[0]
    t_all = np.arange(n_rec + 1) * record_interval_ms
    v_out = np.empty(t_all.size)
    dy = np.empty(N_STATES)
    y = y0[0].copy()
    edges = [0.0, *(stim.edges(duration_ms) if amp else []), duration_ms]
    k = 0
    for t0, t1 in zip(edges[:-1], edges[1:], strict=True):
        if t1 <= t0:
            continue
        on = amp != 0.0 and stim.is_on(0.5 * (t0 + t1))
        i_stim = amp if on else 0.0

        def fun(t, yy, i_stim=i_stim):
            derivatives(yy, cp0, yy[V_], False, i_stim, dy)
            return dy.copy()

        last = t1 >= duration_ms
        n_here = int(np.searchsorted(t_all, t1 - 1e-9 * max(1.0, t1),
                                     side="right" if last else "left")) - k
        if last:
            n_here = t_all.size - k
        t_eval = np.unique(np.append(t_all[k:k + n_here], t1))
        sol = _solve(fun, t0, t1, y, t_eval, method, rtol, atol, f"at t = {t0:g} ms")
        v_out[k:k + n_here] = sol.y[V_, :n_here]
        y = sol.y[:, -1].copy()
        k += n_here
    return t_all, v_out


def simulate_voltage_clamp_artefact_stiff(protocol: Protocol, inputs=None, *,
                                          artefacts: VoltageClampArtefacts,
                                          temperature_K: float | None = None,
                                          initial_state=None, method: str = "BDF",
                                          rtol: float = 1e-8, atol: float = 1e-10
                                          ) -> tuple[np.ndarray, np.ndarray]:
    """The recorded current (pA/pF, noise-free) of ONE cell clamped to ``protocol`` through
    ``artefacts`` (model.artefacts equations (1)-(4) together with the cell model, all states
    integrated by the stiff solver), sampled like ``simulate_voltage_clamp(..., artefacts=...)``:
    sample k is I_out averaged over the integration step from t_k (the integral of I_out is
    carried as an extra state). Returns (t_ms, i_out) float64."""
    _check_method(method)
    protocol, cp, y0, _, dt, seg_n, seg_v0, seg_v1 = vc_setup(protocol, inputs, temperature_K,
                                                              initial_state)
    if cp.shape[0] != 1:
        raise ValueError(f"the stiff reference integrates one cell, found {cp.shape[0]}")
    a, b, c_out, d_out = (x[0] for x in state_space(artefacts.per_cell(1)))
    cp0 = cp[0]
    interval = protocol.sample_interval_ms
    t_all = protocol.times_ms()
    dy = np.empty(N_STATES)
    n_ion = N_STATES
    z = np.concatenate([y0[0], [seg_v0[0], 0.0, 0.0]])  # + V_est, I_out, integral of I_out
    z[V_] = seg_v0[0]
    # the kernel starts I_out at 0 and the lag relaxes it; without lag it is algebraic
    bounds = np.concatenate([[0], np.cumsum(seg_n)])
    q_at: list[np.ndarray] = []
    edges = [0.0]
    for s in range(seg_n.size):
        k0, k1 = int(bounds[s]), int(bounds[s + 1])
        if k1 == k0:
            continue
        t0, t1 = k0 * interval, k1 * interval
        slope = (seg_v1[s] - seg_v0[s]) / (t1 - t0)

        def fun(t, zz, v_start=seg_v0[s], slope=slope, t0=t0):
            cmd = v_start + slope * (t - t0)
            i_ion = derivatives(zz[:n_ion], cp0, zz[V_], True, 0.0, dy)
            x = np.array([zz[V_], zz[n_ion], zz[n_ion + 1]])
            u = np.array([cmd, i_ion, 1.0])
            dx = a @ x + b @ u
            out = np.empty(zz.size)
            out[:n_ion] = dy
            out[V_] = dx[0]
            out[n_ion] = dx[1]
            out[n_ion + 1] = dx[2]
            out[n_ion + 2] = c_out @ x + d_out @ u
            return out

        t_eval = np.unique(np.clip(np.concatenate([t_all[k0:k1], t_all[k0:k1] + dt, [t1]]),
                                   t0, t1))
        sol = _solve(fun, t0, t1, z, t_eval, method, rtol, atol, f"in segment {s}")
        q_at.append(np.stack([sol.t, sol.y[-1]]))
        edges.append(t1)
        z = sol.y[:, -1].copy()
    t_q = np.concatenate([q[0] for q in q_at])
    q = np.concatenate([q[1] for q in q_at])
    order = np.argsort(t_q, kind="stable")
    t_q, q = t_q[order], q[order]
    q_start = np.interp(t_all, t_q, q)
    q_end = np.interp(t_all + dt, t_q, q)
    return t_all, (q_end - q_start) / dt
