"""Figures of a protocol search: the optimized protocol and the error per cycle; the
comparison of protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..storage.atomic import atomic_path
from .scoring import GROUPS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_search(history: list[dict[str, Any]], protocol, path: str | Path,
                score_name: str = "test_mse") -> Path:
    """Four panels: the protocol's command voltage (mV) over time (s); the chosen candidate's
    score per cycle with every candidate's score behind it; the chosen candidate's median
    MAE per parameter group per cycle; each cycle's score against the candidate potential."""
    plt = _plt()
    fig, ax = plt.subplots(2, 2, figsize=(13, 7.5))
    a = ax[0, 0]
    a.plot(protocol.times_ms() / 1000.0, protocol.command_voltage(), lw=1.0, color="k")
    a.set(xlabel="time (s)", ylabel="command (mV)",
          title=f"optimized protocol: {sum(c['appended'] for c in history)} steps, "
                f"{protocol.duration_ms / 1000:g} s, {protocol.protocol_hash[:12]}")
    t_end = 0.0
    for c in history:
        if c["appended"]:
            t_end = c["duration_ms"] / 1000.0
            a.annotate(f"{c['best_mV']:g}", (t_end, c["best_mV"]), fontsize=7, ha="right",
                       va="bottom", xytext=(-2, 2), textcoords="offset points")
    cycles = [c["cycle"] for c in history]
    a = ax[0, 1]
    for c in history:
        s = [r.get("score") for r in c["candidates"]]
        s = [np.nan if x is None else x for x in s]
        a.scatter(np.full(len(s), c["cycle"]), s, s=8, color="0.7", zorder=1)
    best = [c["best_score"] for c in history]
    a.plot(cycles, best, "o-", color="C0", zorder=2, label="chosen candidate")
    rejected = [c for c in history if not c["appended"]]
    if rejected:
        a.scatter([c["cycle"] for c in rejected], [c["best_score"] for c in rejected], s=60,
                  facecolor="none", edgecolor="C3", zorder=3, label="not appended")
    a.set(xlabel="cycle", ylabel=score_name if score_name.startswith("fisher") else
          f"held-out {score_name} (unit scale)",
          title="score per cycle (grey: every candidate)")
    a.legend(fontsize=8)
    a = ax[1, 0]
    chosen = [_chosen(c) for c in history]
    fisher = any("contraction" in r for r in chosen)   # the Fisher scorer's records
    key, per = ("contraction", "contraction_") if fisher else ("test_median_mae", "mae_")
    a.plot(cycles, [r.get(key, np.nan) for r in chosen], "k-o", lw=2,
           label="all parameters")
    for g in GROUPS:
        a.plot(cycles, [r.get(f"{per}{g}", np.nan) for r in chosen], ".-", lw=1, label=g)
    if fisher:
        a.set(xlabel="cycle", ylabel="contraction (1 - posterior / prior variance)",
              title="chosen candidate: Fisher contraction per current family")
    else:
        a.set(xlabel="cycle", ylabel="median MAE (unit scale)",
              title="chosen candidate: median MAE per parameter group")
    a.legend(fontsize=7, ncol=2)
    a = ax[1, 1]
    cmap = plt.get_cmap("viridis")
    for i, c in enumerate(history):
        v = [r["candidate_mV"] for r in c["candidates"]]
        s = [np.nan if r.get("score") is None else r["score"] for r in c["candidates"]]
        a.plot(v, s, ".-", color=cmap(i / max(1, len(history) - 1)), label=f"cycle {c['cycle']}")
    a.set(xlabel="candidate test potential (mV)", ylabel=score_name,
          title="score of each candidate")
    a.legend(fontsize=7, ncol=2)
    from matplotlib.ticker import MaxNLocator

    for a in (ax[0, 1], ax[1, 0]):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _chosen(cycle: dict[str, Any]) -> dict[str, Any]:
    for r in cycle["candidates"]:
        if r["candidate_mV"] == cycle["best_mV"]:
            return r
    return {}


def plot_comparison(comparison: dict[str, Any], path: str | Path) -> Path:
    """Median MAE (overall and per parameter group) of each compared protocol."""
    plt = _plt()
    names = list(comparison["results"])
    keys = ["test_median_mae"] + [f"mae_{g}" for g in GROUPS]
    labels = ["all"] + list(GROUPS)
    fig, a = plt.subplots(figsize=(10, 4))
    w = 0.8 / len(names)
    x = np.arange(len(keys))
    for i, n in enumerate(names):
        r = comparison["results"][n]
        a.bar(x + i * w, [r.get(k, np.nan) for k in keys], w,
              label=f"{n} ({r['duration_ms'] / 1000:g} s)")
    a.set_xticks(x + w * (len(names) - 1) / 2, labels)
    a.set(ylabel="median MAE (unit scale)",
          title=f"{comparison['n_test']} held-out cells, same network budget")
    a.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
