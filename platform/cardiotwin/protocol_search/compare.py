"""Compare protocols on the same held-out cells with the same network budget: the optimized
protocol, protocol_a and a naive protocol of the optimized one's duration.

The population is, by default, a fresh one (seed ``config.seed + 1``, ``config.n_cells``
cells): cells the search never scored, so the held-out error is not biased by the search having
picked its steps on them. Every protocol is simulated on the same cells; the cells kept are
those eligible and stable under *every* protocol, split 70:10:20 by cell id, so all networks
train, stop early and are tested on the same cells. Each network has the search's
TrainConfig (preset, overrides, epochs, seed). The trainings run as Ray tasks (one GPU each
when the cluster has GPUs) when Ray is initialized or ``use_ray``, else one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import training_resources
from .cache import CacheEntry, simulate_from
from .cells import build_cells
from .config import SearchConfig

TRAIN_TIMEOUT_FACTOR = 10.0   # a training is hung after this x the longest finished one ...
TRAIN_MIN_TIMEOUT_S = 900.0   # ... and at least this long (s)


def naive_protocol(protocol, config: SearchConfig):
    """A protocol of the same duration as ``protocol`` (made of ``config``'s cycles): the same
    number of cycles, their steps evenly spaced over the candidate range, ascending (one
    cycle: the middle of the range)."""
    from ..protocols import Protocol

    k = protocol.duration_ms / config.cycle_ms
    if k < 1 or abs(k - round(k)) > 1e-9 * k:
        raise ValueError(f"protocol of {protocol.duration_ms} ms is not a whole number of "
                         f"search cycles ({config.cycle_ms} ms)")
    k = int(round(k))
    lo, hi = min(config.candidates_mV), max(config.candidates_mV)
    volts = [0.5 * (lo + hi)] if k == 1 else np.linspace(lo, hi, k).round(6).tolist()
    segs = tuple(s for v in volts for s in config.cycle_segments(v))
    return Protocol(segs, config.sample_interval_ms, config.temperature_K)


def _score_task(x, multipliers, cell_ids, keep, train_config, spread, cpus, deterministic):
    from .scoring import configure_threads, train_and_score

    configure_threads(cpus, deterministic)
    return train_and_score(x, multipliers, cell_ids, keep, train_config, spread)


def compare_protocols(protocols: dict[str, Any], config: SearchConfig, *,
                      n_cells: int | None = None, seed: int | None = None,
                      use_ray: bool | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """Simulate every protocol (name -> Protocol) on one population, train a network per
    protocol and score it on the common held-out cells. Returns n_cells, seed, the split
    sizes, the network config and per protocol: duration_ms, protocol_hash, sim_s and the
    metrics of :func:`cardiotwin.protocol_search.scoring.train_and_score`."""
    from .scoring import pool_traces

    if not protocols:
        raise ValueError("no protocol to compare")
    for name, p in protocols.items():
        if (p.sample_interval_ms, p.temperature_K) != (config.sample_interval_ms,
                                                       config.temperature_K):
            raise ValueError(f"protocol {name}: sample interval {p.sample_interval_ms} ms / "
                             f"{p.temperature_K} K differ from the search's "
                             f"{config.sample_interval_ms} ms / {config.temperature_K} K")
    seed = config.seed + 1 if seed is None else int(seed)
    cells = build_cells(config, n_cells=n_cells, seed=seed)
    inputs = cells.inputs()
    tcfg = config.train_config()
    traces, sims, keep = {}, {}, cells.eligible.copy()
    for name, p in protocols.items():
        _, unstable, itot, sim_s = simulate_from(CacheEntry.initial(cells.n), p, inputs)
        traces[name] = pool_traces(itot, tcfg.input_pool)
        sims[name] = sim_s
        keep &= ~unstable
    log(f"compare: {len(protocols)} protocols simulated on {cells.n} cells (seed {seed}); "
        f"{int(keep.sum())} eligible and stable under all")
    args = (cells.multipliers, cells.cell_ids, keep, tcfg, config.spread,
            config.cpus_per_trial, config.deterministic)
    t0 = time.perf_counter()
    metrics = _train_all(traces, args, config, use_ray)
    wall = time.perf_counter() - t0
    results = {}
    for name, p in protocols.items():
        results[name] = {"duration_ms": p.duration_ms, "protocol_hash": p.protocol_hash,
                         "sim_s": sims[name], **metrics[name]}
        log(f"  {name:>10}: {p.duration_ms / 1000:6.2f} s, median MAE "
            f"{metrics[name]['test_median_mae']:.4f}, MSE {metrics[name]['test_mse']:.5f}")
    first = next(iter(metrics.values()))
    return {"n_cells": cells.n, "seed": seed, "n_kept": int(keep.sum()),
            "n_train": first["n_train"], "n_val": first["n_val"], "n_test": first["n_test"],
            "network": tcfg.model_dump(mode="json"), "train_wall_s": wall, "results": results}


def _train_all(traces: dict[str, np.ndarray], args: tuple, config: SearchConfig,
               use_ray: bool | None) -> dict[str, dict[str, Any]]:
    try:
        import ray
    except ImportError:
        ray = None
    if use_ray is None:
        use_ray = ray is not None and ray.is_initialized()
    if not use_ray:  # in this process: its thread settings are left alone
        from .scoring import train_and_score

        return {n: train_and_score(x, *args[:5]) for n, x in traces.items()}
    from ..runtime import run_tasks
    from .trials import gpus_per_trial

    task = ray.remote(max_retries=0)(_score_task).options(
        num_cpus=config.cpus_per_trial, num_gpus=gpus_per_trial(config),
        resources=training_resources())
    shared = [ray.put(a) for a in args[:3]]
    names = list(traces)
    results = run_tasks(task, [(ray.put(traces[n]), *shared, *args[3:]) for n in names],
                        max_in_flight=len(names), timeout_factor=TRAIN_TIMEOUT_FACTOR,
                        min_timeout_s=TRAIN_MIN_TIMEOUT_S,
                        describe=lambda i: f"training on protocol {names[i]}")
    return dict(zip(names, results, strict=True))


def run_comparison(search_dir: str | Path, config: SearchConfig, *,
                   n_cells: int | None = None, seed: int | None = None,
                   use_ray: bool | None = None, figure: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compare the search's optimized protocol (``search_dir/protocol.json``) with protocol_a
    and the naive protocol; write ``comparison.json`` (and ``comparison.png``) there."""
    from ..storage.lock import DirectoryLock

    d = Path(search_dir)
    if not (d / "protocol.json").is_file():
        raise ValueError(f"{d}: no optimized protocol yet (protocol.json); run the search")
    with DirectoryLock(d):      # writes into the search directory: one writer
        return _compare_into(d, config, n_cells, seed, use_ray, figure, log)


def _compare_into(d: Path, config: SearchConfig, n_cells: int | None, seed: int | None,
                  use_ray: bool | None, figure: bool,
                  log: Callable[[str], None]) -> dict[str, Any]:
    from ..protocols import builtin_protocol, load_protocol
    from .state import write_json_finite

    opt = load_protocol(d / "protocol.json")
    protocols = {"optimized": opt, "protocol_a": builtin_protocol(
        "protocol_a", sample_interval_ms=config.sample_interval_ms,
        temperature_K=config.temperature_K), "naive": naive_protocol(opt, config)}
    comp = compare_protocols(protocols, config, n_cells=n_cells, seed=seed, use_ray=use_ray,
                             log=log)
    comp["naive_protocol"] = protocols["naive"].to_dict()
    write_json_finite(d / "comparison.json", comp)
    if figure:
        from .figures import plot_comparison

        comp["figure"] = str(plot_comparison(comp, d / "comparison.png"))
    return comp
