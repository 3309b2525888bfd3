"""Figures of a drug screen (matplotlib, Agg): EAD dose-response with confidence intervals,
outcome fractions, APD90 violins per concentration, AP trace overlays with EADs highlighted.
Units: nM, ms, mV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

OUTCOME_COLORS = {"beating": "#4c72b0", "ead": "#c44e52", "depolarized": "#dd8452",
                  "quiescent": "#8c8c8c", "non_repolarizing": "#55a868", "unstable": "#222222"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _labels(concs) -> list[str]:
    return [f"{c:g}" for c in concs]


def dose_response(summary: dict[str, Any], path: Path) -> Path:
    """EAD incidence (%) with its Wilson interval, and the outcome fractions, per
    concentration."""
    plt = _plt()
    rows = summary["concentrations"]
    concs = [r["concentration_nM"] for r in rows]
    x = np.arange(len(concs))
    inc = np.array([np.nan if r["ead_incidence"] is None else 100 * r["ead_incidence"]
                    for r in rows])
    lo = np.array([np.nan if r["ead_ci"][0] is None else 100 * r["ead_ci"][0] for r in rows])
    hi = np.array([np.nan if r["ead_ci"][1] is None else 100 * r["ead_ci"][1] for r in rows])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.errorbar(x, inc, yerr=[inc - lo, hi - inc], fmt="o-", color="#c44e52", capsize=4)
    for xi, r in zip(x, rows, strict=True):
        a1.annotate(f"{r['n_ead']}/{r['n_analyzed']}", (xi, hi[xi] if np.isfinite(hi[xi]) else 0),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    a1.set_xticks(x, _labels(concs))
    a1.set_xlabel(f"{summary['drug']['name']} (nM)")
    a1.set_ylabel(f"cells with EADs (%), {int(100 * rows[0]['ci_level'])}% Wilson CI")
    a1.set_title("EAD incidence")
    a1.set_ylim(bottom=0)
    bottom = np.zeros(len(rows))
    for o, col in OUTCOME_COLORS.items():
        f = np.array([r["outcome_counts"][o] / max(r["n_cells"], 1) for r in rows])
        if f.any():
            a2.bar(x, f, bottom=bottom, color=col, label=o.replace("_", "-"))
            bottom += f
    a2.set_xticks(x, _labels(concs))
    a2.set_xlabel(f"{summary['drug']['name']} (nM)")
    a2.set_ylabel("fraction of cells")
    a2.set_title("outcome")
    a2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{summary['drug']['name']}: {summary['population']['n_cells']} cells, "
                 f"+-{100 * summary['population']['spread']:g}% around "
                 f"{summary['population']['twin_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def apd90_violins(summary: dict[str, Any], concentration: np.ndarray, apd90: np.ndarray,
                  path: Path) -> Path:
    """APD90 (full APs) distribution per concentration, mean +- SD marked, n below."""
    plt = _plt()
    concs = [r["concentration_nM"] for r in summary["concentrations"]]
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(concs) + 2), 4))
    for i, c in enumerate(concs):
        a = apd90[(concentration == c) & np.isfinite(apd90)]
        if a.size >= 2:
            parts = ax.violinplot([a], positions=[i], widths=0.8, showextrema=False)
            for b in parts["bodies"]:
                b.set_alpha(0.5)
        if a.size:
            sd = a.std(ddof=1) if a.size > 1 else 0.0
            ax.errorbar([i], [a.mean()], yerr=[sd], fmt="o", color="k", capsize=4)
        ax.annotate(f"n={a.size}", (i, 0), xycoords=("data", "axes fraction"),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(range(len(concs)), _labels(concs))
    ax.set_xlabel(f"{summary['drug']['name']} (nM)")
    ax.set_ylabel("APD90 of full APs (ms), mean +- SD")
    ax.set_title("APD90 per concentration")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def trace_overlays(summary: dict[str, Any], traces: list[dict[str, Any]], path: Path) -> Path:
    """Kept AP traces overlaid per concentration, EAD segments drawn thick in red."""
    plt = _plt()
    concs = [r["concentration_nM"] for r in summary["concentrations"]]
    fig, axes = plt.subplots(len(concs), 1, figsize=(10, 2.1 * len(concs) + 0.5), sharex=True,
                             squeeze=False)
    for ax, c in zip(axes[:, 0], concs, strict=True):
        kept = [tr for tr in traces if tr["concentration_nM"] == c]
        for tr in kept:
            v = np.asarray(tr["v_mV"], dtype=float)
            t = np.arange(v.size) * tr["dt_ms"]
            ax.plot(t, v, lw=0.8, alpha=0.8, label=f"cell {tr['cell_id']} ({tr['outcome']})")
            for s, e in zip(tr["ead_start_ms"], tr["ead_end_ms"], strict=True):
                m = (t >= s) & (t <= e)
                ax.plot(t[m], v[m], lw=2.5, color="#c44e52")
        r = next(r for r in summary["concentrations"] if r["concentration_nM"] == c)
        ax.set_title(f"{c:g} nM: EADs in {r['n_ead']}/{r['n_analyzed']} cells", fontsize=9,
                     loc="left")
        ax.set_ylabel("V (mV)")
        if kept:
            ax.legend(fontsize=7, loc="upper right", ncol=2)
    axes[-1, 0].set_xlabel("time in the recorded run (ms); EAD segments in thick red")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
