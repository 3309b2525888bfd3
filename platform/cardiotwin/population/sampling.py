"""Multipliers of the 52 inferred parameters for synthetic cells.

Cell i's multipliers depend only on (seed, i): each cell draws from its own generator seeded by
``numpy.random.SeedSequence([seed, i])``, so any sharding of the cells gives the same values.
"""

from __future__ import annotations

import numpy as np

from ..model.parameters import N_INFERRED


def _check(n_cells: int, spread: float, seed: int, start: int) -> None:
    if int(n_cells) != n_cells or n_cells <= 0:
        raise ValueError(f"n_cells must be a positive integer, found {n_cells!r}")
    if not (0.0 < spread < 1.0):
        raise ValueError(f"range must be in (0, 1) (e.g. 0.4 for +-40%), found {spread!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, found {seed!r}")
    if int(start) != start or start < 0:
        raise ValueError(f"start must be a non-negative integer, found {start!r}")


def sample_multipliers(n_cells: int, spread: float = 0.4, seed: int = 0, start: int = 0
                       ) -> np.ndarray:
    """Uniform multipliers U(1 - spread, 1 + spread) for cells start .. start + n_cells - 1:
    (n_cells, 52) float64, columns in model.INFERRED_NAMES order."""
    _check(n_cells, spread, seed, start)
    out = np.empty((int(n_cells), N_INFERRED))
    for k in range(int(n_cells)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(start) + k]))
        out[k] = rng.uniform(1.0 - spread, 1.0 + spread, N_INFERRED)
    return out
