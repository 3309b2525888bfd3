"""Equations of the Kernik-Clancy 2019 iPSC-CM model (J Physiol 597:4533), one definition for
every integrator.

Layout: a flat float64 workspace ``ws`` holds one column per cell ("lane") and one row per
quantity; row ``r`` of lane ``c`` is ``ws[r * S + c]`` where ``S`` is the number of lanes. The
batched CPU kernels put ~32 cells in SIMD lanes this way; a one-cell caller uses ``S = 1``.

Three steps per time step (units: ms, mV, mM, pA/pF):

1. ``cell_constants`` (numpy, once per cell): conductances and gating constants from the 87
   inputs and the temperature factor, into the CP_* rows.
2. ``voltage_terms`` (per lane, whenever V changes): gate steady states and Rush-Larsen decay
   factors exp(-dt/tau), the IK1 rectification and the V-only factors of the GHK, NaCa and NaK
   terms. In voltage clamp V is shared and piecewise constant, so this runs once per segment
   (once per step on a ramp).
3. ``advance`` (per lane, every step): reversal potentials, the 13 membrane currents (their sum
   I_ion goes to row ITOT), then Rush-Larsen for the gates and forward Euler for concentrations,
   RyR states and (in current clamp) V.

Model facts kept from the authors' code: Ca_ligand never changes; the j gate reuses h5, h6; every
gate derives X3 = X5*X1 and X4 = 1/(1/X2 + 1/X6), which gives x_inf = 1/(1 + X5 exp(V/X6)) and
tau = 1/(X1 exp(V/X2) (1 + X5 exp(V/X6))) + tau_const; fCa may only fall while fCa_inf > fCa and
V > -60 mV; with flag.stim = 1 Nai and Ki are frozen. The GHK terms of ICaL are 0/0 at V = 0 and
use their series there.

The same functions run on GPUs: ``simulate/cuda.py`` calls them from CUDA kernels (numba-cuda
compiles an njit function called from a kernel as a device function), one thread per cell with
``S = 1``. Keep them to what numba's CUDA target compiles (scalar math, the vecmath helpers,
LLVM intrinsics; no numpy ufuncs such as np.floor); ``benchmarks/bench_gpu.py --ptx-check``
compiles them for sm_90 without a GPU.
"""

import numba
import numpy as np

from ..vecmath import vexp, vlog3, vsqrt
from . import late_sodium
from .parameters import N_INPUTS, PARAMETER_INDEX

# ---------------------------------------------------------------- constants (authors' values)
R_GAS = 8.314472  # J/(mol K)
FARADAY = 96.4853415  # C/mmol
T_MODEL = 310.0  # K
RTF = R_GAS * T_MODEL / FARADAY  # mV
FRT = 1.0 / RTF  # 1/mV
KO, CAO, NAO = 5.4, 1.8, 140.0  # mM
CM = 60.0  # pF
V_TOT, VC_TT, VSR_TT = 3960.0, 16404.0, 1094.0  # um^3
VC = V_TOT * VC_TT / (VC_TT + VSR_TT)
V_SR = V_TOT * VSR_TT / (VC_TT + VSR_TT)
LOG_KO, LOG_CAO, LOG_NAO = np.log(KO), np.log(CAO), np.log(NAO)

