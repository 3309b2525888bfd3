"""Training data from population stores: deterministic 70:10:20 split by cell_id, the network's
input transform (block averaging and per-time-point standardization, fitted on the training
split only) and the output scaling of multipliers to [0, 1] over the sampling range.

The split depends only on the cell_id (a 64-bit mix of it, then thresholds 0.7 and 0.8), so a
cell is in the same split whatever the store's size, sharding or order, and a larger store of
the same seed keeps every test cell of a smaller one in its test split. Stores of different
sampling seeds can be combined (cell i of seed 0 and cell i of seed 1 are different cells, in
the same split); the same cell twice is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..decimation import decimate
from ..storage.identity import identity_hash

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_SALT = np.uint64(0x9E3779B97F4A7C15)
MAX_READ_VALUES = 1 << 23  # stored I_total values read per batch (32 MiB of float32)


def split_of(cell_ids: np.ndarray) -> np.ndarray:
    """The split of each cell (0 train, 1 validation, 2 test), from its cell_id alone."""
    z = np.asarray(cell_ids, dtype=np.int64).astype(np.uint64) + _SALT
    with np.errstate(over="ignore"):  # splitmix64: wrapping 64-bit arithmetic is intended
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.searchsorted(np.cumsum(SPLIT_FRACTIONS)[:-1], u, side="right").astype(np.int8)


def pool(x: np.ndarray, k: int) -> np.ndarray:
    """(n, n_samples) -> (n, ceil(n_samples / k)) float32 block means (last block shorter)."""
    return decimate(np.asarray(x, dtype=np.float32), int(k), "mean")


def reduce_trace(x: np.ndarray, pool_k: int = 1, edges: np.ndarray | None = None
                 ) -> np.ndarray:
    """Stored traces (n, n_stored) -> the network's time bins: the multi-rate bins ``edges``
    (:mod:`cardiotwin.learn.multirate`) when given, else block means of ``pool_k``."""
    if edges is not None:
        from .multirate import bin_means

        return bin_means(x, edges)
    return pool(x, pool_k)


@dataclass(frozen=True)
class InputTransform:
    """Stored I_total (pA/pF) -> network input: block means of ``pool`` samples (or of the
    multi-rate bins ``edges``, sample indices into the stored trace), then
    ``(x - mean) / scale`` per input. ``store_decimation`` (factor, method) maps a trace at the
    protocol's full sample rate onto the store's samples first."""

    pool: int
    mean: np.ndarray
    scale: np.ndarray
    n_stored: int
    store_decimation: tuple[int, str | None] = (1, None)
    edges: np.ndarray | None = None

    @property
    def n_inputs(self) -> int:
        return len(self.mean)

    def from_stored(self, i_total: np.ndarray) -> np.ndarray:
        """Network input (n, n_inputs) float32 of stored-rate traces (n, n_stored)."""
        x = np.atleast_2d(np.asarray(i_total, dtype=np.float32))
        if x.shape[1] != self.n_stored:
            raise ValueError(f"I_total: expected {self.n_stored} samples per trace, found "
                             f"{x.shape[1]}")
        return self.normalize(reduce_trace(x, self.pool, self.edges))

    def from_protocol_rate(self, i_total: np.ndarray) -> np.ndarray:
        """Network input of traces sampled at the protocol's own interval (as recorded)."""
        k, method = self.store_decimation
        x = np.atleast_2d(np.asarray(i_total, dtype=np.float32))
        if k > 1:
            expected = (self.n_stored - 1) * k + 1, self.n_stored * k
            if not expected[0] <= x.shape[1] <= expected[1]:
                raise ValueError(f"I_total: expected {expected[0]}..{expected[1]} samples at "
                                 f"the protocol's rate, found {x.shape[1]}")
            x = decimate(x, k, method or "mean")
        return self.from_stored(x)

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "n_stored": self.n_stored,
                "store_decimation_factor": self.store_decimation[0],
                "store_decimation": self.store_decimation[1],
                "transform": ("mean over the stored samples edges[i]:edges[i+1]"
                              if self.edges is not None else
                              "block mean of `pool` stored samples") + ", then (x - mean) / scale",
                "edges": None if self.edges is None else self.edges.tolist(),
                "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputTransform:
        edges = d.get("edges")
        return cls(int(d["pool"]), np.asarray(d["mean"], np.float32),
                   np.asarray(d["scale"], np.float32), int(d["n_stored"]),
                   (int(d["store_decimation_factor"]), d["store_decimation"]),
                   None if edges is None else np.asarray(edges, np.int64))

    def normalize(self, pooled: np.ndarray) -> np.ndarray:
        """Network input of traces already reduced to the network's bins
        (:func:`reduce_trace`)."""
        return ((pooled - self.mean) / self.scale).astype(np.float32)

    @classmethod
    def fit(cls, pooled_train: np.ndarray, pool_k: int, n_stored: int,
            store_decimation: tuple[int, str | None] = (1, None),
            noise_pA_per_pF: float = 0.0, edges: np.ndarray | None = None) -> InputTransform:
        """Per-input mean and scale of the reduced training traces: scale = sqrt(SD^2 +
        noise^2) (noise: the recording noise ``noise_pA_per_pF`` per recorded sample, as it is
        after the averaging of each input), at least 1e-3 of the median SD. Inputs that hardly
        vary across cells must not turn recording noise into huge normalized values."""
        x = np.asarray(pooled_train, np.float64)
        mean, sd = x.mean(axis=0), x.std(axis=0)
        unit = cls(int(pool_k), mean, np.ones_like(mean), int(n_stored), store_decimation,
                   edges)
        scale = np.sqrt(sd ** 2 + unit.noise_per_input(noise_pA_per_pF) ** 2)
        floor = max(1e-3 * float(np.median(sd)), 1e-6)
        return cls(int(pool_k), mean.astype(np.float32),
                   np.maximum(scale, floor).astype(np.float32), int(n_stored), store_decimation,
                   edges)

    def samples_per_input(self) -> np.ndarray:
        """Recorded samples averaged into each network input (store decimation x bin)."""
        per_bin = (np.diff(self.edges) if self.edges is not None
                   else np.full(self.n_inputs, self.pool))
        if self.edges is None and self.n_stored % self.pool:   # the last block is shorter
            per_bin[-1] = self.n_stored % self.pool
        return per_bin * self.store_decimation[0]

    def noise_per_input(self, noise_pA_per_pF: float) -> np.ndarray:
        """Normalized SD per input of white noise of ``noise_pA_per_pF`` per recorded sample,
        after the block means of the store decimation and the network's bins."""
        return (noise_pA_per_pF / np.sqrt(self.samples_per_input()) / self.scale
                ).astype(np.float32)


