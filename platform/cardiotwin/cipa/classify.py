"""Torsade risk category (0 low, 1 intermediate, 2 high) from per-drug features, scored by
leave-one-out cross-validation over the drugs.

The classifier: standardized features and a multinomial logistic regression (scikit-learn's
``LogisticRegression``, L2, ``C``). Each drug is predicted by a model fitted on the other drugs
only (:func:`leave_one_out`); its risk score is the predicted expected category,
P(intermediate) + 2 P(high) in [0, 2]. Scores (:func:`evaluate`): accuracy, the AUC of
P(high) for high vs rest and of P(low) for low vs rest, and the confusion matrix (rows: CiPA
category, columns: predicted).

Baselines, through the same leave-one-out classifier on one feature each:
- the hERG safety margin, log10(hERG IC50 / free Cmax) (Redfern et al. 2003);
- a linear block-weighted score, B = b_hERG - b_CaL - b_NaL (after Kramer J et al. 2013 Sci Rep
  3:2100, B_net: hERG block net of the inward currents' block), the blocks of the Hill model at
  each dose of the screen, averaged over the doses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

CATEGORIES = ("low", "intermediate", "high")
DEFAULT_C = 1.0


def make_classifier(c: float = DEFAULT_C) -> Any:
    """A fresh unfitted model: StandardScaler then LogisticRegression(C=c)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _proba3(model: Any, x: np.ndarray) -> np.ndarray:
    """P(category) (n, 3) in category order, 0 for a category the fold never saw."""
    p = np.asarray(model.predict_proba(x), dtype=float)
    out = np.zeros((p.shape[0], len(CATEGORIES)))
    for j, cls in enumerate(model.classes_):
        out[:, int(cls)] = p[:, j]
    return out


def leave_one_out(x: np.ndarray, y: np.ndarray,
                  make: Callable[[], Any] = make_classifier) -> np.ndarray:
    """Leave-one-out probabilities (n, 3): row i from a model ``make()`` fitted on every row
    but i. ``x`` (n, n_features), ``y`` (n,) categories 0..2."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=int)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features: expected (n_drugs, n_features) with n_drugs = {y.shape[0]},"
                         f" found {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = sorted(set(np.argwhere(~np.isfinite(x))[:, 0].tolist()))
        raise ValueError(f"features: non-finite values for drug row(s) {bad}")
    n = y.shape[0]
    out = np.zeros((n, len(CATEGORIES)))
    for i in range(n):
        keep = np.arange(n) != i
        model = make()
        model.fit(x[keep], y[keep])
        out[i] = _proba3(model, x[i:i + 1])[0]
    return out


def risk_score(proba: np.ndarray) -> np.ndarray:
    """Expected category P(intermediate) + 2 P(high) (n,)."""
    return proba @ np.arange(len(CATEGORIES), dtype=float)


def evaluate(y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Accuracy, AUCs (high vs rest from P(high), low vs rest from P(low)) and the confusion
    matrix of leave-one-out probabilities."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    y = np.asarray(y, dtype=int)
    pred = np.argmax(proba, axis=1)

    def auc(target: int) -> float | None:
        pos = y == target
        if pos.all() or not pos.any():
            return None
        return round(float(roc_auc_score(pos, proba[:, target])), 6)

    cm = confusion_matrix(y, pred, labels=list(range(len(CATEGORIES))))
    return {"n_drugs": int(y.size), "accuracy": round(float(np.mean(pred == y)), 6),
            "auc_high_vs_rest": auc(2), "auc_low_vs_rest": auc(0),
            "confusion_matrix": cm.tolist(),
            "confusion_matrix_axes": "rows: CiPA category, columns: predicted (low, "
                                     "intermediate, high)"}


def herg_margin(ic50_nM: np.ndarray, cmax_nM: np.ndarray) -> np.ndarray:
    """log10(hERG IC50 / free Cmax); a drug without hERG block (IC50 0) gets the largest
    margin found plus 1."""
    ic50 = np.asarray(ic50_nM, dtype=float)
    m = np.full(ic50.shape, np.nan)
    ok = ic50 > 0
    m[ok] = np.log10(ic50[ok] / np.asarray(cmax_nM, dtype=float)[ok])
    if (~ok).any():
        m[~ok] = (np.nanmax(m) if ok.any() else 0.0) + 1.0
    return m


def block_score(drug: Any, concentrations_nM: list[float]) -> float:
    """B = b_hERG - b_CaL - b_NaL averaged over ``concentrations_nM`` (module docstring)."""
    vals = []
    for c in concentrations_nM:
        b = drug.block_fractions(c)
        vals.append(b.get("IKr", 0.0) - b.get("ICaL", 0.0) - b.get("INaL", 0.0))
    return float(np.mean(vals))
