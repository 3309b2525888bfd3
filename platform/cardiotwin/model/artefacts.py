"""Voltage-clamp artefacts: the amplifier, the series resistance and the seal as part of the
model (Lei et al. 2020, Phil Trans R Soc A 378:20190348, "Accounting for variability in ion
current recordings using a mathematical model of artefacts in voltage-clamp experiments"; the
prediction (supercharging) term as in Lei's 2020 thesis, ch. 6, and Lei et al. 2024 bioRxiv
2024.07.23.604780).

Units: ms, mV, pF, MOhm, nS/pF; currents in pA/pF (= mV/ms). 1 MOhm x 1 pF = 1e-3 ms.

The circuit: the amplifier holds the pipette at V_p; the cell's membrane (capacitance Cm,
potential V_m) is reached through the series (access) resistance R_s; a linear leak through the
seal, I_leak = g_leak (V_m - E_leak), runs parallel to the membrane; V_off is the offset
(liquid junction, electrode drift) between pipette and cell. The amplifier's own estimates of
Cm and R_s (Cm*, R_s*, what the operator dialled in) drive its compensations:

- capacitance compensation injects Cm* dV_est/dt, where V_est is the amplifier's model of the
  membrane potential, charging through R_s* with the prediction fraction beta:
      dV_est/dt = (V_cmd - V_est) / ((1 - beta) R_s* Cm*)                         (1)
- series-resistance compensation (fraction alpha) and prediction (fraction beta) add to the
  command the drop the amplifier expects across R_s:
      V_p = V_cmd + alpha R_s* I_out + beta R_s* Cm* dV_est/dt                       (2)
- the membrane, with the ionic current I_ion of the cell model (pA/pF of Cm):
      dV_m/dt = (V_p + V_off - V_m) / (R_s Cm) - I_ion - g_leak (V_m - E_leak)       (3)
- the recorded current follows the current through R_s, less the capacitance compensation,
  with the lag tau_sum of the amplifier's summing stage and output filter (Lei et al. 2020's
  tau_sum); it is reported per pF of the amplifier's Cm* (what a lab's pA/pF is):
      tau_sum dI_out/dt = (V_p + V_off - V_m) / (R_s Cm*) - dV_est/dt - I_out       (4)
- recording noise is added to the sampled I_out: white Gaussian (sd sigma) and optional mains
  hum A sin(2 pi f t + phi).

Equations (1)-(4) are linear in x = (V_m, V_est, I_out) for a given command and I_ion:
dx/dt = A x + B u with u = (V_cmd, I_ion, 1). The kernels hold V_cmd (mid-step) and I_ion
over a step dt and advance x exactly:
x(t + dt) = Phi x(t) + Gamma u, with Phi = exp(A dt) and Gamma = int_0^dt exp(A s) ds B from the
matrix exponential of the augmented [[A, B], [0, 0]] (per cell, once: ``propagators``).
I_ion of a step is the cell model's at the V_m that the step reaches with the previous step's
I_ion (a predictor: with an ideal amplifier that V_m is the command, as in the ideal clamp),
and the recorded sample is I_out averaged over the step (the digitizer's sample; the first
3 ms after each command edge run in sub-steps of dt / 8, see simulate.kernels). So the
fast poles (R_s Cm (1 - alpha), tau_sum: tens of us) cost nothing and cannot go unstable; an
over-compensated amplifier (alpha R_s* > R_s) has a growing mode and is flagged unstable by the
kernel, as a real one rings. Checks: an RC cell with leak and no ionic current relaxes
exponentially with tau = R_s Cm / (1 + g_leak R_s Cm) to the steady state; alpha = 1 with exact
estimates, beta -> 1 and tau_sum -> 0 is the ideal clamp (V_m = V_cmd, I_out = I_ion).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numba
import numpy as np
from scipy.linalg import expm

from .equations import V_

#: per-cell artefact parameters, in the order of ``VoltageClampArtefacts.per_cell``'s columns
ARTEFACT_FIELDS = ("cm_pF", "rs_MOhm", "cm_est_pF", "rs_est_MOhm", "compensation", "prediction",
                   "v_offset_mV", "g_leak_nS_per_pF", "e_leak_mV", "tau_sum_ms")
N_ARTEFACT_FIELDS = len(ARTEFACT_FIELDS)
MOHM_PF_MS = 1e-3  # ms per MOhm pF
N_X = 3  # states V_m, V_est, I_out
N_U = 3  # inputs V_cmd, I_ion, 1
#: per-lane rows of the propagator: Phi (3 x 3), Gamma (3 x 3), row-major, then the recorded
#: current's step average on x (3) and u (3)
N_PROPAGATOR = N_X * N_X + N_X * N_U + N_X + N_U
MAX_PREDICTION = 0.999  # beta < 1: V_est's time constant (1 - beta) R_s* Cm* stays > 0

_LIMITS = {  # (low, high, low inclusive): physically meaningful ranges, checked per cell
    "cm_pF": (0.0, 1e4, False), "rs_MOhm": (0.0, 1e3, False), "cm_est_pF": (0.0, 1e4, False),
    "rs_est_MOhm": (0.0, 1e3, False), "compensation": (0.0, 1.0, True),
    "prediction": (0.0, MAX_PREDICTION, True), "v_offset_mV": (-50.0, 50.0, True),
    "g_leak_nS_per_pF": (0.0, 10.0, True), "e_leak_mV": (-150.0, 150.0, True),
    "tau_sum_ms": (0.0, 1.0, True),
}


@dataclass(frozen=True)
class VoltageClampArtefacts:
    """Amplifier and seal of a voltage-clamp recording (Lei et al. 2020; see the module
    docstring for the equations). Every field is a scalar or one value per cell.

    ``cm_pF`` Cm and ``rs_MOhm`` R_s of the cell; ``cm_est_pF``/``rs_est_MOhm`` the amplifier's
    estimates (None: equal to the cell's, perfectly dialled in); ``compensation`` alpha and
    ``prediction`` beta as fractions (alpha in [0, 1], beta in [0, 0.999]); ``v_offset_mV``;
    the seal leak ``g_leak_nS_per_pF`` (per pF of Cm; 1 / (R_seal Cm)) and ``e_leak_mV``;
    ``tau_sum_ms`` the amplifier's lag (0: none); ``noise_sd`` (pA/pF, white) and
    ``hum_amplitude`` (pA/pF) at ``hum_hz``, added to the sampled current with the run's
    seed."""

    cm_pF: Any = 50.0
    rs_MOhm: Any = 20.0
    cm_est_pF: Any = None
    rs_est_MOhm: Any = None
    compensation: Any = 0.0
    prediction: Any = 0.0
    v_offset_mV: Any = 0.0
    g_leak_nS_per_pF: Any = 0.0
    e_leak_mV: Any = 0.0
    tau_sum_ms: Any = 0.02
    noise_sd: Any = 0.0
    hum_amplitude: Any = 0.0
    hum_hz: float = 50.0

    @classmethod
    def from_columns(cls, table: np.ndarray, **noise: Any) -> VoltageClampArtefacts:
        """From an (n, N_ARTEFACT_FIELDS) table in ARTEFACT_FIELDS order (as stored)."""
        t = np.asarray(table, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != N_ARTEFACT_FIELDS:
            raise ValueError(f"artefact table: expected shape (n, {N_ARTEFACT_FIELDS}) with "
                             f"columns {ARTEFACT_FIELDS}, found {t.shape}")
        columns: dict[str, Any] = {name: t[:, j] for j, name in enumerate(ARTEFACT_FIELDS)}
        return cls(**columns, **noise)

    def per_cell(self, n: int) -> np.ndarray:
        """The parameters as an (n, N_ARTEFACT_FIELDS) float64 table (ARTEFACT_FIELDS order);
        ValueError naming the field for a wrong length, a non-finite or out-of-range value."""
        cols: dict[str, np.ndarray] = {}
        for name in ARTEFACT_FIELDS:
            x = getattr(self, name)
            if x is None:  # an estimate left unset: the amplifier is dialled in exactly
                x = cols["cm_pF" if name == "cm_est_pF" else "rs_MOhm"]
            a = np.asarray(x, dtype=np.float64).reshape(-1)
            if a.size not in (1, n):
                raise ValueError(f"artefact {name}: expected one value or {n} (one per cell), "
                                 f"found {a.size}")
            lo, hi, lo_incl = _LIMITS[name]
            ok = np.isfinite(a) & (a <= hi) & ((a >= lo) if lo_incl else (a > lo))
            if not np.all(ok):
                bad = a[~ok][0]
                raise ValueError(f"artefact {name} must be in {'[' if lo_incl else '('}{lo:g}, "
                                 f"{hi:g}], found {bad!r}")
            cols[name] = np.broadcast_to(a, (n,)).astype(np.float64)
        for name in ("noise_sd", "hum_amplitude"):
            a = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if a.size not in (1, n) or not np.all(np.isfinite(a) & (a >= 0)):
                raise ValueError(f"artefact {name}: expected one value >= 0 pA/pF or {n}, "
                                 f"found {getattr(self, name)!r}")
        if not (np.isfinite(self.hum_hz) and self.hum_hz > 0):
            raise ValueError(f"artefact hum_hz must be a positive frequency, found "
                             f"{self.hum_hz!r}")
        return np.stack([cols[name] for name in ARTEFACT_FIELDS], axis=1)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON-able values (lists for per-cell arrays)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if v is None or np.ndim(v) == 0 else np.asarray(v).tolist()
            if isinstance(out[f.name], np.generic):
                out[f.name] = out[f.name].item()
        return out


def state_space(table: np.ndarray) -> tuple[np.ndarray, ...]:
    """Equations (1)-(4) per cell as the general form dx/dt = A x + B u with u = (V_cmd, I_ion,
    1), the recorded current y = C x + D u: (A (n, 3, 3), B (n, 3, 3), C (n, 3), D (n, 3)).
    With tau_sum = 0 (no lag) I_out is algebraic: its row of A and B is zero and C, D give it
    from (V_m, V_est); otherwise I_out is the third state (C = e3, D = 0)."""
    cm, rs, cm_e, rs_e, alpha, beta, v_off, g, e_leak, tau_s = np.asarray(table).T
    tau_m = rs * cm * MOHM_PF_MS  # R_s Cm (ms)
    tau_x = rs * cm_e * MOHM_PF_MS  # R_s Cm* (ms)
    tau_e = rs_e * cm_e * MOHM_PF_MS  # R_s* Cm* (ms)
    tau_p = (1.0 - beta) * tau_e  # V_est's time constant (1)
    bp = beta / (1.0 - beta)  # beta tau_e / tau_p
    n = cm.size
    zeros = np.zeros(n)
    # W0 = V_p + V_off - V_m - alpha tau_e I_out = (1 + bp) V_cmd - V_m - bp V_est + V_off
    w_x = np.stack([-np.ones(n), -bp, zeros], axis=1)
    w_u = np.stack([1.0 + bp, zeros, v_off], axis=1)
    d_x = np.stack([zeros, -1.0 / tau_p, zeros], axis=1)  # dV_est/dt of (1)
    d_u = np.stack([1.0 / tau_p, zeros, zeros], axis=1)
    lag = tau_s > 0.0
    gain = 1.0 - alpha * tau_e / tau_x  # no lag: (4) solved for I_out divides by this
    safe_tau_s = np.where(lag, tau_s, 1.0)
    safe_gain = np.where(lag, 1.0, gain)
    # lag: tau_s dI/dt = W0 / tau_x + (alpha tau_e / tau_x - 1) I - dV_est/dt (the I term in x)
    # no lag: I = (W0 / tau_x - dV_est/dt) / gain
    y_x = (w_x / tau_x[:, None] - d_x) / np.where(lag, safe_tau_s, safe_gain)[:, None]
    y_u = (w_u / tau_x[:, None] - d_u) / np.where(lag, safe_tau_s, safe_gain)[:, None]
    y_x[:, 2] = np.where(lag, -gain / safe_tau_s, 0.0)
    a = np.zeros((n, N_X, N_X))
    b = np.zeros((n, N_X, N_U))
    c_out = np.where(lag[:, None], np.array([0.0, 0.0, 1.0]), y_x)
    d_out = np.where(lag[:, None], 0.0, y_u)
    # (3): dV_m/dt = (W0 + alpha tau_e I_out) / tau_m - g (V_m - E) - I_ion, with I_out the
    # state (lag) or its algebraic form (no lag)
    k = (alpha * tau_e / tau_m)[:, None]
    a[:, 0] = w_x / tau_m[:, None] + k * c_out
    a[:, 0, 0] -= g
    b[:, 0] = w_u / tau_m[:, None] + k * d_out
    b[:, 0, 1] -= 1.0
    b[:, 0, 2] += g * e_leak
    a[:, 1] = d_x
    b[:, 1] = d_u
    a[:, 2] = np.where(lag[:, None], y_x, 0.0)
    b[:, 2] = np.where(lag[:, None], y_u, 0.0)
    return a, b, c_out, d_out


def linear_system(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A (n, 3, 3), B (n, 3, 3)) of equations (1)-(4) for x = (V_m, V_est, I_out) and
    u = (V_cmd, I_ion, 1), per cell of an (n, N_ARTEFACT_FIELDS) table (1/ms, per unit); with
    tau_sum = 0, I_out's row is zero (it is algebraic, see ``propagators``)."""
    a, b, _, _ = state_space(table)
    return a, b


def propagators(table: np.ndarray, dt: float) -> np.ndarray:
    """(n, N_PROPAGATOR) per cell, row-major: Phi (3 x 3) and Gamma (3 x 3) of the exact step
    x(t + dt) = Phi x(t) + Gamma u (u held over the step), then the 6 coefficients (on x(t),
    then on u) of the recorded current averaged over the step, what the digitizer samples.
    From the matrix exponential of [[A dt, B dt, I dt], [0, 0, 0], [0, 0, 0]]: its first block
    row holds exp(A dt), int exp(A s) ds B, and their integrals over the step. ValueError when
    the clamp is singular (tau_sum = 0 with alpha R_s* = R_s)."""
    tau_s = np.asarray(table)[:, ARTEFACT_FIELDS.index("tau_sum_ms")]
    alpha = np.asarray(table)[:, ARTEFACT_FIELDS.index("compensation")]
    rho = (np.asarray(table)[:, ARTEFACT_FIELDS.index("rs_est_MOhm")]
           / np.asarray(table)[:, ARTEFACT_FIELDS.index("rs_MOhm")])
    singular = (tau_s == 0.0) & (np.abs(1.0 - alpha * rho) < 1e-9)
    if np.any(singular):
        raise ValueError(f"artefacts of cell {int(np.argmax(singular))}: with tau_sum_ms = 0 "
                         f"the compensation times rs_est/rs must stay below 1 (found "
                         f"{alpha[singular][0] * rho[singular][0]:g}): no-lag 100% "
                         "compensation has infinite loop gain")
    a, b, c_out, d_out = state_space(table)
    n = a.shape[0]
    m_aug = N_X + N_U
    big = np.zeros((n, 2 * m_aug, 2 * m_aug))
    big[:, :N_X, :N_X] = a * dt
    big[:, :N_X, N_X:m_aug] = b * dt
    big[:, :m_aug, m_aug:] = np.eye(m_aug) * dt
    e = expm(big)
    phi, gam = e[:, :N_X, :N_X], e[:, :N_X, N_X:m_aug]
    mean_x = e[:, :N_X, m_aug:m_aug + N_X] / dt  # step-average of x: mean_x x0 + mean_u u
    mean_u = e[:, :N_X, m_aug + N_X:] / dt
    lag = (tau_s > 0.0)[:, None]
    # no lag: I_out after the step is C x(t + dt) + D u, not a state of its own
    phi[:, 2] = np.where(lag, phi[:, 2], np.einsum("nj,njk->nk", c_out, phi))
    gam[:, 2] = np.where(lag, gam[:, 2], np.einsum("nj,njk->nk", c_out, gam) + d_out)
    y_x = np.einsum("nj,njk->nk", c_out, mean_x)
    y_u = np.einsum("nj,njk->nk", c_out, mean_u) + d_out
    return np.concatenate([phi.reshape(n, -1), gam.reshape(n, -1), y_x, y_u], axis=1)


def growing(table: np.ndarray) -> np.ndarray:
    """(n,) bool: cells whose amplifier loop has a growing mode (over-compensation: alpha R_s*
    beyond R_s); the kernels flag them unstable when they diverge."""
    a, _, _, _ = state_space(table)
    return np.linalg.eigvals(a).real.max(axis=1) > 0.0


def recording_noise(t_ms: np.ndarray, n_cells: int, sd: Any, hum: Any, hum_hz: float,
                    seed: int) -> np.ndarray | None:
    """(n_cells, n_samples) float64 noise (pA/pF) of ``t_ms``: white (sd) plus mains hum of
    amplitude ``hum`` at ``hum_hz`` with a random phase per cell; None when both are zero."""
    sd_c = np.broadcast_to(np.asarray(sd, dtype=np.float64).reshape(-1), (n_cells,))
    hum_c = np.broadcast_to(np.asarray(hum, dtype=np.float64).reshape(-1), (n_cells,))
    if not (np.any(sd_c > 0) or np.any(hum_c > 0)):
        return None
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n_cells, t_ms.size)) * sd_c[:, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, n_cells)
    out += hum_c[:, None] * np.sin(2.0 * np.pi * hum_hz * 1e-3 * t_ms[None, :] + phase[:, None])
    return out


