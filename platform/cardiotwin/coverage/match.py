"""When does a synthetic population contain a real cell? A real cell is matched when some
synthetic cell lies within ``cl_rel`` of its cycle length AND ``apd90_rel`` of its APD90 AND
``mdp_abs_mV`` of its MDP (issue 18's criterion, defaults 10%, 10%, 3 mV).

Scaled distance of synthetic cell j from real cell r: the largest of |CL_j - CL_r| /
(cl_rel CL_r), |APD90_j - APD90_r| / (apd90_rel APD90_r) and |MDP_j - MDP_r| / mdp_abs_mV;
r is matched iff its nearest synthetic cell (smallest scaled distance) is at <= 1. A cell
with an undefined (NaN) value in one of the three is never the nearest (and a real cell with
one is never matched). Amplitude and dV/dt max are reported, not matched on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .phenotypes import PHENOTYPE_KEYS

MATCH_KEYS = ("cycle_length_ms", "apd90_ms", "mdp_mV")
_COLS = tuple(PHENOTYPE_KEYS.index(k) for k in MATCH_KEYS)
#: float64 elements of one (real cells x synthetic chunk) block (~32 MB with its temporaries)
BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class MatchCriterion:
    """Tolerances: ``cl_rel`` and ``apd90_rel`` relative to the real cell's value (0.10 =
    10%), ``mdp_abs_mV`` absolute (mV); each > 0."""

    cl_rel: float = 0.10
    apd90_rel: float = 0.10
    mdp_abs_mV: float = 3.0

    def __post_init__(self) -> None:
        for name in ("cl_rel", "apd90_rel", "mdp_abs_mV"):
            x = getattr(self, name)
            if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
                raise ValueError(f"match criterion: {name} must be a finite number > 0, "
                                 f"found {x!r}")

    def describe(self) -> str:
        """The criterion in words, one line."""
        return (f"a real cell is matched when some synthetic cell lies within "
                f"{100 * self.cl_rel:g}% of its cycle length, {100 * self.apd90_rel:g}% of its "
                f"APD90 and {self.mdp_abs_mV:g} mV of its MDP")

    def to_dict(self) -> dict[str, float | str]:
        return {"cl_rel": self.cl_rel, "apd90_rel": self.apd90_rel,
                "mdp_abs_mV": self.mdp_abs_mV, "text": self.describe()}

    def nearest(self, real_values, synth_values, *, chunk_size: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(nearest (k,) int64, distance (k,) float64): for each real cell the index of the
        synthetic cell at the smallest scaled distance (module docstring) and that distance;
        -1 and inf when there is none (no synthetic cell, or an undefined real value).
        ``chunk_size``: synthetic cells per block (default: blocks of about
        :data:`BLOCK_ELEMENTS` distances); the answer does not depend on it."""
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, found {chunk_size}")
        real, synth = _as_values(real_values, "real"), _as_values(synth_values, "synthetic")
        k, n = real.shape[0], synth.shape[0]
        best = np.full(k, np.inf)
        idx = np.full(k, -1, dtype=np.int64)
        if k == 0 or n == 0:
            return idx, best
        r = real[:, _COLS]                                   # (k, 3)
        inv = self._inverse_tolerances(r)
        ok_real = np.all(np.isfinite(r), axis=1) & np.all(np.isfinite(inv), axis=1)
        if not ok_real.any():
            return idx, best
        rr, ii = r[ok_real], inv[ok_real]
        s = synth[:, _COLS]
        step = chunk_size or max(1, BLOCK_ELEMENTS // rr.shape[0])
        b_best = np.full(rr.shape[0], np.inf)
        b_idx = np.full(rr.shape[0], -1, dtype=np.int64)
        for lo in range(0, n, step):
            d = _scaled_distances(rr, ii, s[lo:lo + step])
            j = np.argmin(d, axis=1)
            dj = d[np.arange(d.shape[0]), j]
            better = dj < b_best
            b_best[better] = dj[better]
            b_idx[better] = lo + j[better]
        b_idx[~np.isfinite(b_best)] = -1
        best[ok_real], idx[ok_real] = b_best, b_idx
        return idx, best

    def _inverse_tolerances(self, r: np.ndarray) -> np.ndarray:
        """1 / tolerance per (reference cell, matched key): (k, 3); NaN for NaN values."""
        scale = r * np.array([self.cl_rel, self.apd90_rel, 1.0])
        scale[:, 2] = self.mdp_abs_mV
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 / np.abs(scale)

    def near_any(self, references, cells) -> np.ndarray:
        """(m,) bool: which ``cells`` ((m, 3): CL ms, APD90 ms, MDP mV) lie within the
        tolerances of at least one of ``references`` ((k, 3), the tolerances relative to the
        reference's values, as a real cell's in :meth:`nearest`); NaN values never match.
        Population calibration keeps its cells by this."""
        r = np.asarray(references, np.float64).reshape(-1, 3)
        c = np.asarray(cells, np.float64).reshape(-1, 3)
        inv = self._inverse_tolerances(r)
        ok = np.all(np.isfinite(r), axis=1) & np.all(np.isfinite(inv), axis=1)
        out = np.zeros(c.shape[0], bool)
        step = max(1, BLOCK_ELEMENTS // max(int(ok.sum()), 1))
        for lo in range(0, c.shape[0], step):
            out[lo:lo + step] = (_scaled_distances(r[ok], inv[ok], c[lo:lo + step]) <= 1.0
                                 ).any(axis=0)
        return out

    def match(self, real_values, synth_values, *, chunk_size: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(matched (k,) bool, nearest (k,) int64): whether each real cell (rows of
        ``real_values``, (k, 5) in PHENOTYPE_KEYS order) is matched by some synthetic cell
        (rows of ``synth_values``, (n, 5)), and the index of its nearest synthetic cell in the
        scaled distance (-1 when none), see :meth:`nearest`."""
        idx, dist = self.nearest(real_values, synth_values, chunk_size=chunk_size)
        return dist <= 1.0, idx


def _scaled_distances(ref: np.ndarray, inv: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(k, m) scaled distances (module docstring) of ``cells`` (m, 3) from ``ref`` (k, 3) with
    inverse tolerances ``inv`` (k, 3); inf where a cell value is undefined."""
    blk = np.where(np.isfinite(cells), cells, np.nan)
    d = np.abs(blk[None, :, 0] - ref[:, None, 0]) * inv[:, None, 0]
    for c in (1, 2):
        np.maximum(d, np.abs(blk[None, :, c] - ref[:, None, c]) * inv[:, None, c], out=d)
    # NaN (an undefined cell value) never wins: np.maximum propagates it
    d[np.isnan(d)] = np.inf
    return d


def _as_values(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.size == len(PHENOTYPE_KEYS):
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != len(PHENOTYPE_KEYS):
        raise ValueError(f"{what} values: expected an (n, {len(PHENOTYPE_KEYS)}) array "
                         f"({', '.join(PHENOTYPE_KEYS)}), found shape {a.shape}")
    return a
