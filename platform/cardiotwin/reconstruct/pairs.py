"""Paired (eAP, iAP) beat windows from simulated cells, generated on Ray into a Parquet store.

Per cell (``cell_id``): multipliers U(1 - spread, 1 + spread) (``population.sampling``, the
same cells as a population of that seed), optionally a drug (Hill block, ``drugs.catalog``)
at ``IC50_min x 10^U(conc_decades)`` (IC50_min: the drug's most potent block), then

1. free-running current clamp for ``prepace_ms`` (not recorded), then ``duration_ms`` recorded
   every 0.1 ms; cells whose status is not ``ok`` (``features.classify_batch``) are dropped;
2. an AP clamp of the recorded AP (voltage clamp following it, 0.1 ms ramps, from the same
   state) gives the 13 membrane currents along the AP;
3. the electrode model (:mod:`.electrode`, the cell's own junction drawn from
   ``ElectrodeConfig``; ``junctions_per_cell`` couplings, each with its own junction, S/N and
   noise, for the same AP) makes the noise-free eAP at 10 kHz; eAP and iAP are averaged to the
   window's sample interval and the noise is added there;
4. anchors: per beat (iAP upstrokes, dV/dt > 1 V/s, ``refractory_ms`` apart) the maximum of
   ``windows.spike_signal`` (the spike peak, as detected in use) within 10 ms; every window
   that fits in the recording is kept.

Everything about cell i depends only on (seed, i). The store has the population store's
guarantees, by its machinery (``population.store``: ``ShardWriter`` atomic shards
``shard-XXXXXX.parquet`` + sidecars written by the workers, ``complete_shard`` verifying them);
``manifest.json`` (format ``cardiotwin.reconstruct-pairs/1``, config hash, code version) is
written atomically by the driver. The output directory is claimed (``storage.outdir``: new, or
this store; a store written by another code version only with ``allow_code_change``) and
locked against a second writer (``storage.lock``); a re-run regenerates exactly the shards that
are missing, torn or damaged. Row:
cell_id, beat, junction (0 .. junctions_per_cell - 1), drug, conc_nM, c_junction, densities[13],
highpass_hz, snr, noise_sd_uV, anchor_ms, multipliers[52], eap_uV[length], iap_mV[length] (raw;
normalized when read).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ..population.config import shard_bounds
from ..settings import (
    ClosedFraction,
    Fraction,
    NonNegativeInt,
    NonNegativeMs,
    PositiveInt,
    PositiveMs,
    Settings,
    TemperatureK,
)
from ..storage.identity import identity_hash
from .electrode import ElectrodeConfig, add_noise, extracellular
from .windows import WindowConfig, cut, spike_signal, window_starts

FORMAT = "cardiotwin.reconstruct-pairs/1"
MANIFEST = "manifest.json"
FINE_DT_MS = 0.1
SPLITS = ("train", "val", "test")


class PairConfig(Settings):
    """A pair store: the cells, the drugs, the electrode and the windows."""

    n_cells: PositiveInt = Field(200, description="cells simulated (cell_id 0 .. n_cells-1)")
    spread: Fraction = Field(0.4, description="multipliers U(1 - spread, 1 + spread)")
    seed: NonNegativeInt = Field(0, description="sampling seed (multipliers, drugs, junctions, "
                                                "noise)")
    drugs: tuple[str, ...] = Field(
        ("e4031", "verapamil", "nifedipine", "lidocaine", "cisapride", "quinine"),
        description="drugs drawn for the drug-treated cells (names of drugs.catalog)")
    drug_fraction: ClosedFraction = Field(0.6, description="fraction of cells with a drug")
    conc_decades: tuple[float, float] = Field(
        (-1.0, 1.0), description="log10(concentration / the drug's lowest IC50) range")
    prepace_ms: NonNegativeMs = Field(5000.0, description="free-running time before "
                                                          "recording (ms)")
    duration_ms: PositiveMs = Field(3000.0, description="recorded time per cell (ms)")
    temperature_K: TemperatureK = Field(310.0, description="simulation temperature (K)")
    electrode: ElectrodeConfig = Field(default_factory=ElectrodeConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    shard_size: PositiveInt = Field(50, description="cells per shard")
    junctions_per_cell: PositiveInt = Field(
        1, description="electrode couplings per cell: each draws its own junction, high-pass "
                       "and S/N (and noise) for the same simulated AP (the simulation, not "
                       "the electrode, is the cost)")

    @field_validator("drugs")
    @classmethod
    def _drugs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from ..drugs.catalog import get_drug

        for name in v:
            get_drug(name)  # ValueError naming the unknown drug
        return tuple(v)

    @property
    def n_shards(self) -> int:
        return -(-self.n_cells // self.shard_size)

    def shard_bounds(self, index: int) -> tuple[int, int]:
        """(first cell id, number of cells) of shard ``index``."""
        return shard_bounds(self.n_cells, self.shard_size, index)

    def config_hash(self) -> str:
        """The store's identity: :func:`~cardiotwin.storage.identity.identity_hash` of every
        field (the code version is recorded beside it, not in it); fields added later
        (``NEW_FIELDS``) count only away from their default, so older stores keep their
        hash."""
        d = self.model_dump(mode="json")
        for name, default in NEW_FIELDS.items():
            if d.get(name) == default:
                d.pop(name)
        return identity_hash(d)


#: fields added after stores were written, with the default that leaves the hash unchanged
NEW_FIELDS = {"junctions_per_cell": 1}


def split_of(cell_ids, calibration: bool = False) -> np.ndarray:
    """Split of each cell by cell_id % 10: 8 val, 9 test, the rest train (80/10/10); with
    ``calibration``, 7 is ``cal`` (the conformal calibration split: 70/10/10/10)."""
    c = np.asarray(cell_ids, dtype=np.int64) % 10
    out = np.where(c == 9, "test", np.where(c == 8, "val", "train"))
    if calibration:
        out = np.where(c == 7, "cal", out)
    return out


# ---- one shard --------------------------------------------------------------------------------

def _cell_rng(seed: int, cell_id: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(cell_id), 0x7EA9]))


def _drug_for(cfg: PairConfig, rng: np.random.Generator) -> tuple[str, float]:
    from ..drugs.catalog import get_drug

    if not cfg.drugs or rng.uniform() >= cfg.drug_fraction:
        return "", 0.0
    drug = get_drug(cfg.drugs[int(rng.integers(len(cfg.drugs)))])
    ic50 = min(b.ic50_nM for b in drug.blocks)
    return drug.name, float(ic50 * 10.0 ** rng.uniform(*cfg.conc_decades))


def ap_clamp_currents(v_mV: np.ndarray, inputs: np.ndarray, state0: np.ndarray,
                      temperature_K: float) -> dict[str, np.ndarray]:
    """The 13 membrane currents (pA/pF) along an AP ``v_mV`` sampled every 0.1 ms, from a
    voltage clamp that follows it (ramps between samples) from ``state0``: one value per
    sample except the last.

    The kernel of ``simulate_voltage_clamp`` called with the ramps as arrays (the same
    integration, bit for bit): a ``Protocol`` of one segment per sample (30,000+ for a
    recording) cost seconds per cell in validation and hashing alone."""
    from ..model.equations import CURRENT_NAMES, N_CURRENTS, cell_constants
    from ..model.parameters import N_STATES
    from ..model.temperature import tau_factor
    from ..simulate import kernels

    v = np.asarray(v_mV, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"v_mV: expected a finite 1-D trace of >= 2 samples, found shape "
                         f"{v.shape}")
    n = v.size - 1
    cp = cell_constants(np.asarray(inputs, dtype=np.float64)[None, :], tau_factor(temperature_K))
    y0 = np.asarray(state0, dtype=np.float64).reshape(1, N_STATES).copy()
    itot = np.empty((1, n), np.float32)
    cur = np.empty((1, N_CURRENTS, n), np.float32)
    final = np.empty((1, N_STATES))
    unstable = np.zeros(1, np.bool_)
    kernels.voltage_clamp_kernel[True](
        kernels.workspace(1), cp, y0, np.ones(n, np.int64), v[:-1].copy(), v[1:].copy(),
        FINE_DT_MS, 1, itot, cur, final, unstable)
    return {name: cur[0, i].astype(np.float64) for i, name in enumerate(CURRENT_NAMES)}


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    n = len(x) // k
    return x[:n * k].reshape(n, k).mean(axis=1)


def _upstrokes(v: np.ndarray, dt: float, refractory_ms: float) -> np.ndarray:
    from scipy.signal import find_peaks

    d = np.diff(v) / dt
    peaks, _ = find_peaks(d, height=1.0, distance=max(1, int(refractory_ms / dt)))
    return peaks


def simulate_cells(cfg: PairConfig, first: int, n: int) -> tuple[dict[str, list], Counter]:
    """Rows (column -> list) of cells first .. first+n-1 and their status counts."""
    from ..drugs.catalog import get_drug
    from ..features import classify_batch
    from ..model import inputs_from_multipliers
    from ..population.sampling import sample_multipliers
    from ..simulate import simulate_current_clamp

    w = cfg.window
    k = round(w.sample_interval_ms / FINE_DT_MS)
    if abs(k * FINE_DT_MS - w.sample_interval_ms) > 1e-9:
        raise ValueError(f"window sample_interval_ms must be a multiple of {FINE_DT_MS} ms")
    m = sample_multipliers(n, cfg.spread, cfg.seed, first).astype(np.float32)
    inputs = inputs_from_multipliers(m.astype(np.float64))
    rngs = [_cell_rng(cfg.seed, first + i) for i in range(n)]
    drugs = [_drug_for(cfg, r) for r in rngs]
    for i, (name, conc) in enumerate(drugs):
        if name:
            inputs[i] = get_drug(name).apply(inputs[i:i + 1], conc)[0]
    pre = simulate_current_clamp(max(cfg.prepace_ms, FINE_DT_MS), inputs,
                                 temperature_K=cfg.temperature_K,
                                 record_interval_ms=max(cfg.prepace_ms, FINE_DT_MS))
    y0 = np.where(pre.unstable[:, None], np.nan, pre.final_state)
    ok_start = ~pre.unstable
    rows: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    counts: Counter = Counter()
    if not ok_start.any():
        counts["unstable"] += n
        return rows, counts
    cc = simulate_current_clamp(cfg.duration_ms, inputs[ok_start], temperature_K=cfg.temperature_K,
                                record_interval_ms=FINE_DT_MS, initial_state=y0[ok_start])
    idx = np.flatnonzero(ok_start)
    status, _ = classify_batch(cc.t_ms, cc.v_mV)
    status = np.where(cc.unstable, "unstable", status)
    counts["unstable"] += int((~ok_start).sum())
    counts.update(status.tolist())
    for j, i in enumerate(idx.tolist()):
        if status[j] != "ok":
            continue
        rng = rngs[i]
        v_fine = cc.v_mV[j].astype(np.float64)
        cur = ap_clamp_currents(v_fine, inputs[i], y0[i], cfg.temperature_K)
        v_fine = v_fine[:-1]
        v_c = _block_mean(v_fine, k)
        ups = _upstrokes(v_c, w.sample_interval_ms, w.refractory_ms)
        kept = 0
        for jn in range(cfg.junctions_per_cell):
            junction = cfg.electrode.draw(rng)
            e_fine = extracellular(v_fine, FINE_DT_MS, cur, junction["c_junction"],
                                   junction["densities"], junction["highpass_hz"],
                                   cfg.electrode.gain_uV)
            e_noisy, sd = add_noise(_block_mean(e_fine, k), junction["snr"], rng)
            r = max(1, round(10.0 / w.sample_interval_ms))
            sp = spike_signal(e_noisy, w)
            anchors = np.array([max(0, u - r) + int(np.argmax(sp[max(0, u - r):u + r + 1]))
                                for u in ups], dtype=np.int64)
            starts = window_starts(anchors, len(v_c), w)
            if starts.size == 0:
                continue
            kept += 1
            ew, vw = cut(e_noisy, starts, w.length), cut(v_c, starts, w.length)
            for b in range(len(starts)):
                rows["cell_id"].append(first + i)
                rows["beat"].append(b)
                rows["junction"].append(jn)
                rows["drug"].append(drugs[i][0])
                rows["conc_nM"].append(drugs[i][1])
                rows["c_junction"].append(junction["c_junction"])
                rows["densities"].append(junction["densities"])
                rows["highpass_hz"].append(junction["highpass_hz"])
                rows["snr"].append(junction["snr"])
                rows["noise_sd_uV"].append(sd)
                rows["anchor_ms"].append((starts[b] + w.pre_samples) * w.sample_interval_ms)
                rows["multipliers"].append(m[i])
                rows["eap_uV"].append(ew[b])
                rows["iap_mV"].append(vw[b])
        if not kept:
            counts["no_window"] += 1
    return rows, counts


ROW_COLUMNS = ("cell_id", "beat", "junction", "drug", "conc_nM", "c_junction", "densities",
               "highpass_hz", "snr", "noise_sd_uV", "anchor_ms", "multipliers", "eap_uV", "iap_mV")


def make_schema(length: int):
    import pyarrow as pa

    from ..model.equations import N_CURRENTS
    from ..model.parameters import N_INFERRED

    f32 = pa.float32()
    return pa.schema([
        pa.field("cell_id", pa.int64(), nullable=False), pa.field("beat", pa.int32()),
        pa.field("junction", pa.int32()),
        pa.field("drug", pa.string()), pa.field("conc_nM", f32),
        pa.field("c_junction", f32), pa.field("densities", pa.list_(f32, N_CURRENTS)),
        pa.field("highpass_hz", f32), pa.field("snr", f32), pa.field("noise_sd_uV", f32),
        pa.field("anchor_ms", f32), pa.field("multipliers", pa.list_(f32, N_INFERRED)),
        pa.field("eap_uV", pa.list_(f32, length)), pa.field("iap_mV", pa.list_(f32, length))])


def _table(rows: dict[str, list], schema):
    import pyarrow as pa

    cols = {}
    for f in schema:
        vals = rows[f.name]
        if pa.types.is_fixed_size_list(f.type):
            size = f.type.list_size
            flat = (np.asarray(vals, dtype=np.float32).reshape(-1) if vals
                    else np.zeros(0, np.float32))
            cols[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), size)
        else:
            cols[f.name] = pa.array(vals, f.type)
    return pa.Table.from_pydict(cols, schema=schema)


def write_shard(cfg: PairConfig, index: int, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Simulate shard ``index`` and write it atomically with its sidecar
    (``population.store.ShardWriter``: Parquet, then the sidecar); returns the sidecar."""
    from ..population.store import ShardWriter

    t0 = time.perf_counter()
    first, n = cfg.shard_bounds(index)
    rows, counts = simulate_cells(cfg, first, n)
    table = _table(rows, make_schema(cfg.window.length))
    writer = ShardWriter(out_dir, index, table.schema)
    try:
        writer.write(table)
        no_window = counts.pop("no_window", 0)  # ok cells without a complete window
        return writer.commit({
            "index": index, "first_cell_id": first, "n_cells": n,
            "config_hash": cfg.config_hash(), "cells_kept": len(set(rows["cell_id"])),
            "status_counts": dict(counts), "ok_cells_without_window": no_window,
            "wall_s": round(time.perf_counter() - t0, 3), "pid": os.getpid(),
            "host": socket.gethostname()})
    except BaseException:
        writer.abort()
        raise


