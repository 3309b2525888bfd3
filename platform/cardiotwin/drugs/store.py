"""Files of a drug screen: the result object, atomic writes, and reading a finished screen.

A screen directory holds ``results.parquet`` (one row per cell and concentration),
``cells.parquet`` (cell_id, 52 multipliers), ``traces.parquet`` (the kept traces),
``summary.json`` (written last: its presence marks a finished screen) and the PNG figures
(see :mod:`cardiotwin.drugs.screen`). Every file is written to a temporary name, fsynced and
renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import FLOAT_KEYS, INT_KEYS
from .config import FORMAT

SUMMARY = "summary.json"
FILES = {"results": "results.parquet", "cells": "cells.parquet", "traces": "traces.parquet",
         "summary": SUMMARY}
FIGURES = {"dose_response": "dose_response.png", "apd90_violins": "apd90_violins.png",
           "ap_traces": "ap_traces.png"}
_OWN = set(FILES.values()) | set(FIGURES.values())
STR_KEYS = ("status", "outcome", "reason")
BOOL_KEYS = ("ead",)


@dataclass
class ScreenResult:
    """A finished screen: ``summary`` (as summary.json), ``results`` (pyarrow Table, one row
    per cell and concentration), ``cells`` (cell_id, multipliers), ``traces`` (kept traces as
    dicts), ``out_dir`` and the figure paths (None / empty when nothing was written)."""

    summary: dict[str, Any]
    results: Any
    cells: Any
    traces: list[dict[str, Any]]
    out_dir: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def per_concentration(self) -> list[dict[str, Any]]:
        return self.summary["concentrations"]

    def column(self, name: str) -> np.ndarray:
        """One results column as a numpy array."""
        return self.results.column(name).to_numpy(zero_copy_only=False)


# ---- writing --------------------------------------------------------------------------------

def check_out_dir(out: Path, chash: str, overwrite: bool) -> dict[str, Any] | None:
    """The summary of a finished screen with this hash in ``out`` (to reuse), else None;
    ValueError when ``out`` holds another screen (unless overwrite) or foreign files."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    if (out / SUMMARY).is_file():
        try:
            prev = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {out / SUMMARY}: {e}") from e
        if prev.get("format") != FORMAT:
            raise ValueError(f"{out} holds a {SUMMARY} that is not a drug screen's")
        if prev.get("config_hash") == chash and not overwrite:
            return prev
        if prev.get("config_hash") != chash and not overwrite:
            raise ValueError(f"{out} holds another screen (config hash "
                             f"{prev.get('config_hash', '?')[:12]}, this one {chash[:12]}); use "
                             "a new output directory or overwrite=True (--overwrite)")
        return None
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in _OWN and not p.name.endswith(".tmp"))
    if foreign:
        raise ValueError(f"output directory {out} is not empty and holds no {SUMMARY} (found "
                         f"{', '.join(foreign[:5])}); use a new or empty directory")
    return None


def _replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    _replace(tmp, path)


def make_tables(columns: dict[str, np.ndarray], cell_ids: np.ndarray, multipliers: np.ndarray,
            traces: list[dict[str, Any]]):
    import pyarrow as pa

    from ..model.parameters import N_INFERRED

    order = ["cell_id", "concentration_nM", *STR_KEYS, *BOOL_KEYS, "arrested", *INT_KEYS,
             *FLOAT_KEYS]
    results = pa.table({k: (pa.array(columns[k].astype(np.float32)) if k in FLOAT_KEYS
                            else pa.array(columns[k].tolist() if k in STR_KEYS
                                          else columns[k]))
                        for k in order})
    m = np.ascontiguousarray(multipliers, dtype=np.float32).reshape(-1)
    cells = pa.table({"cell_id": pa.array(cell_ids.astype(np.int64)),
                      "multipliers": pa.FixedSizeListArray.from_arrays(pa.array(m),
                                                                       N_INFERRED)})
    tr = pa.table({
        "concentration_nM": pa.array([t["concentration_nM"] for t in traces], pa.float64()),
        "cell_id": pa.array([t["cell_id"] for t in traces], pa.int64()),
        "outcome": pa.array([t["outcome"] for t in traces], pa.string()),
        "dt_ms": pa.array([t["dt_ms"] for t in traces], pa.float64()),
        "v_mV": pa.array([np.asarray(t["v_mV"], np.float32) for t in traces],
                         pa.list_(pa.float32())),
        "ead_start_ms": pa.array([t["ead_start_ms"] for t in traces], pa.list_(pa.float64())),
        "ead_end_ms": pa.array([t["ead_end_ms"] for t in traces], pa.list_(pa.float64()))})
    return results, cells, tr


def load_screen(out_dir: str | os.PathLike) -> ScreenResult:
    """Open a finished screen directory (ValueError when it is not one)."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    try:
        summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{out} is not a finished drug screen: no {SUMMARY}") from None
    if summary.get("format") != FORMAT:
        raise ValueError(f"{out / SUMMARY} is not a drug screen summary")
    tr = pq.read_table(out / FILES["traces"]).to_pylist()
    figs = {k: out / v for k, v in FIGURES.items() if (out / v).is_file()}
    return ScreenResult(summary, pq.read_table(out / FILES["results"]),
                        pq.read_table(out / FILES["cells"]), tr, out, figs)