# ICaL permeability split (Shannon-Bers fractions) and activity coefficients
_P_CA, _P_NA, _P_K = 5.4e-4, 1.5e-8, 2.7e-7
CAL_FRAC_CA = _P_CA / (_P_CA + _P_NA + _P_K)
CAL_FRAC_NA = _P_NA / (_P_CA + _P_NA + _P_K)
CAL_FRAC_K = _P_K / (_P_CA + _P_NA + _P_K)
# If Na/K split (Verkerk et al. 2013)
IF_NA_FRAC = 0.491 / 1.491
# NaCa (ten Tusscher)
NCX_KMCA, NCX_KMNAI, NCX_KSAT, NCX_GAMMA, NCX_ALPHA = 1.38, 87.5, 0.1, 0.7, 2.75
NCX_DEN = (NCX_KMNAI ** 3 + NAO ** 3) * (NCX_KMCA + CAO)
# NaK
NAK_KMK, NAK_KMNA = 1.0, 40.0
# SR fluxes
KUP2 = (0.00025 * 0.702) ** 2
KO_CA, KI_CA, K_OM, K_IM = 56320.0 * 11.43025, 54.0 * 0.3425, 1.5 * 0.1429, 0.001 * 0.5571
EC50_SR, MAX_SR, MIN_SR = 0.45, 15.0, 1.0
EC50_SR_25 = EC50_SR ** 2.5
# dt times the RyR chain's total rate above which its forward Euler step gives way to backward
# Euler: the chain's eigenvalues are at most twice its total rate in size, and forward Euler
# diverges beyond dt |lambda| = 2, so the switch leaves a factor 2 of margin
RYR_STIFF_LIMIT = 0.5
RYR_HOT_LIMIT = 0.25  # ... and above this (half of it) a lane is "hot": watched for it
BUF_SR, KBUF_SR, BUF_C, KBUF_C = 12.0, 0.3, 0.06, 0.0006
K_PCA = 0.0005
VSR_VC = V_SR / VC
VC_VSR = VC / V_SR
NAI_RATE = CM / (FARADAY * VC)  # mM per ms per (pA/pF)
CAI_RATE = CM / (2.0 * VC * FARADAY)
TAU_FCA = 2.0  # ms at 310 K
FCA_EXP_CAP = 250.0  # caps the fCa_inf exponents: e^500 times (1 + y^8) stays finite (see rates)
FCA_Y8_CAP = 1e300  # and y^8 (never reached in float64)
# the float32 twin (simulate.precision) overrides these: there e^50 (1 + 1e16) stays finite, and
# 1/(1 + e^25) or 1/(1 + 1e16) is still far below the last bit of fCa_inf (>= 0.157)
FLOAT32_CONSTANTS = {"FCA_EXP_CAP": 25.0, "FCA_Y8_CAP": 1e16}

# ---------------------------------------------------------------- workspace rows
# states 0..22 in kernik_initial_state.csv order
V_, CASR, CAI, NAI, KI, CALIG, D, F1, FCA, XR1, XR2, XS, H, J, M, XF, S_, R_, DCAT, FCAT, RYR_R, \
    RYR_O, RYR_I = range(23)
N_STATE_ROWS = 23
# 13 Rush-Larsen gates: states 6, 7, 9..19 (fCa, state 8, has its own rule)
N_GATES = 13
N_HH_GATES = 11  # gates 0..10 share the parameterized form; 11, 12 are the ICaT gates
GATE_STATES = (D, F1, XR1, XR2, XS, H, J, M, XF, S_, R_, DCAT, FCAT)  # state row of gate i
INF0 = N_STATE_ROWS
DEC0 = INF0 + N_GATES
# voltage-only factors
A2, E2, A1, E1, NCXA, NCXB, NAKV, XK1, DEC_FCA = range(DEC0 + N_GATES, DEC0 + N_GATES + 9)
# outputs of the last step: I_ion (pA/pF) and the 13 membrane currents
ITOT = DEC_FCA + 1
# 1.0 when the lane's RyR chain was near stiff at its last step (see advance): the batched
# kernels take the path that can step it by backward Euler only while some lane is
RYR_HOT = ITOT + 1
CUR0 = RYR_HOT + 1
CURRENT_NAMES = ("I_K1", "I_to", "I_Kr", "I_Ks", "I_CaL", "I_CaT", "I_NaK", "I_Na", "I_NaCa",
                 "I_pCa", "I_f", "I_bNa", "I_bCa")
N_CURRENTS = len(CURRENT_NAMES)
# per-cell constants
CP0 = CUR0 + N_CURRENTS
(CP_GK1, CP_GKR, CP_GKS, CP_GTO, CP_PCA, CP_PNA, CP_PK, CP_GCAT, CP_GNA, CP_GFNA, CP_GFK, CP_KNACA,
 CP_PNAK, CP_VUP, CP_VLEAK, CP_KS, CP_GBNA, CP_GBCA, CP_GPCA, CP_LIVE_NAK, CP_TFAC, CP_K1A,
 CP_K1B, CP_GSEAL, CP_ESEAL) = range(CP0, CP0 + 25)
CP_GATE0 = CP0 + 25  # 5 rows per HH gate: x1/tfac, 1/x2, x5, 1/x6, tau_const*tfac
N_ROWS = CP_GATE0 + 5 * N_HH_GATES
N_CP = N_ROWS - CP0

