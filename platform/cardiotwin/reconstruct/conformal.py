"""Conformalized quantile regression (CQR, Romano et al. 2019) of the network's bands, per
phase of the beat.

For a central band of nominal coverage c with network edges (lo, hi), the score of a sample
is ``s = max(lo - y, y - hi)`` (negative inside the band). On the calibration split (cells
never trained on) the offset is the ``ceil((n + 1) c) / n`` empirical quantile of the n
scores; in use the band is (lo - offset, hi + offset). A positive offset widens a band that
covers too little, a negative one narrows one that covers too much.

Offsets are taken per phase of the beat (Mondrian CQR), so the coverage holds in each
phase and not only on average. The phase of a sample comes from the *predicted* median (known
in use): ``rest`` before the anchor (the eAP spike, ``pre_ms`` into the window), ``plateau``
from the anchor to APD30 of the median, ``repolarization`` from APD30 to APD90, ``late``
after APD90 (diastole and the next beat). A phase with fewer than ``min_samples`` calibration
samples uses the pooled offset. After the offsets, the quantiles are put back in order
(q05 <= q25 <= q50 <= q75 <= q95), which moves no edge past the median.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .windows import APD_LEVELS, WindowConfig, apd

PHASES = ("rest", "plateau", "repolarization", "late")
FORMAT = "cardiotwin.reconstruct-conformal/1"


def bands_of(quantiles: tuple[float, ...]) -> list[tuple[float, int, int]]:
    """Central bands of a quantile set: (nominal coverage, lower index, upper index) for each
    pair (q, 1 - q), q < 0.5."""
    q = [round(float(v), 6) for v in quantiles]
    out = []
    for i, lo in enumerate(q):
        if lo < 0.5 and round(1.0 - lo, 6) in q:
            out.append((round(1.0 - 2.0 * lo, 6), i, q.index(round(1.0 - lo, 6))))
    return sorted(out, reverse=True)


def phase_of(median: np.ndarray, window: WindowConfig) -> np.ndarray:
    """Phase index (into PHASES) of each sample (n, length) from the median traces (n, length)
    (module docstring); where APD30/APD90 of the median is undefined, the phase after the
    anchor is ``plateau`` up to the window's end."""
    med = np.asarray(median, dtype=np.float64)
    n, L = med.shape
    dt = window.sample_interval_ms
    a = apd(med, dt, window, levels=(30, 90))
    anchor = window.pre_samples
    t = np.arange(L)[None, :]
    i30 = np.where(np.isfinite(a[:, 0]), anchor + a[:, 0] / dt, L)[:, None]
    i90 = np.where(np.isfinite(a[:, 1]), anchor + a[:, 1] / dt, L)[:, None]
    ph = np.full((n, L), 1, np.int8)
    ph[np.broadcast_to(t < anchor, (n, L))] = 0
    ph[(t >= i30) & (t < i90)] = 2
    ph[t >= i90] = 3
    return ph


def _offset(scores: np.ndarray, coverage: float) -> float:
    n = scores.size
    k = int(np.ceil((n + 1) * coverage))
    if k > n:
        return float(np.max(scores))
    return float(np.partition(scores, k - 1)[k - 1])