@dataclass(frozen=True)
class OutputScaling:
    """Multipliers <-> [0, 1] by the population's prior, per parameter: y = (m - low) /
    (high - low), or (ln m - ln low) / (ln high - ln low) where ``log`` (a log-uniform
    parameter), so that y is uniform on [0, 1] under the prior either way."""

    low: np.ndarray
    high: np.ndarray
    log: np.ndarray | None = None

    def _logs(self) -> np.ndarray:
        return (np.zeros(np.shape(self.low), bool) if self.log is None
                else np.asarray(self.log, bool))

    def to_unit(self, m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, np.float64)
        lin = (m - self.low) / (self.high - self.low)
        log = self._logs()
        if log.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                lg = (np.log(m) - np.log(self.low)) / (np.log(self.high) - np.log(self.low))
            lin = np.where(log, lg, lin)
        return lin.astype(np.float32)

    def from_unit(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, np.float64)
        lin = y * (self.high - self.low) + self.low
        log = self._logs()
        if not log.any():
            return lin
        ll, lh = np.log(self.low), np.log(self.high)
        return np.where(log, np.exp(ll + y * (lh - ll)), lin)

    def to_json(self) -> dict[str, Any]:
        return {"scaling": "y = (multiplier - low) / (high - low); where log: "
                           "(ln multiplier - ln low) / (ln high - ln low)",
                "low": self.low.tolist(), "high": self.high.tolist(),
                "log": self._logs().tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OutputScaling:
        log = np.asarray(d["log"], bool) if "log" in d else None
        return cls(np.asarray(d["low"], np.float64), np.asarray(d["high"], np.float64), log)

    def prior_sd(self) -> np.ndarray:
        """Each multiplier's SD under the prior (uniform: (high - low) / sqrt(12);
        log-uniform on [a, b]: from E m = (b - a) / L, E m^2 = (b^2 - a^2) / (2 L),
        L = ln(b / a))."""
        a, b = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        sd = (b - a) / np.sqrt(12.0)
        log = self._logs()
        if log.any():
            ln = np.log(b / a)
            mean = (b - a) / ln
            var = (b * b - a * a) / (2.0 * ln) - mean * mean
            sd = np.where(log, np.sqrt(np.maximum(var, 0.0)), sd)
        return sd

    @classmethod
    def from_bounds(cls, bounds: dict[str, list]) -> OutputScaling:
        """From a dataset's ``prior_bounds`` ({"low", "high", "log"})."""
        return cls(np.asarray(bounds["low"], np.float64), np.asarray(bounds["high"], np.float64),
                   np.asarray(bounds["log"], bool))


def manifest_hash(manifest) -> str:
    """sha256 of a store's data identity: its config hash, protocol hash and the shards (file,
    rows). Stable across resumed runs (which rewrite run times in the manifest). ``manifest``:
    the manifest's dict or its :class:`~cardiotwin.population.manifest.PopulationManifest`."""
    if hasattr(manifest, "to_dict"):
        manifest = manifest.to_dict()
    ident = {"config_hash": manifest.get("config_hash"),
             "protocol_hash": manifest.get("protocol_hash"),
             "shards": [[s["file"], s.get("rows_kept", s.get("n_rows"))]
                        for s in manifest.get("shards", [])]}
    return identity_hash(ident)


@dataclass
class Dataset:
    """Arrays of one or more stores, split: ``i_total[s]`` (n_s, n_pooled) float32 pA/pF
    (stored traces block-averaged by ``info["pool"]``),
    ``multipliers[s]`` (n_s, 52) float32, ``cell_ids[s]``, for s in SPLITS."""

    i_total: dict[str, np.ndarray]
    multipliers: dict[str, np.ndarray]
    cell_ids: dict[str, np.ndarray]
    info: dict[str, Any]

    def sizes(self) -> dict[str, int]:
        return {s: len(self.cell_ids[s]) for s in SPLITS}


def prior_bounds(meta) -> dict[str, list]:
    """The support of each multiplier in a store's prior: {"low", "high", "log"} (52 each,
    log: log-uniform), from the manifest's sampling.prior (stores written before priors
    existed: the uniform sampling range)."""
    prior = getattr(meta.sampling, "prior", None) or {}
    if "multipliers" in prior:
        return {k: list(prior["multipliers"][k]) for k in ("low", "high", "log")}
    lo, hi = meta.sampling.range
    p = len(meta.parameter_names)
    return {"low": [lo] * p, "high": [hi] * p, "log": [False] * p}


def artefact_prior(meta) -> dict[str, Any] | None:
    """The voltage-clamp artefact prior a store was simulated with (ArtefactPrior fields, from
    the manifest's simulation.voltage_clamp.artefacts), None for the ideal clamp."""
    vc = (meta.simulation or {}).get("voltage_clamp") or {}
    art = vc.get("artefacts")
    return dict(art["prior"]) if art else None


def _check_compatible(stores: list) -> None:
    first = stores[0]
    for s in stores[1:]:
        for what, a, b in (("protocol_hash", first.protocol_hash, s.protocol_hash),
                           ("parameter_names", first.parameter_names, s.parameter_names),
                           ("i_total", first.meta.i_total.model_dump(),
                            s.meta.i_total.model_dump()),
                           ("sampling range", first.meta.sampling.range,
                            s.meta.sampling.range),
                           ("prior", prior_bounds(first.meta), prior_bounds(s.meta)),
                           ("voltage-clamp artefacts", artefact_prior(first.meta),
                            artefact_prior(s.meta))):
            if a != b:
                raise ValueError(f"stores {first.path} and {s.path} differ in {what}: "
                                 f"{str(a)[:80]} vs {str(b)[:80]}; train on stores of one "
                                 "protocol and sampling")


def load_dataset(stores, pool_k: int = 1, statuses=("ok",), protocol_hash: str | None = None,
                 max_cells: int | None = None, batch_size: int = 4096,
                 multirate: dict[str, float] | None = None) -> Dataset:
    """Read the cells of ``statuses`` from population stores (paths or opened stores) into
    split arrays, streaming shard by shard and reducing each trace as it is read (block means
    of ``pool_k`` stored samples, or the multi-rate bins of the store's protocol when
    ``multirate`` gives their widths, see :func:`~cardiotwin.learn.multirate.multirate_edges`),
    so memory grows with the reduced input, whatever the store's resolution. Traces are read
    ``batch_size`` cells at a time (fewer on long traces: at most :data:`MAX_READ_VALUES`
    stored samples per batch). ``protocol_hash``: refuse stores made with
    another protocol. ``max_cells``: only cells with cell_id < max_cells (the first cells of a
    seed; the split of each cell does not change)."""
    import pyarrow.dataset as pads

    from ..model.parameters import INFERRED_NAMES
    from ..population.store import PopulationStore, list_to_numpy, open_store

    if isinstance(stores, (str, bytes)) or not isinstance(stores, (list, tuple)):
        stores = [stores]
    if not stores:
        raise ValueError("no population store given")
    stores = [s if isinstance(s, PopulationStore) else open_store(s) for s in stores]
    _check_compatible(stores)
    if protocol_hash is not None and stores[0].protocol_hash != protocol_hash:
        raise ValueError(f"{stores[0].path}: the store was simulated with protocol "
                         f"{stores[0].protocol_hash[:12]}…, expected {protocol_hash[:12]}… "
                         "(another protocol); generate a store with the model's protocol")
    if stores[0].parameter_names != list(INFERRED_NAMES):
        raise ValueError(f"{stores[0].path}: parameter_names differ from this registry's 52 "
                         "inferred parameters (another registry version)")
    meta = stores[0].meta
    n_stored = meta.i_total.n_samples
    edges = None
    if multirate is not None:
        from .multirate import protocol_edges

        edges = protocol_edges(meta.protocol, meta.i_total.decimation_factor, n_stored,
                               **multirate)
    n_inputs = len(edges) - 1 if edges is not None else -(-n_stored // pool_k)
    rows = max(1, min(int(batch_size), MAX_READ_VALUES // max(n_stored, 1)))
    expr = pads.field("status").isin(list(statuses))
    if max_cells is not None:
        expr = expr & (pads.field("cell_id") < int(max_cells))
    parts: dict[str, list] = {k: [] for k in ("cell_id", "seed", "multipliers", "I_total")}
    for st in stores:
        for b in st.iter_batches(["cell_id", "multipliers", "I_total"], rows, expr):
            parts["cell_id"].append(b.column("cell_id").to_numpy())
            parts["seed"].append(np.full(b.num_rows, st.meta.sampling.seed, np.int64))
            parts["multipliers"].append(list_to_numpy(b.column("multipliers")))
            parts["I_total"].append(reduce_trace(list_to_numpy(b.column("I_total")), pool_k,
                                                 edges))
    ids = np.concatenate(parts["cell_id"]) if parts["cell_id"] else np.zeros(0, np.int64)
    seeds = np.concatenate(parts["seed"]) if parts["seed"] else np.zeros(0, np.int64)
    if len(np.unique(np.stack([ids, seeds]), axis=1).T) != len(ids):
        raise ValueError("the stores share cells (the same cell_id of the same sampling seed "
                         "twice): a cell would be counted twice")
    m = (np.concatenate(parts["multipliers"]) if parts["multipliers"]
         else np.zeros((0, len(INFERRED_NAMES)), np.float32))
    x = (np.concatenate(parts["I_total"]) if parts["I_total"]
         else np.zeros((0, n_inputs), np.float32))
    if not np.all(np.isfinite(x)):
        raise ValueError("I_total contains NaN or inf values in the stores")
    order = np.lexsort((seeds, ids))
    ids, m, x = ids[order], m[order], x[order]
    sp = split_of(ids)
    sizes = {s: int(np.sum(sp == i)) for i, s in enumerate(SPLITS)}
    if min(sizes["train"], sizes["val"], sizes["test"]) < 1:
        raise ValueError(f"too few cells of status {list(statuses)} to split 70:10:20: "
                         f"{sizes} (need at least one per split)")
    it = meta.i_total
    info = {"stores": [str(s.path) for s in stores],
            "manifest_hashes": [manifest_hash(s.manifest) for s in stores],
            "config_hashes": [s.meta.config_hash for s in stores],
            "protocol_hash": stores[0].protocol_hash, "protocol": meta.protocol,
            "registry_version": meta.registry_version,
            "sampling_range": list(meta.sampling.range), "prior_bounds": prior_bounds(meta),
            "vc_artefacts": artefact_prior(meta),
            "statuses": list(statuses), "max_cells": max_cells, "split_sizes": sizes,
            "pool": int(pool_k), "n_stored": int(n_stored), "edges": edges,
            "store_decimation": (int(it.decimation_factor), it.decimation),
            "i_total": {k: getattr(it, k) for k in ("n_samples", "sample_interval_ms",
                                                    "source_n_samples", "decimation_factor",
                                                    "decimation")}}
    return Dataset({s: x[sp == i] for i, s in enumerate(SPLITS)},
                   {s: m[sp == i] for i, s in enumerate(SPLITS)},
                   {s: ids[sp == i] for i, s in enumerate(SPLITS)}, info)
