"""Phenotypes compared by the coverage check: cycle length (ms), APD90 (ms), MDP (mV), AP
amplitude (mV) and dV/dt max (V/s), of real AP recordings (measured here with
:func:`cardiotwin.features.analyze_trace`, the same code that classified the synthetic cells)
and of a population store (its biomarker columns of the same names).

Real recordings: CSV or CSV.gz traces (``time_s, voltage_mV`` or ``t_ms, v_mV``; an injected
current column, when present, marks a paced recording and keeps the stimulus artifact out of
dV/dt max). A directory stands for its ``*.csv`` and ``*.csv.gz`` files (not recursive,
sorted); there, a CSV without a time and a voltage column (e.g. a metadata table beside the
traces) is skipped and named, while an explicitly named file must be a trace. Any unreadable
trace is a ValueError naming the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

PHENOTYPE_KEYS = ("cycle_length_ms", "apd90_ms", "mdp_mV", "amplitude_mV", "dvdt_max_V_per_s")
PHENOTYPE_LABELS = {"cycle_length_ms": "cycle length (ms)", "apd90_ms": "APD90 (ms)",
                    "mdp_mV": "MDP (mV)", "amplitude_mV": "amplitude (mV)",
                    "dvdt_max_V_per_s": "dV/dt max (V/s)"}
TRACE_SUFFIXES = (".csv", ".csv.gz")


@dataclass
class RealPhenotype:
    """One real recording: ``name`` (file name without .csv/.csv.gz), ``path``, ``status``
    (features.STATUSES), ``beating`` (at least 2 APs), ``values`` (PHENOTYPE_KEYS -> value,
    NaN where undefined), ``paced`` (the injected current holds a stimulus: its cycle length
    is the pacing period) and ``reasons`` (the classifier's, with measured numbers)."""

    name: str
    path: str
    status: str
    beating: bool
    values: dict[str, float]
    paced: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        """Counted in the matched fraction: beating and free-running (spontaneous)."""
        return self.beating and not self.paced

    def vector(self) -> np.ndarray:
        """The values in PHENOTYPE_KEYS order, (5,) float64."""
        return np.array([self.values[k] for k in PHENOTYPE_KEYS], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "status": self.status,
                "beating": self.beating, "paced": self.paced, "counted": self.comparable,
                "values": {k: _num(v) for k, v in self.values.items()},
                "reasons": list(self.reasons)}


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def trace_name(path: str | os.PathLike) -> str:
    """The file name without ``.csv`` / ``.csv.gz``."""
    n = Path(path).name
    for s in (".csv.gz", ".csv"):
        if n.endswith(s):
            return n[: -len(s)]
    return n


@dataclass(frozen=True)
class TraceSelection:
    """The trace files chosen by :func:`select_trace_files`: ``files`` (explicit files first
    where given, each directory's files sorted) and ``from_directory`` (the files found in a
    directory: a non-trace CSV among them is skipped rather than refused)."""

    files: tuple[Path, ...]
    from_directory: frozenset[Path]


def select_trace_files(paths: Iterable[str | os.PathLike] | str | os.PathLike,
                       include: str | None = None) -> TraceSelection:
    """The CSV(.gz) files named by ``paths`` (files, or directories standing for their
    ``*.csv`` / ``*.csv.gz``), those whose file name matches the glob ``include`` when given
    (case-sensitive, e.g. ``"*pre-drug*"``). ValueError for a missing path, a file that is not
    .csv/.csv.gz, an empty directory or an empty selection."""
    given = ([Path(paths)] if isinstance(paths, (str, os.PathLike))
             else [Path(p) for p in paths])
    files: list[Path] = []
    from_dir: set[Path] = set()
    if not given:
        raise ValueError("no real recordings given (files or directories of CSV traces)")
    for p in given:
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.name.endswith(TRACE_SUFFIXES))
            if not found:
                raise ValueError(f"{p}: directory holds no .csv or .csv.gz files")
            files += found
            from_dir.update(found)
        elif p.is_file():
            if not p.name.endswith(TRACE_SUFFIXES):
                raise ValueError(f"{p}: not a trace file (a .csv or .csv.gz expected)")
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or directory")
    if include is not None:
        files = [f for f in files if fnmatchcase(f.name, include)]
        if not files:
            raise ValueError(f"no real recording in {', '.join(map(str, given))} matches "
                             f"--include {include!r}")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return TraceSelection(tuple(unique), frozenset(f for f in unique if f in from_dir))


