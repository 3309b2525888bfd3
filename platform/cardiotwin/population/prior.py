"""The population prior: how a synthetic cell's parameters are drawn, a pure function of
(seed, cell id) so that any sharding gives the same cells.

Three parts:

- the 52 inferred multipliers from a point u of the unit cube (drawn by the sampler:
  population/sampling.py): ``uniform`` maps every multiplier to U(1 - spread, 1 + spread) (the
  source study's design); ``log_uniform`` maps the 6 maximal conductances (g_K1, g_Kr, g_Ks,
  p_CaL, g_Na, g_f) log-uniformly to [1/f, f] (f = ``conductance_factor``: real iPSC-CMs differ
  in channel expression several-fold) and the 46 kinetic multipliers to U(1 - spread, 1 +
  spread); ``multiplier_ranges`` gives any parameter its own range (same distribution);
- nuisance scales of inputs the network does not infer (``NUISANCE_INPUTS``: the other
  conductances, pumps and fluxes), log-uniform in [1/f_n, f_n] (f_n = ``nuisance_factor``, 1:
  none) or in their own ``nuisance_ranges``; they change the cell but are not inferred, so the
  posterior integrates over them;
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
#: shipped priors (population/data/prior_<name>.json): ``real_ipsc``, recommended for real
#: iPSC-CM recordings (issue 18's exploration: 14 of 19 beating pre-drug recordings of
#: ../shared/data/real-ipsc-ap matched by 20,000 cells, against 1 of 19 at +-40% uniform)
PRIOR_PRESETS = ("real_ipsc",)
PRESET_FORMAT = "cardiotwin.prior-preset/1"


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
    multiplier_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per inferred parameter (INFERRED_NAMES): its own "
                                          "(low, high) multiplier range instead of the default")
    nuisance_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per nuisance input (NUISANCE_INPUTS): its own "
                                          "log-uniform (low, high) scale range")

    @field_validator("multiplier_ranges")
    @classmethod
    def _multiplier_ranges(cls, v):
        bad = sorted(set(v) - set(INFERRED_NAMES))
        if bad:
            raise ValueError(f"multiplier_ranges: unknown parameters {bad}; expected names of "
                             "the 52 inferred parameters (e.g. 'IKr.g_Kr')")
        return {k: _range(r, f"multiplier_ranges[{k!r}]", positive=True) for k, r in v.items()}

    @field_validator("nuisance_ranges")
    @classmethod
    def _nuisance_ranges(cls, v):
        bad = sorted(set(v) - set(NUISANCE_INPUTS))
        if bad:
            raise ValueError(f"nuisance_ranges: unknown inputs {bad}; expected some of "
                             f"{list(NUISANCE_INPUTS)}")
        return {k: _range(r, f"nuisance_ranges[{k!r}]", positive=True) for k, r in v.items()}

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
        for name, (lo, hi) in self.multiplier_ranges.items():
            j = INFERRED_NAMES.index(name)
            low[j], high[j] = lo, hi
        return low, high, log

    def nuisance_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of each nuisance input's log-uniform scale (1, 1 when not varied)."""
        f = self.nuisance_factor
        low = np.full(len(NUISANCE_INPUTS), 1.0 / f)
        high = np.full(len(NUISANCE_INPUTS), f)
        for name, (lo, hi) in self.nuisance_ranges.items():
            j = NUISANCE_INPUTS.index(name)
            low[j], high[j] = lo, hi
        return low, high

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
        nlo, nhi = self.nuisance_bounds()
        varied = nhi > nlo
        return {**self.model_dump(mode="json"),
                "nuisance_inputs": [n for n, v in zip(NUISANCE_INPUTS, varied, strict=True) if v],
                "nuisance": {"low": nlo[varied].tolist(), "high": nhi[varied].tolist(),
                             "log": True},
                "multipliers": {"low": low.tolist(), "high": high.tolist(),
                                "log": log.tolist()}}

    @property
    def is_default_uniform(self) -> bool:
        """The source study's design: uniform, no nuisance, no seal (data identical to stores
        written before priors existed)."""
        return (self.kind == "uniform" and not self.varies_nuisance
                and self.seal_g_nS_per_pF is None and not self.multiplier_ranges)

    @property
    def varies_nuisance(self) -> bool:
        """Whether any nuisance input is varied."""
        lo, hi = self.nuisance_bounds()
        return bool(np.any(hi > lo))

    # ---- nuisance scales and the seal --------------------------------------------------------

    def nuisance(self, seed: int, start: int, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scales (n, len(NUISANCE_INPUTS)), seal g (n,) nS/pF, seal E (n,) mV) of cells
        start .. start + n - 1: all ones / zeros when not varied."""
        scales = np.ones((n, len(NUISANCE_INPUTS)))
        g = np.zeros(n)
        e = np.zeros(n)
        vary = self.varies_nuisance
        if not vary and self.seal_g_nS_per_pF is None:
            return scales, g, e
        nlo, nhi = (np.log(b) for b in self.nuisance_bounds())
        for k in range(n):
            rng = np.random.default_rng(np.random.SeedSequence(
                [int(seed), int(start) + k, NUISANCE_STREAM]))
            u = rng.random(len(NUISANCE_INPUTS) + 2)
            if vary:
                scales[k] = np.exp(nlo + (nhi - nlo) * u[:-2])
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


def prior_preset(name: str) -> dict[str, Any]:
    """The GenerationConfig fields of a shipped prior (:data:`PRIOR_PRESETS`): the prior's
    fields and the AP run length it was made for (``ap_duration_ms``)."""
    import json
    from importlib import resources

    if name not in PRIOR_PRESETS:
        raise ValueError(f"unknown prior preset {name!r}; expected one of {list(PRIOR_PRESETS)}")
    d = json.loads((resources.files("cardiotwin.population") / "data" / f"prior_{name}.json")
                   .read_text())
    if d.pop("format", None) != PRESET_FORMAT:
        raise ValueError(f"prior preset {name!r}: not a {PRESET_FORMAT} file")
    d.pop("description", None)
    return d