_HH_GATE_PARAMS = (
    ("ICaL.d1", "ICaL.d2", "ICaL.d5", "ICaL.d6", "ICaL.tau_d_const"),
    ("ICaL.f1", "ICaL.f2", "ICaL.f5", "ICaL.f6", "ICaL.tau_f_const"),
    ("IKr.Xr1_1", "IKr.Xr1_2", "IKr.Xr1_5", "IKr.Xr1_6", "IKr.tau_Xr1_const"),
    ("IKr.Xr2_1", "IKr.Xr2_2", "IKr.Xr2_5", "IKr.Xr2_6", "IKr.tau_Xr2_const"),
    ("IKs.ks1", "IKs.ks2", "IKs.ks5", "IKs.ks6", "IKs.tau_Xs_const"),
    ("INa.h1", "INa.h2", "INa.h5", "INa.h6", "INa.tau_h_const"),
    ("INa.j1", "INa.j2", "INa.h5", "INa.h6", "INa.tau_j_const"),  # j reuses h5, h6
    ("INa.m1", "INa.m2", "INa.m5", "INa.m6", "INa.tau_m_const"),
    ("If.xF1", "If.xF2", "If.xF5", "If.xF6", "If.tau_xF_const"),
    ("Ito.s1", "Ito.s2", "Ito.s5", "Ito.s6", "Ito.tau_s_const"),
    ("Ito.r1", "Ito.r2", "Ito.r5", "Ito.r6", "Ito.tau_r_const"),
)


def _col(inputs, name):
    return inputs[:, PARAMETER_INDEX[name]]


