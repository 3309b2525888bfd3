"""Per-concentration summary of a drug screen (ms, mV, nM; fractions in [0, 1]).

Denominators: EAD incidence and the outcome fractions are over the cells analyzed (every cell
but the numerically unstable ones, whose fraction is over all cells); ``ead_incidence_beating``
is over the cells still beating at that concentration (outcome beating, ead or depolarized);
``fraction_quiescent_depolarized``: quiescent cells whose median V is above -40 mV (arrested
depolarized, as opposed to resting non-pacemaking cells); ``fraction_arrested``
is over the cells that beat at the lowest concentration of the screen (the reference, normally
control) and counts those that are quiescent or non-repolarizing at this concentration.
Confidence intervals of proportions: Wilson score (``scipy.stats.binomtest(...).proportion_ci``).
APD90: of full APs (see :mod:`cardiotwin.drugs.analysis`); ``apd90_ms`` over every cell with a
value at that concentration, ``apd90_paired_ms`` over the cells with a value at every
concentration (the same cells throughout, so survivors of strong block do not bias the trend).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import binomtest

from .analysis import OUTCOMES

BEATING_OUTCOMES = ("beating", "ead", "depolarized")
DEPOLARIZED_REST_MV = -40.0   # a quiescent cell resting above this is depolarized (arrested)
ARRESTED_OUTCOMES = ("quiescent", "non_repolarizing")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _r(x: float, nd: int = 6) -> float | None:
    return round(float(x), nd) if x is not None and math.isfinite(x) else None


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval of k successes in n trials; (None, None) when n = 0."""
    if n <= 0:
        return None, None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return _r(ci.low), _r(ci.high)


def describe(values) -> dict[str, Any]:
    """n, mean, sd (ddof 1), median and the 5/25/75/95% quantiles of the finite values."""
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    out: dict[str, Any] = {"n": int(a.size)}
    if a.size == 0:
        out.update(mean=None, sd=None, median=None,
                   **{f"q{int(q * 100):02d}": None for q in QUANTILES if q != 0.5})
        return out
    qs = np.quantile(a, QUANTILES)
    out.update(mean=_r(a.mean(), 3), sd=_r(a.std(ddof=1), 3) if a.size > 1 else None,
               median=_r(qs[2], 3))
    out.update({f"q{int(q * 100):02d}": _r(v, 3)
                for q, v in zip(QUANTILES, qs, strict=True) if q != 0.5})
    return out


def arrested_flags(cell_id: np.ndarray, conc: np.ndarray, outcome: np.ndarray
                   ) -> np.ndarray:
    """Per row: the cell beats at the lowest concentration and is quiescent or
    non-repolarizing at this one."""
    ref = conc.min()
    beats_ref = set(cell_id[(conc == ref) & np.isin(outcome, BEATING_OUTCOMES)].tolist())
    return np.isin(outcome, ARRESTED_OUTCOMES) & np.isin(cell_id, list(beats_ref))


def summarize(columns: dict[str, np.ndarray], concentrations: list[float],
              block: dict[float, dict[str, float]], confidence: float = 0.95
              ) -> list[dict[str, Any]]:
    """One summary dict per concentration from the per-cell columns (cell_id,
    concentration_nM, outcome, ead, arrested, apd90_ms, apd90_all_ms, cycle_length_ms, mdp_mV,
    v_median_mV; qnet when recorded)."""
    cid, conc, outc = columns["cell_id"], columns["concentration_nM"], columns["outcome"]
    apd = columns["apd90_ms"]
    ref = min(concentrations)
    n_ref_beating = int(np.sum((conc == ref) & np.isin(outc, BEATING_OUTCOMES)))
    has_apd = {c: set(cid[(conc == c) & np.isfinite(apd)].tolist()) for c in concentrations}
    paired = set.intersection(*has_apd.values()) if has_apd else set()
    out = []
    for c in concentrations:
        m = conc == c
        n_cells = int(m.sum())
        counts = {o: int(np.sum(m & (outc == o))) for o in OUTCOMES}
        n_an = n_cells - counts["unstable"]
        n_ead = int(np.sum(m & columns["ead"]))
        n_arr = int(np.sum(m & columns["arrested"]))
        beating = m & np.isin(outc, BEATING_OUTCOMES)
        n_beat, n_ead_beat = int(beating.sum()), int(np.sum(beating & columns["ead"]))
        n_qdep = int(np.sum(m & (outc == "quiescent")
                            & (columns["v_median_mV"] > DEPOLARIZED_REST_MV)))
        lo, hi = wilson_ci(n_ead, n_an, confidence)
        frac = {o: _r(counts[o] / n_an) if n_an else None for o in OUTCOMES if o != "unstable"}
        pm = m & np.isin(cid, list(paired))
        out.append({
            "concentration_nM": c,
            "block": {k: _r(v) for k, v in block[c].items()},
            "n_cells": n_cells, "n_analyzed": n_an, "outcome_counts": counts,
            "n_ead": n_ead,
            "ead_incidence": _r(n_ead / n_an) if n_an else None,
            "ead_ci": [lo, hi], "ci_level": confidence, "ci_method": "wilson",
            "n_beating": n_beat, "n_ead_beating": n_ead_beat,
            "ead_incidence_beating": _r(n_ead_beat / n_beat) if n_beat else None,
            "ead_beating_ci": list(wilson_ci(n_ead_beat, n_beat, confidence)),
            "fraction_arrested": _r(n_arr / n_ref_beating) if n_ref_beating else None,
            "n_arrested": n_arr, "n_beating_at_reference": n_ref_beating,
            "fraction_beating": _r(sum(counts[o] for o in BEATING_OUTCOMES) / n_an)
            if n_an else None,
            "fraction_quiescent": frac["quiescent"],
            "fraction_quiescent_depolarized": _r(n_qdep / n_an) if n_an else None,
            "fraction_non_repolarizing": frac["non_repolarizing"],
            "fraction_depolarized": frac["depolarized"],
            "fraction_unstable": _r(counts["unstable"] / n_cells) if n_cells else None,
            "apd90_ms": describe(apd[m]),
            "apd90_paired_ms": describe(apd[pm]),
            "apd90_all_beats_ms": describe(columns["apd90_all_ms"][m]),
            "cycle_length_ms": describe(columns["cycle_length_ms"][m]),
            "mdp_mV": describe(columns["mdp_mV"][m]),
            **({"qnet": describe(columns["qnet"][m])} if "qnet" in columns else {}),
        })
    return out