class Conformal:
    """Per-phase CQR offsets for each central band of a quantile set (module docstring)."""

    def __init__(self, quantiles: tuple[float, ...], offsets: dict[str, dict[str, float]],
                 pooled: dict[str, float], *, calibration: dict[str, Any] | None = None,
                 min_samples: int = 1000):
        self.quantiles = tuple(float(q) for q in quantiles)
        self.offsets = offsets          # band ("0.9") -> phase -> offset (normalized units)
        self.pooled = pooled            # band -> offset over every phase
        self.calibration = calibration or {}
        self.min_samples = int(min_samples)

    @classmethod
    def fit(cls, target: np.ndarray, pred: np.ndarray, quantiles: tuple[float, ...],
            window: WindowConfig, *, min_samples: int = 1000) -> Conformal:
        """Offsets from calibration targets (n, length) and network quantiles
        (n, length, n_q)."""
        y = np.asarray(target, dtype=np.float64)
        p = np.asarray(pred, dtype=np.float64)
        if p.ndim != 3 or y.shape != p.shape[:2] or p.shape[2] != len(quantiles):
            raise ValueError(f"calibration: targets {y.shape} and quantiles {p.shape} do not "
                             f"match (n, length) and (n, length, {len(quantiles)})")
        if len(y) == 0:
            raise ValueError("calibration: no windows in the calibration split")
        bands = bands_of(quantiles)
        if not bands:
            raise ValueError(f"calibration: quantiles {quantiles} hold no central band")
        ph = phase_of(p[..., quantiles.index(0.5)], window)
        offsets: dict[str, dict[str, float]] = {}
        pooled: dict[str, float] = {}
        counts = {name: int((ph == i).sum()) for i, name in enumerate(PHASES)}
        for c, lo, hi in bands:
            s = np.maximum(p[..., lo] - y, y - p[..., hi])
            key = f"{c:g}"
            pooled[key] = _offset(s.ravel(), c)
            offsets[key] = {name: (_offset(s[ph == i], c) if counts[name] >= min_samples
                                   else pooled[key]) for i, name in enumerate(PHASES)}
        cal = {"n_windows": int(len(y)), "n_samples_by_phase": counts,
               "coverage_before": coverage_by_phase(y, p, quantiles, ph)}
        out = cls(quantiles, offsets, pooled, calibration=cal, min_samples=min_samples)
        cal["coverage_after"] = coverage_by_phase(y, out.apply(p, window), quantiles, ph)
        return out

    def apply(self, pred: np.ndarray, window: WindowConfig) -> np.ndarray:
        """Calibrated quantiles (n, length, n_q) of network quantiles ``pred``."""
        p = np.array(pred, dtype=np.float64)
        med = self.quantiles.index(0.5)
        ph = phase_of(p[..., med], window)
        for c, lo, hi in bands_of(self.quantiles):
            table = np.array([self.offsets[f"{c:g}"][name] for name in PHASES])
            off = table[ph]
            p[..., lo] -= off
            p[..., hi] += off
        # back in order, outwards from the median
        for i in range(med - 1, -1, -1):
            p[..., i] = np.minimum(p[..., i], p[..., i + 1])
        for i in range(med + 1, p.shape[-1]):
            p[..., i] = np.maximum(p[..., i], p[..., i - 1])
        return p.astype(np.asarray(pred).dtype, copy=False)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "method": "CQR, per phase of the beat",
                "quantiles": list(self.quantiles), "phases": list(PHASES),
                "offsets": self.offsets, "pooled": self.pooled,
                "min_samples": self.min_samples, "calibration": self.calibration}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "conformal") -> Conformal:
        """Inverse of :meth:`to_json`; ValueError naming ``where`` and the field."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{where}: format {FORMAT!r} expected, found {found!r}")
        q = tuple(float(v) for v in d["quantiles"])
        for c, _, _ in bands_of(q):
            key = f"{c:g}"
            phases = d.get("offsets", {}).get(key)
            if not isinstance(phases, dict) or set(phases) != set(PHASES):
                raise ValueError(f"{where}: offsets.{key}: expected one offset per phase "
                                 f"{list(PHASES)}, found {phases!r}")
            if not all(np.isfinite(float(v)) for v in phases.values()):
                raise ValueError(f"{where}: offsets.{key}: non-finite offset")
        return cls(q, {k: {p: float(v) for p, v in ph.items()} for k, ph in d["offsets"].items()},
                   {k: float(v) for k, v in d["pooled"].items()},
                   calibration=d.get("calibration"), min_samples=int(d.get("min_samples", 1000)))


def coverage_by_phase(target: np.ndarray, pred: np.ndarray, quantiles: tuple[float, ...],
                      phases: np.ndarray) -> dict[str, dict[str, float]]:
    """Band ("0.9", "0.5") -> {"all": coverage, phase: coverage} of samples."""
    out: dict[str, dict[str, float]] = {}
    for c, lo, hi in bands_of(quantiles):
        inside = (target >= pred[..., lo]) & (target <= pred[..., hi])
        r = {"all": float(inside.mean())}
        for i, name in enumerate(PHASES):
            sel = phases == i
            r[name] = float(inside[sel].mean()) if sel.any() else float("nan")
        out[f"{c:g}"] = r
    return out


def coverage_report(target: np.ndarray, pred: np.ndarray, quantiles: tuple[float, ...],
                    window: WindowConfig) -> dict[str, Any]:
    """Coverage of every central band: of all samples, per phase of the beat (phases of the
    predicted median), per APD level (samples of the true AP between its APD(x-10) and APDx
    crossings: APD10 is upstroke to APD10), and of the APD itself (true APDx between APDx of
    the band's lower and upper edge traces)."""
    y = np.asarray(target, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    ph = phase_of(p[..., quantiles.index(0.5)], window)
    out: dict[str, Any] = {"by_phase": coverage_by_phase(y, p, quantiles, ph)}
    dt = window.sample_interval_ms
    a_true = apd(y, dt, window)
    anchor = window.pre_samples
    t = np.arange(y.shape[1])[None, :]
    by_level: dict[str, dict[str, float]] = {}
    by_apd: dict[str, dict[str, float]] = {}
    for c, lo, hi in bands_of(quantiles):
        key = f"{c:g}"
        inside = (y >= p[..., lo]) & (y <= p[..., hi])
        a_lo, a_hi = apd(p[..., lo], dt, window), apd(p[..., hi], dt, window)
        lvl, ap = {}, {}
        prev = np.zeros(len(y))
        for j, x in enumerate(APD_LEVELS):
            cur = a_true[:, j]
            ok = np.isfinite(cur) & np.isfinite(prev)
            sel = ((t >= anchor + prev[:, None] / dt) & (t < anchor + cur[:, None] / dt)
                   & ok[:, None])
            lvl[f"APD{x}"] = float(inside[sel].mean()) if sel.any() else float("nan")
            prev = cur
            lo_x, hi_x = np.fmin(a_lo[:, j], a_hi[:, j]), np.fmax(a_lo[:, j], a_hi[:, j])
            d = np.isfinite(cur) & np.isfinite(lo_x) & np.isfinite(hi_x)
            ap[f"APD{x}"] = (float(((cur >= lo_x) & (cur <= hi_x))[d].mean()) if d.any()
                             else float("nan"))
        by_level[key], by_apd[key] = lvl, ap
    out["by_apd_level_samples"] = by_level
    out["apd_interval"] = by_apd
    return out
