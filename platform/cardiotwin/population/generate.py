"""Population generation on Ray: synthetic cells -> Parquet shards, resumable.

``generate_population(config)`` splits the cells into shards of ``shard_size`` and runs them on a
pool of Ray actors (``ShardSimulator``, one CPU and one numba thread each). For each shard an
actor samples the multipliers of cells [first, first + n), simulates the voltage-clamp
protocol (I_total) and a free-running AP run of ``ap_duration_ms`` (classification and
biomarkers), applies the physiological filter, and writes the shard itself, atomically, into
``out_dir``, which must therefore be a path that every node sees (a shared filesystem; on one
machine any directory). The driver only schedules, shows progress and writes the manifest.

Resuming: a re-run with the same settings skips the shards already complete and redoes the
rest (a crash leaves at most a ``.tmp`` file, removed at the start of the next run). A
different configuration on an existing store is refused before anything is touched. One run
per directory at a time (a second concurrent run would remove the first's temporary files).

Memory: an actor holds one chunk of 256 cells at a time (I_total, the AP traces and their
float64 copy for the classifier): ~0.5 GB resident per actor on protocol_a with a 4 s AP
run (~320 MB above the imported libraries).

Fault tolerance: when an actor dies (its process or node killed: ``RayActorError``, lost
objects, OOM kills) its shard goes back to the queue and a new actor replaces it; a shard
that fails ``max_attempts`` times, or raises an ordinary exception, stops the run.

Ray: ``ray.init()`` is called when Ray is not initialized: it connects to ``ray_address`` or
``$RAY_ADDRESS`` (set by ``ray job submit``) or else starts a local cluster (``num_cpus``
limits it). Workers must import ``cardiotwin``: with ``ray job submit --working-dir .`` the
package is not on their path (``platform/`` is not a package root there), so
``ship_package="auto"`` ships the package directory as a ``py_modules`` runtime env when
connecting to an existing cluster and ``cardiotwin`` is not installed in site-packages
(``"yes"`` / ``"no"`` force it). Alternatives: install the package on every node, or pass
``--runtime-env-json '{"py_modules": ["platform/cardiotwin"]}'`` to ``ray job submit`` (with
``ship_package="no"``: Ray refuses conflicting ``py_modules`` settings of the job and of
``ray.init``). Each shard's sidecar records the ``code_path`` its actor imported. Shipped code
is unpacked on each node into a new directory, with numba's cache files if the checkout has
them (a local test with ``ship_package="yes"`` loaded them); where numba does not trust them
(other CPU, changed sources) the first actors on a node compile the kernels (~30 s per
kernel, each actor).

Devices: ``device`` (config) auto / cpu / gpu. GPU actors hold one GPU each (``num_gpus=1``;
default one actor per GPU of the cluster) and simulate up to ``GPU_CHUNK_CELLS`` cells of their
shard at once with ``simulate.cuda``, so a GPU wants large shards (e.g. 16384 cells; a GPU runs
tens of thousands of cells at once). The rows are the same cells with the same statuses as on
CPUs; I_total agrees to rounding (relative RMS <= 1e-9, tests/test_gpu.py). The classification
of the AP runs stays serial CPU Python (~2 ms per cell) on the GPU actor's one CPU.

Determinism: cell i's row depends only on (seed, i) (uniform, sobol) or on (seed, n_cells, i)
(lhs), never on sharding or the number of actors. Multipliers are rounded to float32 before
simulating, so the stored values reproduce the stored trace exactly.
"""

from __future__ import annotations

import os
import platform as _stdlib_platform
import socket
import sys
import time
import warnings
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..features import STATUSES, classify_batch
from ..model.parameters import INFERRED_NAMES, N_INFERRED, REGISTRY_VERSION
from .config import AP_RECORD_INTERVAL_MS, FORMAT, GenerationConfig, check_output_dir
from .sampling import sample_multipliers
from .store import (MANIFEST, PopulationStore, ShardWriter, check_existing, complete_shard,
                    make_schema, make_table, open_store, remove_stale_temporaries,
                    schema_description, write_json_atomic)

