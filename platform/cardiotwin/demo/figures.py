"""The demo's population figure: the voltage-clamp protocol, the cells' I_total and their
free-running APs coloured by status."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..storage.atomic import atomic_path


def plot_population(path: Path, vc, cc, statuses: np.ndarray, n_show: int = 40) -> Path:
    """Protocol, I_total (pA/pF) and free-running APs (mV) of the first ``n_show`` cells,
    coloured by status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), height_ratios=[1, 2, 2])
    axes[0].plot(vc.t_ms, vc.v_mV, color="k", lw=0.8)
    axes[0].set_ylabel("command (mV)")
    axes[0].set_title("protocol_a")
    show = np.arange(min(n_show, len(statuses)))
    for i in show:
        axes[1].plot(vc.t_ms, vc.i_total[i], lw=0.4, alpha=0.6)
    axes[1].set_ylim(np.nanpercentile(vc.i_total[show], [0.5, 99.5]))
    axes[1].set_ylabel("I_total (pA/pF)")
    colors = {"ok": "tab:blue", "quiescent": "tab:gray", "non_repolarizing": "tab:red",
              "unstable": "k"}
    for i in show:
        axes[2].plot(cc.t_ms / 1000.0, cc.v_mV[i], lw=0.5, alpha=0.7,
                     color=colors.get(statuses[i], "k"))
    for name, color in colors.items():
        axes[2].plot([], [], color=color, label=f"{name} ({int(np.sum(statuses == name))})")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[2].set_xlabel("time (s)")
    axes[2].set_ylabel("V (mV)")
    axes[2].set_title(f"free-running APs, first {len(show)} of {len(statuses)} cells")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