def _shard_task(cfg_json: str, index: int, out_dir: str) -> dict[str, Any]:
    from ..runtime.threads import limit_numba_threads

    limit_numba_threads(1)
    return write_shard(PairConfig.model_validate_json(cfg_json), index, out_dir)


# ---- the driver ---------------------------------------------------------------------------------

def _claim(out: Path, cfg: PairConfig, allow_code_change: bool) -> dict[str, Any] | None:
    """The previous manifest of this store in ``out`` (None: a new store); ValueError for
    another store, foreign files, or a store written by other code without
    ``allow_code_change``."""
    from ..runtime.versions import code_version
    from ..storage.outdir import claim_output_dir

    prev = claim_output_dir(out, marker=MANIFEST, fmt=FORMAT, config_hash=cfg.config_hash(),
                            identity=cfg.model_dump(mode="json"),
                            own=lambda name: name.startswith("shard-"), what="pair store")
    here = code_version()
    if prev is not None and prev.get("code_version") != here and not allow_code_change:
        raise ValueError(f"directory {out} holds a pair store written by cardiotwin "
                         f"{prev.get('code_version', 'of unknown version')}, this is {here}; "
                         "pass allow_code_change=True (--allow-code-change) to resume it with "
                         "this code, or use a new directory")
    return prev