CHUNK_CELLS = 256           # cells simulated at once inside a shard (one Parquet row group)
GPU_CHUNK_CELLS = 16384     # the same on a GPU actor (~0.7 MB of host memory per cell)
MANIFEST_EVERY_S = 5.0      # the driver rewrites the running manifest at most this often
TEST_EXIT_ON_SHARD = "CARDIOTWIN_TEST_EXIT_ON_SHARD"    # fault injection (tests): shard index
TEST_EXIT_MARKER = "CARDIOTWIN_TEST_EXIT_MARKER"        # ... once: the marker file records it
_RETRYABLE_NAMES = ("RayActorError", "ObjectLostError", "NodeDiedError", "WorkerCrashedError",
                    "OutOfMemoryError", "LocalRayletDiedError")


# ---- sampling -------------------------------------------------------------------------------

def _qmc_engine(cls, seed: int, **kw):
    try:
        return cls(N_INFERRED, rng=np.random.default_rng(seed), **kw)
    except TypeError:  # scipy < 1.15
        return cls(N_INFERRED, seed=np.random.default_rng(seed), **kw)


def _to_multipliers(u: np.ndarray, spread: float) -> np.ndarray:
    return ((1.0 - spread) + (2.0 * spread) * u).astype(np.float32)


def lhs_design(n_cells: int, spread: float, seed: int) -> np.ndarray:
    """The whole Latin hypercube design (n_cells, 52) float32 multipliers (scipy.stats.qmc,
    randomized within strata, generator seeded with ``seed``). Memory: 208 bytes per cell kept
    (230 MB for 1.1M cells), ~3x that transiently in float64 while generating (~6 s for 1.1M)."""
    from scipy.stats import qmc

    return _to_multipliers(_qmc_engine(qmc.LatinHypercube, seed).random(int(n_cells)), spread)


def sobol_block(spread: float, seed: int, start: int, n: int) -> np.ndarray:
    """Points start .. start + n - 1 of the scrambled Sobol' sequence (scrambling seeded with
    ``seed``) as (n, 52) float32 multipliers, without generating the points before ``start``
    (``fast_forward``): cell i depends only on (seed, i). Balance properties hold for the whole
    population best when n_cells is a power of 2."""
    from scipy.stats import qmc

    eng = _qmc_engine(qmc.Sobol, seed, scramble=True)
    if start:
        eng.fast_forward(int(start))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "balance properties ... power of 2"
        return _to_multipliers(eng.random(int(n)), spread)


def sample_population(sampler: str, n_cells: int, spread: float = 0.4, seed: int = 0,
                      start: int = 0, n: int | None = None, design: np.ndarray | None = None
                      ) -> np.ndarray:
    """Multipliers of cells start .. start + n - 1 of a population of ``n_cells`` as (n, 52)
    float32 (the values the simulation uses). ``sampler``: "uniform" (iid
    U(1 - spread, 1 + spread) per cell, cell i from (seed, i)), "lhs" (Latin hypercube of the
    whole population: generated whole and sliced, or sliced from ``design``) or "sobol"
    (scrambled Sobol' points, cell i from (seed, i))."""
    n = n_cells - start if n is None else n
    if not (0 <= start and n > 0 and start + n <= n_cells):
        raise ValueError(f"cells [{start}, {start + n}) are outside the population of "
                         f"{n_cells}")
    if sampler == "uniform":
        return sample_multipliers(n, spread, seed, start).astype(np.float32)
    if sampler == "sobol":
        return sobol_block(spread, seed, start, n)
    if sampler == "lhs":
        d = lhs_design(n_cells, spread, seed) if design is None else design
        return np.array(d[start:start + n], dtype=np.float32)
    raise ValueError(f"unknown sampler {sampler!r}; expected uniform, lhs or sobol")


