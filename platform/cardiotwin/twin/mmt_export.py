"""The twin as a Myokit model file (.mmt): the Kernik-Clancy 2019 iPSC-CM model with the twin's
parameter values, written from one table of equations (:func:`equations`) that
:func:`evaluate` also evaluates in Python, so the file is checked against the simulator's own
right-hand side (:func:`cardiotwin.simulate.stiff.derivatives`) without Myokit.

The formulation follows the published model as :mod:`cardiotwin.model.equations` implements
it (units ms, mV, mM, pA/pF): gates in the authors' alpha/beta form, alpha = x1 e^(V/x2),
beta = x1 x5 e^(V (1/x2 + 1/x6)), x_inf = alpha / (alpha + beta), tau = 1 / (alpha + beta) +
tau_const, every tau times the temperature factor 3^((310 - T) / 10) (14 gates; RT/F stays at
310 K); the j gate reuses h5 and h6; the ICaL GHK factors u / (e^u - 1) take their series
1 - u/2 + u^2/12 for |u| < 1e-4 (V = 0 mV); fCa may only move where it does not rise while
V > -60 mV (fCa_inf > fCa and V > -60 mV: held); the RyR is the four-state chain R, O, I,
RI = 1 - R - O - I with Ca_SR-dependent rates; Ca_ligand is a state that never changes; with
flag.stim = 1 Nai and Ki are frozen.

Layout: ``[engine]`` (time, pace), ``[membrane]`` (V, i_ion, the stimulus i_stim = pace x
amplitude, depolarizing), one component per current holding its parameters (``ik1``,
``ikr``, ``iks``, ``ito``, ``ical``, ``icat``, ``ina``, ``i_f``, ``inaca``, ``inak``, ``ipca``,
``ibna``, ``ibca``), ``scale`` (the conductance scales), ``flag``, ``phys`` (constants,
temperature), ``calcium``, ``sodium``, ``potassium``, ``ryr``. Every one of the 87 inputs is a
constant ``component.name`` (``IK1.g_K1`` -> ``ik1.g_K1``, ``scale_g_K1`` -> ``scale.g_K1``,
``flag.stim`` -> ``flag.stim``); the ICaL f1 gate is the state ``ical.f1_gate`` (its rate
constant is the parameter ``ical.f1``). V is a state (current clamp: dV/dt = i_stim - i_ion);
for voltage clamp demote it and bind it to the pace (see the optional Myokit test).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model.parameters import INITIAL_STATE, PARAMETER_NAMES, STATE_NAMES

_COMPONENT = {"IK1": "ik1", "IKr": "ikr", "IKs": "iks", "Ito": "ito", "ICaL": "ical",
              "ICaT": "icat", "INa": "ina", "If": "i_f", "flag": "flag"}

#: state (registry order) -> qualified Myokit name
STATES: tuple[str, ...] = (
    "membrane.V", "calcium.Ca_SR", "calcium.Cai", "sodium.Nai", "potassium.Ki",
    "calcium.Ca_ligand", "ical.d", "ical.f1_gate", "ical.fCa", "ikr.Xr1", "ikr.Xr2", "iks.Xs",
    "ina.h", "ina.j", "ina.m", "i_f.Xf", "ito.s", "ito.r", "icat.dCaT", "icat.fCaT", "ryr.R",
    "ryr.O", "ryr.I")

# gate state -> (x1, x2, x5, x6, tau_const) parameter names (qualified)
_HH = {
    "ical.d": ("ical.d1", "ical.d2", "ical.d5", "ical.d6", "ical.tau_d_const"),
    "ical.f1_gate": ("ical.f1", "ical.f2", "ical.f5", "ical.f6", "ical.tau_f_const"),
    "ikr.Xr1": ("ikr.Xr1_1", "ikr.Xr1_2", "ikr.Xr1_5", "ikr.Xr1_6", "ikr.tau_Xr1_const"),
    "ikr.Xr2": ("ikr.Xr2_1", "ikr.Xr2_2", "ikr.Xr2_5", "ikr.Xr2_6", "ikr.tau_Xr2_const"),
    "iks.Xs": ("iks.ks1", "iks.ks2", "iks.ks5", "iks.ks6", "iks.tau_Xs_const"),
    "ina.h": ("ina.h1", "ina.h2", "ina.h5", "ina.h6", "ina.tau_h_const"),
    "ina.j": ("ina.j1", "ina.j2", "ina.h5", "ina.h6", "ina.tau_j_const"),   # j reuses h5, h6
    "ina.m": ("ina.m1", "ina.m2", "ina.m5", "ina.m6", "ina.tau_m_const"),
    "i_f.Xf": ("i_f.xF1", "i_f.xF2", "i_f.xF5", "i_f.xF6", "i_f.tau_xF_const"),
    "ito.s": ("ito.s1", "ito.s2", "ito.s5", "ito.s6", "ito.tau_s_const"),
    "ito.r": ("ito.r1", "ito.r2", "ito.r5", "ito.r6", "ito.tau_r_const"),
}


def parameter_name(name: str) -> str:
    """The qualified Myokit name of one of the 87 inputs."""
    if name.startswith("scale_"):
        return "scale." + name[len("scale_"):]
    prefix, var = name.split(".", 1)
    return f"{_COMPONENT[prefix]}.{var}"


def _constants(temperature_K: float) -> list[tuple[str, str]]:
    return [
        ("phys.R", "8.314472"), ("phys.F", "96.4853415"), ("phys.T_model", "310"),
        ("phys.T", repr(float(temperature_K))),
        ("phys.RTF", "phys.R * phys.T_model / phys.F"),
        ("phys.tfac", "3 ^ ((310 - phys.T) / 10)"),
        ("phys.Ko", "5.4"), ("phys.Cao", "1.8"), ("phys.Nao", "140"), ("phys.Cm", "60"),
        ("phys.V_tot", "3960"), ("phys.Vc_tenT", "16404"), ("phys.VSR_tenT", "1094"),
        ("phys.Vc", "phys.V_tot * phys.Vc_tenT / (phys.Vc_tenT + phys.VSR_tenT)"),
        ("phys.V_SR", "phys.V_tot * phys.VSR_tenT / (phys.Vc_tenT + phys.VSR_tenT)"),
        ("membrane.stim_amplitude", "3"),
        ("membrane.i_stim", "engine.pace * membrane.stim_amplitude"),
        ("calcium.E_Ca", "0.5 * phys.RTF * log(phys.Cao / calcium.Cai)"),
        ("sodium.E_Na", "phys.RTF * log(phys.Nao / sodium.Nai)"),
        ("potassium.E_K", "phys.RTF * log(phys.Ko / potassium.Ki)"),
        ("phys.u1", "membrane.V / phys.RTF"),
    ]


def _gates() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for x, (x1, x2, x5, x6, tc) in _HH.items():
        out += [
            (f"{x}_alpha", f"{x1} * exp(membrane.V / {x2})"),
            (f"{x}_beta", f"{x1} * {x5} * exp(membrane.V * (1 / {x2} + 1 / {x6}))"),
            (f"{x}_inf", f"{x}_alpha / ({x}_alpha + {x}_beta)"),
            (f"{x}_tau", f"(1 / ({x}_alpha + {x}_beta) + {tc}) * phys.tfac"),
            (f"dot({x})", f"({x}_inf - {x}) / {x}_tau"),
        ]
    out += [
        ("icat.dCaT_inf", "1 / (1 + exp(-(membrane.V + 26.3) / 6))"),
        ("icat.dCaT_tau", "phys.tfac / (1.068 * exp((membrane.V + 26.3) / 30) + 1.068 * "
                          "exp(-(membrane.V + 26.3) / 30))"),
        ("dot(icat.dCaT)", "(icat.dCaT_inf - icat.dCaT) / icat.dCaT_tau"),
        ("icat.fCaT_inf", "1 / (1 + exp((membrane.V + 61.7) / 5.6))"),
        ("icat.fCaT_tau", "phys.tfac / (0.0153 * exp(-(membrane.V + 61.7) / 83.3) + 0.015 * "
                          "exp((membrane.V + 61.7) / 15.38))"),
        ("dot(icat.fCaT)", "(icat.fCaT_inf - icat.fCaT) / icat.fCaT_tau"),
    ]
    return out


def _currents() -> list[tuple[str, str]]:
    v = "membrane.V"
    return [
        # IK1
        ("ik1.alpha", f"ik1.xK11 * exp(({v} + ik1.xK13) / ik1.xK12)"),
        ("ik1.beta", f"exp(({v} + ik1.xK15) / ik1.xK14)"),
        ("ik1.xK1_inf", "ik1.alpha / (ik1.alpha + ik1.beta)"),
        ("ik1.i_K1", f"ik1.g_K1 * scale.g_K1 * sqrt(phys.Ko / 5.4) * ik1.xK1_inf * "
                     f"({v} - potassium.E_K)"),
        ("ikr.i_Kr", f"ikr.g_Kr * scale.g_Kr * sqrt(phys.Ko / 5.4) * ({v} - potassium.E_K) * "
                     "ikr.Xr1 * ikr.Xr2"),
        ("iks.i_Ks", f"iks.g_Ks * scale.g_Ks * ({v} - potassium.E_K) * iks.Xs ^ 2"),
        ("ito.i_to", f"ito.g_to * scale.g_to * ({v} - potassium.E_K) * ito.s * ito.r"),
        # ICaL (GHK; permeability split of Ca, Na, K; series at u = 0)
        ("ical.p_Ca_frac", "5.4e-4 / (5.4e-4 + 1.5e-8 + 2.7e-7)"),
        ("ical.p_Na_frac", "1.5e-8 / (5.4e-4 + 1.5e-8 + 2.7e-7)"),
        ("ical.p_K_frac", "2.7e-7 / (5.4e-4 + 1.5e-8 + 2.7e-7)"),
        ("ical.p", "ical.p_CaL * scale.p_CaL"),
        ("ical.u2", "2 * phys.u1"),
        ("ical.ghk2", "if(abs(ical.u2) < 1e-4, 1 - 0.5 * ical.u2 + ical.u2 ^ 2 / 12, "
                      "ical.u2 / (exp(ical.u2) - 1))"),
        ("ical.ghk1", "if(abs(phys.u1) < 1e-4, 1 - 0.5 * phys.u1 + phys.u1 ^ 2 / 12, "
                      "phys.u1 / (exp(phys.u1) - 1))"),
        ("ical.dff", "ical.d * ical.f1_gate * ical.fCa"),
        ("ical.i_CaL_Ca", "ical.p * ical.p_Ca_frac * 0.341 * 2 * phys.F * ical.ghk2 * "
                          "(calcium.Cai * exp(ical.u2) - phys.Cao) * ical.dff"),
        ("ical.i_CaL_Na", "ical.p * ical.p_Na_frac * 0.75 * phys.F * ical.ghk1 * "
                          "(sodium.Nai * exp(phys.u1) - phys.Nao) * ical.dff"),
        ("ical.i_CaL_K", "ical.p * ical.p_K_frac * 0.75 * phys.F * ical.ghk1 * "
                         "(potassium.Ki * exp(phys.u1) - phys.Ko) * ical.dff"),
        ("ical.i_CaL", "ical.i_CaL_Ca + ical.i_CaL_Na + ical.i_CaL_K"),
        ("icat.i_CaT", f"icat.g_CaT * scale.g_CaT * ({v} - calcium.E_Ca) * icat.dCaT * "
                       "icat.fCaT"),
        ("ina.i_Na", f"ina.g_Na * scale.g_Na * ina.m ^ 3 * ina.h * ina.j * ({v} - sodium.E_Na)"),
        ("i_f.Na_frac", "0.491 / 1.491"),
        ("i_f.i_fNa", f"i_f.g_f * scale.g_f * i_f.Na_frac * i_f.Xf * ({v} - sodium.E_Na)"),
        ("i_f.i_fK", f"i_f.g_f * scale.g_f * (1 - i_f.Na_frac) * i_f.Xf * ({v} - "
                     "potassium.E_K)"),
        ("i_f.i_f_total", "i_f.i_fNa + i_f.i_fK"),
        # NaCa (ten Tusscher)
        ("inaca.KmCa", "1.38"), ("inaca.KmNai", "87.5"), ("inaca.ksat", "0.1"),
        ("inaca.gamma", "0.7"), ("inaca.alpha", "2.75"),
        ("inaca.kNaCa", "1100 * scale.k_NaCa"),
        ("inaca.i_NaCa", "inaca.kNaCa * (exp(inaca.gamma * phys.u1) * sodium.Nai ^ 3 * "
                         "phys.Cao - exp((inaca.gamma - 1) * phys.u1) * phys.Nao ^ 3 * "
                         "calcium.Cai * inaca.alpha) / ((inaca.KmNai ^ 3 + phys.Nao ^ 3) * "
                         "(inaca.KmCa + phys.Cao) * (1 + inaca.ksat * exp((inaca.gamma - 1) * "
                         "phys.u1)))"),
        ("inak.Km_K", "1"), ("inak.Km_Na", "40"),
        ("inak.PNaK", "1.362 * 1.818 * scale.P_NaK"),
        ("inak.i_NaK", "inak.PNaK * phys.Ko * sodium.Nai / ((phys.Ko + inak.Km_K) * "
                       "(sodium.Nai + inak.Km_Na) * (1 + 0.1245 * exp(-0.1 * phys.u1) + "
                       "0.0353 * exp(-phys.u1)))"),
        ("ipca.K_pCa", "0.0005"),
        ("ipca.i_pCa", "0.025 * 10.5 * scale.g_PCa * calcium.Cai / (calcium.Cai + "
                       "ipca.K_pCa)"),
        ("ibna.i_bNa", f"0.00029 * 1.5 * scale.g_b_Na * ({v} - sodium.E_Na)"),
        ("ibca.i_bCa", f"0.000592 * 0.62 * scale.g_b_Ca * ({v} - calcium.E_Ca)"),
        ("membrane.i_ion", "ik1.i_K1 + ito.i_to + ikr.i_Kr + iks.i_Ks + ical.i_CaL + "
                           "icat.i_CaT + inak.i_NaK + ina.i_Na + inaca.i_NaCa + ipca.i_pCa + "
                           "i_f.i_f_total + ibna.i_bNa + ibca.i_bCa"),
        ("dot(membrane.V)", "membrane.i_stim - membrane.i_ion"),
    ]


def _calcium() -> list[tuple[str, str]]:
    cai, casr = "calcium.Cai", "calcium.Ca_SR"
    return [
        ("calcium.Kup", "0.00025 * 0.702"),
        ("calcium.j_up", f"0.000425 * 0.26 * scale.Vmax_up * {cai} ^ 2 / ({cai} ^ 2 + "
                         "calcium.Kup ^ 2)"),
        ("calcium.j_leak", f"({casr} - {cai}) * 0.00008 * 0.02 * scale.V_leak"),
        ("ryr.koCa", "56320 * 11.43025"), ("ryr.kiCa", "54 * 0.3425"),
        ("ryr.kom", "1.5 * 0.1429"), ("ryr.kim", "0.001 * 0.5571"),
        ("ryr.EC50_SR", "0.45"), ("ryr.MaxSR", "15"), ("ryr.MinSR", "1"),
        ("ryr.kCaSR", f"ryr.MaxSR - (ryr.MaxSR - ryr.MinSR) / (1 + (ryr.EC50_SR / {casr}) ^ "
                      "2.5)"),
        ("ryr.koSRCa", "ryr.koCa / ryr.kCaSR"),
        ("ryr.kiSRCa", "ryr.kiCa * ryr.kCaSR"),
        ("ryr.RI", "1 - ryr.R - ryr.O - ryr.I"),
        ("dot(ryr.R)", f"ryr.kim * ryr.RI - ryr.kiSRCa * {cai} * ryr.R - (ryr.koSRCa * {cai} ^ 2 "
                       "* ryr.R - ryr.kom * ryr.O)"),
        ("dot(ryr.O)", f"ryr.koSRCa * {cai} ^ 2 * ryr.R - ryr.kom * ryr.O - (ryr.kiSRCa * "
                       f"{cai} * ryr.O - ryr.kim * ryr.I)"),
        ("dot(ryr.I)", f"ryr.kiSRCa * {cai} * ryr.O - ryr.kim * ryr.I - (ryr.kom * ryr.I - "
                       f"ryr.koSRCa * {cai} ^ 2 * ryr.RI)"),
        ("ryr.ks", "12.5 * scale.ks_RyR"),
        ("calcium.j_rel", f"ryr.ks * ryr.O * ({casr} - {cai}) * (phys.V_SR / phys.Vc)"),
        ("calcium.Buf_SR", "12"), ("calcium.Kbuf_SR", "0.3"),
        ("calcium.Buf_C", "0.06"), ("calcium.Kbuf_C", "0.0006"),
        ("calcium.buf_SR", f"1 / (1 + calcium.Buf_SR * calcium.Kbuf_SR / ({casr} + "
                           "calcium.Kbuf_SR) ^ 2)"),
        ("calcium.buf_C", f"1 / (1 + calcium.Buf_C * calcium.Kbuf_C / ({cai} + "
                          "calcium.Kbuf_C) ^ 2)"),
        (f"dot({casr})", "calcium.buf_SR * phys.Vc / phys.V_SR * (calcium.j_up - "
                         "(calcium.j_rel + calcium.j_leak))"),
        (f"dot({cai})", "calcium.buf_C * (calcium.j_leak - calcium.j_up + calcium.j_rel - "
                        "(ical.i_CaL_Ca + icat.i_CaT + ibca.i_bCa + ipca.i_pCa - 2 * "
                        "inaca.i_NaCa) * phys.Cm / (2 * phys.Vc * phys.F))"),
        ("dot(calcium.Ca_ligand)", "0"),
        ("sodium.live", "if(flag.stim == 1, 0, 1)"),
        ("dot(sodium.Nai)", "-sodium.live * phys.Cm / (phys.F * phys.Vc) * (ina.i_Na + "
                            "ibna.i_bNa + i_f.i_fNa + 3 * inak.i_NaK + 3 * inaca.i_NaCa + "
                            "ical.i_CaL_Na)"),
        ("dot(potassium.Ki)", "-sodium.live * phys.Cm / (phys.F * phys.Vc) * (ik1.i_K1 + "
                              "ito.i_to + ikr.i_Kr + iks.i_Ks + i_f.i_fK - 2 * inak.i_NaK + "
                              "ical.i_CaL_K)"),
        # fCa (ten Tusscher 2004): held where it would rise while V > -60 mV
        ("ical.fCa_y", f"1.2 * {cai} / 0.000325"),
        ("ical.fCa_inf", f"(1 / (1 + ical.fCa_y ^ 8) + 0.1 / (1 + exp((1.2 * {cai} - 0.0005) "
                         f"/ 0.0001)) + 0.2 / (1 + exp((1.2 * {cai} - 0.00075) / 0.0008)) + "
                         "0.23) / 1.46"),
        ("ical.tau_fCa", "2 * phys.tfac"),
        ("dot(ical.fCa)", "if(ical.fCa_inf > ical.fCa and membrane.V > -60, 0, (ical.fCa_inf "
                          "- ical.fCa) / ical.tau_fCa)"),
    ]


def equations(inputs: Sequence[float], temperature_K: float = 310.0
              ) -> list[tuple[str, str]]:
    """The model as (left-hand side, Myokit expression) in evaluation order: the 87 inputs
    (their values), constants, gates, currents and fluxes; ``dot(x)`` for the 23 states."""
    p = np.asarray(inputs, np.float64).ravel()
    if p.size != len(PARAMETER_NAMES):
        raise ValueError(f"inputs: expected {len(PARAMETER_NAMES)} values, found {p.size}")
    if not np.all(np.isfinite(p)):
        raise ValueError("inputs: non-finite values")
    params = [(parameter_name(n), repr(float(x))) for n, x in zip(PARAMETER_NAMES, p,
                                                                 strict=True)]
    return params + _constants(temperature_K) + _gates() + _currents() + _calcium()


# ---- evaluation in Python (the check without Myokit) -----------------------------------------

_QUALIFIED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)\b")
_FUNCS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs,
          "_if": lambda c, a, b: a if c else b}


def python_expression(expr: str) -> str:
    """A Myokit expression of this module as Python: qualified names a.b -> a__b, ^ -> **,
    if( -> _if(."""
    e = _QUALIFIED.sub(r"\1__\2", expr)
    return re.sub(r"\bif\(", "_if(", e).replace("^", "**")


def evaluate(eqs: Sequence[tuple[str, str]], state: Sequence[float], *, pace: float = 0.0,
             clamp_mV: float | None = None) -> dict[str, float]:
    """Evaluate the table at ``state`` (23 values, registry order): every variable by
    qualified name and ``dot(x)`` for each state. ``clamp_mV``: V held at this value (the
    voltage-clamp right-hand side)."""
    y = np.asarray(state, np.float64).ravel()
    ns: dict[str, object] = dict(_FUNCS)
    ns["engine__pace"] = np.float64(pace)
    for name, val in zip(STATES, y, strict=True):
        ns[name.replace(".", "__")] = np.float64(val)
    if clamp_mV is not None:
        ns["membrane__V"] = np.float64(clamp_mV)
    out: dict[str, float] = {}
    with np.errstate(all="ignore"):
        for lhs, expr in eqs:
            val = eval(python_expression(expr), {"__builtins__": {}}, ns)  # noqa: S307
            key = lhs.replace(".", "__")
            if not lhs.startswith("dot("):
                ns[key] = val
            out[lhs] = float(val)
    return out


# ---- the file -----------------------------------------------------------------------------

def _lhs_parts(lhs: str) -> tuple[str, str]:
    dot = lhs.startswith("dot(")
    comp, var = (lhs[4:-1] if dot else lhs).split(".", 1)
    return comp, f"dot({var})" if dot else var


def mmt_text(inputs: Sequence[float], *, temperature_K: float = 310.0,
             initial_state: Sequence[float] | None = None, name: str = "kernik_clancy_2019",
             description: str = "") -> str:
    """The .mmt text of the model with ``inputs`` (87 values, registry order), at
    ``temperature_K``, starting from ``initial_state`` (23 values; default the model's)."""
    eqs = equations(inputs, temperature_K)
    y0 = np.asarray(INITIAL_STATE if initial_state is None else initial_state, np.float64)
    if y0.shape != (len(STATES),) or not np.all(np.isfinite(y0)):
        raise ValueError(f"initial_state: expected {len(STATES)} finite values")
    desc = (description or "Kernik-Clancy 2019 iPSC-CM model (J Physiol 597:4533) written by "
            "cardiotwin from its own formulation; units ms, mV, mM, pA/pF").replace('"', "'")
    lines = ["[[model]]", f"name: {name}", f'desc: """{desc}"""', "# Initial values"]
    lines += [f"{s} = {float(v)!r}" for s, v in zip(STATES, y0, strict=True)]
    lines += ["", "[engine]", "time = 0", "    bind time", "pace = 0", "    bind pace"]
    by_comp: dict[str, list[str]] = {}
    for lhs, expr in eqs:
        comp, var = _lhs_parts(lhs)
        by_comp.setdefault(comp, []).append(f"{var} = {expr}")
    for comp, rows in by_comp.items():
        lines += ["", f"[{comp}]", *rows]
    registry = ", ".join(f"{s} = {m}" for s, m in zip(STATE_NAMES, STATES, strict=True))
    lines += ["", f"# state names of cardiotwin's registry: {registry}", ""]
    return "\n".join(lines)


def write_mmt(path: str | os.PathLike, inputs: Sequence[float], **kw) -> Path:
    """Write :func:`mmt_text` to ``path`` atomically; returns the path."""
    from ..storage.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, mmt_text(inputs, **kw))
    return path


def twin_inputs(multipliers: Sequence[float]) -> np.ndarray:
    """The 87 inputs of a twin's 52 multipliers (baseline elsewhere)."""
    from ..model.parameters import inputs_from_multipliers

    return inputs_from_multipliers(np.asarray(multipliers, np.float64))[0]


def parse_mmt_constants(text: str) -> dict[str, float]:
    """The numeric constants ``component.name`` of an .mmt text written here (a small reader:
    initial values and literal right-hand sides)."""
    out: dict[str, float] = {}
    comp = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line or line.startswith(" "):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            comp = m.group(1)
            continue
        if "=" not in line or line.startswith("[["):
            continue
        lhs, rhs = (s.strip() for s in line.split("=", 1))
        try:
            val = float(rhs)
        except ValueError:
            continue
        if not math.isfinite(val):
            continue
        out[lhs if "." in lhs else f"{comp}.{lhs}"] = val
    return out
