"""Temperature scaling of gating kinetics (Q10 = 3 from the model's 310 K).

The Kernik model is parameterized at 310 K. Room-temperature recordings (298 K) are matched by
slowing every gating time constant: tau(T) = tau(310 K) * Q10 ** ((310 - T) / 10).

Scaled: the 14 gates d, f1, fCa (ICaL), Xr1, Xr2 (IKr), Xs (IKs), h, j, m (INa), Xf (If),
s, r (Ito), dCaT, fCaT (ICaT); their steady states are unchanged.
Not scaled: RyR (R, O, I) transition rates, SERCA/leak/pump/exchanger fluxes, and RT/F in the
reversal and GHK terms (held at 310 K, as in the source study).
"""

REFERENCE_TEMPERATURE_K = 310.0
Q10 = 3.0
SCALED_GATES = ("ICaL.d", "ICaL.f1", "ICaL.fCa", "IKr.Xr1", "IKr.Xr2", "IKs.Xs", "INa.h", "INa.j",
                "INa.m", "If.Xf", "Ito.s", "Ito.r", "ICaT.dCaT", "ICaT.fCaT")


def tau_factor(temperature_K: float) -> float:
    """Multiplier on every gating time constant at ``temperature_K`` (K): 1 at 310 K, 3.74 at
    298 K."""
    t = float(temperature_K)
    if not 250.0 < t < 330.0:
        raise ValueError(f"temperature {temperature_K!r} K is outside the supported range "
                         "(250, 330) K; note the unit is kelvin (310 K = 37 degC)")
    return Q10 ** ((REFERENCE_TEMPERATURE_K - t) / 10.0)
