"""Figures of a CiPA run (matplotlib, Agg): per-drug dose-response of each risk metric, and the
leave-one-out risk score by clinical category."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .metrics import METRICS, UNITS

CATEGORY_COLORS = {"low": "#55a868", "intermediate": "#dd8452", "high": "#c44e52"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def dose_response(summary: dict[str, Any], path: Path) -> Path:
    """One panel per metric: each drug's value (line, colored by CiPA category) against the
    dose in multiples of its free Cmax, the bootstrap interval as a band."""
    plt = _plt()
    metrics = [m for m in METRICS if m in summary["drugs"][0]["metrics"]]
    ncol = 4
    nrow = (len(metrics) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        for d in summary["drugs"]:
            s = d["metrics"][m]
            x = np.asarray(d["multiples"], dtype=float)
            y, lo, hi = _nan(s["value"]), _nan(s["ci"][0]), _nan(s["ci"][1])
            col = CATEGORY_COLORS[d["cipa_category"]]
            ax.plot(x, y, "-o", ms=2.5, lw=1, color=col, alpha=0.8)
            ax.fill_between(x, lo, hi, color=col, alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.set_title(m.replace("_", " "), fontsize=10)
        ax.set_xlabel("dose (x free Cmax)")
        ax.set_ylabel(UNITS[m], fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, lw=2, label=k) for k, c in CATEGORY_COLORS.items()]
    fig.legend(handles=handles, loc="lower right", title="CiPA risk")
    fig.suptitle(f"Risk metrics per drug and dose ({summary['model']['pacing']}, "
                 f"{summary['config']['n_cells']} cells, +-{100 * summary['config']['spread']:g}"
                 "%); bands: 95% bootstrap over cells")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def risk_by_category(summary: dict[str, Any], path: Path) -> Path:
    """The leave-one-out risk score of each drug (with its bootstrap interval) by category."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    cats = list(CATEGORY_COLORS)
    for j, cat in enumerate(cats):
        ds = sorted((d for d in summary["drugs"] if d["cipa_category"] == cat),
                    key=lambda d: d["risk_score"])
        for k, d in enumerate(ds):
            x = j + (k - (len(ds) - 1) / 2) * 0.06
            lo, hi = d["risk_score_ci"]
            mark = "o" if d["set"] != "extra" else "x"
            ax.plot([x], [d["risk_score"]], mark, color=CATEGORY_COLORS[cat], ms=6)
            if lo is not None:
                ax.plot([x, x], [lo, hi], "-", color=CATEGORY_COLORS[cat], alpha=0.5)
            ax.annotate(d["drug"], (x, d["risk_score"]), fontsize=6, xytext=(3, 0),
                        textcoords="offset points", va="center")
    ax.set_xticks(range(len(cats)), cats)
    ax.set_xlabel("CiPA category")
    ax.set_ylabel("risk score: P(intermediate) + 2 P(high), drug left out")
    ax.set_ylim(-0.1, 2.1)
    c = summary["classifier"]
    ax.set_title(f"leave-one-out accuracy {c['accuracy']:.2f}, AUC high vs rest "
                 f"{c['auc_high_vs_rest']}, low vs rest {c['auc_low_vs_rest']}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
