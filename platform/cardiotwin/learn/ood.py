"""Out-of-distribution check of a normalized trace against the training population.

Two distances in the space of the network's normalized input x (d values), both from the
principal components that the network's whitening layer uses (k components, unit variance on
the training cells):

- ``t2`` (Hotelling): |whitened components|^2, how far the trace lies from the training
  population *inside* the subspace the population spans;
- ``q`` (squared prediction error): |x - its projection on the subspace|^2, how much of the
  trace the training population cannot express at all (another temperature, another protocol
  timing, an artefact).

Each is divided by its ``quantile`` (0.99) on the validation cells (with the training
recording noise added); ``score`` is the larger ratio and the recording is flagged when
score > 1. So about 1% of in-distribution recordings are flagged per distance by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OOD_QUANTILE = 0.99


@dataclass(frozen=True)
class OODDetector:
    """``basis`` (d, k) orthonormal principal directions, ``sd`` (k,) their SDs, ``mean`` (d,);
    thresholds of t2 and q (module docstring)."""

    basis: np.ndarray
    sd: np.ndarray
    mean: np.ndarray
    t2_threshold: float = np.inf
    q_threshold: float = np.inf
    quantile: float = OOD_QUANTILE

    @classmethod
    def from_whitening(cls, w: np.ndarray, sd: np.ndarray) -> OODDetector:
        """From the whitening weights ``w = basis / sd`` of inputs standardized on the
        training cells (their mean is 0)."""
        basis = np.asarray(w, np.float64) * np.asarray(sd, np.float64)
        return cls(basis, np.asarray(sd, np.float64), np.zeros(len(basis)))

    def distances(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(t2, q) per row of normalized traces ``x`` (n, d)."""
        xc = np.atleast_2d(np.asarray(x, np.float64)) - self.mean
        comp = xc @ self.basis
        t2 = np.sum((comp / self.sd) ** 2, axis=1)
        q = np.sum(xc ** 2, axis=1) - np.sum(comp ** 2, axis=1)
        return t2, np.maximum(q, 0.0)

    def calibrated(self, x_val: np.ndarray, quantile: float = OOD_QUANTILE) -> OODDetector:
        """The same detector with thresholds at ``quantile`` of the validation traces."""
        t2, q = self.distances(x_val)
        return OODDetector(self.basis, self.sd, self.mean, float(np.quantile(t2, quantile)),
                           float(np.quantile(q, quantile)), quantile)

    def score(self, x: np.ndarray) -> list[dict[str, Any]]:
        """Per trace: {flag, score, threshold (1.0), t2, q, reason}."""
        t2, q = self.distances(x)
        out = []
        for a, b in zip(t2 / self.t2_threshold, q / self.q_threshold, strict=True):
            s = float(max(a, b))
            if s <= 1.0:
                reason = "within the training population"
            elif b >= a:
                reason = (f"the trace has a shape the training population cannot express "
                          f"(residual {b:.1f}x the {self.quantile:.0%} quantile of validation "
                          "cells): another temperature, protocol timing or artefact?")
            else:
                reason = (f"the trace lies far from the training population "
                          f"({a:.1f}x the {self.quantile:.0%} quantile of validation cells): "
                          "parameters outside the sampling range?")
            out.append({"flag": bool(s > 1.0), "score": s, "threshold": 1.0,
                        "t2_ratio": float(a), "q_ratio": float(b), "reason": reason})
        return out

    def to_json(self) -> dict[str, Any]:
        """The thresholds (the basis lives in the network's whitening layer)."""
        return {"what": "t2 and q of the normalized trace against the whitening layer's "
                        "principal components; flagged when either exceeds its threshold",
                "quantile": self.quantile, "t2_threshold": self.t2_threshold,
                "q_threshold": self.q_threshold, "sd": self.sd.tolist()}
