"""The population prior: how a synthetic cell's parameters are drawn, a pure function of
(seed, cell id) so that any sharding gives the same cells.

Three parts:

- the 52 inferred multipliers from a point u of the unit cube (drawn by the sampler:
  population/sampling.py): ``uniform`` maps every multiplier to U(1 - spread, 1 + spread) (the
  source study's design); ``log_uniform`` maps the 6 maximal conductances (g_K1, g_Kr, g_Ks,
  p_CaL, g_Na, g_f) log-uniformly to [1/f, f] (f = ``conductance_factor``: real iPSC-CMs differ
  in channel expression several-fold) and the 46 kinetic multipliers to U(1 - spread, 1 +
  spread);
- nuisance scales of inputs the network does not infer (``NUISANCE_INPUTS``: the other
  conductances, pumps and fluxes), log-uniform in [1/f_n, f_n] (f_n = ``nuisance_factor``, 1:
  none); they change the cell but are not inferred, so the posterior integrates over them;
- the seal leak of the current-clamp (AP) run: g log-uniform in ``seal_g_nS_per_pF`` (nS/pF,
  g = 1000 / (R_seal[MOhm] Cm[pF])), E uniform in ``seal_e_mV`` (mV); None: no leak.

Nuisance scales and seal of cell i come from ``numpy.random.SeedSequence([seed, i,
NUISANCE_STREAM])``, a stream apart from the multipliers'. The learning code maps multipliers to
[0, 1] by :meth:`Prior.bounds` (linear, or log for log-uniform parameters), so training and
evaluation follow the population's prior.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ..model.parameters import INFERRED_NAMES, N_INFERRED, PARAMETER_INDEX
from ..settings import Fraction, Settings

CONDUCTANCES = ("IK1.g_K1", "IKr.g_Kr", "IKs.g_Ks", "ICaL.p_CaL", "INa.g_Na", "If.g_f")
IS_CONDUCTANCE = np.array([n in CONDUCTANCES for n in INFERRED_NAMES])
NUISANCE_INPUTS = ("scale_g_to", "scale_g_CaT", "scale_k_NaCa", "scale_P_NaK", "scale_Vmax_up",
                   "scale_ks_RyR", "scale_V_leak", "scale_g_b_Na", "scale_g_b_Ca",
                   "scale_g_PCa")
NUISANCE_STREAM = 1  # third word of a cell's SeedSequence for its nuisance scales and seal
PRIOR_KINDS = ("uniform", "log_uniform")


def _range(v: tuple[float, float] | None, what: str, positive: bool
           ) -> tuple[float, float] | None:
    if v is None:
        return None
    lo, hi = (float(x) for x in v)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{what}: expected finite (low, high) with low <= high, found {v!r}")
    if positive and lo <= 0:
        raise ValueError(f"{what}: expected positive values, found {v!r}")
    return lo, hi


class Prior(Settings):
    """The population prior (see the module docstring). Units: nS/pF, mV."""

    kind: Literal["uniform", "log_uniform"] = Field(
        "uniform", description="uniform: all 52 multipliers U(1 - spread, 1 + spread); "
                               "log_uniform: the 6 conductances log-uniform in [1/f, f]")
    spread: Fraction = Field(0.4, description="range r of the (kinetic) multipliers: "
                                              "[1 - r, 1 + r]")
    conductance_factor: float = Field(3.0, gt=1.0, le=100.0,
                                      description="log_uniform: conductances in [1/f, f]")
    nuisance_factor: float = Field(1.0, ge=1.0, le=100.0,
                                   description="non-inferred inputs scaled log-uniformly in "
                                               "[1/f, f]; 1: not varied")
    seal_g_nS_per_pF: tuple[float, float] | None = Field(
        None, description="seal-leak conductance range (nS/pF, log-uniform) of the AP run; "
                          "None: no seal leak")
    seal_e_mV: tuple[float, float] = Field((0.0, 0.0), description="seal reversal range (mV, "
                                                                   "uniform)")

    @field_validator("seal_g_nS_per_pF")
    @classmethod
    def _g_range(cls, v):
        return _range(v, "seal_g_nS_per_pF", positive=True)

    @field_validator("seal_e_mV")
    @classmethod
    def _e_range(cls, v):
        return _range(v, "seal_e_mV", positive=False)

    # ---- the 52 multipliers ------------------------------------------------------------------

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(low (52,), high (52,), log (52,) bool): each multiplier's support, and whether it is
        log-uniform (the learning code's unit scale is linear in log m there)."""
        low = np.full(N_INFERRED, 1.0 - self.spread)
        high = np.full(N_INFERRED, 1.0 + self.spread)
        log = np.zeros(N_INFERRED, bool)
        if self.kind == "log_uniform":
            low[IS_CONDUCTANCE] = 1.0 / self.conductance_factor
            high[IS_CONDUCTANCE] = self.conductance_factor
            log[IS_CONDUCTANCE] = True
        return low, high, log

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Multipliers (n, 52) float64 from unit-cube points u (n, 52) in [0, 1). A linear
        parameter is low + (high - low) u, the arithmetic of numpy's Generator.uniform (so the
        uniform prior reproduces ``rng.uniform(1 - spread, 1 + spread)`` bit for bit)."""
        u = np.asarray(u, np.float64)
        low, high, log = self.bounds()
        lin = low + (high - low) * u
        if not log.any():
            return lin
        ll, lh = np.log(low), np.log(high)
        return np.where(log, np.exp(ll + (lh - ll) * u), lin)

    def describe(self) -> dict[str, Any]:
        """The prior for the manifest: its settings and each multiplier's low, high, log."""
        low, high, log = self.bounds()
        return {**self.model_dump(mode="json"),
                "nuisance_inputs": list(NUISANCE_INPUTS) if self.nuisance_factor > 1 else [],
                "multipliers": {"low": low.tolist(), "high": high.tolist(),
                                "log": log.tolist()}}

    @property
    def is_default_uniform(self) -> bool:
        """The source study's design: uniform, no nuisance, no seal (data identical to stores
        written before priors existed)."""
        return (self.kind == "uniform" and self.nuisance_factor == 1.0
                and self.seal_g_nS_per_pF is None)

    # ---- nuisance scales and the seal --------------------------------------------------------

    def nuisance(self, seed: int, start: int, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scales (n, len(NUISANCE_INPUTS)), seal g (n,) nS/pF, seal E (n,) mV) of cells
        start .. start + n - 1: all ones / zeros when not varied."""
        scales = np.ones((n, len(NUISANCE_INPUTS)))
        g = np.zeros(n)
        e = np.zeros(n)
        if self.nuisance_factor == 1.0 and self.seal_g_nS_per_pF is None:
            return scales, g, e
        lf = np.log(self.nuisance_factor)
        for k in range(n):
            rng = np.random.default_rng(np.random.SeedSequence(
                [int(seed), int(start) + k, NUISANCE_STREAM]))
            u = rng.random(len(NUISANCE_INPUTS) + 2)
            if self.nuisance_factor > 1.0:
                scales[k] = np.exp(-lf + 2.0 * lf * u[:-2])
            if self.seal_g_nS_per_pF is not None:
                glo, ghi = np.log(self.seal_g_nS_per_pF)
                g[k] = np.exp(glo + (ghi - glo) * u[-2])
                elo, ehi = self.seal_e_mV
                e[k] = elo + (ehi - elo) * u[-1]
        return scales, g, e


def apply_nuisance(inputs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Model inputs (n, 87) with the nuisance scales (n, len(NUISANCE_INPUTS)) multiplied in
    (a copy)."""
    out = np.array(inputs, dtype=np.float64, copy=True)
    for j, name in enumerate(NUISANCE_INPUTS):
        out[:, PARAMETER_INDEX[name]] *= scales[:, j]
    return out
