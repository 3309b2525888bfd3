"""Files of a drug screen: the result object, atomic writes, and reading a finished screen.

A screen directory holds ``results.parquet`` (one row per cell and concentration),
``cells.parquet`` (cell_id, 52 multipliers), ``traces.parquet`` (the kept traces),
``summary.json`` (written last: its presence marks a finished screen) and the PNG figures
(see :mod:`cardiotwin.drugs.screen`). Every file is written atomically
(:func:`cardiotwin.storage.atomic.atomic_path`); summary.json records the SHA-256 of each
Parquet file (``sha256``), checked by :func:`load_screen`, and the code version: a finished
screen of the same settings is reused only when this code wrote it (another version is
refused unless overwritten, see :func:`claim_screen_dir`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.versions import code_version
from ..storage.atomic import atomic_path
from ..storage.identity import sha256_file
from ..storage.outdir import claim_output_dir, read_json_file
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
#: charge columns of screens with net_charge (pA/pF ms per 1000 ms; drugs.task.charge_columns)
CHARGE_KEYS = ("q_IKr", "q_ICaL", "q_INaL", "q_IKs", "q_IK1", "q_Ito", "qnet")


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

def _own(name: str) -> bool:
    return name in _OWN


def claim_screen_dir(out: Path, chash: str, identity: dict[str, Any],
                     overwrite: bool) -> dict[str, Any] | None:
    """The summary of a finished screen with this hash in ``out`` (to reuse), else None (new,
    empty, or ``overwrite``); creates ``out``. ValueError (one line) when ``out`` holds
    another screen (unless ``overwrite``), a screen of the same settings written by another
    code version (unless ``overwrite``: its results may differ), or foreign files."""
    prev = claim_output_dir(out, marker=SUMMARY, fmt=FORMAT, config_hash=chash,
                            identity=identity, own=_own, what="drug screen",
                            overwrite=overwrite,
                            hint="use a new --out, or --overwrite (overwrite=True) to replace "
                                 "it")
    if prev is None or overwrite:
        return None
    if prev.get("code_version") != code_version():
        raise ValueError(f"{out} holds this screen written by cardiotwin "
                         f"{prev.get('code_version')!s}, not by this code ({code_version()}): "
                         "its results may differ; use --overwrite (overwrite=True) to "
                         "recompute it, or a new output directory")
    return prev


def write_parquet(table, path: Path) -> str:
    """Write ``table`` (zstd) atomically to ``path``; its SHA-256 (hex)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return sha256_file(path)


def make_tables(columns: dict[str, np.ndarray], cell_ids: np.ndarray, multipliers: np.ndarray,
            traces: list[dict[str, Any]]):
    import pyarrow as pa

    from ..model.parameters import N_INFERRED

    order = ["cell_id", "concentration_nM", *STR_KEYS, *BOOL_KEYS, "arrested", *INT_KEYS,
             *FLOAT_KEYS, *(k for k in CHARGE_KEYS if k in columns)]
    floats = (*FLOAT_KEYS, *CHARGE_KEYS)
    results = pa.table({k: (pa.array(columns[k].astype(np.float32)) if k in floats
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


def _read_table(out: Path, name: str, digests: dict[str, str] | None):
    """The Parquet file ``out/name``, checked against its recorded SHA-256 (``digests``; None:
    a screen written before checksums were recorded). ValueError naming the file when it is
    missing, damaged or unreadable."""
    import pyarrow.parquet as pq

    path = out / name
    if not path.is_file():
        raise ValueError(f"{path}: missing from the finished screen {out}; recompute it "
                         "(--overwrite)")
    if digests is not None:
        want = digests.get(name)
        if want is None:
            raise ValueError(f"{out / SUMMARY}: no SHA-256 recorded for {name}")
        found = sha256_file(path)
        if found != want:
            raise ValueError(f"{path} is damaged: SHA-256 {found[:12]}, recorded "
                             f"{want[:12]}; recompute the screen (--overwrite)")
    try:
        return pq.read_table(path)
    except (OSError, ValueError) as e:          # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path}: cannot read it ({e}); recompute the screen "
                         "(--overwrite)") from None


def load_screen(out_dir: str | os.PathLike) -> ScreenResult:
    """Open a finished screen directory; ValueError when it is not one, or when a results file
    is missing or does not match the SHA-256 recorded in summary.json (named)."""
    out = Path(out_dir)
    if not (out / SUMMARY).is_file():
        raise ValueError(f"{out} is not a finished drug screen: no {SUMMARY}")
    summary = read_json_file(out / SUMMARY, "drug screen summary")
    if summary.get("format") != FORMAT:
        raise ValueError(f"{out / SUMMARY} is not a drug screen summary (format "
                         f"{summary.get('format')!r}, expected {FORMAT!r})")
    digests = summary.get("sha256")
    if digests is not None and not isinstance(digests, dict):
        raise ValueError(f"{out / SUMMARY}: sha256 must be an object of file name -> digest")
    tables = {k: _read_table(out, FILES[k], digests) for k in ("results", "cells", "traces")}
    figs = {k: out / v for k, v in FIGURES.items() if (out / v).is_file()}
    return ScreenResult(summary, tables["results"], tables["cells"],
                        tables["traces"].to_pylist(), out, figs)
