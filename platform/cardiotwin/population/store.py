"""The population store: a directory of Parquet shards and ``manifest.json``.

Layout::

    OUT/manifest.json             the dataset description (population/manifest.py), atomic
    OUT/shard-000000.parquet      cells [0, shard_size), one row per kept cell
    OUT/shard-000000.json         the shard's summary (sidecar), written after the shard
    ...
    OUT/.cardiotwin.lock          while a run writes the store: its pid, host, heartbeat

A row: ``cell_id`` int64, ``multipliers`` fixed_size_list<float32>[52] (model.INFERRED_NAMES
order; the simulation used exactly these float32 values), ``status`` string (ok / quiescent /
non_repolarizing / unstable), the AP biomarkers of ``features.BATCH_KEYS`` (float32; ``n_beats``
and ``n_eads`` int32, ``beating`` bool; NaN where undefined), ``I_total``
fixed_size_list<float32>[n_samples] in pA/pF. Parquet with zstd compression, the
BYTE_STREAM_SPLIT encoding for the float columns (half the size of plain zstd on I_total;
readable by pyarrow >= 2 / Arrow C++, Spark >= 3.4, DuckDB, polars) and a CRC-32 per data page
(verified on every read through :class:`PopulationStore`).

Sidecar ``shard-XXXXXX.json``: ``index``, ``first_cell_id``, ``n_cells``, ``config_hash``,
``status_counts``, ``wall_s``, ``stage_s``, ``device``, ``node``, ``pid``, ``code_path``,
``file``, ``rows_kept``, ``file_bytes``, ``sha256`` (of the shard file's bytes) and
``code_version`` (the cardiotwin version that simulated the shard).

Atomic shards: a shard is written to a temporary sibling (``.shard-XXXXXX.parquet.<pid>.<random>
.tmp``, :func:`cardiotwin.storage.atomic.atomic_path`), fsynced and renamed; then its sidecar
likewise. A shard is complete iff its final file and sidecar exist, the sidecar (valid JSON)
names this dataset's config hash and the shard's cell range, and the file's SHA-256 equals the
sidecar's (stores written before checksums: the Parquet footer's row count equals
``rows_kept``). Anything else (a temporary left by a crash, a missing or torn sidecar, a
truncated or damaged file) is redone on the next run, which names every damaged shard.
:func:`verify_store` checks a whole store; ``open_store(path, verify=True)`` refuses a damaged
one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..features import BATCH_KEYS
from ..model.artefacts import N_ARTEFACT_FIELDS
from ..model.parameters import N_INFERRED
from ..runtime.versions import code_version
from ..storage.atomic import atomic_path, write_json_atomic
from ..storage.identity import sha256_file
from ..storage.outdir import read_json_file
from .manifest import MANIFEST, PopulationManifest, read_manifest

__all__ = ["MANIFEST", "PopulationStore", "ShardCheck", "ShardWriter", "StoreReport",
           "complete_shard", "inspect_shard", "list_to_numpy", "make_schema", "make_table",
           "open_store", "read_manifest", "remove_stale_temporaries", "verify_store"]

_OWN_NAME_RE = re.compile(r"^(\.(shard-\d{6,}\.(parquet|json)|manifest\.json)\.\d+\..+\.tmp"
                          r"|(shard-\d{6,}\.(parquet|json)|manifest\.json)\.tmp"
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


#: the column of a population with voltage-clamp artefacts: each cell's artefact parameters
#: (model.artefacts.ARTEFACT_FIELDS order)
ARTEFACT_COLUMN = "vc_artefacts"


def make_schema(n_samples: int, metadata: dict[str, str] | None = None,
                artefacts: bool = False) -> pa.Schema:
    """The row schema for I_total of ``n_samples`` samples (with the ARTEFACT_COLUMN of a
    population simulated with voltage-clamp artefacts)."""
    fields = [pa.field("cell_id", pa.int64(), nullable=False),
              pa.field("multipliers", pa.list_(pa.float32(), N_INFERRED), nullable=False),
              pa.field("status", pa.string(), nullable=False)]
    fields += [pa.field(k, biomarker_type(k)) for k in BATCH_KEYS]
    if artefacts:
        fields.append(pa.field(ARTEFACT_COLUMN, pa.list_(pa.float64(), N_ARTEFACT_FIELDS),
                               nullable=False))
    fields.append(pa.field("I_total", pa.list_(pa.float32(), int(n_samples)), nullable=False))
    return pa.schema(fields, metadata={k.encode(): v.encode() for k, v in (metadata or {}).items()})


def schema_description(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def make_table(schema: pa.Schema, cell_ids: np.ndarray, multipliers: np.ndarray,
               statuses: np.ndarray, biomarkers: dict[str, np.ndarray],
               i_total: np.ndarray, artefacts: np.ndarray | None = None) -> pa.Table:
    """One table in ``schema`` from per-row arrays: cell_ids (n,), multipliers (n, 52),
    statuses (n,) str, biomarkers {BATCH_KEYS: (n,)}, i_total (n, n_samples), artefacts
    (n, N_ARTEFACT_FIELDS) when the schema has the ARTEFACT_COLUMN."""
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
    if ARTEFACT_COLUMN in schema.names:
        a = np.ascontiguousarray(artefacts, dtype=np.float64)
        if a.shape != (n, N_ARTEFACT_FIELDS):
            raise ValueError(f"{ARTEFACT_COLUMN}: expected ({n}, {N_ARTEFACT_FIELDS}), found "
                             f"{a.shape}")
        cols[ARTEFACT_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)),
                                                                  N_ARTEFACT_FIELDS)
    cols["I_total"] = pa.FixedSizeListArray.from_arrays(pa.array(it.reshape(-1)), ns)
    return pa.Table.from_pydict(cols, schema=schema)


# ---- writing and checking shards -------------------------------------------------------------

class _Aborted(Exception):
    """Thrown into the shard's atomic_path to discard its temporary file."""


