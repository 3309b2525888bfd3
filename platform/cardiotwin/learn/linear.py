"""Closed-form pieces of the ``ridge_mlp`` network: ridge regression (its linear part) and
PCA whitening (the input of its nonlinear part), both from the eigendecomposition of the
training inputs' covariance (d x d, whatever the number of cells)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE_LAMBDAS = tuple(10.0 ** np.arange(-7, 3.5, 0.5))  # relative to the mean eigenvalue


@dataclass(frozen=True)
class Covariance:
    """Eigendecomposition of the centred training inputs: ``X - mean = ...``; eigenvalues
    ``evals`` (descending) of ``Xc.T @ Xc / n`` and eigenvectors ``evecs`` (columns)."""

    mean: np.ndarray
    evals: np.ndarray
    evecs: np.ndarray
    n: int

    @classmethod
    def fit(cls, x: np.ndarray, noise_sd: np.ndarray | None = None) -> Covariance:
        """``noise_sd``: SD of independent noise per input to expect on real inputs; its
        variance is added to the diagonal (ridge on noisy inputs, in expectation)."""
        x = np.asarray(x, np.float64)
        mean = x.mean(axis=0)
        xc = x - mean
        c = xc.T @ xc / len(x)
        if noise_sd is not None:
            c[np.diag_indices_from(c)] += np.asarray(noise_sd, np.float64) ** 2
        e, v = np.linalg.eigh(c)
        order = np.argsort(e)[::-1]
        return cls(mean, np.maximum(e[order], 0.0), v[:, order], len(x))


def _ridge_path(cov: Covariance, x: np.ndarray, y: np.ndarray, lambdas):
    """Ridge solutions ``y ~ x @ W + b`` (penalty ``lam * n`` on |W|^2) for each lambda."""
    xc = np.asarray(x, np.float64) - cov.mean
    ym = y.mean(axis=0)
    proj = cov.evecs.T @ (xc.T @ (y - ym)) / len(x)          # (d, p) in the eigenbasis
    for lam in lambdas:
        w = cov.evecs @ (proj / (cov.evals + lam)[:, None])
        yield lam, w, ym - cov.mean @ w


def fit_ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              cov: Covariance | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge regression with the penalty chosen on the validation split from
    :data:`RIDGE_LAMBDAS` x the mean eigenvalue (``cov`` may carry the expected input noise).
    Returns (W (d, p), b (p,), lambda)."""
    cov = cov or Covariance.fit(x)
    scale = float(np.mean(cov.evals)) or 1.0
    best = None
    for lam, w, b in _ridge_path(cov, x, y, [rel * scale for rel in RIDGE_LAMBDAS]):
        mse = float(np.mean((x_val @ w + b - y_val) ** 2))
        if best is None or mse < best[0]:
            best = (mse, w, b, lam)
    return best[1], best[2], best[3]


def whitening(cov: Covariance, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA whitening to the top ``k`` components: z = x @ W + b has unit variance per
    component on the training data. Returns (W (d, k), b (k,), the components' SDs (k,))."""
    k = int(min(k, len(cov.evals)))
    sd = np.sqrt(np.maximum(cov.evals[:k], 1e-12 * max(cov.evals[0], 1e-30)))
    w = cov.evecs[:, :k] / sd
    return w, -cov.mean @ w, sd


def out_of_fold_ridge(x: np.ndarray, y: np.ndarray, lam: float,
                      noise_sd: np.ndarray | None = None, folds: int = 5,
                      seed: int = 0) -> np.ndarray:
    """Ridge predictions (n, p) of each training row from a ridge fitted (penalty ``lam``)
    on the other folds: estimates whose errors look like those on unseen cells. A model fed
    in-sample ridge estimates learns to trust them more than it should (stacking)."""
    from scipy.linalg import solve

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    fold = np.random.default_rng(seed).permutation(len(x)) % max(2, int(folds))
    out = np.empty((len(x), y.shape[1]), np.float64)
    noise_var = 0.0 if noise_sd is None else np.asarray(noise_sd, np.float64) ** 2
    for k in np.unique(fold):           # one Cholesky solve per fold (no eigendecomposition)
        fit, held = fold != k, fold == k
        mx, my = x[fit].mean(axis=0), y[fit].mean(axis=0)
        xc = x[fit] - mx
        a = xc.T @ xc / len(xc)
        a[np.diag_indices_from(a)] += noise_var + lam
        w = solve(a, xc.T @ (y[fit] - my) / len(xc), assume_a="pos")
        out[held] = (x[held] - mx) @ w + my
    return out.astype(np.float32)
