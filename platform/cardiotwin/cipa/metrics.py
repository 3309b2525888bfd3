"""Risk metrics of one drug screen per dose, with bootstrap confidence intervals over cells.

From a screen's per-cell results (:class:`cardiotwin.drugs.ScreenResult`; the lowest
concentration is the control, 0 nM). Per dose (units: %, ms, fractions, pA/pF ms):

- ``apd90``, ``apd50``: mean over cells of the paired change 100 (APD_dose / APD_control - 1) %,
  over the cells with a full AP at both;
- ``triangulation``: mean paired change of APD90 - APD30 (ms; Hondeghem et al. 2001);
- ``ead``: EAD incidence (cells with >= 1 EAD over the cells analyzed);
- ``repolarization_failure``: fraction of cells that do not repolarize (outcome
  non_repolarizing);
- ``arrest``: fraction of the cells beating in control that are quiescent or non-repolarizing;
- ``qnet``: mean paired change of the net charge of the CiPA currents, IKr + ICaL + INaL + IKs +
  IK1 + Ito, over 1000 ms (a beat at 1 Hz; pA/pF ms = 1e-3 C/F; cf. Dutta et al. 2017's qNet
  over a beat); positive: more inward charge, the CiPA direction of risk is negative.

Cells are resampled with replacement (``bootstrap_weights``: one multiset of cells per
replicate, shared by every drug and dose, so replicates are populations); every metric is a
weighted mean of per-cell values, so replicate r is ``W[r] @ x / W[r] @ valid``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

METRICS = ("apd90", "apd50", "triangulation", "ead", "repolarization_failure", "arrest",
           "qnet")
UNITS = {"apd90": "% change", "apd50": "% change", "triangulation": "ms change",
         "ead": "fraction", "repolarization_failure": "fraction", "arrest": "fraction",
         "qnet": "pA/pF ms change per 1000 ms"}


def bootstrap_weights(n_cells: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(1 + n_boot, n_cells) weights: row 0 all ones (the population), then multinomial
    resamples of n_cells cells."""
    rng = np.random.default_rng(seed)
    w = np.ones((1 + n_boot, n_cells))
    if n_boot:
        w[1:] = rng.multinomial(n_cells, np.full(n_cells, 1.0 / n_cells), size=n_boot)
    return w


def per_cell(result: Any) -> dict[str, np.ndarray]:
    """Per-cell values (n_doses - 1, n_cells) of each metric at each non-control
    concentration (NaN where undefined: no AP in one of the pair, or an unstable cell)."""
    cols = {k: result.column(k) for k in ("cell_id", "concentration_nM", "outcome", "ead",
                                          "arrested", "apd90_ms", "apd50_ms", "apd30_ms")}
    qnet = result.column("qnet") if "qnet" in result.results.column_names else None
    concs = sorted(set(cols["concentration_nM"].tolist()))
    cells = np.unique(cols["cell_id"])
    n = cells.size

    def grid(values: np.ndarray) -> np.ndarray:     # (n_concs, n_cells)
        g = np.full((len(concs), n), np.nan)
        ci = np.searchsorted(concs, cols["concentration_nM"])
        g[ci, np.searchsorted(cells, cols["cell_id"])] = values
        return g

    a90 = grid(cols["apd90_ms"].astype(float))
    a50 = grid(cols["apd50_ms"].astype(float))
    tri = a90 - grid(cols["apd30_ms"].astype(float))
    outcome = cols["outcome"]
    analyzed = grid(np.where(outcome == "unstable", np.nan, 1.0))
    ead = grid(cols["ead"].astype(float)) * analyzed
    nonrep = grid((outcome == "non_repolarizing").astype(float)) * analyzed
    beating0 = np.isin(outcome[cols["concentration_nM"] == concs[0]],
                       ("beating", "ead", "depolarized"))
    ref_cells = np.searchsorted(cells, cols["cell_id"][cols["concentration_nM"] == concs[0]])
    beats = np.zeros(n, bool)
    beats[ref_cells] = beating0
    arrest = np.where(beats[None, :], grid(cols["arrested"].astype(float)), np.nan)
    out = {"apd90": 100.0 * (a90[1:] / a90[0] - 1.0), "apd50": 100.0 * (a50[1:] / a50[0] - 1.0),
           "triangulation": tri[1:] - tri[0], "ead": ead[1:],
           "repolarization_failure": nonrep[1:], "arrest": arrest[1:]}
    if qnet is not None:
        q = grid(qnet.astype(float))
        out["qnet"] = q[1:] - q[0]
    return out


def weighted(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_replicates, n_doses) weighted means of per-cell ``values`` (n_doses, n_cells), NaN
    ignored (NaN where no cell has a value)."""
    ok = np.isfinite(values)
    num = weights @ np.where(ok, values, 0.0).T
    den = weights @ ok.T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def dose_metrics(cells: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """{metric: (n_replicates, n_doses)} (row 0: the population's value)."""
    return {k: weighted(v, weights) for k, v in cells.items()}


def summarize(values: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """The population's value (row 0) and the percentile interval of the bootstrap rows."""
    v0 = values[0]
    lo_q, hi_q = (1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0
    boot = values[1:]
    lo = hi = np.full_like(v0, np.nan, dtype=float)
    if boot.shape[0]:
        with warnings.catch_warnings():               # all-NaN columns: NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanquantile(boot, lo_q, axis=0)
            hi = np.nanquantile(boot, hi_q, axis=0)

    def r(x):
        return [None if not np.isfinite(y) else round(float(y), 6) for y in np.atleast_1d(x)]

    return {"value": r(v0), "ci": [r(lo), r(hi)], "ci_level": level,
            "ci_method": "bootstrap over cells, percentile"}
