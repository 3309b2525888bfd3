"""Configuration of a population generation run (:func:`cardiotwin.population.generate_population`).

``GenerationConfig`` validates values on construction (pydantic; a ``pydantic.ValidationError``
is a ``ValueError``). Checks that need the file system (the protocol file, the output directory)
run in :meth:`GenerationConfig.load_protocol` and :func:`check_output_dir`, which
``generate_population`` calls before any work.

Dataset identity: :meth:`GenerationConfig.identity` is the canonical form of every field that
changes the data (sizes, sampling, the protocol's content by its ``protocol_hash`` rather than
its path, temperature, AP run length, filter, decimation, shard size, parameter registry
version); ``config_hash`` is the sha256 of its canonical JSON. Run-only fields (``n_workers``,
``out_dir``, Ray options) are not part of it.

Classification AP length (``ap_duration_ms``): each cell is classified (ok / quiescent /
non_repolarizing / unstable) from a free-running AP run from the model's initial state. The
default (``None``) resolves to :data:`DEFAULT_AP_MS_WARM` = 4000 ms at >= 305 K and
:data:`DEFAULT_AP_MS_COLD` = 6000 ms below (room temperature slows every gate 3.7x at 298 K).
Measured on 1200 cells (3 x 400: +-40% seeds 1 and 2, +-20% seed 3) at 310 K,
agreement of the status with a 6 s run: 2 s 94.8%, 3 s 98.2%, 4 s 98.5%; with a 10 s run: 2 s
94.5%, 3 s 98.0%, 4 s 98.7%, 6 s 98.8%, 8 s 99.2%. 4 s agrees with the long run as well as 6 s
does (the residual ~1% are cells whose behaviour still drifts after several seconds: a slow
cell that stops, or gets stuck, late); 3 s passes 1% of the stuck (non_repolarizing) cells as
"ok" (12 of 1200, against 3 at 4 s: the stuck criterion needs 1 s above -40 mV after an AP),
and 2 s misclassifies 5%. The AP run is the largest cost: per cell on one core (1000 cells,
protocol_a, 4 s): AP run 5.7 ms (~1.4 ms per simulated second), classification 2.0 ms (grows
with the length too), voltage clamp 1.8 ms, Parquet write 0.5 ms; 4 s rather than 6 s saves
about a quarter of the time. At 298 K (200 cells, against 10 s): 4 s 92%, 6 s 95.5%, 8 s
94% (slower cells: even long runs disagree more), hence 6 s there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..validation import plain_errors

FORMAT = "cardiotwin.population/1"
DEFAULT_AP_MS_WARM = 4000.0
DEFAULT_AP_MS_COLD = 6000.0
WARM_K = 305.0
AP_RECORD_INTERVAL_MS = 0.1  # the AP run is recorded (and classified) at 10 kHz
TEMPERATURE_RANGE_K = (250.0, 330.0)  # as cardiotwin.protocols
# the protocol enters by its hash; the device changes I_total only at rounding level (a store
# may be resumed on the other device)
RUN_ONLY_FIELDS = ("n_workers", "out_dir", "protocol", "device")
DEVICES = ("auto", "cpu", "gpu")


def shard_bounds(n_cells: int, shard_size: int, index: int) -> tuple[int, int]:
    """(first cell id, number of cells) of shard ``index`` when ``n_cells`` cells are cut into
    shards of ``shard_size`` (the last one shorter)."""
    first = index * shard_size
    return first, min(shard_size, n_cells - first)


class GenerationConfig(BaseModel):
    """A population generation run. Units: ms, K, Hz; ``spread`` is a fraction (0.4 = +-40%)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_cells: int = Field(description="number of synthetic cells (> 0)")
    spread: float = Field(0.4, description="multipliers range r: cells span [1 - r, 1 + r]")
    sampler: Literal["uniform", "lhs", "sobol"] = Field(
        "uniform", description="uniform: iid per cell; lhs: Latin hypercube of the whole "
                               "population; sobol: scrambled Sobol' sequence")
    seed: int = Field(0, description="sampling seed (>= 0)")
    protocol: str = Field("protocol_a", description="protocol file (.csv/.json) or a built-in "
                                                    "protocol name")
    temperature_K: float = Field(310.0, description="temperature of both runs (K)")
    ap_duration_ms: float | None = Field(
        None, description="classification AP run length (ms); None: 4000 at >= 305 K, "
                          "6000 below")
    keep_rejected: bool = Field(False, description="also store cells that fail the filter")
    decimate_to_hz: float | None = Field(
        None, description="store I_total at this rate (Hz; must divide the protocol's rate); "
                          "None: as sampled")
    decimation: Literal["mean", "take"] = Field(
        "mean", description="mean: average blocks of k samples; take: every k-th sample")
    shard_size: int = Field(1000, description="cells per Parquet shard")
    n_workers: int | None = Field(None, description="Ray actors (default: available CPUs, or "
                                                    "GPUs with device gpu)")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: GPU actors (1 GPU each, simulate.cuda) when the Ray cluster "
                            "has GPUs, else CPU actors; cpu; gpu: an error when the cluster has "
                            "none")
    out_dir: Path = Field(description="output directory (shared by all nodes)")

    @field_validator("n_cells")
    @classmethod
    def _n_cells(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"n_cells must be a positive integer, found {v}")
        return v

    @field_validator("spread")
    @classmethod
    def _spread(cls, v: float) -> float:
        if not (math.isfinite(v) and 0.0 < v < 1.0):
            raise ValueError(f"range (spread) must be in (0, 1) (e.g. 0.4 for +-40%), found {v}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"seed must be a non-negative integer, found {v}")
        return v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        if not str(v).strip():
            raise ValueError("protocol must be a file path or a built-in protocol name")
        return str(v)

    @field_validator("temperature_K")
    @classmethod
    def _temperature(cls, v: float) -> float:
        lo, hi = TEMPERATURE_RANGE_K
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"temperature_K must be in [{lo}, {hi}] K (e.g. 310 or 298), "
                             f"found {v}")
        return v

    @field_validator("ap_duration_ms")
    @classmethod
    def _ap(cls, v: float | None) -> float | None:
        if v is None:
            return v
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"ap_duration_ms must be a positive number of ms, found {v}")
        n = round(v / AP_RECORD_INTERVAL_MS)
        if abs(n * AP_RECORD_INTERVAL_MS - v) > 1e-9 * max(1.0, v):
            raise ValueError(f"ap_duration_ms must be a multiple of {AP_RECORD_INTERVAL_MS} ms, "
                             f"found {v}")
        return float(v)

    @field_validator("decimate_to_hz")
    @classmethod
    def _decimate(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"decimate_to_hz must be a positive rate in Hz, found {v}")
        return v

    @field_validator("shard_size")
    @classmethod
    def _shard_size(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"shard_size must be a positive integer, found {v}")
        return v

    @field_validator("n_workers")
    @classmethod
    def _n_workers(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"n_workers must be a positive integer, found {v}")
        return v

    @classmethod
    def create(cls, **fields: Any) -> GenerationConfig:
        """Like the constructor, but a ValueError with one plain line per invalid field (no
        pydantic boilerplate): for command lines."""
        try:
            return cls(**fields)
        except ValidationError as e:
            raise plain_errors(e) from None

    # ---- derived ---------------------------------------------------------------------------

    @property
    def ap_ms(self) -> float:
        """The classification AP run length in ms (``ap_duration_ms`` or the default for the
        temperature)."""
        if self.ap_duration_ms is not None:
            return self.ap_duration_ms
        return DEFAULT_AP_MS_WARM if self.temperature_K >= WARM_K else DEFAULT_AP_MS_COLD

    @property
    def n_shards(self) -> int:
        return -(-self.n_cells // self.shard_size)

    def shard_bounds(self, index: int) -> tuple[int, int]:
        """(first cell id, number of cells) of shard ``index``."""
        return shard_bounds(self.n_cells, self.shard_size, index)

    def load_protocol(self):
        """The protocol at ``temperature_K``: a built-in name (``protocol_a``) or a .csv/.json
        file (a JSON's stored temperature is replaced). ValueError when it cannot be read."""
        from ..protocols import BUILTIN_PROTOCOLS, builtin_protocol, load_protocol

        if self.protocol in BUILTIN_PROTOCOLS:
            return builtin_protocol(self.protocol, temperature_K=self.temperature_K)
        path = Path(self.protocol)
        if not path.is_file():
            raise ValueError(f"protocol file not found: {path} (give a .csv/.json file or one of "
                             f"the built-in protocols {list(BUILTIN_PROTOCOLS)})")
        try:
            return load_protocol(path, temperature_K=self.temperature_K)
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read protocol {path}: {e}") from e

    def decimation_factor(self, sample_interval_ms: float) -> int:
        """k such that I_total is stored every k protocol samples (1: no decimation)."""
        if self.decimate_to_hz is None:
            return 1
        rate = 1000.0 / sample_interval_ms
        k = rate / self.decimate_to_hz
        if k < 1 - 1e-9 or abs(k - round(k)) > 1e-6 * k:
            raise ValueError(f"decimate_to_hz ({self.decimate_to_hz} Hz) must divide the "
                             f"protocol's sampling rate ({rate:g} Hz) by a whole number")
        return int(round(k))

    def identity(self, protocol_hash: str) -> dict[str, Any]:
        """Every field that changes the data, in canonical form (run-only fields removed, the
        protocol by its hash, the AP length resolved, the parameter registry version added)."""
        from ..model.parameters import REGISTRY_VERSION

        d = self.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS))
        d["ap_duration_ms"] = self.ap_ms
        if self.decimate_to_hz is None:
            d["decimation"] = None
        d["ap_record_interval_ms"] = AP_RECORD_INTERVAL_MS
        d["protocol_hash"] = protocol_hash
        d["registry_version"] = REGISTRY_VERSION
        d["format"] = FORMAT
        return d

    def config_hash(self, protocol_hash: str) -> str:
        """sha256 of the canonical JSON of :meth:`identity`."""
        return hashlib.sha256(canonical_json(self.identity(protocol_hash)).encode()).hexdigest()


