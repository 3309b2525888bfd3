"""The population store: a directory of Parquet shards and ``manifest.json``.

Layout::

    OUT/manifest.json             the dataset description (see below), written atomically
    OUT/shard-000000.parquet      cells [0, shard_size), one row per kept cell
    OUT/shard-000000.json         the shard's summary (sidecar), written after the shard
    ...

A row: ``cell_id`` int64, ``multipliers`` fixed_size_list<float32>[52] (model.INFERRED_NAMES
order; the simulation used exactly these float32 values), ``status`` string (ok / quiescent /
non_repolarizing / unstable), the AP biomarkers of ``features.BATCH_KEYS`` (float32; ``n_beats``
and ``n_eads`` int32, ``beating`` bool; NaN where undefined), ``I_total``
fixed_size_list<float32>[n_samples] in pA/pF. Parquet with zstd compression and the
BYTE_STREAM_SPLIT encoding for the float columns (half the size of plain zstd on I_total;
readable by pyarrow >= 2 / Arrow C++, Spark >= 3.4, DuckDB, polars).

Atomic shards: a shard is written to ``shard-XXXXXX.parquet.tmp``, fsynced and renamed with
``os.replace``; then its sidecar likewise. A shard is complete iff its final file and sidecar
exist, the sidecar names this dataset's config hash and the shard's cell range, and the Parquet
footer's row count equals the sidecar's ``rows_kept``. Anything else (a ``.tmp`` left by a
crash, a missing sidecar, a truncated file) is redone on the next run.

``manifest.json`` (format ``cardiotwin.population/1``): ``status`` (running / complete),
``config`` (canonical identity) and ``config_hash``, ``run`` (run-only settings of the last
run), ``protocol`` (canonical JSON text) and ``protocol_hash``, ``registry_version``,
``parameter_names``, ``sampling`` (sampler, range, seed), ``simulation`` (both runs' settings),
``i_total`` (n_samples, sample interval, decimation), ``schema``, ``shards`` (file, first cell
id, n_cells, rows kept, counts by status), ``totals`` (cells, rows, status counts, filter
counts), ``code_version``, ``versions``, ``runs`` (per invocation: wall time, cells simulated,
cells/s), ``wall_s`` and ``cells_per_s``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..features import BATCH_KEYS
from ..model.parameters import N_INFERRED
from .config import FORMAT

MANIFEST = "manifest.json"
_OWN_NAME_RE = re.compile(r"^(shard-\d{6,}\.(parquet|json)(\.tmp)?|manifest\.json(\.tmp)?"
                          r"|\.write-test-.*)$")
INT_BIOMARKERS = ("n_beats", "n_eads")
BOOL_BIOMARKERS = ("beating",)
# Parquet column paths (list columns are addressed by their leaf)
FLOAT_COLUMNS = ["multipliers.list.element", "I_total.list.element"] + [
    k for k in BATCH_KEYS if k not in INT_BIOMARKERS + BOOL_BIOMARKERS]
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.parquet"


def sidecar_name(index: int) -> str:
    return f"shard-{index:06d}.json"


def biomarker_type(key: str) -> pa.DataType:
    if key in INT_BIOMARKERS:
        return pa.int32()
    if key in BOOL_BIOMARKERS:
        return pa.bool_()
    return pa.float32()


def make_schema(n_samples: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    """The row schema for I_total of ``n_samples`` samples."""
    fields = [pa.field("cell_id", pa.int64(), nullable=False),
              pa.field("multipliers", pa.list_(pa.float32(), N_INFERRED), nullable=False),
              pa.field("status", pa.string(), nullable=False)]
    fields += [pa.field(k, biomarker_type(k)) for k in BATCH_KEYS]
    fields.append(pa.field("I_total", pa.list_(pa.float32(), int(n_samples)), nullable=False))
    return pa.schema(fields, metadata={k.encode(): v.encode() for k, v in (metadata or {}).items()})


def schema_description(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def make_table(schema: pa.Schema, cell_ids: np.ndarray, multipliers: np.ndarray,
               statuses: np.ndarray, biomarkers: dict[str, np.ndarray],
               i_total: np.ndarray) -> pa.Table:
    """One table in ``schema`` from per-row arrays: cell_ids (n,), multipliers (n, 52),
    statuses (n,) str, biomarkers {BATCH_KEYS: (n,)}, i_total (n, n_samples)."""
    n = len(cell_ids)
    m = np.ascontiguousarray(multipliers, dtype=np.float32).reshape(-1)
    it = np.ascontiguousarray(i_total, dtype=np.float32)
    ns = schema.field("I_total").type.list_size
    if it.shape != (n, ns):
        raise ValueError(f"I_total: expected ({n}, {ns}), found {it.shape}")
    cols = {"cell_id": pa.array(np.asarray(cell_ids, dtype=np.int64)),
            "multipliers": pa.FixedSizeListArray.from_arrays(pa.array(m), N_INFERRED),
            "status": pa.array(np.asarray(statuses).astype(str).tolist(), pa.string())}
    for k in BATCH_KEYS:
        t = biomarker_type(k)
        cols[k] = pa.array(np.asarray(biomarkers[k]).astype(t.to_pandas_dtype()), t)
    cols["I_total"] = pa.FixedSizeListArray.from_arrays(pa.array(it.reshape(-1)), ns)
    return pa.Table.from_pydict(cols, schema=schema)


# ---- atomic writes --------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path + '.tmp'``, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ShardWriter:
    """Writes one shard to ``shard-XXXXXX.parquet.tmp`` row group by row group;
    :meth:`commit` renames it into place and writes the sidecar. Not committed -> the final
    name is never created."""

    def __init__(self, out_dir: str | os.PathLike, index: int, schema: pa.Schema):
        self.out_dir = Path(out_dir)
        self.index = index
        self.path = self.out_dir / shard_name(index)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.rows = 0
        self._writer = pq.ParquetWriter(
            self.tmp, schema, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
            use_dictionary=["status"], use_byte_stream_split=FLOAT_COLUMNS,
            write_statistics=["cell_id", "status"])

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self, summary: dict[str, Any]) -> dict[str, Any]:
        self._writer.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if pq.read_metadata(self.tmp).num_rows != self.rows:
            raise OSError(f"{self.tmp}: row count after writing differs from rows written")
        os.replace(self.tmp, self.path)
        summary = dict(summary, file=self.path.name, rows_kept=self.rows)
        write_json_atomic(self.out_dir / sidecar_name(self.index), summary)
        return summary

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def complete_shard(out_dir: str | os.PathLike, index: int, config_hash: str,
                   first: int, n_cells: int) -> dict[str, Any] | None:
    """The sidecar summary of shard ``index`` if the shard is complete (see the module
    docstring), else None."""
    out = Path(out_dir)
    try:
        side = json.loads((out / sidecar_name(index)).read_text(encoding="utf-8"))
        if (side.get("config_hash") != config_hash or side.get("index") != index
                or side.get("first_cell_id") != first or side.get("n_cells") != n_cells):
            return None
        if pq.read_metadata(out / shard_name(index)).num_rows != side.get("rows_kept"):
            return None
    except (OSError, ValueError, pa.ArrowException):
        return None
    return side


def remove_stale_temporaries(out_dir: str | os.PathLike) -> list[str]:
    """Delete ``*.tmp`` files left by crashed writers (call only while no writer runs)."""
    removed = []
    for p in Path(out_dir).iterdir():
        if p.name.endswith(".tmp") and _OWN_NAME_RE.match(p.name):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    return removed


# ---- the manifest ---------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    p = p / MANIFEST if p.is_dir() else p
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p.parent} is not a population store: no {MANIFEST}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {p}: {e}") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{p}: not a population manifest (format {FORMAT!r} expected)")
    return m


def check_existing(out_dir: str | os.PathLike, config_hash: str,
                   identity: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Read-only check of ``out_dir`` before a run: None when it does not exist or is empty
    (or holds only leftovers of an interrupted start), the manifest when it holds this
    dataset (same ``config_hash``); ValueError when it holds another dataset or other files.
    ``identity`` (the new canonical config) names the differing fields in the message."""
    out = Path(out_dir)
    if not out.exists():
        return None
    if not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory")
    if (out / MANIFEST).exists():
        m = read_manifest(out)
        if m.get("config_hash") != config_hash:
            diff = _config_diff(m.get("config", {}), identity) if identity else ""
            raise ValueError(
                f"directory {out} holds a dataset with config hash {m.get('config_hash')}; this "
                f"run has {config_hash}" + (f" ({diff})" if diff else "") +
                "; use a new --out, or the same settings to resume that dataset")
        return m
    names = sorted(p.name for p in out.iterdir())
    blocking = [n for n in names if not (n.endswith(".tmp") and _OWN_NAME_RE.match(n))
                and not n.startswith(".write-test-")]
    if blocking:
        raise ValueError(f"output directory {out} is not empty and holds no {MANIFEST} (found "
                         f"{', '.join(blocking[:5])}{', ...' if len(blocking) > 5 else ''}); "
                         "use a new or empty directory")
    return None