@numba.njit(inline="always", error_model="numpy")
def membrane_after_step(ws, c, S, xrow, prow, v_cmd, i_ion):
    """V_m (mV) of lane c after one step with the command v_cmd (mV) and the ionic current
    i_ion (pA/pF) held over it (rows as in ``artefact_step``): the kernels' predictor, the
    membrane potential at which a step's ionic currents are evaluated."""
    g = prow + N_X * N_X
    return (ws[prow * S + c] * ws[V_ * S + c] + ws[(prow + 1) * S + c] * ws[xrow * S + c]
            + ws[(prow + 2) * S + c] * ws[(xrow + 1) * S + c] + ws[g * S + c] * v_cmd
            + ws[(g + 1) * S + c] * i_ion + ws[(g + 2) * S + c])


@numba.njit(inline="always", error_model="numpy")
def artefact_step(ws, c, S, xrow, prow, v_cmd, i_ion):
    """One exact step of (V_m, V_est, I_out) of lane c: V_m in row V_, V_est and I_out in rows
    xrow and xrow + 1, the step's propagator (N_PROPAGATOR rows, see ``propagators``) from row
    prow, command v_cmd (mV) and ionic current i_ion (pA/pF) held over the step. Returns the
    recorded current averaged over the step (pA/pF)."""
    x0 = ws[V_ * S + c]
    x1 = ws[xrow * S + c]
    x2 = ws[(xrow + 1) * S + c]
    p = prow
    g = p + N_X * N_X
    m = g + N_X * N_U
    out1 = (ws[(p + 3) * S + c] * x0 + ws[(p + 4) * S + c] * x1 + ws[(p + 5) * S + c] * x2
            + ws[(g + 3) * S + c] * v_cmd + ws[(g + 4) * S + c] * i_ion + ws[(g + 5) * S + c])
    out2 = (ws[(p + 6) * S + c] * x0 + ws[(p + 7) * S + c] * x1 + ws[(p + 8) * S + c] * x2
            + ws[(g + 6) * S + c] * v_cmd + ws[(g + 7) * S + c] * i_ion + ws[(g + 8) * S + c])
    mean = (ws[m * S + c] * x0 + ws[(m + 1) * S + c] * x1 + ws[(m + 2) * S + c] * x2
            + ws[(m + 3) * S + c] * v_cmd + ws[(m + 4) * S + c] * i_ion + ws[(m + 5) * S + c])
    ws[V_ * S + c] = membrane_after_step(ws, c, S, xrow, prow, v_cmd, i_ion)
    ws[xrow * S + c] = out1
    ws[(xrow + 1) * S + c] = out2
    return mean
