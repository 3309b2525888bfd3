"""Extracellular electrode model: the eAP a micro/nanoelectrode records under a cell.

Point-contact (cell-electrode junction) model. The cell membrane facing the electrode (the
junction) passes the capacitive current of its own capacitance and the ionic currents of its
own channels into the cleft; the seal resistance turns that current into the cleft potential
the electrode sees::

    I_J(t) = c_J * C_m dV/dt + sum_k mu_k * I_k(t)          (pA/pF of junction membrane)
    eAP(t) = gain * HP_fc[ I_J ](t) + noise                  (uV)

- V(t) the intracellular AP (mV) and I_k the 13 membrane currents of the Kernik model (pA/pF,
  outward positive), both of the same cell (the currents come from an AP clamp of the cell's
  own simulated AP, see :mod:`.pairs`); C_m dV/dt in pA/pF with C_m = 1 pF/pF.
- c_J: junctional capacitance relative to the free membrane (per area); mu_k: junctional
  channel density relative to the free membrane, per current. With c_J = 1 and every
  mu_k = 1 the junction is like the rest of the membrane and, for a free-running cell where
  C_m dV/dt = -sum I_k, I_J = 0: the eAP exists only because the junction differs (Na+
  channels enriched or depleted give the classic negative or positive spike).
- gain: R_seal x junction area (uV per pA/pF); the scale is arbitrary because the network
  reads normalized eAPs.
- HP_fc: the amplifier's first-order high-pass at fc Hz (Butterworth, bilinear; causal, as in
  hardware); fc = 0 disables it.
- noise: white Gaussian recording noise, SD = (max |eAP - median eAP|) / snr.

A pure capacitive junction (every mu_k = 0, no high-pass) records eAP = gain * c_J * dV/dt;
the first-order high-pass passes a sine of frequency f with gain f / sqrt(f^2 + fc^2). Both are
tested.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field, model_validator

from ..model.equations import CURRENT_NAMES
from ..settings import PositiveFloat, Settings

#: currents whose junctional density is drawn from ``sodium_density_range``
SODIUM = "I_Na"


def _range(v: tuple[float, float], name: str, lo_min: float = 0.0) -> None:
    lo, hi = v
    if not (np.isfinite(lo) and np.isfinite(hi) and lo_min <= lo <= hi):
        raise ValueError(f"{name} must be (low, high) with {lo_min} <= low <= high, found {v}")


class ElectrodeConfig(Settings):
    """Ranges of the per-cell junction and recording settings (drawn uniformly per cell)."""

    capacitive_range: tuple[float, float] = Field(
        (0.8, 1.2), description="c_J: junctional capacitance / free-membrane capacitance")
    density_range: tuple[float, float] = Field(
        (0.5, 1.5), description="mu_k: junctional / free-membrane channel density, every "
                                "current except I_Na")
    sodium_density_range: tuple[float, float] = Field(
        (0.0, 3.0), description="mu_Na: junctional / free-membrane density of I_Na channels")
    gain_uV: PositiveFloat = Field(10.0, description="R_seal x junction area, uV per pA/pF")
    highpass_hz_range: tuple[float, float] = Field(
        (0.5, 5.0), description="amplifier high-pass cut-off fc in Hz (0: none)")
    snr_range: tuple[float, float] = Field(
        (20.0, 200.0), description="signal-to-noise ratio: max |eAP - median| / noise SD "
                                   "(at the network's sample interval)")

    @model_validator(mode="after")
    def _check(self):
        _range(self.capacitive_range, "capacitive_range")
        _range(self.density_range, "density_range")
        _range(self.sodium_density_range, "sodium_density_range")
        _range(self.highpass_hz_range, "highpass_hz_range")
        _range(self.snr_range, "snr_range", 1e-6)
        return self

    def draw(self, rng: np.random.Generator) -> dict:
        """One cell's junction: c_J, mu (13,) in CURRENT_NAMES order, fc (Hz), snr."""
        mu = rng.uniform(*self.density_range, size=len(CURRENT_NAMES))
        mu[CURRENT_NAMES.index(SODIUM)] = rng.uniform(*self.sodium_density_range)
        return {"c_junction": float(rng.uniform(*self.capacitive_range)), "densities": mu,
                "highpass_hz": float(rng.uniform(*self.highpass_hz_range)),
                "snr": float(rng.uniform(*self.snr_range))}


def highpass(x: np.ndarray, dt_ms: float, fc_hz: float) -> np.ndarray:
    """First-order Butterworth high-pass (bilinear, causal) at ``fc_hz`` Hz along the last
    axis of ``x`` sampled every ``dt_ms`` ms; fc = 0 returns a copy."""
    from scipy.signal import butter, lfilter

    x = np.asarray(x, dtype=np.float64)
    if fc_hz == 0:
        return x.copy()
    fs = 1000.0 / dt_ms
    if not (0 < fc_hz < fs / 2):
        raise ValueError(f"high-pass cut-off must be in (0, {fs / 2:g}) Hz (Nyquist at "
                         f"dt = {dt_ms:g} ms), found {fc_hz!r}")
    b, a = butter(1, fc_hz, btype="highpass", fs=fs)
    # as if x had been x[0] forever before t = 0: the filter starts in its steady state
    return lfilter(b, a, x - x[..., :1], axis=-1)


def junction_current(v_mV: np.ndarray, dt_ms: float, currents: Mapping[str, np.ndarray],
                     c_junction: float, densities) -> np.ndarray:
    """I_J (pA/pF) = c_J dV/dt + sum_k mu_k I_k; ``densities`` maps current name -> mu_k or is
    an array in CURRENT_NAMES order; currents missing from ``currents`` contribute nothing.
    dV/dt (mV/ms = V/s, i.e. pA/pF at 1 uF/cm^2) by second-order central differences."""
    v = np.asarray(v_mV, dtype=np.float64)
    if v.ndim != 1 or v.size < 3:
        raise ValueError(f"v_mV: expected a 1-D trace of >= 3 samples, found shape {v.shape}")
    if not isinstance(densities, Mapping):
        densities = dict(zip(CURRENT_NAMES, np.asarray(densities, dtype=np.float64), strict=True))
    out = c_junction * np.gradient(v, dt_ms, edge_order=2)
    for name, i_k in currents.items():
        mu = float(densities.get(name, 0.0))
        if mu:
            i_k = np.asarray(i_k, dtype=np.float64)
            if i_k.shape != v.shape:
                raise ValueError(f"current {name}: shape {i_k.shape} differs from v {v.shape}")
            out += mu * i_k
    return out


def extracellular(v_mV: np.ndarray, dt_ms: float, currents: Mapping[str, np.ndarray],
                  c_junction: float, densities, highpass_hz: float, gain_uV: float
                  ) -> np.ndarray:
    """Noise-free eAP (uV) = gain * HP_fc[I_J] sampled like ``v_mV``."""
    ij = junction_current(v_mV, dt_ms, currents, c_junction, densities)
    return gain_uV * highpass(ij, dt_ms, highpass_hz)


def add_noise(eap: np.ndarray, snr: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """eAP + white noise of SD max|eAP - median| / snr; returns (noisy, SD)."""
    eap = np.asarray(eap, dtype=np.float64)
    sd = float(np.max(np.abs(eap - np.median(eap))) / snr)
    return eap + rng.normal(0.0, sd, size=eap.shape), sd