def generate_pairs(cfg: PairConfig, out_dir: str | os.PathLike, *, n_workers: int | None = None,
                   num_cpus: int | None = None, ray_address: str | None = None,
                   allow_code_change: bool = False, timeout_s: float | None = None,
                   max_attempts: int = 3, log: Callable[[str], None] | None = print
                   ) -> dict[str, Any]:
    """Generate (or resume) the pair store of ``cfg`` in ``out_dir`` with one Ray task per
    shard (one CPU each, at most ``n_workers`` at a time); returns the manifest.

    The directory is claimed (``storage.outdir``: new, or this store) and locked against a
    second writer (``storage.lock``) for the whole run; shards that are not complete
    (``population.store.complete_shard``: missing, torn, damaged, or of another config) are
    (re)generated. Sidecars and manifest record the code version. ``timeout_s``: a shard
    running longer is presumed hung and retried (default: 5 x the slowest completed shard, at
    least 10 min); ``max_attempts``: tries per shard.
    """
    from ..population.store import remove_stale_temporaries
    from ..storage.lock import DirectoryLock

    out = Path(out_dir).resolve()
    _claim(out, cfg, allow_code_change)  # refuse before taking anything
    with DirectoryLock(out):
        prev = _claim(out, cfg, allow_code_change)  # as it is now that we hold the lock
        remove_stale_temporaries(out)
        return _generate_locked(cfg, out, prev, n_workers=n_workers,
                                num_cpus=num_cpus, ray_address=ray_address, timeout_s=timeout_s,
                                max_attempts=max_attempts, log=log)