def _scan_options():
    return pads.ParquetFragmentScanOptions(page_checksum_verification=True)


class ShardWriter:
    """Writes one shard row group by row group to a temporary sibling
    (:func:`~cardiotwin.storage.atomic.atomic_path`); :meth:`commit` checks the row count,
    checksums the file, renames it into place and writes the sidecar. Not committed -> the
    final name is never created or changed."""

    def __init__(self, out_dir: str | os.PathLike, index: int, schema: pa.Schema):
        self.out_dir = Path(out_dir)
        self.index = index
        self.path = self.out_dir / shard_name(index)
        self.rows = 0
        self._stack = ExitStack()
        self.tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            self._writer = pq.ParquetWriter(
                self.tmp, schema, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                use_dictionary=["status"], use_byte_stream_split=FLOAT_COLUMNS,
                write_statistics=["cell_id", "status"], write_page_checksum=True)
        except BaseException:
            self._discard()
            raise

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Put the shard in place and write its sidecar: ``summary`` plus ``file``,
        ``rows_kept``, ``file_bytes``, ``sha256`` and ``code_version``; returns the sidecar."""
        try:
            self._writer.close()
            if pq.read_metadata(self.tmp).num_rows != self.rows:
                raise OSError(f"{self.tmp}: row count after writing differs from rows written")
            digest, size = sha256_file(self.tmp), self.tmp.stat().st_size
        except BaseException:
            self._discard()
            raise
        self._stack.close()          # fsync, rename over the final name, fsync the directory
        summary = dict(summary, file=self.path.name, rows_kept=self.rows, file_bytes=size,
                       sha256=digest)
        summary.setdefault("code_version", code_version())
        write_json_atomic(self.out_dir / sidecar_name(self.index), summary)
        return summary

    def _discard(self) -> None:
        self._stack.__exit__(_Aborted, _Aborted(), None)

    def abort(self) -> None:
        """Discard the temporary file (the final name is untouched)."""
        with contextlib.suppress(Exception):  # a broken writer: its file is discarded anyway
            self._writer.close()
        self._discard()


@dataclass(frozen=True)
class ShardCheck:
    """The state of one shard: ``state`` ok / damaged / missing, ``reason`` (why it is not
    ok, or a note), ``summary`` (its sidecar when ok)."""

    index: int
    state: str
    reason: str = ""
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def line(self) -> str:
        return f"shard {self.index}: {self.state}" + (f" ({self.reason})" if self.reason else "")


def inspect_shard(out_dir: str | os.PathLike, index: int, config_hash: str, first: int,
                  n_cells: int, *, verify_checksum: bool = True) -> ShardCheck:
    """Check shard ``index`` (module docstring: when a shard is complete). ``verify_checksum``:
    compare the file's SHA-256 with the sidecar's (reads the whole file); without it only the
    footer's row count is checked."""
    out = Path(out_dir)
    side_p, shard_p = out / sidecar_name(index), out / shard_name(index)
    has_side, has_shard = side_p.exists(), shard_p.exists()
    if not has_side:
        if has_shard:
            return ShardCheck(index, "damaged", "sidecar missing")
        return ShardCheck(index, "missing", "not written")
    try:
        side = read_json_file(side_p, "shard sidecar")
    except ValueError:
        return ShardCheck(index, "damaged", "sidecar unreadable (torn or not JSON)")
    if (side.get("config_hash") != config_hash or side.get("index") != index
            or side.get("first_cell_id") != first or side.get("n_cells") != n_cells):
        return ShardCheck(index, "damaged", "sidecar of another dataset or cell range")
    if not has_shard:
        return ShardCheck(index, "missing", "shard file missing")
    recorded = side.get("sha256")
    try:
        if recorded is not None and verify_checksum:
            if sha256_file(shard_p) != recorded:
                return ShardCheck(index, "damaged", "checksum mismatch")
            return ShardCheck(index, "ok", "", side)
        if recorded is not None and shard_p.stat().st_size != side.get("file_bytes"):
            return ShardCheck(index, "damaged", "size differs from the sidecar's")
        rows = pq.read_metadata(shard_p).num_rows
    except (OSError, pa.ArrowException) as e:
        return ShardCheck(index, "damaged", f"unreadable: {str(e).splitlines()[0][:120]}")
    if rows != side.get("rows_kept"):
        return ShardCheck(index, "damaged", f"footer has {rows} rows, the sidecar "
                                            f"{side.get('rows_kept')}")
    note = "no checksum recorded (written before checksums)" if recorded is None else ""
    return ShardCheck(index, "ok", note, side)


