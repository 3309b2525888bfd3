"""The coverage figure (matplotlib, Agg): cycle length vs APD90 and MDP vs APD90 of the
synthetic cells (a random subsample, small grey points) with the counted real cells on top
(matched: filled circles, not matched: crosses), and histograms of AP amplitude and dV/dt max
(log scale; synthetic and real, each normalized). Units: ms, mV, V/s."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from .phenotypes import PHENOTYPE_KEYS, PHENOTYPE_LABELS

MAX_POINTS = 20000
MATCHED = dict(marker="o", color="#2a9d4b", edgecolor="black", linewidths=0.6, s=42, zorder=3)
UNMATCHED = dict(marker="X", color="#d62728", edgecolor="black", linewidths=0.6, s=56, zorder=3)
SYNTH = dict(s=2, color="0.6", alpha=0.35, linewidths=0, rasterized=True, zorder=1)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _col(values: np.ndarray, key: str) -> np.ndarray:
    return values[:, PHENOTYPE_KEYS.index(key)] if values.size else np.empty(0)


def _hist(ax, synth: np.ndarray, real: np.ndarray, key: str, *, log: bool = False) -> None:
    s, r = synth[np.isfinite(synth)], real[np.isfinite(real)]
    if log:
        s, r = s[s > 0], r[r > 0]
    both = np.concatenate([s, r])
    if both.size == 0:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    else:
        lo, hi = np.percentile(both, [0.5, 99.5])
        lo, hi = min(lo, r.min(initial=lo)), max(hi, r.max(initial=hi))
        if not hi > lo:
            lo, hi = (lo / 2, lo * 2) if log else (lo - 1.0, lo + 1.0)

        def edges(n: int) -> np.ndarray:
            return np.geomspace(lo, hi, n + 1) if log else np.linspace(lo, hi, n + 1)

        def density(x: np.ndarray, e: np.ndarray) -> np.ndarray:
            # per unit of the axis (per decade on a log axis), so that bins of any width and
            # the two sets compare
            width = np.diff(np.log10(e) if log else e)
            return np.histogram(x, e)[0] / (x.size * width)

        if s.size:
            e = edges(40)
            ax.stairs(density(s, e), e, fill=True, color="0.7",
                      label=f"synthetic (n={s.size:,})")
        if r.size:   # few real cells: wider bins
            e = edges(int(np.clip(r.size // 2, 5, 20)))
            ax.stairs(density(r, e), e, linewidth=2, color="#1f77b4",
                      label=f"real (n={r.size})")
        if log:
            ax.set_xscale("log")
            _plain_ticks(ax.xaxis)
        ax.legend(fontsize=8)
    ax.set_xlabel(PHENOTYPE_LABELS[key] + (" (log scale)" if log else ""))
    ax.set_ylabel("density (per decade)" if log else "density")


def _plain_ticks(axis) -> None:
    """Log-axis ticks labelled as plain numbers (1-2-5 steps), no minor labels."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def coverage_figure(report: dict[str, Any], synth_values: np.ndarray,
                    path: str | os.PathLike | None = None, *, max_points: int = MAX_POINTS,
                    seed: int = 0) -> bytes:
    """Draw the figure of a coverage report (its counted real cells) over the synthetic
    values (n, 5) in PHENOTYPE_KEYS order; returns the PNG bytes, also written atomically to
    ``path`` when given."""
    plt = _plt()
    synth = np.asarray(synth_values, dtype=np.float64).reshape(-1, len(PHENOTYPE_KEYS))
    if synth.shape[0] > max_points:
        keep = np.random.default_rng(seed).choice(synth.shape[0], max_points, replace=False)
        sub = synth[np.sort(keep)]
    else:
        sub = synth
    cells = [c for c in report["cells"] if c["counted"]]

    def real(key: str, matched: bool | None = None) -> np.ndarray:
        return np.array([np.nan if c["values"][key] is None else c["values"][key]
                         for c in cells if matched is None or c["matched"] is matched],
                        dtype=np.float64)

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for ax, (xk, yk) in zip(axes[0], [("cycle_length_ms", "apd90_ms"), ("mdp_mV", "apd90_ms")],
                            strict=True):
        ax.scatter(_col(sub, xk), _col(sub, yk),
                   label=f"synthetic ({sub.shape[0]:,} of {synth.shape[0]:,})", **SYNTH)
        for m, style, what in ((True, MATCHED, "matched"), (False, UNMATCHED, "not matched")):
            x, y = real(xk, m), real(yk, m)
            if x.size:
                ax.scatter(x, y, label=f"real, {what} ({x.size})", **style)
        if xk == "cycle_length_ms":
            ax.set_xscale("log")
            _plain_ticks(ax.xaxis)
        ax.set_yscale("log")  # APD90 spans 50 ms to seconds
        _plain_ticks(ax.yaxis)
        ax.set_xlabel(PHENOTYPE_LABELS[xk])
        ax.set_ylabel(PHENOTYPE_LABELS[yk])
        ax.legend(fontsize=8, loc="best", markerscale=1.0)
    _hist(axes[1, 0], _col(synth, "amplitude_mV"), real("amplitude_mV"), "amplitude_mV")
    _hist(axes[1, 1], _col(synth, "dvdt_max_V_per_s"), real("dvdt_max_V_per_s"),
          "dvdt_max_V_per_s", log=True)
    t = report["totals"]
    frac = t["fraction_matched"]
    fig.suptitle(f"coverage: {t['matched']} of {t['counted']} beating real cells matched"
                 + (f" ({100 * frac:.0f}%)" if frac is not None else "") + "\n"
                 + report["criterion"]["text"], fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        from ..storage.atomic import write_bytes_atomic

        write_bytes_atomic(path, data)
    return data
