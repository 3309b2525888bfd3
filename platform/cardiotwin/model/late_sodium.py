"""Late sodium current (INaL): an optional variant of the Kernik-Clancy 2019 model, which has
none.

Formulation: O'Hara T, Virag L, Varro A, Rudy Y 2011 PLoS Comput Biol 7:e1002061 (ORd,
supplement, "INaL"), as used by the CiPA model (CiPAORdv1.0: Dutta S et al. 2017 Front Physiol
8:616, which scales ORd's G_NaL by 2.661). Units: mV, ms, nS/pF, pA/pF.

    INaL    = G_NaL * s * mL * hL * (V - E_Na)
    mL_inf  = 1 / (1 + exp(-(V + 42.85) / 5.264))
    tau_mL  = 1 / (6.765 exp((V + 11.64) / 34.77) + 8.552 exp(-(V + 77.42) / 5.955))   (ms,
              ORd's tau_m of INa)
    hL_inf  = 1 / (1 + exp((V + 87.61) / 7.488))
    tau_hL  = 200 ms

G_NaL = 0.0075 x 2.661 = 0.01996 nS/pF (ORd's endocardial value with CiPAORdv1.0's scaling; for
iPSC-CMs no measured value is established: ``LateSodium.g_nS_per_pF`` sets another). ``s`` is
the per-cell conductance scale (the drug-block hook: 1 / (1 + ([D]/IC50)^h)). Left out of ORd's
form: the CaMK-phosphorylated hL branch (Kernik has no CaMKII; ORd's unphosphorylated gate is
used throughout). E_Na is the Kernik model's (from its Nai); INaL carries Na+, so it enters
dNai/dt like INa. Gating time constants follow the model's temperature factor
(model.temperature, Q10 = 3; ORd is at 310 K). Both gates start at their steady state at the
model's initial V and integrate by Rush-Larsen with the other gates.

In the workspace (model.equations' layout) the variant holds ``N_ROWS`` extra rows from a base
row ``b`` chosen by the kernel: b + ML, b + HL (states), b + ML_INF, ML_DEC, HL_INF, HL_DEC (gate
terms of the present step), b + G (G_NaL * s, per cell), b + I (INaL of the last step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..vecmath import vexp

G_NAL_ORD = 0.0075            # nS/pF: ORd 2011, endocardial
CIPA_G_NAL_SCALE = 2.661      # CiPAORdv1.0 (Dutta et al. 2017)
G_NAL = G_NAL_ORD * CIPA_G_NAL_SCALE
TAU_HL_MS = 200.0
ML, HL, ML_INF, ML_DEC, HL_INF, HL_DEC, G, I_ = range(8)
N_ROWS = 8
N_STATES = 2                   # mL, hL
STATE_NAMES = ("INaL.mL", "INaL.hL")


# ---- numpy reference (published equations) --------------------------------------------------

def ml_inf(v_mV):
    """mL steady state at V (mV)."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(v_mV, dtype=float) + 42.85) / 5.264))


def hl_inf(v_mV):
    """hL steady state at V (mV)."""
    return 1.0 / (1.0 + np.exp((np.asarray(v_mV, dtype=float) + 87.61) / 7.488))


def tau_ml(v_mV):
    """mL time constant (ms) at V (mV), 310 K."""
    v = np.asarray(v_mV, dtype=float)
    return 1.0 / (6.765 * np.exp((v + 11.64) / 34.77) + 8.552 * np.exp(-(v + 77.42) / 5.955))


def steady_state_current(v_mV, e_na_mV, g_nS_per_pF: float = G_NAL):
    """INaL (pA/pF) with both gates at steady state: G mL_inf hL_inf (V - E_Na)."""
    v = np.asarray(v_mV, dtype=float)
    return g_nS_per_pF * ml_inf(v) * hl_inf(v) * (v - np.asarray(e_na_mV, dtype=float))


def initial_state(v_mV: float) -> np.ndarray:
    """(mL, hL) at steady state at V (mV)."""
    return np.array([float(ml_inf(v_mV)), float(hl_inf(v_mV))])


