"""Configuration of a population generation run (:func:`cardiotwin.population.generate_population`).

``GenerationConfig`` validates values on construction (a :class:`cardiotwin.settings.Settings`:
declarative constraints, a ``pydantic.ValidationError`` is a ``ValueError``;
:meth:`GenerationConfig.create` gives one plain line per invalid field). Checks that need the
file system (the protocol file, the output directory, its lock) run in
:meth:`GenerationConfig.load_protocol` and in ``generate_population`` before any work.

Dataset identity: :meth:`GenerationConfig.identity` is the canonical form of every field that
changes the data (sizes, sampling, the protocol's content by its ``protocol_hash`` rather than
its path, temperature, AP run length, filter, decimation, shard size, parameter registry
version); ``config_hash`` is the sha256 of its canonical JSON
(:func:`cardiotwin.storage.identity.identity_hash`). Run-only fields (``n_workers``,
``out_dir``, ``device``, ``shard_timeout_s``, Ray options) are not part of it. The code version
is recorded beside it (manifest and sidecars), not in it: resuming with other code is a
separate, explicit decision (``allow_code_change``).

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

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..settings import Fraction as SpreadFraction
from ..settings import (
    NonEmptyStr,
    NonNegativeInt,
    PositiveFloat,
    PositiveHz,
    PositiveInt,
    PositiveMs,
    Settings,
    TemperatureK,
)
from ..storage.identity import canonical_json, identity_hash
from .artefact_prior import ArtefactPrior
from .calibration import Calibration
from .prior import Prior

FORMAT = "cardiotwin.population/1"
DEFAULT_AP_MS_WARM = 4000.0
DEFAULT_AP_MS_COLD = 6000.0
WARM_K = 305.0
AP_RECORD_INTERVAL_MS = 0.1  # the AP run is recorded (and classified) at 10 kHz
# the protocol enters by its hash; the device changes I_total only at rounding level (a store
# may be resumed on the other device); the shard timeout only guards against hung workers
RUN_ONLY_FIELDS = ("n_workers", "out_dir", "protocol", "device", "shard_timeout_s")
# fields of the prior and the calibration: in the identity only when not at their defaults
PRIOR_FIELDS = ("prior", "conductance_factor", "nuisance_factor", "seal_g_nS_per_pF",
                "seal_e_mV", "multiplier_ranges", "nuisance_ranges", "calibration",
                "vc_artefacts", "precision")
DEVICES = ("auto", "cpu", "gpu")
SAMPLERS = ("uniform", "lhs", "sobol")

__all__ = ["AP_RECORD_INTERVAL_MS", "FORMAT", "GenerationConfig", "canonical_json",
           "shard_bounds"]


def shard_bounds(n_cells: int, shard_size: int, index: int) -> tuple[int, int]:
    """(first cell id, number of cells) of shard ``index`` when ``n_cells`` cells are cut into
    shards of ``shard_size`` (the last one shorter)."""
    first = index * shard_size
    return first, min(shard_size, n_cells - first)


class GenerationConfig(Settings):
    """A population generation run. Units: ms, K, Hz, s; ``spread`` is a fraction (0.4 =
    +-40%)."""

    n_cells: PositiveInt = Field(description="number of synthetic cells (> 0)")
    spread: SpreadFraction = Field(0.4, description="multipliers range r in (0, 1): cells span "
                                                    "[1 - r, 1 + r]")
    sampler: Literal["uniform", "lhs", "sobol"] = Field(
        "uniform", description="uniform: iid per cell; lhs: Latin hypercube of the whole "
                               "population; sobol: scrambled Sobol' sequence")
    seed: NonNegativeInt = Field(0, description="sampling seed (>= 0)")
    protocol: NonEmptyStr = Field("protocol_a", description="protocol file (.csv/.json) or a "
                                                            "built-in protocol name")
    temperature_K: TemperatureK = Field(310.0, description="temperature of both runs (K, "
                                                           "250-330)")
    ap_duration_ms: PositiveMs | None = Field(
        None, description="classification AP run length (ms, a multiple of 0.1); None: 4000 "
                          "at >= 305 K, 6000 below")
    prior: Literal["uniform", "log_uniform"] = Field(
        "uniform", description="uniform: all 52 multipliers U(1 - r, 1 + r); log_uniform: the 6 "
                               "conductances log-uniform in [1/f, f] (f: conductance_factor), "
                               "the kinetic ones U(1 - r, 1 + r) (population/prior.py)")
    conductance_factor: float = Field(3.0, gt=1.0, le=100.0,
                                      description="log_uniform prior: conductances in [1/f, f]")
    nuisance_factor: float = Field(1.0, ge=1.0, le=100.0,
                                   description="non-inferred conductances and fluxes scaled "
                                               "log-uniformly in [1/f, f] (1: not varied)")
    seal_g_nS_per_pF: tuple[float, float] | None = Field(
        None, description="seal leak of the AP run: conductance range (nS/pF, log-uniform; "
                          "g = 1000 / (R_seal[MOhm] Cm[pF])); None: no seal leak")
    seal_e_mV: tuple[float, float] = Field((0.0, 0.0), description="seal reversal range (mV)")
    multiplier_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per inferred parameter: its own multiplier range "
                                          "(population/prior.py)")
    nuisance_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per non-inferred input: its own log-uniform scale "
                                          "range")
    calibration: Calibration | None = Field(
        None, description="keep as 'ok' only beating cells near one of these phenotypes "
                          "(population/calibration.py); None: no calibration")
    vc_artefacts: ArtefactPrior | None = Field(
        None, description="simulate the voltage clamp through the amplifier, series resistance "
                          "and seal, each cell's parameters drawn from these ranges "
                          "(population/artefact_prior.py; stored per cell); None: ideal clamp")
    precision: Literal["float64", "float32"] = Field(
        "float64", description="arithmetic of the voltage clamp and the AP run "
                               "(simulate.precision): float32 is about twice as fast, I_total "
                               "within 0.03% of float64, 99.75% of statuses equal; CPU actors "
                               "only")
    keep_rejected: bool = Field(False, description="also store cells that fail the filter")
    decimate_to_hz: PositiveHz | None = Field(
        None, description="store I_total at this rate (Hz; must divide the protocol's rate); "
                          "None: as sampled")
    decimation: Literal["mean", "take"] = Field(
        "mean", description="mean: average blocks of k samples; take: every k-th sample")
    shard_size: PositiveInt = Field(1000, description="cells per Parquet shard")
    n_workers: PositiveInt | None = Field(None, description="Ray actors (default: available "
                                                            "CPUs, or GPUs with device gpu)")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: GPU actors (1 GPU each, simulate.cuda) when the Ray cluster "
                            "has GPUs, else CPU actors; cpu; gpu: an error when the cluster has "
                            "none")
    shard_timeout_s: PositiveFloat | None = Field(
        None, description="a shard running longer than this (s) has its actor killed as hung "
                          "and is retried; None: adaptive, 10 x the longest shard completed so "
                          "far and at least 120 s (no timeout before the first shard completes)")
    out_dir: Path = Field(description="output directory (shared by all nodes)")

    @field_validator("ap_duration_ms")
    @classmethod
    def _ap_on_record_grid(cls, v: float | None) -> float | None:
        """The AP run is recorded every 0.1 ms: its length must be a whole number of
        records."""
        if v is None:
            return v
        n = round(v / AP_RECORD_INTERVAL_MS)
        if abs(n * AP_RECORD_INTERVAL_MS - v) > 1e-9 * max(1.0, v):
            raise ValueError(f"ap_duration_ms must be a multiple of {AP_RECORD_INTERVAL_MS} ms, "
                             f"found {v}")
        return float(v)

    @model_validator(mode="after")
    def _prior_valid(self):
        """The seal ranges are checked by the Prior they make."""
        self.prior_spec()
        return self

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
        return round(k)

    def prior_spec(self) -> Prior:
        """The population prior (multipliers, nuisance scales, seal leak)."""
        return Prior(kind=self.prior, spread=self.spread,
                     conductance_factor=self.conductance_factor,
                     nuisance_factor=self.nuisance_factor,
                     seal_g_nS_per_pF=self.seal_g_nS_per_pF, seal_e_mV=self.seal_e_mV,
                     multiplier_ranges=self.multiplier_ranges,
                     nuisance_ranges=self.nuisance_ranges)

    def identity(self, protocol_hash: str) -> dict[str, Any]:
        """Every field that changes the data, in canonical form (run-only fields removed, the
        protocol by its hash, the AP length resolved, the parameter registry version added).
        The prior's and calibration's fields enter only when they differ from the source
        study's design (so stores written before they existed keep their hash)."""
        from ..model.parameters import REGISTRY_VERSION

        d = self.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS))
        needed = {"conductance_factor": self.prior == "log_uniform",
                  "seal_e_mV": self.seal_g_nS_per_pF is not None}
        for name in PRIOR_FIELDS:
            if not needed.get(name, d[name] != _DEFAULTS[name]):
                del d[name]
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
        return identity_hash(self.identity(protocol_hash))



_DEFAULTS = {**{name: GenerationConfig.model_fields[name].default for name in PRIOR_FIELDS},
             "seal_e_mV": [0.0, 0.0], "multiplier_ranges": {}, "nuisance_ranges": {}}