def _config_diff(stored: dict[str, Any], new: dict[str, Any]) -> str:
    diff = [k for k in sorted(set(stored) | set(new)) if stored.get(k) != new.get(k)]
    return "; ".join(f"{k}: {stored.get(k)!r} there, {new.get(k)!r} here" for k in diff)


# ---- reading --------------------------------------------------------------------------------

class PopulationStore:
    """A population store opened for reading (see :func:`open_store`)."""

    def __init__(self, path: Path, manifest: dict[str, Any], files: list[Path]):
        self.path = path
        self.manifest = manifest
        self.files = files
        self._dataset: pads.Dataset | None = None

    def __repr__(self) -> str:
        return (f"PopulationStore({str(self.path)!r}, n_cells={self.n_cells}, "
                f"n_rows={self.n_rows}, shards={len(self.files)}, "
                f"status={self.manifest.get('status')!r})")

    @property
    def dataset(self) -> pads.Dataset:
        """The shards as one ``pyarrow.dataset`` (lazy: nothing is read until scanned)."""
        if self._dataset is None:
            self._dataset = pads.dataset([str(f) for f in self.files], format="parquet")
        return self._dataset

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    @property
    def n_rows(self) -> int:
        """Rows stored (kept cells), from the shard footers."""
        return sum(pq.read_metadata(f).num_rows for f in self.files)

    @property
    def n_cells(self) -> int:
        """Cells simulated (kept and rejected) according to the manifest."""
        return int(self.manifest["config"]["n_cells"])

    @property
    def protocol_hash(self) -> str:
        return self.manifest["protocol_hash"]

    @property
    def protocol(self):
        from ..protocols import Protocol

        return Protocol.from_json(self.manifest["protocol"])

    @property
    def parameter_names(self) -> list[str]:
        return list(self.manifest["parameter_names"])

    def i_total_times_ms(self) -> np.ndarray:
        """Time (ms) of each stored I_total sample: the sample time, or the centre of the
        averaged block with ``decimation = mean``."""
        info = self.manifest["i_total"]
        k, dt = info["decimation_factor"], info["source_sample_interval_ms"]
        t = np.arange(info["n_samples"]) * k * dt
        if info["decimation"] == "mean" and k > 1:
            n_src = info["source_n_samples"]
            ends = np.minimum((np.arange(info["n_samples"]) + 1) * k, n_src)
            t = (np.arange(info["n_samples"]) * k + ends - 1) * dt / 2.0
        return t

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = 1024,
                     filter=None) -> Iterator[pa.RecordBatch]:
        """Stream record batches of at most ``batch_size`` rows (only ``columns``; all by
        default), shard by shard, without loading the store. ``filter``: a
        ``pyarrow.dataset`` expression, e.g. ``pyarrow.dataset.field("status") == "ok"``."""
        yield from self.dataset.to_batches(columns=columns, batch_size=batch_size,
                                           filter=filter)

    def read_table(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        """The whole store (or ``columns``) as one table: for small stores."""
        return self.dataset.to_table(columns=columns, filter=filter)


def list_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list<float32> column (multipliers, I_total) as an (n_rows, size) array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    size = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), size)


