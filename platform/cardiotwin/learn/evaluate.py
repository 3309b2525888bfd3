"""Accuracy of predicted parameters on held-out cells, the parameter-recovery figure and the
per-parameter error table.

Scales: ``unit`` is the [0, 1] output scale (multiplier range mapped to [0, 1], the scale of
the source study's median MAE); ``% of baseline`` is |predicted - true| multiplier x 100 (a
multiplier of 1 is the baseline value). R^2 = 1 - SSE / SST per parameter on the test cells;
the trivial predictor predicts the training mean for every cell.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

IDENTIFIABLE_R2 = 0.5  # a parameter counts as identifiable when R^2 >= this on the test split


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-parameter MSE, MAE, R^2 of (n, p) arrays (any common scale)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    err = y_pred - y_true
    sse = np.sum(err ** 2, axis=0)
    sst = np.sum((y_true - y_true.mean(axis=0)) ** 2, axis=0)
    return {"mse": np.mean(err ** 2, axis=0), "mae": np.mean(np.abs(err), axis=0),
            "r2": 1.0 - sse / np.where(sst > 0, sst, np.nan)}


def evaluate_predictions(names: list[str], y_true_unit: np.ndarray, y_pred_unit: np.ndarray,
                         m_true: np.ndarray, m_pred: np.ndarray,
                         y_train_mean_unit: np.ndarray) -> dict[str, Any]:
    """Test metrics: overall MSE/MAE, median MAE over parameters (unit scale, the study's
    headline), the same for the trivial predictor, and a per-parameter table."""
    unit = regression_metrics(y_true_unit, y_pred_unit)
    pct = regression_metrics(m_true * 100.0, m_pred * 100.0)
    trivial = regression_metrics(y_true_unit, np.broadcast_to(y_train_mean_unit,
                                                               y_true_unit.shape))
    rows = []
    for j, name in enumerate(names):
        rows.append({"parameter": name, "current": name.split(".")[0],
                     "mae_unit": float(unit["mae"][j]), "rmse_unit": float(np.sqrt(unit["mse"][j])),
                     "mae_pct_baseline": float(pct["mae"][j]),
                     "rmse_multiplier": float(np.sqrt(pct["mse"][j])) / 100.0,
                     "r2": float(unit["r2"][j]), "trivial_mae_unit": float(trivial["mae"][j]),
                     "identifiable": bool(unit["r2"][j] >= IDENTIFIABLE_R2)})
    return {"n_test": int(len(y_true_unit)),
            "mse_unit": float(np.mean(unit["mse"])), "mae_unit": float(np.mean(unit["mae"])),
            "median_mae_unit": float(np.median(unit["mae"])),
            "median_mae_pct_baseline": float(np.median(pct["mae"])),
            "median_r2": float(np.nanmedian(unit["r2"])),
            "n_identifiable": int(sum(r["identifiable"] for r in rows)),
            "trivial": {"mse_unit": float(np.mean(trivial["mse"])),
                        "median_mae_unit": float(np.median(trivial["mae"]))},
            "per_parameter": rows}


def write_error_table(metrics: dict[str, Any], path: str | Path) -> Path:
    """The per-parameter table as CSV, best recovered (highest R^2) first."""
    rows = sorted(metrics["per_parameter"], key=lambda r: -np.nan_to_num(r["r2"], nan=-1e9))
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def plot_recovery(names: list[str], m_true: np.ndarray, m_pred: np.ndarray,
                  metrics: dict[str, Any], path: str | Path, max_points: int = 2000) -> Path:
    """Predicted vs true multiplier, one panel per parameter (R^2 in each title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    cols = 8
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.1 * rows), squeeze=False)
    sel = np.arange(len(m_true))[:max_points]
    lo = float(min(m_true.min(), m_pred.min()))
    hi = float(max(m_true.max(), m_pred.max()))
    for j, ax in enumerate(axes.flat):
        if j >= n:
            ax.axis("off")
            continue
        r2 = metrics["per_parameter"][j]["r2"]
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
        ax.scatter(m_true[sel, j], m_pred[sel, j], s=2, alpha=0.4,
                   color="C0" if r2 >= IDENTIFIABLE_R2 else "C3", rasterized=True)
        ax.set_title(f"{names[j]}\nR²={r2:.2f}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.supxlabel("true multiplier")
    fig.supylabel("predicted multiplier")
    fig.suptitle(f"Parameter recovery on {len(m_true)} test cells: median MAE "
                 f"{metrics['median_mae_unit']:.3f} (unit scale; trivial "
                 f"{metrics['trivial']['median_mae_unit']:.3f}); blue: R² ≥ {IDENTIFIABLE_R2}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