def complete_shard(out_dir: str | os.PathLike, index: int, config_hash: str,
                   first: int, n_cells: int, *, verify_checksum: bool = True
                   ) -> dict[str, Any] | None:
    """The sidecar summary of shard ``index`` if the shard is complete (module docstring),
    else None (:func:`inspect_shard` tells why)."""
    return inspect_shard(out_dir, index, config_hash, first, n_cells,
                         verify_checksum=verify_checksum).summary


def remove_stale_temporaries(out_dir: str | os.PathLike) -> list[str]:
    """Delete the temporary files left by crashed writers of shards, sidecars and the manifest
    (call only under the directory's lock, while no writer runs)."""
    removed = []
    for p in Path(out_dir).iterdir():
        if p.name.endswith(".tmp") and _OWN_NAME_RE.match(p.name) and p.is_file():
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    return removed


# ---- reading --------------------------------------------------------------------------------

class PopulationStore:
    """A population store opened for reading (see :func:`open_store`). ``manifest``: the
    manifest as a dict; ``meta``: the same, typed (:class:`PopulationManifest`)."""

    def __init__(self, path: Path, manifest: dict[str, Any] | PopulationManifest,
                 files: list[Path]):
        self.path = path
        self.meta = (manifest if isinstance(manifest, PopulationManifest)
                     else PopulationManifest.from_dict(manifest, path / MANIFEST))
        self.manifest = self.meta.to_dict() if isinstance(manifest, PopulationManifest) \
            else manifest
        self.files = files
        self._dataset: pads.Dataset | None = None

    def __repr__(self) -> str:
        return (f"PopulationStore({str(self.path)!r}, n_cells={self.n_cells}, "
                f"n_rows={self.n_rows}, shards={len(self.files)}, "
                f"status={self.meta.status!r})")

    @property
    def dataset(self) -> pads.Dataset:
        """The shards as one ``pyarrow.dataset`` (lazy: nothing is read until scanned); page
        checksums are verified as pages are read (a damaged page raises an error)."""
        if self._dataset is None:
            fmt = pads.ParquetFileFormat(default_fragment_scan_options=_scan_options())
            self._dataset = pads.dataset([str(f) for f in self.files], format=fmt)
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
        return int(self.meta.config["n_cells"])

    @property
    def protocol_hash(self) -> str:
        return self.meta.protocol_hash

    @property
    def protocol(self):
        from ..protocols import Protocol

        return Protocol.from_json(self.meta.protocol)

    @property
    def parameter_names(self) -> list[str]:
        return list(self.meta.parameter_names)

    def i_total_times_ms(self) -> np.ndarray:
        """Time (ms) of each stored I_total sample: the sample time, or the centre of the
        averaged block with ``decimation = mean``."""
        info = self.meta.i_total
        k, dt, ns = info.decimation_factor, info.source_sample_interval_ms, info.n_samples
        t = np.arange(ns) * k * dt
        if info.decimation == "mean" and k > 1:
            ends = np.minimum((np.arange(ns) + 1) * k, info.source_n_samples)
            t = (np.arange(ns) * k + ends - 1) * dt / 2.0
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