def real_phenotype(path: str | os.PathLike) -> RealPhenotype:
    """The phenotype of one AP recording (module docstring); ValueError naming the file when it
    cannot be read or analysed."""
    from ..features import analyze_trace, load_trace_csv

    t, v, i = load_trace_csv(path, with_current=True)   # TraceCsvError names the file
    try:
        tf = analyze_trace(t, v, i_stim=i)
    except ValueError as e:
        raise ValueError(f"{path}: cannot analyse the trace: {e}") from None
    paced = False
    if i is not None:
        from ..features import DEFAULT_CONFIG

        dev = np.abs(i - np.median(i))
        paced = bool(dev.max() > DEFAULT_CONFIG.stim_min_pA_per_pF)
    return RealPhenotype(name=trace_name(path), path=str(path), status=tf.status,
                         beating=bool(tf.beating),
                         values={k: float(getattr(tf, k)) for k in PHENOTYPE_KEYS},
                         paced=paced, reasons=list(tf.reasons))


def _not_a_trace(e: ValueError) -> bool:
    return getattr(e, "field", None) == "columns"


def read_real_selection(selection: TraceSelection) -> tuple[list[RealPhenotype], list[str]]:
    """(phenotypes, skipped) of a :func:`select_trace_files` selection: ``skipped`` names the
    directory files that are not traces (no time or voltage column). ValueError when a trace
    cannot be read or no trace is left."""
    out: list[RealPhenotype] = []
    skipped: list[str] = []
    for f in selection.files:
        try:
            out.append(real_phenotype(f))
        except ValueError as e:
            if f in selection.from_directory and _not_a_trace(e):
                skipped.append(str(f))
                continue
            raise
    if not out:
        raise ValueError("no AP trace among the selected files (skipped, without a time and a "
                         f"voltage column: {', '.join(Path(s).name for s in skipped)})")
    return out, skipped


def read_real_phenotypes(paths: Iterable[str | os.PathLike] | str | os.PathLike,
                         include: str | None = None) -> list[RealPhenotype]:
    """The phenotypes of the AP recordings named by ``paths`` (CSV/CSV.gz files or
    directories of them, module docstring), optionally only the files matching the glob
    ``include``. ValueError naming the file for unreadable input; an empty selection is an
    error."""
    return read_real_selection(select_trace_files(paths, include))[0]


def real_matrix(cells: Sequence[RealPhenotype]) -> np.ndarray:
    """The cells' values, (k, 5) float64 in PHENOTYPE_KEYS order (NaN where undefined)."""
    if not cells:
        return np.empty((0, len(PHENOTYPE_KEYS)))
    return np.stack([c.vector() for c in cells])


def store_phenotypes(store: Any, statuses: Sequence[str] = ("ok",)
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(cell_ids (n,) int64, values (n, 5) float64 in PHENOTYPE_KEYS order) of the cells of a
    population store (a :class:`~cardiotwin.population.PopulationStore` or its directory)
    whose status is one of ``statuses``, in cell_id order. Reads only those columns."""
    import pyarrow.dataset as pads

    from ..features import STATUSES

    bad = [s for s in statuses if s not in STATUSES]
    if bad or not statuses:
        raise ValueError(f"statuses must be among {STATUSES}, found {list(statuses)}")
    if isinstance(store, (str, os.PathLike)):
        from ..population import open_store

        store = open_store(store)
    missing = [k for k in ("cell_id", *PHENOTYPE_KEYS) if k not in store.schema.names]
    if missing:
        raise ValueError(f"{store.path}: the store has no column {', '.join(missing)}")
    ids, cols = [], []
    for b in store.iter_batches(columns=["cell_id", *PHENOTYPE_KEYS], batch_size=65536,
                                filter=pads.field("status").isin(list(statuses))):
        ids.append(b.column("cell_id").to_numpy(zero_copy_only=False))
        cols.append(np.column_stack([b.column(k).to_numpy(zero_copy_only=False)
                                     .astype(np.float64) for k in PHENOTYPE_KEYS]))
    if not ids:
        return np.empty(0, dtype=np.int64), np.empty((0, len(PHENOTYPE_KEYS)))
    cell_ids = np.concatenate(ids).astype(np.int64)
    values = np.concatenate(cols)
    order = np.argsort(cell_ids, kind="stable")
    return cell_ids[order], values[order]
