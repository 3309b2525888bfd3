"""Population generation on Ray: synthetic cells -> Parquet shards, resumable (the driver).

``generate_population(config)`` splits the cells into shards of ``shard_size`` and runs them on a
pool of Ray actors (population/actor.py ``ShardSimulator``, one CPU and one numba thread each)
through the one fan-out loop, :class:`cardiotwin.runtime.fanout.FanOut`. For each shard an
actor samples the multipliers of cells [first, first + n) (population/sampling.py), simulates
the voltage-clamp protocol (I_total) and a free-running AP run of ``ap_duration_ms``
(classification and biomarkers, population/batch.py), applies the physiological filter, and
writes the shard itself, atomically, into ``out_dir``, which must therefore be a path that every
node sees (a shared filesystem; on one machine any directory). The driver only schedules, shows
progress and writes the manifest (population/manifest.py).

One writer per directory: the driver holds :class:`cardiotwin.storage.lock.DirectoryLock` on
``out_dir`` for the whole run, taken before anything there is removed or written. A second run
on the same directory is refused with one line naming the holder (pid, host, start, last
heartbeat); the lock of a run that died (its pid gone on this host, or no heartbeat for 60 s)
is taken over, and the run says so.

Resuming: a re-run with the same settings skips the shards already complete and redoes the rest
(a crash leaves at most a temporary file, removed at the start of the next run). Every shard is
verified against its sidecar's SHA-256 first: a damaged shard (bytes changed, truncated, torn
sidecar) is named ("shard 3: checksum mismatch, re-simulating") and simulated again. A
different configuration on an existing store is refused before anything is touched, and so is
a store written by another cardiotwin version unless ``allow_code_change`` (the runs list then
records each run's code version, ``code_versions`` every version that wrote a shard).

Memory: an actor holds one chunk of 256 cells at a time (I_total, the AP traces and their
float64 copy for the classifier): ~0.5 GB resident per actor on protocol_a with a 4 s AP
run (~320 MB above the imported libraries).

Fault tolerance: when an actor dies (its process or node killed: ``RayActorError``, lost
objects, OOM kills) or hangs, its shard goes back to the queue and a new actor replaces it; a
shard that fails ``max_attempts`` times, or raises an ordinary exception, stops the run. Hung:
a shard running longer than ``shard_timeout_s``; by default (None) the timeout is adaptive,
:data:`TIMEOUT_FACTOR` = 10 x the longest shard completed so far and at least
:data:`MIN_TIMEOUT_S` = 120 s (shards of one run are the same size, so a healthy one takes
about as long as the others; the first shards include the actors' start-up, which only makes the
timeout longer). Before the first shard completes there is no timeout.

Ray: :func:`cardiotwin.runtime.ray_setup.init_ray` connects to ``ray_address`` or
``$RAY_ADDRESS`` (set by ``ray job submit``) or else starts a local cluster (``num_cpus``
limits it), shipping the package to the workers when they cannot import it
(``ship_package``: auto / yes / no; see that module). Alternatives: install the package on
every node, or pass ``--runtime-env-json '{"py_modules": ["platform/cardiotwin"]}'`` to ``ray
job submit`` (with ``ship_package="no"``: Ray refuses conflicting ``py_modules`` settings of the
job and of ``ray.init``). Each shard's sidecar records the ``code_path`` its actor imported.
Shipped code is unpacked on each node into a new directory, with numba's cache files if the
checkout has them; where numba does not trust them (other CPU, changed sources) the first
actors on a node compile the kernels (~30 s per kernel, each actor).

Devices: ``device`` (config) auto / cpu / gpu. GPU actors hold one GPU each (``num_gpus=1``;
default one actor per GPU of the cluster) and simulate up to ``GPU_CHUNK_CELLS`` cells of their
shard at once with ``simulate.cuda``, so a GPU wants large shards (e.g. 16384 cells). The rows
are the same cells with the same statuses as on CPUs; I_total agrees to rounding (relative RMS
<= 1e-9, tests/test_gpu.py). The classification of the AP runs stays serial CPU Python (~2 ms
per cell) on the GPU actor's one CPU.

Determinism: cell i's row depends only on (seed, i) (uniform, sobol) or on (seed, n_cells, i)
(lhs), never on sharding, the number of actors, retries or resumption. Multipliers are rounded
to float32 before simulating, so the stored values reproduce the stored trace exactly.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..model.artefacts import ARTEFACT_FIELDS
from ..model.parameters import INFERRED_NAMES, REGISTRY_VERSION
from ..runtime.fanout import FanOut
from ..runtime.ray_setup import init_ray, ray_runtime_env
from ..runtime.versions import code_version, package_versions
from ..storage.atomic import write_json_atomic
from ..storage.lock import DirectoryLock
from ..storage.outdir import check_writable, claim_output_dir
from .actor import TEST_ENV_PREFIX, ShardContext, ShardSimulator
from .batch import simulate_batch, warm_kernels
from .calibration import POPULATION_STATUSES as STATUSES
from .config import AP_RECORD_INTERVAL_MS, DEVICES, FORMAT, GenerationConfig
from .manifest import MANIFEST, PopulationManifest, RunRecord, ShardEntry, Totals
from .sampling import lhs_design
from .store import (
    PopulationStore,
    inspect_shard,
    make_schema,
    open_store,
    remove_stale_temporaries,
    schema_description,
)

# simulate_batch: still imported from here by tests/test_gpu.py (its home is population.batch)
__all__ = ["MIN_TIMEOUT_S", "TIMEOUT_FACTOR", "generate_population", "resolve_device",
           "run_from_args", "simulate_batch"]

MANIFEST_EVERY_S = 5.0      # the driver rewrites the running manifest at most this often
TIMEOUT_FACTOR = 10.0       # adaptive hung-shard timeout: this x the longest shard so far ...
MIN_TIMEOUT_S = 120.0       # ... and at least this (s)
START_HINT = ("(if the workers cannot import cardiotwin: install it on the nodes or ship it "
              "with ship_package='yes' / --ship-package yes)")
CELL_SEED = {"uniform": "numpy SeedSequence([seed, cell_id])",
             "sobol": "scipy.stats.qmc.Sobol(52, scramble, default_rng(seed)), point cell_id",
             "lhs": "scipy.stats.qmc.LatinHypercube(52, default_rng(seed)) of n_cells points, "
                    "row cell_id"}
SHARD_ENTRY_KEYS = tuple(ShardEntry.model_fields)


def resolve_device(device: str, cluster_gpus: float) -> str:
    """"cpu" or "gpu" for the config's ``device`` (auto / cpu / gpu) on a Ray cluster with
    ``cluster_gpus`` GPUs; ValueError when gpu is asked for and there is none."""
    if device not in DEVICES:
        raise ValueError(f"device must be auto, cpu or gpu, found {device!r}")
    if device == "gpu" and cluster_gpus < 1:
        raise ValueError("device 'gpu' was requested but the Ray cluster has no GPU "
                         "(ray.cluster_resources() lists none): use device 'cpu' or 'auto', or "
                         "run on GPU nodes with numba-cuda installed (pip install "
                         "'cardiotwin[gpu]')")
    if device == "auto":
        return "gpu" if cluster_gpus >= 1 else "cpu"
    return device


def _totals(cfg: GenerationConfig, shards: dict[int, dict[str, Any]]) -> Totals:
    counts: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    for s in shards.values():
        counts.update(s["status_counts"])
        stage.update(s.get("stage_s", {}))
    cells = sum(s["n_cells"] for s in shards.values())
    rows = sum(s["rows_kept"] for s in shards.values())
    rejected = {s: counts.get(s, 0) for s in STATUSES if s != "ok"}
    return Totals.model_validate({
        "n_cells": cells, "rows": rows,
        "status_counts": {s: counts.get(s, 0) for s in STATUSES},
        "filter": {"rule": "keep status == 'ok'" if not cfg.keep_rejected
                   else "none (keep_rejected: every cell stored, status tells)",
                   "kept": rows, "dropped": cells - rows, "rejected_by_reason": rejected},
        "actor_seconds_by_stage": {k: round(v, 3) for k, v in stage.items()}})


def _new_manifest(cfg: GenerationConfig, protocol, k: int, identity: dict[str, Any],
                  chash: str, schema_meta: dict[str, str], out: Path, ship_package: str,
                  previous: PopulationManifest | None, allow_code_change: bool
                  ) -> PopulationManifest:
    n_stored = -(-protocol.n_samples // k)
    return PopulationManifest.model_validate({
        "format": FORMAT, "status": "running", "config": identity, "config_hash": chash,
        "run": {"out_dir": str(out), "protocol_source": cfg.protocol,
                "n_workers": cfg.n_workers, "ship_package": ship_package,
                "shard_timeout_s": cfg.shard_timeout_s, "allow_code_change": allow_code_change},
        "protocol": protocol.to_json(), "protocol_hash": protocol.protocol_hash,
        "registry_version": REGISTRY_VERSION, "parameter_names": list(INFERRED_NAMES),
        "sampling": {"sampler": cfg.sampler, "spread": cfg.spread,
                     "range": [1.0 - cfg.spread, 1.0 + cfg.spread], "seed": cfg.seed,
                     "cell_seed": CELL_SEED[cfg.sampler],
                     "dtype": "float32 (simulated with these values)",
                     "prior": cfg.prior_spec().describe(),
                     "calibration": (cfg.calibration.model_dump(mode="json")
                                     if cfg.calibration is not None else None)},
        "simulation": {
            "voltage_clamp": {"protocol_hash": protocol.protocol_hash,
                              "temperature_K": protocol.temperature_K,
                              "sample_interval_ms": protocol.sample_interval_ms,
                              "initial_state": "model default",
                              "precision": cfg.precision,
                              "artefacts": (None if cfg.vc_artefacts is None else {
                                  "model": "cardiotwin.model.artefacts (Lei et al. 2020)",
                                  "column": "vc_artefacts",
                                  "fields": list(ARTEFACT_FIELDS),
                                  "prior": cfg.vc_artefacts.model_dump(mode="json")})},
            "ap_classification": {"duration_ms": cfg.ap_ms, "temperature_K": cfg.temperature_K,
                                  "precision": cfg.precision,
                                  "record_interval_ms": AP_RECORD_INTERVAL_MS,
                                  "mode": "free-running from the model's initial state",
                                  "classifier": "cardiotwin.features.classify_batch"}},
        "i_total": {"units": "pA/pF", "n_samples": n_stored,
                    "sample_interval_ms": protocol.sample_interval_ms * k,
                    "source_sample_interval_ms": protocol.sample_interval_ms,
                    "source_n_samples": protocol.n_samples, "decimation_factor": k,
                    "decimation": None if k == 1 else cfg.decimation,
                    "decimate_to_hz": cfg.decimate_to_hz},
        "schema": schema_description(make_schema(n_stored, schema_meta,
                                                 artefacts=cfg.vc_artefacts is not None)),
        "n_shards": cfg.n_shards, "shard_size": cfg.shard_size,
        "code_version": code_version(), "versions": package_versions(),
        "runs": [r.model_dump(mode="json") for r in (previous.runs if previous else [])]})


def _check_code_version(out: Path, previous: PopulationManifest | None,
                        allow_code_change: bool) -> None:
    if previous is None or allow_code_change:
        return
    if previous.code_version != code_version():
        raise ValueError(f"{out} was written by cardiotwin {previous.code_version or 'unknown'}"
                         f" and this is cardiotwin {code_version()}: resuming would mix shards "
                         "of two code versions in one dataset; use a new --out, or pass "
                         "--allow-code-change (allow_code_change=True) to resume anyway")


def _claim(out: Path, chash: str, identity: dict[str, Any]) -> PopulationManifest | None:
    prev = claim_output_dir(out, marker=MANIFEST, fmt=FORMAT, config_hash=chash,
                            identity=identity, what="population store", create=False)
    return PopulationManifest.from_dict(prev, out / MANIFEST) if prev is not None else None


def generate_population(config: GenerationConfig | dict[str, Any], *, progress: bool = True,
                        num_cpus: int | None = None, ray_address: str | None = None,
                        ship_package: str = "auto", actor_env: dict[str, str] | None = None,
                        max_attempts: int = 3, echo: Callable[[str], Any] | None = print,
                        allow_code_change: bool = False) -> PopulationStore:
    """Generate (or resume) the population store of ``config`` in ``config.out_dir`` on Ray and
    return it opened (:class:`PopulationStore`).

    Every check (settings, protocol file, decimation, output directory writable and free of
    another dataset, code version, the directory's lock) runs before any work. ``num_cpus``:
    size of a local cluster started here; ``ray_address``: connect to this cluster (default
    ``$RAY_ADDRESS``, else start locally); ``ship_package``: auto / yes / no; ``actor_env``:
    extra environment variables for the actors; ``max_attempts``: tries per shard when actors
    die or hang; ``echo``: where the summary lines go (None: silent); ``progress``: a tqdm bar
    on stderr; ``allow_code_change``: resume a store written by another cardiotwin version.
    """
    cfg = config if isinstance(config, GenerationConfig) else GenerationConfig.create(**config)
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, found {max_attempts}")
    ray_runtime_env(ship_package, ray_address)           # validates ship_package
    protocol = cfg.load_protocol()
    k = cfg.decimation_factor(protocol.sample_interval_ms)
    identity = cfg.identity(protocol.protocol_hash)
    chash = cfg.config_hash(protocol.protocol_hash)
    out = Path(cfg.out_dir).resolve()
    _check_code_version(out, _claim(out, chash, identity), allow_code_change)   # read-only
    check_writable(out)
    with DirectoryLock(out) as lock:
        if lock.took_over is not None and echo:
            echo(f"took over the stale lock of a run that is gone "
                 f"({DirectoryLock.describe(lock.took_over)})")
        previous = _claim(out, chash, identity)          # again, now that we hold the lock
        _check_code_version(out, previous, allow_code_change)
        return _generate_locked(cfg, protocol, k, identity, chash, out, previous,
                                progress=progress, num_cpus=num_cpus, ray_address=ray_address,
                                ship_package=ship_package, actor_env=actor_env,
                                max_attempts=max_attempts, echo=echo,
                                allow_code_change=allow_code_change)


def _generate_locked(cfg, protocol, k, identity, chash, out, previous, *, progress, num_cpus,
                     ray_address, ship_package, actor_env, max_attempts, echo,
                     allow_code_change) -> PopulationStore:
    if echo and not Path(cfg.out_dir).is_absolute() and (ray_address
                                                          or os.environ.get("RAY_ADDRESS")):
        echo(f"warning: relative output path {cfg.out_dir!r} on a cluster: it resolves to {out} "
             "on the driver; the workers must see that same path (use an absolute path on "
             "shared storage)")
    if previous is not None and previous.code_version != code_version() and echo:
        echo(f"warning: resuming a store written by cardiotwin {previous.code_version} with "
             f"{code_version()} (allowed by allow_code_change)")
    remove_stale_temporaries(out)
    done: dict[int, dict[str, Any]] = {}
    redone: list[int] = []
    for i in range(cfg.n_shards):
        c = inspect_shard(out, i, chash, *cfg.shard_bounds(i))
        if c.ok and c.summary is not None:
            done[i] = c.summary
        elif c.reason != "not written":
            redone.append(i)
            if echo:
                echo(f"shard {i}: {c.reason}, re-simulating")
    pending = [i for i in range(cfg.n_shards) if i not in done]
    schema_meta = {"cardiotwin.format": FORMAT, "cardiotwin.config_hash": chash,
                   "cardiotwin.protocol_hash": protocol.protocol_hash}
    manifest = _new_manifest(cfg, protocol, k, identity, chash, schema_meta, out, ship_package,
                             previous, allow_code_change)
    run_rec = RunRecord(started_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        host=socket.gethostname(), shards_done_before=len(done),
                        shards_redone=redone, code_version=code_version())
    t0 = time.perf_counter()

    def write_manifest(status: Literal["running", "complete"]) -> None:
        manifest.status = status
        manifest.shards = [ShardEntry.model_validate({key: s.get(key) for key in
                                                      SHARD_ENTRY_KEYS if key in s})
                           for _, s in sorted(done.items())]
        manifest.code_versions = sorted({s["code_version"] for s in done.values()
                                         if s.get("code_version")})
        manifest.totals = _totals(cfg, done)
        run_rec.wall_s = round(time.perf_counter() - t0, 3)
        if run_rec.wall_s > 0:
            run_rec.cells_per_s = round(run_rec.cells_simulated / run_rec.wall_s, 2)
        d = manifest.to_dict()
        d["runs"].append(run_rec.model_dump(mode="json"))
        wall = round(sum(r["wall_s"] for r in d["runs"]), 3)
        sim = sum(r["cells_simulated"] for r in d["runs"])
        d["wall_s"] = wall
        d["cells_per_s"] = round(sim / wall, 2) if wall else None
        write_json_atomic(out / MANIFEST, d)

    write_manifest("running")
    if pending:
        if echo:
            echo(f"{cfg.n_cells} cells in {cfg.n_shards} shards of {cfg.shard_size}: "
                 f"{len(done)} complete, {len(pending)} to simulate -> {out}")
        ctx = ShardContext(cfg, chash, protocol, str(out), k, schema_meta)
        try:
            _run_pending(ctx, pending, done, run_rec, write_manifest, progress=progress,
                         num_cpus=num_cpus, ray_address=ray_address, ship_package=ship_package,
                         actor_env=actor_env, max_attempts=max_attempts, echo=echo)
        finally:
            if len(done) < cfg.n_shards:
                write_manifest("running")
    write_manifest("complete")
    remove_stale_temporaries(out)
    store = open_store(out)
    if echo:
        t = store.meta.totals
        size = sum(f.stat().st_size for f in store.files)
        counts = ", ".join(f"{s} {c}" for s, c in t.status_counts.items())
        echo(f"done: {t.n_cells} cells ({counts}); {t.rows} rows kept in "
             f"{len(store.files)} shards, {size / 1e6:.1f} MB "
             f"({size / max(t.rows, 1):.0f} bytes per row); this run simulated "
             f"{run_rec.cells_simulated} cells in {run_rec.wall_s:.1f} s "
             f"({run_rec.cells_per_s or 0:.1f} cells/s) -> {out}")
    return store


def _run_pending(ctx: ShardContext, pending: list[int], done: dict[int, dict[str, Any]],
                 run_rec: RunRecord, write_manifest: Callable[[Any], None], *, progress: bool,
                 num_cpus: int | None, ray_address: str | None, ship_package: str,
                 actor_env: dict[str, str] | None, max_attempts: int,
                 echo: Callable[[str], Any] | None) -> None:
    """Run the pending shards on a pool of actors through :class:`FanOut` (an actor receives
    work once started; a shard whose actor dies or hangs goes to a new actor)."""
    import dataclasses

    import ray

    from ..resources import simulation_resources

    cfg = ctx.config
    started = init_ray(num_cpus, ray_address, ship_package)
    fan: FanOut[int] | None = None
    try:
        if ray_runtime_env(ship_package, ray_address) is None:
            warm_kernels(ctx.protocol, cfg.vc_artefacts, cfg.precision)
        design = None
        if cfg.sampler == "lhs":
            design = ray.put(lhs_design(cfg.n_cells, cfg.spread, cfg.seed))
        gpus = float(ray.cluster_resources().get("GPU", 0))
        device = resolve_device(cfg.device, gpus)
        if device == "gpu" and (cfg.precision != "float64" or cfg.vc_artefacts is not None):
            raise ValueError("precision 'float32' and vc_artefacts run on CPU actors only, but "
                             "this cluster has GPUs: use device 'cpu'")
        run_rec.device = device
        ctx = dataclasses.replace(ctx, device=device)
        env = {"NUMBA_NUM_THREADS": "1",
               **{k: v for k, v in os.environ.items() if k.startswith(TEST_ENV_PREFIX)},
               **(actor_env or {})}
        remote_cls = ray.remote(num_cpus=1, num_gpus=1 if device == "gpu" else 0,
                                max_restarts=0, max_task_retries=0,
                                resources=simulation_resources())(ShardSimulator)

        def new_worker() -> tuple[Any, Any]:
            opts = remote_cls.options(runtime_env={"env_vars": env})
            a: Any = opts.remote(ctx, design) if design is not None else opts.remote(ctx)
            return a, a.where.remote()

        n_workers = cfg.n_workers or max(1, int(gpus if device == "gpu" else
                                                ray.available_resources().get("CPU", 1)))
        n_workers = min(n_workers, len(pending))
        run_rec.n_workers = n_workers
        cells_before = sum(s["n_cells"] for s in done.values())
        fan = FanOut(lambda actor, i: actor.run_shard.remote(i), n_workers=n_workers,
                     new_worker=new_worker, max_attempts=max_attempts,
                     timeout_s=cfg.shard_timeout_s,
                     timeout_factor=None if cfg.shard_timeout_s else TIMEOUT_FACTOR,
                     min_timeout_s=MIN_TIMEOUT_S,
                     describe=lambda i: f"shard {i} (cells from {cfg.shard_bounds(i)[0]})",
                     progress=progress, total=cfg.n_cells, initial=cells_before,
                     weight=lambda i: cfg.shard_bounds(i)[1], unit="cell", desc="cells",
                     echo=echo, start_hint=START_HINT)
        last_manifest = time.perf_counter()
        n_ok = sum(s["status_counts"]["ok"] for s in done.values())
        n_seen = cells_before
        for index, summary in fan.run(pending):
            done[index] = summary
            run_rec.cells_simulated += summary["n_cells"]
            run_rec.actor_failures, run_rec.shard_timeouts = fan.failures, fan.timeouts
            n_ok += summary["status_counts"]["ok"]
            n_seen += summary["n_cells"]
            if fan.bar is not None:
                fan.bar.set_postfix(ok=f"{n_ok / n_seen:.0%}", refresh=False)
            now = time.perf_counter()
            if now - last_manifest > MANIFEST_EVERY_S:
                write_manifest("running")
                last_manifest = now
    finally:
        if fan is not None:
            run_rec.actor_failures, run_rec.shard_timeouts = fan.failures, fan.timeouts
        if started:
            ray.shutdown()


def run_from_args(a) -> PopulationStore:
    """Generate the population described by arguments parsed with
    :func:`cardiotwin.population.cli_args.add_generate_arguments`."""
    from .cli_args import generate_from_args

    return generate_from_args(a)