def canonical_json(d: Any) -> str:
    """Sorted keys, compact separators, no NaN."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and prove it writable by creating and removing a
    temporary file; ValueError with the reason otherwise."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"output directory {out} is not writable: {e}") from e
    return out


# ---- command line (shared by `cardiotwin generate` and jobs/generate_population.py) ----------

def add_generate_arguments(p) -> None:
    """Add the generation options to an argparse parser."""
    g = p.add_argument_group("population")
    g.add_argument("--n-cells", type=int, required=True, metavar="N",
                   help="number of synthetic cells to simulate (> 0)")
    g.add_argument("--range", "--spread", dest="spread", type=float, default=0.4, metavar="R",
                   help="multiplier range r, a fraction in (0, 1): each of the 52 parameter "
                        "multipliers spans [1-r, 1+r] (default 0.4 = +-40%%)")
    g.add_argument("--sampler", choices=("uniform", "lhs", "sobol"), default="uniform",
                   help="uniform: iid per cell (cell i from (seed, i)); lhs: Latin hypercube "
                        "of the whole population (held in memory: 208 bytes per cell); sobol: "
                        "scrambled Sobol' points (cell i from (seed, i)) (default uniform)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed, >= 0 (default 0)")
    s = p.add_argument_group("simulation")
    s.add_argument("--protocol", default="protocol_a", metavar="P",
                   help="voltage-clamp protocol: a .csv (duration_ms,v_start_mV,v_end_mV or "
                        "time_ms,voltage_mV) or canonical .json file, or the built-in name "
                        "protocol_a (default protocol_a, 4950 ms)")
    s.add_argument("--temperature-k", type=float, default=310.0, metavar="K",
                   help="temperature in K of the voltage clamp and the AP run (default 310; "
                        "298 for room temperature)")
    s.add_argument("--ap-duration-ms", type=float, default=None, metavar="MS",
                   help="length in ms of the free-running AP run that classifies each cell "
                        "(ok / quiescent / non_repolarizing / unstable) and gives its "
                        "biomarkers (default 4000 at >= 305 K, 6000 below)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; on a cluster a path on a filesystem that "
                        "every node mounts at the same place). Re-running the same command "
                        "resumes; a different configuration there is refused")
    o.add_argument("--keep-rejected", action="store_true",
                   help="also store cells that fail the physiological filter (status column "
                        "tells); default: store only status ok, count the others")
    o.add_argument("--decimate-to-hz", type=float, default=None, metavar="HZ",
                   help="store I_total at this rate in Hz, a whole divisor of the protocol's "
                        "rate (10000 Hz at 0.1 ms), e.g. 1000 (default: as sampled)")
    o.add_argument("--decimation", choices=("mean", "take"), default="mean",
                   help="with --decimate-to-hz: mean of each block of k samples, or every "
                        "k-th sample (default mean)")
    o.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="cells per Parquet shard, the unit of work and of resumption "
                        "(default 1000: ~90 MB per shard on protocol_a without decimation)")
    r = p.add_argument_group("Ray")
    r.add_argument("--workers", dest="n_workers", type=int, default=None, metavar="N",
                   help="number of simulation actors, 1 CPU each (default: the CPUs available "
                        "in the Ray cluster)")
    r.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: simulate on GPU actors (one GPU each, numba-cuda) when the Ray "
                        "cluster has GPUs, else on CPU actors; cpu; gpu (refused when the "
                        "cluster has no GPU). Use a large --shard-size on GPUs (e.g. 16384): a "
                        "shard is one GPU batch (default auto)")
    r.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to connect to (default $RAY_ADDRESS, set by ray job "
                        "submit; else a local cluster is started)")
    r.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local cluster started when there is no address "
                        "(default: all)")
    r.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto",
                   help="ship the cardiotwin package to the workers as a runtime_env "
                        "py_modules entry: auto = when connecting to a cluster and cardiotwin "
                        "is not installed in site-packages (default auto)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(a) -> GenerationConfig:
    """The GenerationConfig of parsed arguments (ValueError on invalid values)."""
    return GenerationConfig.create(
        n_cells=a.n_cells, spread=a.spread, sampler=a.sampler, seed=a.seed,
        protocol=a.protocol, temperature_K=a.temperature_k, ap_duration_ms=a.ap_duration_ms,
        keep_rejected=a.keep_rejected, decimate_to_hz=a.decimate_to_hz,
        decimation=a.decimation, shard_size=a.shard_size, n_workers=a.n_workers,
        out_dir=a.out, device=getattr(a, "device", "auto"))
