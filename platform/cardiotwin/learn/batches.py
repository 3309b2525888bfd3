"""Training batches of the flow: projected features with fresh recording noise per batch.

White noise of SD sigma_i on the normalized input x_i becomes Gaussian noise with covariance
W^T diag(sigma^2) W on the projected features f = x @ W + b (the flow's fixed linear front);
sampling it there, through that covariance's Cholesky factor, is exact and costs m^2 per cell
(m = 52 + k features) instead of d * m.
"""

from __future__ import annotations

import keras
import numpy as np


def projected_noise_factor(w: np.ndarray, noise_sd: np.ndarray | None) -> np.ndarray | None:
    """Cholesky factor L (m, m) with L @ L.T = W^T diag(noise_sd^2) W; None without noise."""
    if noise_sd is None:
        return None
    w = np.asarray(w, np.float64)
    cov = w.T @ (w * np.asarray(noise_sd, np.float64)[:, None] ** 2)
    jitter = 1e-9 * max(float(np.trace(cov)) / len(cov), 1e-30)
    return np.linalg.cholesky(cov + jitter * np.eye(len(cov))).astype(np.float32)


def add_noise(f: np.ndarray, factor: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """``f`` (n, m) plus one draw of the projected noise (unchanged when ``factor`` is None)."""
    if factor is None:
        return f
    return (f + rng.standard_normal(f.shape, np.float32) @ factor.T).astype(np.float32)


class NoisyBatches(keras.utils.PyDataset):
    """Shuffled batches ``((features + noise, theta), 0)`` for a log-density model."""

    def __init__(self, features: np.ndarray, theta: np.ndarray, batch_size: int,
                 noise_factor: np.ndarray | None, seed: int):
        super().__init__()
        self.features, self.theta = features, theta
        self.batch_size = int(batch_size)
        self.noise_factor = noise_factor
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(features))

    def __len__(self) -> int:
        return -(-len(self.features) // self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        f = add_noise(self.features[idx], self.noise_factor, self.rng)
        return (f, self.theta[idx]), np.zeros(len(idx), np.float32)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.features))