def cell_constants(inputs: np.ndarray, tau_factor: float, seal_g=0.0, seal_e_mV=0.0
                   ) -> np.ndarray:
    """Per-cell constants (n_cells, N_CP) from model inputs (n_cells, 87), the temperature
    factor on gating time constants (see model.temperature) and the seal leak of current clamp
    (conductance seal_g nS/pF = 1 / (R_seal Cm), reversal seal_e_mV; scalars or (n_cells,);
    0 nS/pF: no leak)."""
    p = np.asarray(inputs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != N_INPUTS:
        raise ValueError(f"inputs: expected shape (n_cells, {N_INPUTS}), found {p.shape}")
    n = p.shape[0]
    out = np.empty((n, N_CP))

    def put(row, value):
        out[:, row - CP0] = value

    def g(name, scale):
        return _col(p, name) * _col(p, scale)

    put(CP_GK1, g("IK1.g_K1", "scale_g_K1") * np.sqrt(KO / 5.4))
    put(CP_GKR, g("IKr.g_Kr", "scale_g_Kr") * np.sqrt(KO / 5.4))
    put(CP_GKS, g("IKs.g_Ks", "scale_g_Ks"))
    put(CP_GTO, g("Ito.g_to", "scale_g_to"))
    p_cal = g("ICaL.p_CaL", "scale_p_CaL")
    put(CP_PCA, p_cal * CAL_FRAC_CA * 0.341)
    put(CP_PNA, p_cal * CAL_FRAC_NA * 0.75)
    put(CP_PK, p_cal * CAL_FRAC_K * 0.75)
    put(CP_GCAT, g("ICaT.g_CaT", "scale_g_CaT"))
    put(CP_GNA, g("INa.g_Na", "scale_g_Na"))
    g_f = g("If.g_f", "scale_g_f")
    put(CP_GFNA, g_f * IF_NA_FRAC)
    put(CP_GFK, g_f * (1.0 - IF_NA_FRAC))
    put(CP_KNACA, 1100.0 * _col(p, "scale_k_NaCa"))
    put(CP_PNAK, 1.362 * 1.818 * _col(p, "scale_P_NaK"))
    put(CP_VUP, 0.000425 * 0.26 * _col(p, "scale_Vmax_up"))
    put(CP_VLEAK, 0.00008 * 0.02 * _col(p, "scale_V_leak"))
    put(CP_KS, 12.5 * _col(p, "scale_ks_RyR"))
    put(CP_GBNA, 0.00029 * 1.5 * _col(p, "scale_g_b_Na"))
    put(CP_GBCA, 0.000592 * 0.62 * _col(p, "scale_g_b_Ca"))
    put(CP_GPCA, 0.025 * 10.5 * _col(p, "scale_g_PCa"))
    put(CP_LIVE_NAK, np.where(_col(p, "flag.stim") == 1.0, 0.0, 1.0))
    put(CP_TFAC, tau_factor)
    # IK1: x_inf = a / (a + b), a = xK11 e^((V+xK13)/xK12), b = e^((V+xK15)/xK14)
    #      = 1 / (1 + exp(K1A V + K1B))
    k11, k12, k13, k14, k15 = (_col(p, f"IK1.xK1{i}") for i in range(1, 6))
    put(CP_K1A, 1.0 / k14 - 1.0 / k12)
    put(CP_K1B, k15 / k14 - k13 / k12 - np.log(k11))
    put(CP_GSEAL, seal_g)
    put(CP_ESEAL, seal_e_mV)
    for gi, names in enumerate(_HH_GATE_PARAMS):
        x1, x2, x5, x6, tc = (_col(p, nm) for nm in names)
        base = CP_GATE0 + 5 * gi
        put(base + 0, x1 / tau_factor)
        put(base + 1, 1.0 / x2)
        put(base + 2, x5)
        put(base + 3, 1.0 / x6)
        put(base + 4, tc * tau_factor)
    return out


@numba.njit(inline="always", error_model="numpy")
def _ghk_factor(u, scale):
    """scale * u / (e^u - 1) with its series near u = 0 (the ICaL 0/0 at V = 0 mV)."""
    eu = vexp(u)
    small = abs(u) < 1e-4
    den = eu - 1.0 if not small else 1.0
    direct = u / den
    series = 1.0 - 0.5 * u + u * u / 12.0
    return scale * (series if small else direct), eu


@numba.njit(inline="always", error_model="numpy")
def _hh_gate(ws, c, S, v, dt, gi):
    """Steady state and Rush-Larsen decay of parameterized gate gi (see module docstring)."""
    base = (CP_GATE0 + 5 * gi) * S + c
    b = ws[base + 2 * S] * vexp(v * ws[base + 3 * S])
    inf = 1.0 / (1.0 + b)
    tau = inf / (ws[base] * vexp(v * ws[base + S])) + ws[base + 4 * S]
    ws[(INF0 + gi) * S + c] = inf
    ws[(DEC0 + gi) * S + c] = vexp(-dt / tau)


@numba.njit(inline="always", error_model="numpy")
def _rush_larsen(ws, c, S, gi, state):
    """x <- x + (x_inf - x)(1 - exp(-dt/tau)) for gate gi stored in state row ``state``; written
    so that dt = 0 leaves x exactly unchanged (the current-clamp kernel relies on it)."""
    x = ws[state * S + c]
    ws[state * S + c] = x + (ws[(INF0 + gi) * S + c] - x) * (1.0 - ws[(DEC0 + gi) * S + c])


@numba.njit(inline="always", error_model="numpy")
def _ryr_backward_euler(rr, ro, ri, a, b, h):
    """One backward Euler step of h (ms) of the RyR chain (R, O, I; RI = 1 - R - O - I) with
    Ca-dependent rates a = koSRCa Cai^2 (R->O, RI->I) and b = kiSRCa Cai (R->RI, O->I) held
    over the step: solves (1 - h M) y1 = y0 + h c for dy/dt = M y + c by Cramer's rule."""
    a11 = 1.0 + h * (K_IM + b + a)
    a12 = -h * (K_OM - K_IM)
    a13 = h * K_IM
    a21 = -h * a
    a22 = 1.0 + h * (K_OM + b)
    a23 = -h * K_IM
    a31 = h * a
    a32 = -h * (b - a)
    a33 = 1.0 + h * (K_IM + K_OM + a)
    r1 = rr + h * K_IM
    r2 = ro
    r3 = ri + h * a
    m1 = a22 * a33 - a23 * a32
    m2 = a21 * a33 - a23 * a31
    m3 = a21 * a32 - a22 * a31
    inv = 1.0 / (a11 * m1 - a12 * m2 + a13 * m3)
    y1 = (r1 * m1 - a12 * (r2 * a33 - a23 * r3) + a13 * (r2 * a32 - a22 * r3)) * inv
    y2 = (a11 * (r2 * a33 - a23 * r3) - r1 * m2 + a13 * (a21 * r3 - r2 * a31)) * inv
    y3 = (a11 * (a22 * r3 - r2 * a32) - a12 * (a21 * r3 - r2 * a31) + r1 * m3) * inv
    return y1, y2, y3


@numba.njit(inline="always", error_model="numpy")
def voltage_terms(ws, c, S, v, dt):
    """Gate steady states, Rush-Larsen decays exp(-dt/tau) and V-only current factors of lane c
    at membrane potential v (mV) for a step of dt (ms)."""
    tfac = ws[CP_TFAC * S + c]
    # explicit calls, not a loop: the lane loop around this must stay the innermost loop
    _hh_gate(ws, c, S, v, dt, 0)
    _hh_gate(ws, c, S, v, dt, 1)
    _hh_gate(ws, c, S, v, dt, 2)
    _hh_gate(ws, c, S, v, dt, 3)
    _hh_gate(ws, c, S, v, dt, 4)
    _hh_gate(ws, c, S, v, dt, 5)
    _hh_gate(ws, c, S, v, dt, 6)
    _hh_gate(ws, c, S, v, dt, 7)
    _hh_gate(ws, c, S, v, dt, 8)
    _hh_gate(ws, c, S, v, dt, 9)
    _hh_gate(ws, c, S, v, dt, 10)
    # ICaT gates (fixed kinetics, Demir / Maltsev-Lakatta)
    w = v + 26.3
    inf = 1.0 / (1.0 + vexp(-w / 6.0))
    tau = tfac / (1.068 * vexp(w / 30.0) + 1.068 * vexp(-w / 30.0))
    ws[(INF0 + 11) * S + c] = inf
    ws[(DEC0 + 11) * S + c] = vexp(-dt / tau)
    w = v + 61.7
    inf = 1.0 / (1.0 + vexp(w / 5.6))
    tau = tfac / (0.0153 * vexp(-w / 83.3) + 0.015 * vexp(w / 15.38))
    ws[(INF0 + 12) * S + c] = inf
    ws[(DEC0 + 12) * S + c] = vexp(-dt / tau)
    # GHK factors of ICaL: A2 = 4 V F^2/(RT) / (e^(2VF/RT) - 1), A1 = V F^2/(RT) / (e^(VF/RT) - 1)
    u1 = v * FRT
    a2, e2 = _ghk_factor(2.0 * u1, 2.0 * FARADAY)
    a1, e1 = _ghk_factor(u1, FARADAY)
    ws[A2 * S + c] = a2
    ws[E2 * S + c] = e2
    ws[A1 * S + c] = a1
    ws[E1 * S + c] = e1
    eg = vexp(NCX_GAMMA * u1)
    eg1 = vexp((NCX_GAMMA - 1.0) * u1)
    ncx = 1.0 / (NCX_DEN * (1.0 + NCX_KSAT * eg1))
    ws[NCXA * S + c] = eg * CAO * ncx
    ws[NCXB * S + c] = eg1 * NAO * NAO * NAO * NCX_ALPHA * ncx
    ws[NAKV * S + c] = KO / ((KO + NAK_KMK) * (1.0 + 0.1245 * vexp(-0.1 * u1) + 0.0353 / e1))
    ws[XK1 * S + c] = 1.0 / (1.0 + vexp(ws[CP_K1A * S + c] * v + ws[CP_K1B * S + c]))
    ws[DEC_FCA * S + c] = vexp(-dt / (TAU_FCA * tfac))


@numba.njit(inline="always", error_model="numpy")
def rates(ws, c, S, v, store_currents, late_na=False, nal_row=0):
    """Currents of lane c at its present state and membrane potential v (mV) (I_ion to row ITOT,
    the 13 currents to CUR0.. when store_currents) and the rates of the non-gate states
    (``late_na``, a compile-time constant: with the late sodium current of model.late_sodium,
    rows from ``nal_row``, in I_ion and dNai/dt):
    (I_ion pA/pF, dCaSR/dt, dCai/dt, dNai/dt, dKi/dt (mM/ms), dR/dt, dO/dt, dI/dt of the RyR
    (1/ms), the fCa pull (fCa_inf - fCa where fCa may move, else 0), the RyR's Ca-dependent
    rates a = koSRCa Cai^2 and b = kiSRCa Cai (1/ms)). Gate rates come from voltage_terms."""
    casr = ws[CASR * S + c]
    cai = ws[CAI * S + c]
    nai = ws[NAI * S + c]
    ki = ws[KI * S + c]
    log_cai, log_nai, log_ki = vlog3(cai, nai, ki)
    e_ca = 0.5 * RTF * (LOG_CAO - log_cai)
    e_na = RTF * (LOG_NAO - log_nai)
    e_k = RTF * (LOG_KO - log_ki)
    dfk = v - e_k
    dfna = v - e_na

    i_k1 = ws[CP_GK1 * S + c] * ws[XK1 * S + c] * dfk
    i_kr = ws[CP_GKR * S + c] * dfk * ws[XR1 * S + c] * ws[XR2 * S + c]
    xs = ws[XS * S + c]
    i_ks = ws[CP_GKS * S + c] * dfk * xs * xs
    i_to = ws[CP_GTO * S + c] * dfk * ws[S_ * S + c] * ws[R_ * S + c]
    fca = ws[FCA * S + c]
    dff = ws[D * S + c] * ws[F1 * S + c] * fca
    a1 = ws[A1 * S + c]
    e1 = ws[E1 * S + c]
    i_cal_ca = ws[CP_PCA * S + c] * ws[A2 * S + c] * (cai * ws[E2 * S + c] - CAO) * dff
    i_cal_na = ws[CP_PNA * S + c] * a1 * (nai * e1 - NAO) * dff
    i_cal_k = ws[CP_PK * S + c] * a1 * (ki * e1 - KO) * dff
    i_cal = i_cal_ca + i_cal_na + i_cal_k
    i_cat = ws[CP_GCAT * S + c] * (v - e_ca) * ws[DCAT * S + c] * ws[FCAT * S + c]
    m = ws[M * S + c]
    i_na = ws[CP_GNA * S + c] * m * m * m * ws[H * S + c] * ws[J * S + c] * dfna
    xf = ws[XF * S + c]
    i_f_na = ws[CP_GFNA * S + c] * xf * dfna
    i_f_k = ws[CP_GFK * S + c] * xf * dfk
    i_f = i_f_na + i_f_k
    i_naca = ws[CP_KNACA * S + c] * (ws[NCXA * S + c] * nai * nai * nai - ws[NCXB * S + c] * cai)
    i_nak = ws[CP_PNAK * S + c] * ws[NAKV * S + c] * nai / (nai + NAK_KMNA)
    i_bna = ws[CP_GBNA * S + c] * dfna
    i_bca = ws[CP_GBCA * S + c] * (v - e_ca)
    # Cai-dependent saturations of the Ca pump and SERCA share one division
    cai2 = cai * cai
    d_pca = cai + K_PCA
    d_up = cai2 + KUP2
    r_sat = 1.0 / (d_pca * d_up)
    i_pca = ws[CP_GPCA * S + c] * cai * d_up * r_sat
    i_up = ws[CP_VUP * S + c] * cai2 * d_pca * r_sat
    i_ion = (i_k1 + i_to + i_kr + i_ks + i_cal + i_cat + i_nak + i_na + i_naca + i_pca + i_f
             + i_bna + i_bca)
    i_nal = 0.0
    if late_na:
        i_nal = late_sodium.current(ws, c, S, dfna, nal_row)
        i_ion = i_ion + i_nal
    ws[ITOT * S + c] = i_ion
    if store_currents:
        ws[(CUR0 + 0) * S + c] = i_k1
        ws[(CUR0 + 1) * S + c] = i_to
        ws[(CUR0 + 2) * S + c] = i_kr
        ws[(CUR0 + 3) * S + c] = i_ks
        ws[(CUR0 + 4) * S + c] = i_cal
        ws[(CUR0 + 5) * S + c] = i_cat
        ws[(CUR0 + 6) * S + c] = i_nak
        ws[(CUR0 + 7) * S + c] = i_na
        ws[(CUR0 + 8) * S + c] = i_naca
        ws[(CUR0 + 9) * S + c] = i_pca
        ws[(CUR0 + 10) * S + c] = i_f
        ws[(CUR0 + 11) * S + c] = i_bna
        ws[(CUR0 + 12) * S + c] = i_bca

    # SR fluxes and RyR (Markov: R, O, I, RI = 1 - R - O - I).
    # kCaSR = MAX - (MAX - MIN) / (1 + (EC50/CaSR)^2.5) = B / A with p = CaSR^2.5,
    # A = p + EC50^2.5, B = MIN p + MAX EC50^2.5: koSRCa = KO_CA A/B, kiSRCa = KI_CA B/A
    i_leak = (casr - cai) * ws[CP_VLEAK * S + c]
    p_sr = casr * casr * vsqrt(casr)
    a_sr = p_sr + EC50_SR_25
    b_sr = MIN_SR * p_sr + MAX_SR * EC50_SR_25
    r_sr = 1.0 / (a_sr * b_sr)
    ko_sr = KO_CA * a_sr * a_sr * r_sr
    ki_sr = KI_CA * b_sr * b_sr * r_sr
    rr = ws[RYR_R * S + c]
    ro = ws[RYR_O * S + c]
    ri = ws[RYR_I * S + c]
    rir = 1.0 - rr - ro - ri
    open_r = ko_sr * cai2 * rr - K_OM * ro
    inact_o = ki_sr * cai * ro - K_IM * ri
    d_r = (K_IM * rir - ki_sr * cai * rr) - open_r
    d_o = open_r - inact_o
    d_i = inact_o - (K_OM * ri - ko_sr * cai2 * rir)
    i_rel = ws[CP_KS * S + c] * ro * (casr - cai) * VSR_VC
    # rapid buffering: 1 / (1 + B K / (x + K)^2) = (x + K)^2 / ((x + K)^2 + B K), one division
    n_sr = (casr + KBUF_SR) * (casr + KBUF_SR)
    n_c = (cai + KBUF_C) * (cai + KBUF_C)
    d_sr = n_sr + BUF_SR * KBUF_SR
    d_c = n_c + BUF_C * KBUF_C
    r_buf = 1.0 / (d_sr * d_c)
    buf_sr = n_sr * d_c * r_buf
    buf_c = n_c * d_sr * r_buf
    d_casr = buf_sr * VC_VSR * (i_up - (i_rel + i_leak))
    d_cai = buf_c * (i_leak - i_up + i_rel
                     - (i_cal_ca + i_cat + i_bca + i_pca - 2.0 * i_naca) * CAI_RATE)
    live = ws[CP_LIVE_NAK * S + c]
    d_nai = -live * NAI_RATE * (i_na + i_bna + i_f_na + 3.0 * i_nak + 3.0 * i_naca + i_cal_na)
    if late_na:
        d_nai = d_nai - live * NAI_RATE * i_nal
    d_ki = -live * NAI_RATE * (i_k1 + i_to + i_kr + i_ks + i_f_k - 2.0 * i_nak + i_cal_k)

    # fCa (ten Tusscher 2004): may only fall while fCa_inf > fCa and V > -60 mV
    # fCa_inf = (1/(1+y^8) + 0.1/(1+eb) + 0.2/(1+eg) + 0.23) / 1.46 over one division
    y = cai * (1.2 / 0.000325)
    y2 = y * y
    y4 = y2 * y2
    da = 1.0 + min(y4 * y4, FCA_Y8_CAP)
    # exponents capped at FCA_EXP_CAP: beyond it 1/(1 + e^x) is far below the last bit of
    # fCa_inf, and uncapped the product below overflows from Cai ~ 50 uM (inf/inf = NaN)
    db = 1.0 + vexp(min((1.2 * cai - 0.0005) * (1.0 / 0.0001), FCA_EXP_CAP))
    dg = 1.0 + vexp(min((1.2 * cai - 0.00075) * (1.0 / 0.0008), FCA_EXP_CAP))
    dbg = db * dg
    fca_inf = ((dbg + (0.1 * dg + 0.2 * db) * da) / (da * dbg) + 0.23) * (1.0 / 1.46)
    moving = 0.0 if (fca_inf > fca) & (v > -60.0) else 1.0  # a select, not a branch: SIMD
    return (i_ion, d_casr, d_cai, d_nai, d_ki, d_r, d_o, d_i, moving * (fca_inf - fca),
            ko_sr * cai2, ki_sr * cai)


@numba.njit(inline="always", error_model="numpy")
def advance(ws, c, S, v, dt, i_stim, clamped, store_currents, stiff_ryr=True, late_na=False,
            nal_row=0):
    """Currents of lane c at its present state and membrane potential v (mV) (see rates); then
    one step of dt (ms): Rush-Larsen gates, forward Euler elsewhere, the RyR chain by backward
    Euler where it is stiff (voltage_terms must hold the same dt). ``stiff_ryr`` (a
    compile-time constant) False leaves out the backward Euler branch (forward Euler only): the
    batched kernels use it while no lane of the chunk is RYR_HOT, which a lane becomes one step
    before it can need the branch (at half its threshold). In current clamp
    (clamped = False) V moves by dt * (i_stim - I_ion - I_seal), I_seal = g_seal (V - E_seal)
    the seal leak of the recording (not a membrane current: no ion fluxes). Returns dV/dt
    (mV/ms). ``late_na`` (compile-time): with the late sodium current (see rates), its gates
    stepped too."""
    (i_ion, d_casr, d_cai, d_nai, d_ki, d_r, d_o, d_i, fca_pull, a_ryr,
     b_ryr) = rates(ws, c, S, v, store_currents, late_na, nal_row)
    fca = ws[FCA * S + c]
    ws[FCA * S + c] = fca + fca_pull * (1.0 - ws[DEC_FCA * S + c])

    _rush_larsen(ws, c, S, 0, D)
    _rush_larsen(ws, c, S, 1, F1)
    _rush_larsen(ws, c, S, 2, XR1)
    _rush_larsen(ws, c, S, 3, XR2)
    _rush_larsen(ws, c, S, 4, XS)
    _rush_larsen(ws, c, S, 5, H)
    _rush_larsen(ws, c, S, 6, J)
    _rush_larsen(ws, c, S, 7, M)
    _rush_larsen(ws, c, S, 8, XF)
    _rush_larsen(ws, c, S, 9, S_)
    _rush_larsen(ws, c, S, 10, R_)
    _rush_larsen(ws, c, S, 11, DCAT)
    _rush_larsen(ws, c, S, 12, FCAT)
    if late_na:
        late_sodium.rush_larsen(ws, c, S, nal_row)
    ws[CASR * S + c] = ws[CASR * S + c] + dt * d_casr
    ws[CAI * S + c] = ws[CAI * S + c] + dt * d_cai
    ws[NAI * S + c] = ws[NAI * S + c] + dt * d_nai
    ws[KI * S + c] = ws[KI * S + c] + dt * d_ki
    # RyR: forward Euler while the chain is slow against dt; where Ca drives its rates up
    # (Cai of tens of uM during long depolarizations) forward Euler diverges, and the lane takes
    # the backward Euler step of the same linear 3-state system instead (stable at any dt).
    # A select between both, so the lane loop stays a SIMD loop and slow lanes are unchanged.
    rr = ws[RYR_R * S + c]
    ro = ws[RYR_O * S + c]
    ri = ws[RYR_I * S + c]
    ryr_rate = dt * (a_ryr + b_ryr + K_OM + K_IM)
    # a lane idling through another lane's extra sub-steps (dt = 0) keeps its flag
    hot = 1.0 if ryr_rate > RYR_HOT_LIMIT else 0.0
    ws[RYR_HOT * S + c] = hot if dt > 0.0 else ws[RYR_HOT * S + c]
    if stiff_ryr:
        ryr_stiff = ryr_rate > RYR_STIFF_LIMIT
        be_r, be_o, be_i = _ryr_backward_euler(rr, ro, ri, a_ryr, b_ryr, dt)
        ws[RYR_R * S + c] = be_r if ryr_stiff else rr + dt * d_r
        ws[RYR_O * S + c] = be_o if ryr_stiff else ro + dt * d_o
        ws[RYR_I * S + c] = be_i if ryr_stiff else ri + dt * d_i
    else:
        ws[RYR_R * S + c] = rr + dt * d_r
        ws[RYR_O * S + c] = ro + dt * d_o
        ws[RYR_I * S + c] = ri + dt * d_i
    dvdt = i_stim - i_ion
    if not clamped:
        # the seal leak (pA/pF) flows through the seal, not the membrane: it moves V only
        # (0 when the cell has no leak: subtracting 0.0 leaves dV/dt bit for bit)
        dvdt = dvdt - ws[CP_GSEAL * S + c] * (v - ws[CP_ESEAL * S + c])
        ws[V_ * S + c] = v + dt * dvdt
    return dvdt