def _generate_locked(cfg: PairConfig, out: Path, prev: dict[str, Any] | None, *, n_workers,
                     num_cpus, ray_address, timeout_s, max_attempts, log) -> dict[str, Any]:
    import ray

    from ..population.store import complete_shard
    from ..runtime import FanOut, ray_session
    from ..runtime.versions import code_version, package_versions
    from ..storage.atomic import write_json_atomic

    chash = cfg.config_hash()
    t0 = time.perf_counter()
    done: dict[int, dict[str, Any]] = {}
    for i in range(cfg.n_shards):
        side = complete_shard(out, i, chash, *cfg.shard_bounds(i))
        if side is not None:
            done[i] = side
    pending = [i for i in range(cfg.n_shards) if i not in done]
    if log and prev is not None and pending:
        log(f"resuming {out}: {len(done)} of {cfg.n_shards} shards complete")

    def manifest(status: str) -> dict[str, Any]:
        shards = [done[i] for i in sorted(done)]
        counts: Counter = Counter()
        for s in shards:
            counts.update(s.get("status_counts", {}))
        m = {"format": FORMAT, "status": status, "config": cfg.model_dump(mode="json"),
             "config_hash": chash, "n_shards": cfg.n_shards, "shards": shards,
             "totals": {"cells": sum(s["n_cells"] for s in shards),
                        "cells_kept": sum(s["cells_kept"] for s in shards),
                        "windows": sum(s["rows_kept"] for s in shards),
                        "ok_cells_without_window": sum(s.get("ok_cells_without_window", 0)
                                                       for s in shards),
                        "status_counts": dict(counts)},
             "code_version": code_version(), "versions": package_versions(),
             "wall_s": round(time.perf_counter() - t0, 3)}
        write_json_atomic(out / MANIFEST, m)
        return m

    manifest("running")
    if pending:
        with ray_session(num_cpus, ray_address, "auto"):
            limit = max(1, int(n_workers or ray.available_resources().get("CPU", 1)))
            task = ray.remote(num_cpus=1, max_retries=1)(_shard_task)
            cfg_json = cfg.model_dump_json()
            fan: FanOut[int] = FanOut(
                lambda _, i: task.remote(cfg_json, i, str(out)), n_workers=limit,
                max_attempts=max_attempts, timeout_s=timeout_s,
                timeout_factor=None if timeout_s else 5.0, min_timeout_s=600.0,
                describe=lambda i: f"shard {i}", echo=log)
            for i, side in fan.run(pending):
                # the driver sees what the worker wrote (shared storage), complete and intact
                if complete_shard(out, i, chash, *cfg.shard_bounds(i)) is None:
                    raise ValueError(f"shard {i} reported written by a worker is missing or "
                                     f"incomplete in {out}: the output directory must be on "
                                     "storage shared by the driver and every node")
                done[i] = side
                if log:
                    log(f"shard {i}: {side['rows_kept']} windows from {side['cells_kept']}/"
                        f"{side['n_cells']} cells ({side['wall_s']:.1f} s)")
                manifest("running")
    return manifest("complete")

