"""Voltage-clamp artefacts of a population: each synthetic cell's amplifier, series
resistance and seal (model.artefacts) drawn from a prior suited to manual patch clamp of
iPSC-CMs, so that a network trained on the population learns to read ionic parameters through
them instead of explaining them with ionic parameters.

Defaults cover what labs record: Cm 20-150 pF (iPSC-CMs; the shared Christini-lab cells
41.6-75.8 pF), R_s 5-40 MOhm (22.9-33.4 MOhm), seal/membrane leak g = 1000 / (R_m Cm) of
0.002-0.2 nS/pF (R_m 368-2981 MOhm there: 0.0045-0.065 nS/pF), offsets of a few mV, the
amplifier's estimates of Cm and R_s within 10-20% of the truth, compensation and prediction
fractions 0-80% (what amplifiers offer and labs use). Every range is (low, high); conductances
and the passive constants are drawn log-uniformly, the rest uniformly; low = high fixes a
value (a known amplifier setting). ``narrowed`` narrows the ranges to what a recording's
metadata says.

Cell i's draw comes from ``numpy.random.SeedSequence([seed, i, ARTEFACT_STREAM])``, a stream
apart from the multipliers' and the nuisance scales'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..model.artefacts import ARTEFACT_FIELDS, N_ARTEFACT_FIELDS, VoltageClampArtefacts
from ..settings import Settings

ARTEFACT_STREAM = 2  # third word of a cell's SeedSequence for its artefact parameters
Range = tuple[float, float]
#: ranges drawn log-uniformly (the others uniformly)
LOG_DRAWN = ("cm_pF", "rs_MOhm", "g_leak_nS_per_pF")


class ArtefactPrior(Settings):
    """Ranges (low, high) of each cell's voltage-clamp artefact parameters. The amplifier's
    estimates are drawn as ratios to the truth (``cm_est_ratio`` Cm*/Cm, ``rs_est_ratio``
    R_s*/R_s). Units: pF, MOhm, mV, nS/pF, ms."""

    cm_pF: Range = Field(default=(20.0, 150.0),
                         description="membrane capacitance Cm (pF, log-uniform)")
    rs_MOhm: Range = Field(default=(5.0, 40.0),
                           description="series resistance R_s (MOhm, log-uniform)")
    cm_est_ratio: Range = Field(default=(0.9, 1.1), description="amplifier's Cm* / Cm")
    rs_est_ratio: Range = Field(default=(0.8, 1.2), description="amplifier's R_s* / R_s")
    compensation: Range = Field(default=(0.0, 0.8),
                                description="series-resistance compensation fraction alpha")
    prediction: Range = Field(default=(0.0, 0.8),
                              description="prediction (supercharging) fraction beta")
    v_offset_mV: Range = Field(default=(-5.0, 5.0), description="voltage offset (mV)")
    g_leak_nS_per_pF: Range = Field(default=(0.002, 0.2),
                                    description="seal leak conductance (nS/pF, log-uniform)")
    e_leak_mV: Range = Field(default=(-15.0, 15.0), description="seal leak reversal (mV)")
    tau_sum_ms: Range = Field(default=(0.02, 0.02), description="amplifier lag (ms)")

    @model_validator(mode="after")
    def _check(self) -> ArtefactPrior:
        for name in self.range_names():
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"artefact prior {name}: expected finite (low, high) with low "
                                 f"<= high, found {(lo, hi)!r}")
            if name in LOG_DRAWN + ("cm_est_ratio", "rs_est_ratio") and lo <= 0:
                raise ValueError(f"artefact prior {name}: expected positive values, found "
                                 f"{(lo, hi)!r}")
        # the extremes must be valid artefacts (checked once, here, with their own messages)
        for corner in (0, 1):
            VoltageClampArtefacts(**{n: getattr(self, n)[corner] for n in (
                "cm_pF", "rs_MOhm", "compensation", "prediction", "v_offset_mV",
                "g_leak_nS_per_pF", "e_leak_mV", "tau_sum_ms")}).per_cell(1)
        return self

    @classmethod
    def range_names(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    def draw(self, seed: int, start: int, n: int) -> np.ndarray:
        """(n, N_ARTEFACT_FIELDS) artefact table (model.artefacts.ARTEFACT_FIELDS order) of
        cells start .. start + n - 1 of a population with this seed."""
        names = self.range_names()
        out = np.empty((n, N_ARTEFACT_FIELDS))
        for k in range(n):
            rng = np.random.default_rng(np.random.SeedSequence(
                [int(seed), int(start) + k, ARTEFACT_STREAM]))
            u = rng.random(len(names))
            v = {}
            for j, name in enumerate(names):
                lo, hi = getattr(self, name)
                v[name] = (float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u[j]))
                           if name in LOG_DRAWN else lo + (hi - lo) * u[j])
            v["cm_est_pF"] = v["cm_pF"] * v.pop("cm_est_ratio")
            v["rs_est_MOhm"] = v["rs_MOhm"] * v.pop("rs_est_ratio")
            out[k] = [v[f] for f in ARTEFACT_FIELDS]
        return out

    def narrowed(self, **known: Any) -> ArtefactPrior:
        """A copy with some ranges replaced: a value fixes it, a (low, high) pair narrows it
        (e.g. ``compensation=0.7, cm_pF=(38, 46)`` from a recording's settings and metadata);
        ValueError for an unknown name."""
        bad = sorted(set(known) - set(self.range_names()))
        if bad:
            raise ValueError(f"unknown artefact prior field(s) {bad}; expected some of "
                             f"{list(self.range_names())}")
        upd = {k: (tuple(float(x) for x in v) if np.ndim(v) else (float(v), float(v)))
               for k, v in known.items()}
        return type(self).model_validate({**self.model_dump(), **upd})

    def contains(self, table: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(n, ) bool: which rows of an artefact table lie inside the prior's ranges (each
        widened by ``margin`` times its width; log-drawn ones in log space)."""
        t = np.asarray(table, dtype=np.float64).reshape(-1, N_ARTEFACT_FIELDS)
        col = {f: t[:, j] for j, f in enumerate(ARTEFACT_FIELDS)}
        col["cm_est_ratio"] = col["cm_est_pF"] / col["cm_pF"]
        col["rs_est_ratio"] = col["rs_est_MOhm"] / col["rs_MOhm"]
        ok = np.ones(t.shape[0], bool)
        for name in self.range_names():
            lo, hi = getattr(self, name)
            x = col[name]
            if name in LOG_DRAWN:
                lo, hi, x = np.log(lo), np.log(hi), np.log(np.maximum(x, 1e-300))
            w = (hi - lo) * margin
            ok &= (x >= lo - w - 1e-12) & (x <= hi + w + 1e-12)
        return ok