# ---- simulation of one batch ----------------------------------------------------------------

def decimate(x: np.ndarray, k: int, method: str = "mean") -> np.ndarray:
    """(n, n_samples) -> (n, ceil(n_samples / k)) float32: block means of k samples (the last
    block may be shorter) or every k-th sample (samples 0, k, 2k, ...)."""
    if k == 1:
        return x
    n, ns = x.shape
    if method == "take":
        return np.ascontiguousarray(x[:, ::k])
    if method != "mean":
        raise ValueError(f"unknown decimation {method!r}; expected mean or take")
    full = ns // k
    out = np.empty((n, -(-ns // k)), np.float32)
    out[:, :full] = x[:, :full * k].reshape(n, full, k).mean(axis=2, dtype=np.float64)
    if out.shape[1] > full:
        out[:, full] = x[:, full * k:].mean(axis=1, dtype=np.float64)
    return out


def simulate_batch(protocol, multipliers: np.ndarray, ap_duration_ms: float,
                   temperature_K: float, decimation_factor: int = 1, decimation: str = "mean",
                   device: str = "cpu"
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """Voltage clamp and classification AP run of the cells of ``multipliers`` (n, 52):
    (statuses (n,), biomarkers {BATCH_KEYS: (n,)}, I_total (n, n_stored) float32,
    seconds per stage {vc, ap, classify}). ``device`` "gpu" simulates with simulate.cuda."""
    from ..model import inputs_from_multipliers

    if device == "gpu":
        from functools import partial

        from ..simulate.cuda import simulate_current_clamp_gpu, simulate_voltage_clamp_gpu

        simulate_voltage_clamp = simulate_voltage_clamp_gpu
        simulate_current_clamp = partial(simulate_current_clamp_gpu, record_cai=False)
    else:
        from ..simulate import simulate_current_clamp, simulate_voltage_clamp

    inputs = inputs_from_multipliers(np.asarray(multipliers, dtype=np.float32)
                                     .astype(np.float64))
    t0 = time.perf_counter()
    vc = simulate_voltage_clamp(protocol, inputs)
    t1 = time.perf_counter()
    cc = simulate_current_clamp(ap_duration_ms, inputs, temperature_K=temperature_K,
                                record_interval_ms=AP_RECORD_INTERVAL_MS)
    t2 = time.perf_counter()
    statuses, markers = classify_batch(cc.t_ms, cc.v_mV)
    t3 = time.perf_counter()
    statuses = np.where(vc.unstable | cc.unstable, "unstable", statuses)
    itot = decimate(vc.i_total, decimation_factor, decimation)
    return statuses, markers, itot, {"vc": t1 - t0, "ap": t2 - t1, "classify": t3 - t2}


# ---- the actor ------------------------------------------------------------------------------

class StoreNotVisibleError(RuntimeError):
    """The output directory is not visible from a worker node."""


class ShardSimulator:
    """Ray actor body (wrapped with ``ray.remote`` at run time): simulates and writes shards.

    ``ctx``: config (GenerationConfig), config_hash, protocol, out_dir, decimation_factor,
    schema_metadata; ``design``: the LHS design (an ObjectRef argument, resolved by Ray to a
    read-only array shared through the object store), else None."""

    def __init__(self, ctx: dict[str, Any], design: np.ndarray | None = None):
        try:
            import numba

            numba.set_num_threads(1)
        except Exception:  # noqa: BLE001 - only a performance setting
            pass
        self.ctx = dict(ctx, design=design)
        self.cfg: GenerationConfig = ctx["config"]
        self.device = ctx.get("device", "cpu")
        if self.device == "gpu":
            from ..simulate import cuda

            cuda._require_cuda()  # a clear error when this node cannot run the GPU kernels
        self.out = Path(ctx["out_dir"])
        k = ctx["decimation_factor"]
        self.n_stored = -(-ctx["protocol"].n_samples // k)
        self.schema = make_schema(self.n_stored, ctx["schema_metadata"])

    def where(self) -> dict[str, Any]:
        import cardiotwin

        return {"node": socket.gethostname(), "pid": os.getpid(),
                "code_path": str(Path(cardiotwin.__file__).parent)}

    def run_shard(self, index: int) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        if not (self.out / MANIFEST).is_file():
            raise StoreNotVisibleError(
                f"node {socket.gethostname()}: the output directory {self.out} (or its "
                f"{MANIFEST}) is not visible here: it must be on a filesystem shared by all "
                "nodes, under the same path")
        t_start = time.perf_counter()
        first, n = cfg.shard_bounds(index)
        m = sample_population(cfg.sampler, cfg.n_cells, cfg.spread, cfg.seed, first, n,
                              design=ctx.get("design"))
        writer = ShardWriter(self.out, index, self.schema)
        counts: Counter[str] = Counter()
        times = Counter()
        try:
            step = GPU_CHUNK_CELLS if self.device == "gpu" else CHUNK_CELLS
            for a in range(0, n, step):
                b = min(n, a + step)
                st, bm, itot, tt = simulate_batch(ctx["protocol"], m[a:b], cfg.ap_ms,
                                                  cfg.temperature_K, ctx["decimation_factor"],
                                                  cfg.decimation, self.device)
                times.update(tt)
                counts.update(st.tolist())
                keep = np.ones(b - a, bool) if cfg.keep_rejected else st == "ok"
                t_w = time.perf_counter()
                writer.write(make_table(self.schema, np.arange(first + a, first + b)[keep],
                                        m[a:b][keep], st[keep],
                                        {k: v[keep] for k, v in bm.items()}, itot[keep]))
                times["write"] += time.perf_counter() - t_w
                self._maybe_crash(index)
            t_w = time.perf_counter()
            summary = writer.commit({
                "index": index, "first_cell_id": first, "n_cells": n,
                "config_hash": ctx["config_hash"],
                "status_counts": {s: counts.get(s, 0) for s in STATUSES},
                "wall_s": round(time.perf_counter() - t_start, 4),
                "stage_s": {k: round(v, 4) for k, v in times.items()},
                "device": self.device, **self.where()})
            summary["stage_s"]["write"] = round(times["write"] + time.perf_counter() - t_w, 4)
            return summary
        except BaseException:
            writer.abort()
            raise

    def _maybe_crash(self, index: int) -> None:
        """Fault injection for tests: exit the process (as a killed node would) in the middle
        of writing shard $CARDIOTWIN_TEST_EXIT_ON_SHARD, once (marker file)."""
        target = os.environ.get(TEST_EXIT_ON_SHARD)
        marker = os.environ.get(TEST_EXIT_MARKER)
        if target is None or marker is None or int(target) != index:
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


# ---- Ray ------------------------------------------------------------------------------------

def package_dir() -> Path:
    import cardiotwin

    return Path(cardiotwin.__file__).resolve().parent


def _installed(pkg: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in pkg.parts)


def ray_runtime_env(ship_package: str = "auto", ray_address: str | None = None
                    ) -> dict[str, Any] | None:
    """The job runtime env for ``ray.init``: ``py_modules`` with the cardiotwin package
    directory when shipping (see the module docstring), else None."""
    if ship_package not in ("auto", "yes", "no"):
        raise ValueError(f"ship_package must be auto, yes or no, found {ship_package!r}")
    pkg = package_dir()
    connecting = bool(ray_address or os.environ.get("RAY_ADDRESS"))
    ship = ship_package == "yes" or (ship_package == "auto" and connecting
                                     and not _installed(pkg))
    if not ship:
        return None
    return {"py_modules": [str(pkg)]}


def init_ray(num_cpus: int | None, ray_address: str | None, ship_package: str) -> bool:
    """ray.init unless initialized; True when this call started (or connected) Ray."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {}
    env = ray_runtime_env(ship_package, ray_address)
    if env:
        kw["runtime_env"] = env
    if ray_address:
        kw["address"] = ray_address
    elif num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
        kw["num_cpus"] = int(num_cpus)
    ray.init(**kw)
    return True


def resolve_device(device: str, cluster_gpus: float) -> str:
    """"cpu" or "gpu" for the config's ``device`` (auto / cpu / gpu) on a Ray cluster with
    ``cluster_gpus`` GPUs; ValueError when gpu is asked for and there is none."""
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be auto, cpu or gpu, found {device!r}")
    if device == "gpu" and cluster_gpus < 1:
        raise ValueError("device 'gpu' was requested but the Ray cluster has no GPU "
                         "(ray.cluster_resources() lists none): use device 'cpu' or 'auto', or "
                         "run on GPU nodes with numba-cuda installed (pip install "
                         "'cardiotwin[gpu]')")
    if device == "auto":
        return "gpu" if cluster_gpus >= 1 else "cpu"
    return device


def _is_retryable(exc: BaseException) -> bool:
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        return False
    return isinstance(exc, tuple(getattr(rex, n) for n in _RETRYABLE_NAMES if hasattr(rex, n)))


# ---- the driver -----------------------------------------------------------------------------

def package_versions() -> dict[str, str]:
    """Versions of Python and the numerical packages, recorded in manifests and summaries."""
    out = {"python": _stdlib_platform.python_version()}
    for mod in ("numpy", "scipy", "numba", "pyarrow", "ray"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:
                continue
        out[mod] = getattr(m, "__version__", "?")
    return out


def _totals(cfg: GenerationConfig, shards: dict[int, dict[str, Any]]) -> dict[str, Any]:
    counts = Counter()
    for s in shards.values():
        counts.update(s["status_counts"])
    cells = sum(s["n_cells"] for s in shards.values())
    rows = sum(s["rows_kept"] for s in shards.values())
    stage = Counter()
    for s in shards.values():
        stage.update(s.get("stage_s", {}))
    rejected = {s: counts.get(s, 0) for s in STATUSES if s != "ok"}
    return {
        "n_cells": cells, "rows": rows,
        "status_counts": {s: counts.get(s, 0) for s in STATUSES},
        "filter": {"rule": "keep status == 'ok'" if not cfg.keep_rejected
                   else "none (keep_rejected: every cell stored, status tells)",
                   "kept": rows, "dropped": cells - rows, "rejected_by_reason": rejected},
        "actor_seconds_by_stage": {k: round(v, 3) for k, v in stage.items()},
    }


def generate_population(config: GenerationConfig | dict[str, Any], *, progress: bool = True,
                        num_cpus: int | None = None, ray_address: str | None = None,
                        ship_package: str = "auto", actor_env: dict[str, str] | None = None,
                        max_attempts: int = 3, echo: Callable[[str], Any] | None = print
                        ) -> PopulationStore:
    """Generate (or resume) the population store of ``config`` in ``config.out_dir`` on Ray and
    return it opened (:class:`PopulationStore`).

    Every check (settings, protocol file, decimation, output directory writable and free of
    another dataset) runs before any work. ``num_cpus``: size of a local cluster started here;
    ``ray_address``: connect to this cluster (default ``$RAY_ADDRESS``, else start locally);
    ``ship_package``: auto / yes / no (module docstring); ``actor_env``: extra environment
    variables for the actors; ``max_attempts``: tries per shard when actors die; ``echo``:
    where the summary lines go (None: silent); ``progress``: a tqdm bar on stderr.
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
    previous = check_existing(out, chash, identity)      # read-only
    check_output_dir(out)
    if echo and not Path(cfg.out_dir).is_absolute() and (ray_address
                                                          or os.environ.get("RAY_ADDRESS")):
        echo(f"warning: relative output path {cfg.out_dir!r} on a cluster: it resolves to {out} "
             "on the driver; the workers must see that same path (use an absolute path on "
             "shared storage)")
    remove_stale_temporaries(out)

    done: dict[int, dict[str, Any]] = {}
    for i in range(cfg.n_shards):
        s = complete_shard(out, i, chash, *cfg.shard_bounds(i))
        if s is not None:
            done[i] = s
    pending = [i for i in range(cfg.n_shards) if i not in done]
    n_stored = -(-protocol.n_samples // k)
    schema_meta = {"cardiotwin.format": FORMAT, "cardiotwin.config_hash": chash,
                   "cardiotwin.protocol_hash": protocol.protocol_hash}
    import cardiotwin

    manifest: dict[str, Any] = {
        "format": FORMAT, "status": "running",
        "config": identity, "config_hash": chash,
        "run": {"out_dir": str(out), "protocol_source": cfg.protocol,
                "n_workers": cfg.n_workers, "ship_package": ship_package},
        "protocol": protocol.to_json(), "protocol_hash": protocol.protocol_hash,
        "registry_version": REGISTRY_VERSION,
        "parameter_names": list(INFERRED_NAMES),
        "sampling": {"sampler": cfg.sampler, "spread": cfg.spread,
                     "range": [1.0 - cfg.spread, 1.0 + cfg.spread], "seed": cfg.seed,
                     "cell_seed": {"uniform": "numpy SeedSequence([seed, cell_id])",
                                   "sobol": "scipy.stats.qmc.Sobol(52, scramble, "
                                            "default_rng(seed)), point cell_id",
                                   "lhs": "scipy.stats.qmc.LatinHypercube(52, default_rng(seed))"
                                          " of n_cells points, row cell_id"}[cfg.sampler],
                     "dtype": "float32 (simulated with these values)"},
        "simulation": {
            "voltage_clamp": {"protocol_hash": protocol.protocol_hash,
                              "temperature_K": protocol.temperature_K,
                              "sample_interval_ms": protocol.sample_interval_ms,
                              "initial_state": "model default"},
            "ap_classification": {"duration_ms": cfg.ap_ms, "temperature_K": cfg.temperature_K,
                                  "record_interval_ms": AP_RECORD_INTERVAL_MS,
                                  "mode": "free-running from the model's initial state",
                                  "classifier": "cardiotwin.features.classify_batch"}},
        "i_total": {"units": "pA/pF", "n_samples": n_stored,
                    "sample_interval_ms": protocol.sample_interval_ms * k,
                    "source_sample_interval_ms": protocol.sample_interval_ms,
                    "source_n_samples": protocol.n_samples,
                    "decimation_factor": k,
                    "decimation": None if k == 1 else cfg.decimation,
                    "decimate_to_hz": cfg.decimate_to_hz},
        "schema": schema_description(make_schema(n_stored, schema_meta)),
        "n_shards": cfg.n_shards, "shard_size": cfg.shard_size,
        "shards": [], "totals": {},
        "code_version": cardiotwin.__version__, "versions": package_versions(),
        "runs": list((previous or {}).get("runs", [])),
    }
    run_rec: dict[str, Any] = {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "shards_done_before": len(done),
        "cells_simulated": 0, "wall_s": 0.0, "cells_per_s": None, "n_workers": 0,
        "actor_failures": 0, "code_version": cardiotwin.__version__}
    if previous and previous.get("code_version") != cardiotwin.__version__ and echo:
        echo(f"warning: resuming a store written by cardiotwin {previous.get('code_version')} "
             f"with {cardiotwin.__version__}")

    def write_manifest(status: str) -> None:
        manifest["status"] = status
        manifest["shards"] = [{k2: s[k2] for k2 in ("index", "file", "first_cell_id", "n_cells",
                                                    "rows_kept", "status_counts")}
                              for _, s in sorted(done.items())]
        manifest["totals"] = _totals(cfg, done)
        run_rec["wall_s"] = round(time.perf_counter() - t0, 3)
        if run_rec["wall_s"] > 0:
            run_rec["cells_per_s"] = round(run_rec["cells_simulated"] / run_rec["wall_s"], 2)
        runs = manifest["runs"] + [run_rec]
        wall = round(sum(r["wall_s"] for r in runs), 3)
        sim = sum(r["cells_simulated"] for r in runs)
        manifest["wall_s"] = wall
        manifest["cells_per_s"] = round(sim / wall, 2) if wall else None
        write_json_atomic(out / MANIFEST, dict(manifest, runs=runs))

    t0 = time.perf_counter()
    write_manifest("running")
    if pending:
        if echo:
            echo(f"{cfg.n_cells} cells in {cfg.n_shards} shards of {cfg.shard_size}: "
                 f"{len(done)} complete, {len(pending)} to simulate -> {out}")
        try:
            _run_pending(cfg, chash, protocol, k, schema_meta, out, pending, done, run_rec,
                         write_manifest, progress=progress, num_cpus=num_cpus,
                         ray_address=ray_address, ship_package=ship_package,
                         actor_env=actor_env, max_attempts=max_attempts, echo=echo)
        finally:
            if len(done) < cfg.n_shards:
                write_manifest("running")
    write_manifest("complete")
    remove_stale_temporaries(out)
    store = open_store(out)
    if echo:
        t = manifest["totals"]
        size = sum(f.stat().st_size for f in store.files)
        counts = ", ".join(f"{s} {c}" for s, c in t["status_counts"].items())
        echo(f"done: {t['n_cells']} cells ({counts}); {t['rows']} rows kept in "
             f"{len(store.files)} shards, {size / 1e6:.1f} MB "
             f"({size / max(t['rows'], 1):.0f} bytes per row); this run simulated "
             f"{run_rec['cells_simulated']} cells in {run_rec['wall_s']:.1f} s "
             f"({run_rec['cells_per_s'] or 0:.1f} cells/s) -> {out}")
    return store


def _run_pending(cfg, chash, protocol, k, schema_meta, out, pending, done, run_rec,
                 write_manifest, *, progress, num_cpus, ray_address, ship_package, actor_env,
                 max_attempts, echo) -> None:
    """Schedule the pending shards on a pool of actors. An actor receives work only once it
    has started (its ``where`` call returned), so actors that cannot be placed (fewer CPUs
    than workers) never hold a shard; a shard whose actor dies goes back to the queue and a
    new actor is started in its place."""
    import ray
    from tqdm.auto import tqdm

    started = init_ray(num_cpus, ray_address, ship_package)
    if ray_runtime_env(ship_package, ray_address) is None:
        _warm_kernels(protocol)
    actors: list[Any] = []
    try:
        design = None
        if cfg.sampler == "lhs":
            design = ray.put(lhs_design(cfg.n_cells, cfg.spread, cfg.seed))
        gpus = float(ray.cluster_resources().get("GPU", 0))
        device = resolve_device(cfg.device, gpus)
        run_rec["device"] = device
        ctx = {"config": cfg, "config_hash": chash, "protocol": protocol, "out_dir": str(out),
               "decimation_factor": k, "schema_metadata": schema_meta, "device": device}
        env = {"NUMBA_NUM_THREADS": "1", **(actor_env or {})}
        from ..resources import simulation_resources

        remote_cls = ray.remote(num_cpus=1, num_gpus=1 if device == "gpu" else 0,
                                max_restarts=0, max_task_retries=0,
                                resources=simulation_resources())(ShardSimulator)
        starting: dict[Any, Any] = {}     # ready ref -> actor
        inflight: dict[Any, tuple[Any, int]] = {}
        idle: list[Any] = []

        def new_actor() -> None:
            opts = remote_cls.options(runtime_env={"env_vars": env})
            a = opts.remote(ctx, design) if design is not None else opts.remote(ctx)
            actors.append(a)
            starting[a.where.remote()] = a

        n_workers = cfg.n_workers or max(1, int(gpus if device == "gpu" else
                                                ray.available_resources().get("CPU", 1)))
        n_workers = min(n_workers, len(pending))
        run_rec["n_workers"] = n_workers
        queue = deque(pending)
        attempts: Counter[int] = Counter()
        start_failures = 0
        for _ in range(n_workers):
            new_actor()
        cells_before = sum(s["n_cells"] for s in done.values())
        bar = tqdm(total=cfg.n_cells, initial=cells_before, unit="cell", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1, desc="cells")
        last_manifest = time.perf_counter()
        n_ok = sum(s["status_counts"]["ok"] for s in done.values())
        n_seen = cells_before
        try:
            while queue or inflight:
                while idle and queue:
                    actor, index = idle.pop(), queue.popleft()
                    inflight[actor.run_shard.remote(index)] = (actor, index)
                ready, _ = ray.wait(list(inflight) + list(starting), num_returns=1)
                for ref in ready:
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            ray.get(ref)
                        except Exception as exc:  # noqa: BLE001
                            start_failures += 1
                            run_rec["actor_failures"] += 1
                            if start_failures >= max_attempts * n_workers:
                                raise RuntimeError(
                                    f"simulation actors fail to start ({start_failures} times); "
                                    f"last error: {exc}\n(if the workers cannot import "
                                    "cardiotwin: install it on the nodes or ship it with "
                                    "ship_package='yes' / --ship-package yes)") from exc
                            _kill(actor)
                            new_actor()
                            continue
                        idle.append(actor)
                        continue
                    actor, index = inflight.pop(ref)
                    try:
                        summary = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001
                        if not _is_retryable(exc):
                            raise RuntimeError(f"shard {index} (cells from "
                                               f"{cfg.shard_bounds(index)[0]}) failed: "
                                               f"{exc}") from exc
                        attempts[index] += 1
                        run_rec["actor_failures"] += 1
                        if attempts[index] >= max_attempts:
                            raise RuntimeError(f"shard {index} failed {attempts[index]} times "
                                               f"(its actors died); last error: {exc}") from exc
                        if echo:
                            bar.write(f"actor died on shard {index} "
                                      f"({type(exc).__name__}); re-submitting it to a new "
                                      "actor")
                        _kill(actor)
                        queue.appendleft(index)
                        new_actor()
                        continue
                    done[index] = summary
                    run_rec["cells_simulated"] += summary["n_cells"]
                    idle.append(actor)
                    bar.update(summary["n_cells"])
                    n_ok += summary["status_counts"]["ok"]
                    n_seen += summary["n_cells"]
                    bar.set_postfix(ok=f"{n_ok / n_seen:.0%}", refresh=False)
                    now = time.perf_counter()
                    if now - last_manifest > MANIFEST_EVERY_S:
                        write_manifest("running")
                        last_manifest = now
        finally:
            bar.close()
    finally:
        for a in actors:
            _kill(a)
        if started:
            ray.shutdown()


def _warm_kernels(protocol) -> None:
    """Run both kernels once on one cell in the driver, so that numba's on-disk cache is
    written once, before the actors start (instead of every actor compiling at the same time
    after a code change). The actors load it when they import the same package files."""
    from ..protocols import Protocol, Segment

    tiny = Protocol((Segment(1.0, -80.0, -80.0),), protocol.sample_interval_ms,
                    protocol.temperature_K)
    simulate_batch(tiny, np.ones((1, N_INFERRED)), 1.0, protocol.temperature_K)


def _kill(actor) -> None:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already dead
        pass


def run_from_args(a) -> PopulationStore:
    """Generate the population described by arguments parsed with
    :func:`cardiotwin.population.config.add_generate_arguments`."""
    from .config import config_from_args

    return generate_population(config_from_args(a), progress=not a.no_progress,
                               num_cpus=a.num_cpus, ray_address=a.ray_address,
                               ship_package=a.ship_package)
