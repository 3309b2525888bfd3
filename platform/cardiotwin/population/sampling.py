"""Multipliers of the 52 inferred parameters for synthetic cells: the sampling designs.

The designs draw points of the unit cube; the prior (population/prior.py) maps them to
multipliers (default: uniform +-spread). uniform: cell i's point depends only on (seed, i):
each cell draws from its own generator seeded by ``numpy.random.SeedSequence([seed, i])``, so
any sharding of the cells gives the same values. sobol: point i of a scrambled Sobol'
sequence (seed, i). lhs: row i of a Latin hypercube of the whole population (seed, n_cells,
i). scipy is imported only for the QMC designs.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..model.parameters import N_INFERRED
from .prior import Prior


def _check(n_cells: int, spread: float, seed: int, start: int) -> None:
    if int(n_cells) != n_cells or n_cells <= 0:
        raise ValueError(f"n_cells must be a positive integer, found {n_cells!r}")
    if not (0.0 < spread < 1.0):
        raise ValueError(f"range must be in (0, 1) (e.g. 0.4 for +-40%), found {spread!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, found {seed!r}")
    if int(start) != start or start < 0:
        raise ValueError(f"start must be a non-negative integer, found {start!r}")


def _prior(spread: float, prior: Prior | None) -> Prior:
    return Prior(spread=spread) if prior is None else prior


def sample_multipliers(n_cells: int, spread: float = 0.4, seed: int = 0, start: int = 0,
                       prior: Prior | None = None) -> np.ndarray:
    """Multipliers of cells start .. start + n_cells - 1, cell i from its own generator
    (seed, i): (n_cells, 52) float64, columns in model.INFERRED_NAMES order. Default prior:
    uniform U(1 - spread, 1 + spread) (``prior`` replaces it, its own spread included)."""
    p = _prior(spread, prior)
    _check(n_cells, p.spread, seed, start)
    u = np.empty((int(n_cells), N_INFERRED))
    for k in range(int(n_cells)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(start) + k]))
        u[k] = rng.random(N_INFERRED)
    return p.from_unit(u)


# ---- quasi-Monte Carlo designs (scipy.stats.qmc) ----------------------------------------------

def _qmc_engine(cls, seed: int, **kw):
    try:
        return cls(N_INFERRED, rng=np.random.default_rng(seed), **kw)
    except TypeError:  # scipy < 1.15
        return cls(N_INFERRED, seed=np.random.default_rng(seed), **kw)


def _to_multipliers(u: np.ndarray, prior: Prior) -> np.ndarray:
    return prior.from_unit(u).astype(np.float32)


def lhs_design(n_cells: int, spread: float, seed: int, prior: Prior | None = None
               ) -> np.ndarray:
    """The whole Latin hypercube design (n_cells, 52) float32 multipliers (scipy.stats.qmc,
    randomized within strata, generator seeded with ``seed``). Memory: 208 bytes per cell kept
    (230 MB for 1.1M cells), ~3x that transiently in float64 while generating (~6 s for 1.1M)."""
    from scipy.stats import qmc

    return _to_multipliers(_qmc_engine(qmc.LatinHypercube, seed).random(int(n_cells)),
                           _prior(spread, prior))


def sobol_block(spread: float, seed: int, start: int, n: int, prior: Prior | None = None
                ) -> np.ndarray:
    """Points start .. start + n - 1 of the scrambled Sobol' sequence (scrambling seeded with
    ``seed``) as (n, 52) float32 multipliers, without generating the points before ``start``
    (``fast_forward``): cell i depends only on (seed, i). Balance properties hold for the whole
    population best when n_cells is a power of 2."""
    from scipy.stats import qmc

    eng = _qmc_engine(qmc.Sobol, seed, scramble=True)
    if start:
        eng.fast_forward(int(start))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "balance properties ... power of 2"
        return _to_multipliers(eng.random(int(n)), _prior(spread, prior))


def sample_population(sampler: str, n_cells: int, spread: float = 0.4, seed: int = 0,
                      start: int = 0, n: int | None = None, design: np.ndarray | None = None,
                      prior: Prior | None = None) -> np.ndarray:
    """Multipliers of cells start .. start + n - 1 of a population of ``n_cells`` as (n, 52)
    float32 (the values the simulation uses). ``sampler``: "uniform" (iid
    U(1 - spread, 1 + spread) per cell, cell i from (seed, i)), "lhs" (Latin hypercube of the
    whole population: generated whole and sliced, or sliced from ``design``) or "sobol"
    (scrambled Sobol' points, cell i from (seed, i)). ``prior`` (population.prior) maps the
    sampler's unit-cube points to multipliers (default: uniform +-spread)."""
    n = n_cells - start if n is None else n
    if not (start >= 0 and n > 0 and start + n <= n_cells):
        raise ValueError(f"cells [{start}, {start + n}) are outside the population of "
                         f"{n_cells}")
    if sampler == "uniform":
        return sample_multipliers(n, spread, seed, start, prior).astype(np.float32)
    if sampler == "sobol":
        return sobol_block(spread, seed, start, n, prior)
    if sampler == "lhs":
        d = lhs_design(n_cells, spread, seed, prior) if design is None else design
        return np.array(d[start:start + n], dtype=np.float32)
    raise ValueError(f"unknown sampler {sampler!r}; expected uniform, lhs or sobol")
