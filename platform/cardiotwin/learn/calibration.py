"""Calibration and identifiability of a posterior on held-out cells with known parameters.

Inputs are posterior samples ``samples`` (n_cells, n_samples, n_params) and the true values
``truth`` (n_cells, n_params) on one scale (the unit scale here).

- Coverage: the fraction of (cell, parameter) pairs whose truth lies in the central credible
  interval of level ``a`` (between the (1-a)/2 and (1+a)/2 sample quantiles); calibrated: a.
- Simulation-based calibration (Talts et al. 2018): the rank of the truth among the samples of
  its cell, 0 .. n_samples, is uniform for a calibrated posterior. Ranks are histogrammed in
  ``bins`` bins; the statistic is Pearson's chi^2 against the uniform histogram (pooled over
  parameters and per parameter, with p-values), and ``max_rel_deviation`` the largest
  |count - expected| / expected of the pooled histogram (an overconfident posterior piles ranks
  into the end bins, an underconfident one into the middle).
- Contraction: 1 - posterior SD / prior SD per parameter (averaged over cells); the prior is
  uniform over the sampling range, SD = 1 / sqrt(12) on the unit scale. 0: nothing learnt,
  1: the parameter is pinned down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = (0.5, 0.9)
SBC_BINS = 10
UNIFORM_UNIT_SD = 1.0 / np.sqrt(12.0)
IDENTIFIABLE_CONTRACTION = 0.5  # posterior SD at most half the prior SD


def interval_coverage(samples: np.ndarray, truth: np.ndarray, level: float) -> np.ndarray:
    """(n_cells, n_params) booleans: truth inside the central ``level`` interval."""
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return (truth >= lo) & (truth <= hi)


def sbc_ranks(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n_cells, n_params) ranks of the truth among its cell's samples, 0 .. n_samples."""
    return np.sum(samples < truth[:, None, :], axis=1)


