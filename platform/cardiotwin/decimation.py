"""Decimation of sampled traces (I_total stored at a lower rate than simulated)."""

from __future__ import annotations

import numpy as np

METHODS = ("mean", "take")


def decimate(x: np.ndarray, k: int, method: str = "mean") -> np.ndarray:
    """(n, n_samples) -> (n, ceil(n_samples / k)) float32: block means of k samples (the last
    block may be shorter) or every k-th sample (samples 0, k, 2k, ...). ``k == 1`` returns
    ``x`` unchanged."""
    if k == 1:
        return x
    n, ns = x.shape
    if method == "take":
        return np.ascontiguousarray(x[:, ::k])
    if method != "mean":
        raise ValueError(f"unknown decimation {method!r}; expected mean or take")
    full = ns // k
    out = np.empty((n, -(-ns // k)), np.float32)
    out[:, :full] = x[:, :full * k].reshape(n, full, k).mean(axis=2, dtype=np.float64)
    if out.shape[1] > full:
        out[:, full] = x[:, full * k:].mean(axis=1, dtype=np.float64)
    return out
