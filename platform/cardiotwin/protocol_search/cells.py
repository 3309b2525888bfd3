"""The search population: the same synthetic cells (same seed) for every candidate and cycle.

Cell ids are 0 .. n_cells - 1; multipliers come from
:func:`cardiotwin.population.sample_population` (float32, the values simulated); each cell's
split (70:10:20) is :func:`cardiotwin.learn.dataset.split_of` of its id. ``eligible`` marks the
cells allowed into training: every cell when ``statuses`` is None, else those whose
free-running AP run (``ap_duration_ms`` from the model's initial state) has one of those
statuses. Cells that become numerically unstable under the voltage clamp are dropped later,
per protocol (see :mod:`.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage.atomic import atomic_path
from .config import SearchConfig


@dataclass(frozen=True)
class SearchCells:
    """cell_ids (n,) int64, multipliers (n, 52) float32, eligible (n,) bool, statuses (n,) str
    or None (not classified)."""

    cell_ids: np.ndarray
    multipliers: np.ndarray
    eligible: np.ndarray
    statuses: np.ndarray | None

    @property
    def n(self) -> int:
        return len(self.cell_ids)

    def inputs(self) -> np.ndarray:
        """Model inputs (n, 87) float64 of the multipliers."""
        from ..model import inputs_from_multipliers

        return inputs_from_multipliers(self.multipliers.astype(np.float64))

    def save(self, path: Path) -> None:
        """Write the population to ``path`` (.npz) atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cell_ids=self.cell_ids, multipliers=self.multipliers,
                     eligible=self.eligible,
                     statuses=self.statuses if self.statuses is not None
                     else np.array([], str))

    @classmethod
    def load(cls, path: Path) -> SearchCells:
        with np.load(path) as z:
            st = z["statuses"]
            return cls(z["cell_ids"], z["multipliers"], z["eligible"],
                       st if len(st) else None)


def classify(inputs: np.ndarray, ap_duration_ms: float, temperature_K: float) -> np.ndarray:
    """AP status of each cell (ok / quiescent / non_repolarizing / unstable) from a
    free-running run of ``ap_duration_ms`` (ms) recorded every 0.1 ms."""
    from ..features import classify_batch
    from ..population.config import AP_RECORD_INTERVAL_MS
    from ..simulate import simulate_current_clamp

    cc = simulate_current_clamp(ap_duration_ms, inputs, temperature_K=temperature_K,
                                record_interval_ms=AP_RECORD_INTERVAL_MS)
    statuses, _ = classify_batch(cc.t_ms, cc.v_mV)
    return np.where(cc.unstable, "unstable", statuses)


def build_cells(config: SearchConfig, *, n_cells: int | None = None,
                seed: int | None = None) -> SearchCells:
    """The population of ``config`` (or of another ``n_cells`` / ``seed``, e.g. a fresh
    population for the comparison)."""
    from ..population import sample_population

    n = config.n_cells if n_cells is None else int(n_cells)
    s = config.seed if seed is None else int(seed)
    m = sample_population(config.sampler, n, config.spread, s)
    ids = np.arange(n, dtype=np.int64)
    if config.statuses is None:
        return SearchCells(ids, m, np.ones(n, bool), None)
    cells = SearchCells(ids, m, np.ones(n, bool), None)
    st = classify(cells.inputs(), config.ap_duration_ms, config.temperature_K)
    return SearchCells(ids, m, np.isin(st, config.statuses), st)
