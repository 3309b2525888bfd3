"""Evaluation like the study: MAE on the normalized iAP, APD10 ... APD100 errors (ms and %),
Pearson correlation, and coverage of the 90 % band.

- MAE: mean |median - target| over samples and windows (normalized iAP units, [0.1, 1]).
- APD error of window i at level x: |APDx(median) - APDx(target)| in ms, and in % of
  APDx(target); summarized by median and mean over windows (windows where either is
  undefined are left out and counted).
- correlation: Pearson r between median and target per window, averaged.
- coverage: fraction of samples with q05 <= target <= q95 (nominal 0.90), and with
  q25 <= target <= q75 (0.50) when the model has those quantiles (per phase and APD level:
  :func:`.conformal.coverage_report`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .windows import APD_LEVELS, WindowConfig, apd


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair (NaN for a constant row)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / den, np.nan)


def apd_errors(target: np.ndarray, pred: np.ndarray, cfg: WindowConfig) -> dict[str, np.ndarray]:
    """Per-window APDs of target and prediction and the absolute errors (ms, %):
    arrays (n_windows, len(APD_LEVELS))."""
    dt = cfg.sample_interval_ms
    at, ap = apd(target, dt, cfg), apd(pred, dt, cfg)
    err = np.abs(ap - at)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * err / at
    return {"apd_true_ms": at, "apd_pred_ms": ap, "abs_ms": err, "abs_pct": pct}


def evaluate(target: np.ndarray, pred: np.ndarray, cfg: WindowConfig,
             quantiles: tuple[float, ...] = (0.5,)) -> dict[str, Any]:
    """Metrics of predictions ``pred`` (n, length, n_q) against normalized targets
    (n, length); JSON-able, plus ``per_window`` arrays (popped before writing JSON)."""
    target = np.asarray(target, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim == 2:
        pred = pred[..., None]
    med = pred[..., quantiles.index(0.5)]
    ae = np.abs(med - target)
    r = pearson_rows(med, target)
    e = apd_errors(target, med, cfg)
    out: dict[str, Any] = {"n_windows": int(len(target)), "mae": float(ae.mean()),
                           "mae_per_window_median": float(np.median(ae.mean(axis=1))),
                           "correlation": float(np.nanmean(r)), "apd": {}}
    for j, x in enumerate(APD_LEVELS):
        ok = np.isfinite(e["abs_ms"][:, j]) & np.isfinite(e["abs_pct"][:, j])
        if not ok.any():
            out["apd"][f"APD{x}"] = {"n": 0}
            continue
        ms, pct = e["abs_ms"][ok, j], e["abs_pct"][ok, j]
        out["apd"][f"APD{x}"] = {"n": int(ok.sum()), "n_undefined": int((~ok).sum()),
                                 "median_abs_ms": float(np.median(ms)),
                                 "mean_abs_ms": float(np.mean(ms)),
                                 "median_abs_pct": float(np.median(pct)),
                                 "mean_abs_pct": float(np.mean(pct))}
    if len(quantiles) >= 3:
        lo, hi = pred[..., quantiles.index(0.05)], pred[..., quantiles.index(0.95)]
        inside = (target >= lo) & (target <= hi)
        out["coverage_90"] = float(inside.mean())
        out["band_width_mean"] = float((hi - lo).mean())
        out["quantiles_ordered"] = bool(np.all(np.diff(pred, axis=-1) >= 0))
        if 0.25 in quantiles and 0.75 in quantiles:
            lo50, hi50 = pred[..., quantiles.index(0.25)], pred[..., quantiles.index(0.75)]
            out["coverage_50"] = float(((target >= lo50) & (target <= hi50)).mean())
            out["band_width_50_mean"] = float((hi50 - lo50).mean())
    out["per_window"] = {"mae": ae.mean(axis=1), "correlation": r, **e}
    return out


def without_arrays(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics without the per-window arrays (JSON-able)."""
    return {k: v for k, v in metrics.items() if k != "per_window"}