# ---- reading ------------------------------------------------------------------------------------

def read_pair_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the pair store at ``path``; ValueError naming the file when it is
    missing, torn or of another format."""
    from ..storage.outdir import read_json_file

    p = Path(path) / MANIFEST
    m = read_json_file(p, "pair store manifest")
    if m.get("format") != FORMAT:
        raise ValueError(f"{p}: not a pair store manifest (format {FORMAT!r} expected, found "
                         f"{m.get('format')!r})")
    return m


def load_pairs(path: str | os.PathLike, columns: tuple[str, ...] | None = None
               ) -> dict[str, Any]:
    """All rows of a complete pair store as arrays (list columns as 2-D float32). Every shard
    is verified first (``population.store.complete_shard``): a damaged one is a ValueError
    naming it (re-running the generation regenerates it)."""
    import pyarrow.parquet as pq

    from ..population.store import complete_shard, list_to_numpy

    out = Path(path)
    m = read_pair_manifest(out)
    if m.get("status") != "complete" or len(m.get("shards", [])) != m.get("n_shards"):
        raise ValueError(f"{out}: the generation has not finished; re-run it to resume")
    for s in m["shards"]:
        if complete_shard(out, s["index"], m["config_hash"], s["first_cell_id"],
                          s["n_cells"]) is None:
            raise ValueError(f"{out / s['file']}: shard missing, incomplete or damaged; re-run "
                             "the generation to regenerate it")
    tables = [pq.read_table(out / s["file"], columns=list(columns) if columns else None)
              for s in m["shards"]]
    import pyarrow as pa

    t = pa.concat_tables(tables)
    res: dict[str, Any] = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_fixed_size_list(col.type):
            res[name] = list_to_numpy(col).astype(np.float32)
        else:
            res[name] = col.to_numpy(zero_copy_only=False)
    res["split"] = split_of(res["cell_id"]) if "cell_id" in res else None
    res["manifest"] = m
    return res