def open_store(path: str | os.PathLike, allow_incomplete: bool = False) -> PopulationStore:
    """Open a population store for reading. A store whose run has not finished raises
    ValueError unless ``allow_incomplete``, which then gives the shards complete so far."""
    out = Path(path)
    m = read_manifest(out)
    if m.get("status") == "complete":
        files = [out / s["file"] for s in m["shards"]]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{out}: shards listed in the manifest are missing: "
                             f"{', '.join(missing[:5])}")
        return PopulationStore(out, m, files)
    if not allow_incomplete:
        n_done = sum(1 for i in range(m["n_shards"])
                     if _complete_from_manifest(out, m, i) is not None)
        raise ValueError(f"{out}: the run has not finished ({n_done} of {m['n_shards']} shards "
                         "complete); re-run the same command to resume, or pass "
                         "allow_incomplete=True")
    files = [out / shard_name(i) for i in range(m["n_shards"])
             if _complete_from_manifest(out, m, i) is not None]
    return PopulationStore(out, m, files)


def _complete_from_manifest(out: Path, m: dict[str, Any], index: int) -> dict[str, Any] | None:
    size, n = m["config"]["shard_size"], m["config"]["n_cells"]
    first = index * size
    return complete_shard(out, index, m["config_hash"], first, min(size, n - first))