def _checks(out: Path, m: PopulationManifest, verify_checksum: bool) -> list[ShardCheck]:
    return [inspect_shard(out, i, m.config_hash, *m.shard_bounds(i),
                          verify_checksum=verify_checksum) for i in range(m.n_shards)]


def open_store(path: str | os.PathLike, allow_incomplete: bool = False, *,
               verify: bool = False) -> PopulationStore:
    """Open a population store for reading. A store whose run has not finished raises
    ValueError unless ``allow_incomplete``, which then gives the shards complete so far.
    ``verify``: check every shard's SHA-256 first (reads the whole store) and raise ValueError
    naming the damaged or missing shards. Without it, reads still verify page checksums."""
    out = Path(path)
    m = read_manifest(out)
    if verify:
        bad = [c for c in _checks(out, m, True)
               if not c.ok and (m.status == "complete" or c.state == "damaged")]
        if bad:
            raise ValueError(f"{out}: damaged store: " + "; ".join(c.line() for c in bad[:10])
                             + (f"; ... ({len(bad)} shards)" if len(bad) > 10 else "")
                             + "; re-run the generation with the same settings to redo them")
    if m.status == "complete":
        files = [out / s.file for s in m.shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{out}: shards listed in the manifest are missing: "
                             f"{', '.join(missing[:5])}")
        return PopulationStore(out, m, files)
    checks = _checks(out, m, False)
    if not allow_incomplete:
        n_done = sum(c.ok for c in checks)
        raise ValueError(f"{out}: the run has not finished ({n_done} of {m.n_shards} shards "
                         "complete); re-run the same command to resume, or pass "
                         "allow_incomplete=True")
    return PopulationStore(out, m, [out / shard_name(c.index) for c in checks if c.ok])


def verify_store(path: str | os.PathLike) -> StoreReport:
    """Check every shard of the store at ``path`` (SHA-256 of each file against its sidecar,
    sidecars readable and of this dataset, the manifest's shard list consistent with them):
    a :class:`StoreReport`. ValueError when ``path`` is not a population store."""
    out = Path(path)
    m = read_manifest(out)
    checks = _checks(out, m, True)
    listed = {s.index: s for s in m.shards}
    final = []
    for c in checks:
        entry = listed.get(c.index)
        side = c.summary or {}
        if c.ok and entry is not None and (entry.rows_kept != side.get("rows_kept")
                                           or entry.file != side.get("file")):
            c = ShardCheck(c.index, "damaged", "the manifest's entry differs from the sidecar")
        elif c.ok and entry is None and m.status == "complete":
            c = ShardCheck(c.index, "damaged", "not listed in the manifest")
        final.append(c)
    return StoreReport(out, m.status, final)


@dataclass(frozen=True)
class StoreReport:
    """The result of :func:`verify_store`: ``status`` of the run (running / complete) and one
    :class:`ShardCheck` per shard."""

    path: Path
    status: str
    shards: list[ShardCheck]

    @property
    def problems(self) -> list[ShardCheck]:
        """The shards that are not ok (in a running store, missing shards are not problems:
        they are still to be simulated)."""
        return [c for c in self.shards
                if not c.ok and (self.status == "complete" or c.state == "damaged")]

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "damaged": 0, "missing": 0}
        for c in self.shards:
            out[c.state] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        verdict = "intact" if self.ok else "DAMAGED"
        return (f"{self.path}: {verdict}: {len(self.shards)} shards ({c['ok']} ok, "
                f"{c['damaged']} damaged, {c['missing']} missing); run {self.status}")
