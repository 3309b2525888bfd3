"""The embedded-default run: a small population on protocol_a and 6 s of beating, a summary and a
figure. Sizes are small so it finishes in about a minute on 2 cores (plus numba compilation on
the first run)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import classify_batch
from .model import inputs_from_multipliers
from .population import sample_multipliers
from .protocols import builtin_protocol
from .simulate import simulate_current_clamp, simulate_voltage_clamp

SUMMARY_MARKERS = ("cycle_length_ms", "mdp_mV", "peak_mV", "amplitude_mV", "dvdt_max_V_per_s",
                   "apd90_ms")


@dataclass(frozen=True)
class DemoConfig:
    """Population size, range (fraction, 0.4 = +-40%), seed, beating duration (ms), output dir."""

    n_cells: int = 200
    spread: float = 0.4
    seed: int = 0
    beating_ms: float = 6000.0
    temperature_K: float = 310.0
    out_dir: Path = Path("out/demo")


def _plot(path: Path, vc, cc, statuses: np.ndarray, n_show: int = 40) -> None:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(cfg: DemoConfig = DemoConfig(), echo=print) -> dict:
    """Simulate the population, classify it, print and return the summary; writes
    ``summary.json`` and ``population.png`` under ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protocol = builtin_protocol("protocol_a", temperature_K=cfg.temperature_K)
    inputs = inputs_from_multipliers(sample_multipliers(cfg.n_cells, cfg.spread, cfg.seed))
    echo(f"simulating {cfg.n_cells} cells (+-{cfg.spread:.0%}) on protocol_a and "
         f"{cfg.beating_ms:.0f} ms of beating (first run compiles the kernels: ~1 min)")
    t0 = time.perf_counter()
    vc = simulate_voltage_clamp(protocol, inputs)
    t1 = time.perf_counter()
    cc = simulate_current_clamp(cfg.beating_ms, inputs, temperature_K=cfg.temperature_K)
    t2 = time.perf_counter()
    statuses, markers = classify_batch(cc.t_ms, cc.v_mV)
    statuses = np.where(cc.unstable | vc.unstable, "unstable", statuses)
    counts = dict(Counter(statuses.tolist()))
    ok = statuses == "ok"
    ranges = {}
    for k in SUMMARY_MARKERS:
        vals = markers[k][ok & np.isfinite(markers[k])]
        ranges[k] = ([float(np.min(vals)), float(np.median(vals)), float(np.max(vals))]
                     if vals.size else None)
    summary = {"n_cells": cfg.n_cells, "spread": cfg.spread, "seed": cfg.seed,
               "protocol_hash": vc.protocol_hash, "status_counts": counts,
               "biomarkers_ok_cells_min_median_max": ranges,
               "wall_s": {"voltage_clamp": t1 - t0, "current_clamp": t2 - t1}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(out / "population.png", vc, cc, statuses)
    echo(f"status counts: {counts}")
    for k, r in ranges.items():
        echo(f"  {k:18s} " + ("n/a" if r is None else f"{r[0]:9.1f} {r[1]:9.1f} {r[2]:9.1f}"))
    echo(f"wrote {out / 'summary.json'} and {out / 'population.png'}")
    return summary