def rank_histogram(ranks: np.ndarray, n_samples: int, bins: int = SBC_BINS) -> np.ndarray:
    """Counts of ``ranks`` (any shape) in ``bins`` equal bins of 0 .. n_samples."""
    idx = np.minimum((np.asarray(ranks).ravel() * bins) // (n_samples + 1), bins - 1)
    return np.bincount(idx.astype(np.int64), minlength=bins)


def _chi2(counts: np.ndarray) -> tuple[float, float]:
    from scipy.stats import chi2

    expected = counts.sum() / len(counts)
    stat = float(np.sum((counts - expected) ** 2 / expected))
    return stat, float(chi2.sf(stat, len(counts) - 1))


def sbc_statistics(ranks: np.ndarray, n_samples: int, bins: int = SBC_BINS) -> dict:
    """The pooled and per-parameter uniformity of the SBC ranks (module docstring)."""
    pooled = rank_histogram(ranks, n_samples, bins)
    stat, p = _chi2(pooled)
    expected = pooled.sum() / bins
    per = [_chi2(rank_histogram(ranks[:, j], n_samples, bins)) for j in range(ranks.shape[1])]
    return {"bins": bins, "n_samples": int(n_samples), "histogram": pooled.tolist(),
            "chi2": stat, "p_value": p, "dof": bins - 1,
            "max_rel_deviation": float(np.max(np.abs(pooled - expected)) / expected),
            "chi2_per_parameter": [s for s, _ in per],
            "p_value_per_parameter": [q for _, q in per]}


def contraction(samples: np.ndarray, prior_sd: float = UNIFORM_UNIT_SD) -> np.ndarray:
    """(n_cells, n_params) 1 - posterior SD / prior SD."""
    return 1.0 - samples.std(axis=1) / prior_sd


def calibration_report(samples: np.ndarray, truth: np.ndarray, names: list[str],
                       prior_sd: float = UNIFORM_UNIT_SD) -> dict:
    """Coverage (per parameter and overall), SBC statistics and contraction per parameter."""
    cov = {f"{level:g}": interval_coverage(samples, truth, level) for level in LEVELS}
    ranks = sbc_ranks(samples, truth)
    shrink = contraction(samples, prior_sd)
    per = []
    sbc = sbc_statistics(ranks, samples.shape[1])
    for j, name in enumerate(names):
        c = float(np.mean(shrink[:, j]))
        per.append({"parameter": name, "contraction": c,
                    "coverage_50": float(np.mean(cov["0.5"][:, j])),
                    "coverage_90": float(np.mean(cov["0.9"][:, j])),
                    "sbc_chi2": sbc["chi2_per_parameter"][j],
                    "sbc_p_value": sbc["p_value_per_parameter"][j],
                    "identifiable": bool(c >= IDENTIFIABLE_CONTRACTION)})
    return {"n_cells": int(len(truth)), "n_samples": int(samples.shape[1]),
            "coverage": {k: float(np.mean(v)) for k, v in cov.items()},
            "sbc": {k: v for k, v in sbc.items() if not k.endswith("per_parameter")},
            "median_contraction": float(np.median([r["contraction"] for r in per])),
            "n_identifiable": int(sum(r["identifiable"] for r in per)),
            "identifiable_contraction": IDENTIFIABLE_CONTRACTION,
            "per_parameter": per}


TAIL_SD = 3.0  # the marginal's tails reach this many posterior SDs beyond the extreme samples


def _extended(samples: np.ndarray) -> np.ndarray:
    """Sorted samples (n, S, p) framed by tail ends TAIL_SD posterior SDs beyond the smallest
    and largest sample (within the prior's support [0, 1]): (n, S + 2, p)."""
    s = np.sort(np.clip(samples, 0.0, 1.0), axis=1)
    sd = s.std(axis=1, keepdims=True)
    low = np.maximum(s[:, :1] - TAIL_SD * sd, 0.0)
    high = np.minimum(s[:, -1:] + TAIL_SD * sd, 1.0)
    return np.concatenate([low, s, high], axis=1)


def marginal_cdf(samples: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The posterior CDF of each parameter at ``values`` (n, p): piecewise linear through the
    sorted samples at levels 1/(S+1) ... S/(S+1), with linear tails to TAIL_SD SDs beyond the
    extreme samples (unit scale), so a value outside every sample still gets a level."""
    knots = _extended(samples)
    s = samples.shape[1]
    v = np.clip(values, knots[:, 0], knots[:, -1])[:, None, :]
    k = np.clip(np.sum(knots[:, 1:-1] < v, axis=1), 0, s)          # (n, p) in 0 .. S
    lo = np.take_along_axis(knots, k[:, None, :], axis=1)[:, 0]
    hi = np.take_along_axis(knots, k[:, None, :] + 1, axis=1)[:, 0]
    frac = np.where(hi > lo, (v[:, 0] - lo) / np.where(hi > lo, hi - lo, 1.0), 0.5)
    return (k + np.clip(frac, 0.0, 1.0)) / (s + 1)


def marginal_quantile(samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`marginal_cdf`: values (n, m, p) at ``levels`` (n, m, p)."""
    knots = _extended(samples)
    s = samples.shape[1]
    pos = np.clip(levels, 0.0, 1.0) * (s + 1)
    k = np.clip(np.floor(pos).astype(np.int64), 0, s)
    lo = np.take_along_axis(knots, k, axis=1)
    hi = np.take_along_axis(knots, k + 1, axis=1)
    return lo + (pos - k) * (hi - lo)


@dataclass(frozen=True)
class MarginalRecalibration:
    """Recalibration of each parameter's posterior marginal (Kuleshov et al. 2018): the
    calibrated CDF is R_j(F_j(y)), with R_j the CDF of the levels F_j(truth) over validation
    cells. Applied to samples, it moves each sample to the calibrated quantile of its own rank,
    so the joint dependence (the ranks) is kept and only the marginals change. ``levels`` (K,)
    grid of 0 .. 1; ``inverse`` (p, K): R_j^-1 on the grid, shrunk towards the identity by
    ``prior_cells`` pseudo-cells."""

    levels: np.ndarray
    inverse: np.ndarray

    @classmethod
    def fit(cls, samples: np.ndarray, truth: np.ndarray, n_levels: int = 41,
            prior_cells: float = 10.0) -> MarginalRecalibration:
        pit = marginal_cdf(samples, truth)                          # (n, p)
        tails = [0.005, 0.01, 0.015, 0.985, 0.99, 0.995]            # finer where PITs pile up
        levels = np.union1d(np.linspace(0.0, 1.0, int(n_levels)), tails)
        emp = np.quantile(pit, levels, axis=0).T                    # (p, K)
        n = len(truth)
        inv = (n * emp + prior_cells * levels) / (n + prior_cells)
        inv[:, 0], inv[:, -1] = 0.0, 1.0
        return cls(levels, np.maximum.accumulate(inv, axis=1))

    @classmethod
    def identity(cls, n_params: int) -> MarginalRecalibration:
        lv = np.array([0.0, 1.0])
        return cls(lv, np.tile(lv, (n_params, 1)))

    def apply(self, samples: np.ndarray) -> np.ndarray:
        """Recalibrated samples (n, S, p) of unit-scale samples (n, S, p)."""
        s = samples.shape[1]
        rank = np.argsort(np.argsort(samples, axis=1), axis=1)
        alpha = (rank + 1.0) / (s + 1.0)
        beta = np.empty_like(alpha)
        for j in range(samples.shape[2]):
            beta[:, :, j] = np.interp(alpha[:, :, j], self.levels, self.inverse[j])
        return marginal_quantile(samples, beta)

    def to_json(self) -> dict:
        return {"what": "per-parameter map of posterior levels to calibrated levels, fitted on "
                        "validation cells (unit scale; samples keep their ranks)",
                "levels": self.levels.tolist(), "inverse": self.inverse.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> MarginalRecalibration:
        return cls(np.asarray(d["levels"], np.float64), np.asarray(d["inverse"], np.float64))


def plot_calibration(report: dict, path) -> None:
    """PNG: coverage per parameter (50/90%), the pooled SBC rank histogram and contraction per
    parameter (identifiable ones in blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = report["per_parameter"]
    names = [r["parameter"] for r in per]
    x = np.arange(len(names))
    fig, axes = plt.subplots(3, 1, figsize=(14, 10))
    a, b, c = axes
    for level, colour in (("50", "C0"), ("90", "C1")):
        a.bar(x + (-0.2 if level == "50" else 0.2), [r[f"coverage_{level}"] for r in per], 0.4,
              color=colour, label=f"{level}% interval")
        a.axhline(int(level) / 100, color=colour, ls="--", lw=0.8)
    a.set_ylim(0, 1)
    a.set_title(f"coverage on {report['n_cells']} held-out cells: overall 50% "
                f"{report['coverage']['0.5']:.3f}, 90% {report['coverage']['0.9']:.3f}")
    a.legend(fontsize=8, loc="lower right")
    sbc = report["sbc"]
    b.bar(np.arange(sbc["bins"]), sbc["histogram"], color="0.5")
    b.axhline(np.mean(sbc["histogram"]), color="k", ls="--", lw=0.8)
    b.set_title(f"SBC rank histogram (pooled): chi2 {sbc['chi2']:.1f} on {sbc['dof']} dof, "
                f"max deviation {sbc['max_rel_deviation']:.0%}")
    b.set_xlabel("rank bin")
    shrink = [r["contraction"] for r in per]
    c.bar(x, shrink, color=["C0" if r["identifiable"] else "C3" for r in per])
    c.axhline(IDENTIFIABLE_CONTRACTION, color="k", ls="--", lw=0.8)
    c.set_ylim(min(0.0, min(shrink)), 1)
    c.set_title(f"posterior contraction (1 - SD/prior SD): {report['n_identifiable']}/"
                f"{len(per)} identifiable (>= {IDENTIFIABLE_CONTRACTION})")
    for ax in (a, c):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_identifiability_table(report: dict, path) -> None:
    """The per-parameter calibration and contraction as CSV, most contracted first."""
    import csv

    rows = sorted(report["per_parameter"], key=lambda r: -r["contraction"])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