@dataclass(frozen=True)
class LateSodium:
    """The late-sodium variant of a current-clamp run: G_NaL (nS/pF) times ``scale`` (a scalar
    or one value per cell, in [0, inf): the drug-block hook, 1 = no block)."""

    scale: Any = 1.0
    g_nS_per_pF: float = G_NAL

    def per_cell(self, n: int) -> np.ndarray:
        """G_NaL * scale as (n,) float64; ValueError for a negative or non-finite value or a
        length that is neither 1 nor n."""
        g = float(self.g_nS_per_pF)
        if not (np.isfinite(g) and g >= 0):
            raise ValueError(f"late sodium g_nS_per_pF must be finite and >= 0, found "
                             f"{self.g_nS_per_pF!r}")
        s = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if s.size not in (1, n):
            raise ValueError(f"late sodium scale: expected one value or {n} (one per cell), "
                             f"found {s.size}")
        if not (np.all(np.isfinite(s)) and np.all(s >= 0)):
            raise ValueError(f"late sodium scale must be finite and >= 0, found {s!r}")
        return np.broadcast_to(g * s, (n,)).astype(np.float64)


# ---- the kernels' functions (inlined; S lanes, base row b) ----------------------------------

@numba.njit(inline="always", error_model="numpy")
def voltage_terms(ws, c, S, v, dt, tfac, b):
    """Steady states and Rush-Larsen decays exp(-dt/tau) of mL and hL of lane c at V (mV) for
    a step of dt (ms); ``tfac`` the temperature factor on time constants."""
    tau_m = tfac / (6.765 * vexp((v + 11.64) * (1.0 / 34.77))
                    + 8.552 * vexp(-(v + 77.42) * (1.0 / 5.955)))
    ws[(b + ML_INF) * S + c] = 1.0 / (1.0 + vexp(-(v + 42.85) * (1.0 / 5.264)))
    ws[(b + ML_DEC) * S + c] = vexp(-dt / tau_m)
    ws[(b + HL_INF) * S + c] = 1.0 / (1.0 + vexp((v + 87.61) * (1.0 / 7.488)))
    ws[(b + HL_DEC) * S + c] = vexp(-dt / (TAU_HL_MS * tfac))


@numba.njit(inline="always", error_model="numpy")
def current(ws, c, S, dfna, b):
    """INaL (pA/pF) of lane c at its present gates; ``dfna`` = V - E_Na (mV). Stored in b + I."""
    i = ws[(b + G) * S + c] * ws[(b + ML) * S + c] * ws[(b + HL) * S + c] * dfna
    ws[(b + I_) * S + c] = i
    return i


@numba.njit(inline="always", error_model="numpy")
def rush_larsen(ws, c, S, b):
    """One Rush-Larsen step of mL and hL (dt = 0 leaves them exactly unchanged)."""
    x = ws[(b + ML) * S + c]
    ws[(b + ML) * S + c] = x + (ws[(b + ML_INF) * S + c] - x) * (1.0 - ws[(b + ML_DEC) * S + c])
    x = ws[(b + HL) * S + c]
    ws[(b + HL) * S + c] = x + (ws[(b + HL_INF) * S + c] - x) * (1.0 - ws[(b + HL_DEC) * S + c])


@numba.njit(cache=True, error_model="numpy")
def clamp(v_mV, e_na_mV, g_nS_per_pF, duration_ms, dt_ms, tfac, m0, h0):
    """INaL (pA/pF) at the end of a voltage step to ``v_mV`` held ``duration_ms``, gates from
    (m0, h0), through the kernels' functions above (one lane): (INaL, mL, hL)."""
    ws = np.zeros(N_ROWS)
    ws[G] = g_nS_per_pF
    ws[ML] = m0
    ws[HL] = h0
    n = int(round(duration_ms / dt_ms))
    voltage_terms(ws, 0, 1, v_mV, dt_ms, tfac, 0)
    for _ in range(n):
        rush_larsen(ws, 0, 1, 0)
    i = current(ws, 0, 1, v_mV - e_na_mV, 0)
    return i, ws[ML], ws[HL]
