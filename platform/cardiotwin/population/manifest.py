"""The population manifest (``OUT/manifest.json``, format ``cardiotwin.population/1``) as typed
models: written by the driver, read by :class:`~cardiotwin.population.store.PopulationStore`
and by :mod:`cardiotwin.learn.dataset`.

Fields: ``status`` (running / complete), ``config`` (canonical identity) and ``config_hash``,
``run`` (run-only settings of the last run), ``protocol`` (canonical JSON text) and
``protocol_hash``, ``registry_version``, ``parameter_names``, ``sampling`` (sampler, spread,
range, seed), ``simulation`` (both runs' settings), ``i_total`` (n_samples, sample intervals in
ms, decimation), ``schema`` (column -> Arrow type), ``n_shards``, ``shard_size``, ``shards``
(file, first cell id, n_cells, rows kept, counts by status, sha256, code_version), ``totals``
(cells, rows, status counts, filter counts, actor seconds by stage), ``code_version`` (the
code of the last run) and ``code_versions`` (every version that wrote a shard), ``versions``
(libraries), ``runs`` (per invocation: start, host, wall time, cells simulated, cells/s,
workers, actor failures, hung-shard timeouts, damaged shards redone, code version), ``wall_s``
and ``cells_per_s``.

Unknown fields are kept (``extra="allow"``): a manifest written by newer code reads, and is
rewritten, without losing them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..storage.outdir import read_json_file
from ..validation import plain_errors
from .config import FORMAT, shard_bounds

MANIFEST = "manifest.json"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ITotalInfo(_Part):
    """How I_total is stored: ``n_samples`` per trace every ``sample_interval_ms`` (ms), from
    ``source_n_samples`` protocol samples every ``source_sample_interval_ms`` averaged (mean)
    or picked (take) by ``decimation_factor``."""

    units: str = "pA/pF"
    n_samples: int
    sample_interval_ms: float
    source_sample_interval_ms: float
    source_n_samples: int
    decimation_factor: int = 1
    decimation: Literal["mean", "take"] | None = None
    decimate_to_hz: float | None = None


class SamplingInfo(_Part):
    """The sampling design: multipliers in ``range`` = [1 - spread, 1 + spread]."""

    sampler: str
    spread: float
    range: list[float]
    seed: int
    cell_seed: str = ""
    dtype: str = "float32 (simulated with these values)"


class ShardEntry(_Part):
    """One complete shard as listed in the manifest."""

    index: int
    file: str
    first_cell_id: int
    n_cells: int
    rows_kept: int
    status_counts: dict[str, int]
    sha256: str | None = None
    code_version: str | None = None


class FilterTotals(_Part):
    rule: str
    kept: int
    dropped: int
    rejected_by_reason: dict[str, int]


class Totals(_Part):
    """Counts over the complete shards."""

    n_cells: int = 0
    rows: int = 0
    status_counts: dict[str, int] = Field(default_factory=dict)
    filter: FilterTotals | None = None
    actor_seconds_by_stage: dict[str, float] = Field(default_factory=dict)


class RunRecord(_Part):
    """One invocation of the generation on this store."""

    started_utc: str
    host: str
    shards_done_before: int = 0
    cells_simulated: int = 0
    wall_s: float = 0.0
    cells_per_s: float | None = None
    n_workers: int = 0
    actor_failures: int = 0
    shard_timeouts: int = 0
    shards_redone: list[int] = Field(default_factory=list)
    code_version: str | None = None
    device: str | None = None


class PopulationManifest(_Part):
    """The whole manifest (module docstring)."""

    format: Literal["cardiotwin.population/1"] = "cardiotwin.population/1"
    status: Literal["running", "complete"]
    config: dict[str, Any]
    config_hash: str
    run: dict[str, Any] = Field(default_factory=dict)
    protocol: str
    protocol_hash: str
    registry_version: Any = None
    parameter_names: list[str]
    sampling: SamplingInfo
    simulation: dict[str, Any] = Field(default_factory=dict)
    i_total: ITotalInfo
    schema_: dict[str, str] = Field(default_factory=dict, alias="schema")
    n_shards: int
    shard_size: int
    shards: list[ShardEntry] = Field(default_factory=list)
    totals: Totals = Field(default_factory=Totals)
    code_version: str | None = None
    code_versions: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    runs: list[RunRecord] = Field(default_factory=list)
    wall_s: float | None = None
    cells_per_s: float | None = None

    def shard_bounds(self, index: int) -> tuple[int, int]:
        """(first cell id, number of cells) of shard ``index``."""
        return shard_bounds(int(self.config["n_cells"]), self.shard_size, index)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | os.PathLike = MANIFEST
                  ) -> PopulationManifest:
        """Validate a manifest object; ValueError naming ``source`` and the bad fields."""
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: not a population manifest (format {FORMAT!r} "
                             f"expected, found {d.get('format')!r})")
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise plain_errors(e, what=str(source)) from None


def read_manifest(path: str | os.PathLike) -> PopulationManifest:
    """The manifest of the store at ``path`` (the directory or its manifest.json); ValueError
    when it is not a population store, or its manifest is torn or invalid."""
    p = Path(path)
    p = p / MANIFEST if p.is_dir() else p
    if not p.exists():
        raise ValueError(f"{p.parent} is not a population store: no {MANIFEST}")
    return PopulationManifest.from_dict(read_json_file(p, "population manifest"), p)
