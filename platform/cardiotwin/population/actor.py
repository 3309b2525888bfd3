"""The simulation actor: a Ray actor (``ShardSimulator``, one CPU and one numba thread, or one
GPU) that samples, simulates and writes whole shards into the shared output directory.

Fault injection for tests (environment variables of the actors; the driver forwards every
``CARDIOTWIN_TEST_*`` variable of its own environment to them):

- ``CARDIOTWIN_TEST_EXIT_ON_SHARD=i`` with ``CARDIOTWIN_TEST_EXIT_MARKER=FILE``: the actor exits
  (as a killed node would) in the middle of writing shard i, once (the marker file records it);
- ``CARDIOTWIN_TEST_HANG_ON_SHARD=i`` with ``CARDIOTWIN_TEST_HANG_MARKER=FILE``: the actor hangs
  (sleeps for an hour) in the middle of writing shard i, once;
- ``CARDIOTWIN_TEST_SLOW_SHARD_S=s``: every chunk of a shard (256 cells on CPUs) takes s more
  seconds.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.threads import limit_numba_threads
from .batch import CHUNK_CELLS, GPU_CHUNK_CELLS, simulate_batch
from .calibration import POPULATION_STATUSES as STATUSES
from .config import GenerationConfig
from .manifest import MANIFEST
from .sampling import sample_population
from .store import ShardWriter, make_schema, make_table

TEST_EXIT_ON_SHARD = "CARDIOTWIN_TEST_EXIT_ON_SHARD"    # fault injection (tests): shard index
TEST_EXIT_MARKER = "CARDIOTWIN_TEST_EXIT_MARKER"        # ... once: the marker file records it
TEST_HANG_ON_SHARD = "CARDIOTWIN_TEST_HANG_ON_SHARD"    # hang (sleep) on this shard ...
TEST_HANG_MARKER = "CARDIOTWIN_TEST_HANG_MARKER"        # ... once
TEST_SLOW_SHARD_S = "CARDIOTWIN_TEST_SLOW_SHARD_S"      # extra seconds per shard
TEST_ENV_PREFIX = "CARDIOTWIN_TEST_"
HANG_S = 3600.0


class StoreNotVisibleError(RuntimeError):
    """The output directory is not visible from a worker node."""


@dataclass(frozen=True)
class ShardContext:
    """What every actor of a run needs: the settings, the dataset's ``config_hash``, the
    protocol, the output directory, the I_total decimation factor (protocol samples per
    stored sample), the Parquet schema metadata and the device (cpu / gpu)."""

    config: GenerationConfig
    config_hash: str
    protocol: Any
    out_dir: str
    decimation_factor: int
    schema_metadata: dict[str, str]
    device: str = "cpu"

    @property
    def n_stored(self) -> int:
        """Stored I_total samples per cell."""
        return -(-self.protocol.n_samples // self.decimation_factor)


def _once(marker: str) -> bool:
    """True the first time (creates ``marker``), False afterwards."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _matches(var: str, index: int) -> bool:
    v = os.environ.get(var)
    return v is not None and int(v) == index


class ShardSimulator:
    """Ray actor body (wrapped with ``ray.remote`` at run time): simulates and writes shards.
    ``design``: the LHS design (an ObjectRef argument, resolved by Ray to a read-only array
    shared through the object store), else None."""

    def __init__(self, ctx: ShardContext, design: np.ndarray | None = None):
        limit_numba_threads(1)
        self.ctx = ctx
        self.design = design
        if ctx.device == "gpu":
            from ..simulate import cuda

            cuda._require_cuda()  # a clear error when this node cannot run the GPU kernels
        self.out = Path(ctx.out_dir)
        self.schema = make_schema(ctx.n_stored, ctx.schema_metadata,
                                  artefacts=ctx.config.vc_artefacts is not None)

    def where(self) -> dict[str, Any]:
        import cardiotwin

        return {"node": socket.gethostname(), "pid": os.getpid(),
                "code_path": str(Path(cardiotwin.__file__).parent)}

    def run_shard(self, index: int) -> dict[str, Any]:
        """Simulate and write shard ``index``; its sidecar summary."""
        ctx, cfg = self.ctx, self.ctx.config
        if not (self.out / MANIFEST).is_file():
            raise StoreNotVisibleError(
                f"node {socket.gethostname()}: the output directory {self.out} (or its "
                f"{MANIFEST}) is not visible here: it must be on a filesystem shared by all "
                "nodes, under the same path")
        t_start = time.perf_counter()
        first, n = cfg.shard_bounds(index)
        prior = cfg.prior_spec()
        m = sample_population(cfg.sampler, cfg.n_cells, cfg.spread, cfg.seed, first, n,
                              design=self.design, prior=prior)
        nuisance, seal_g, seal_e = prior.nuisance(cfg.seed, first, n)
        art = (cfg.vc_artefacts.draw(cfg.seed, first, n) if cfg.vc_artefacts is not None
               else None)
        writer = ShardWriter(self.out, index, self.schema)
        counts: Counter[str] = Counter()
        times: dict[str, float] = defaultdict(float)     # seconds per stage
        try:
            step = GPU_CHUNK_CELLS if ctx.device == "gpu" else CHUNK_CELLS
            for a in range(0, n, step):
                b = min(n, a + step)
                st, bm, itot, tt = simulate_batch(
                    ctx.protocol, m[a:b], cfg.ap_ms, cfg.temperature_K, ctx.decimation_factor,
                    cfg.decimation, ctx.device,
                    nuisance=nuisance[a:b] if prior.varies_nuisance else None,
                    seal=(None if prior.seal_g_nS_per_pF is None
                          else (seal_g[a:b], seal_e[a:b])),
                    calibration=cfg.calibration,
                    artefacts=art[a:b] if art is not None else None,
                    precision=cfg.precision)
                for stage, sec in tt.items():
                    times[stage] += sec
                counts.update(st.tolist())
                keep = np.ones(b - a, bool) if cfg.keep_rejected else st == "ok"
                t_w = time.perf_counter()
                writer.write(make_table(self.schema, np.arange(first + a, first + b)[keep],
                                        m[a:b][keep], st[keep],
                                        {k: v[keep] for k, v in bm.items()}, itot[keep],
                                        art[a:b][keep] if art is not None else None))
                times["write"] += time.perf_counter() - t_w
                self._maybe_fault(index)
            t_w = time.perf_counter()
            summary = writer.commit({
                "index": index, "first_cell_id": first, "n_cells": n,
                "config_hash": ctx.config_hash,
                "status_counts": {s: counts.get(s, 0) for s in STATUSES},
                "wall_s": round(time.perf_counter() - t_start, 4),
                "stage_s": {k: round(v, 4) for k, v in times.items()},
                "device": ctx.device, **self.where()})
            summary["stage_s"]["write"] = round(times["write"] + time.perf_counter() - t_w, 4)
            return summary
        except BaseException:
            writer.abort()
            raise

    @staticmethod
    def _maybe_fault(index: int) -> None:
        """Fault injection for tests (module docstring)."""
        slow = os.environ.get(TEST_SLOW_SHARD_S)
        if slow:
            time.sleep(float(slow))
        marker = os.environ.get(TEST_EXIT_MARKER)
        if marker and _matches(TEST_EXIT_ON_SHARD, index) and _once(marker):
            os._exit(1)
        marker = os.environ.get(TEST_HANG_MARKER)
        if marker and _matches(TEST_HANG_ON_SHARD, index) and _once(marker):
            time.sleep(HANG_S)
