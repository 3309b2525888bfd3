"""The greedy protocol search (the source study's design, on Ray Tune with
``scorer="network"``; with the default ``scorer="fisher"`` the loop of :mod:`.fisher_search`
runs in this process instead, same directory, state and stop rules).

Each cycle tries every candidate test potential as a Tune trial (see :mod:`.trials`): the same
cells continue from their cached end states under the protocol-so-far through a hold and the
candidate step, a network is trained on the traces so far, and its held-out score is reported.
The candidate with the lowest score (``config.score``, default the test split's MSE on the unit
scale; ties: the first in candidate order) is appended; the driver continues the cached states
through the winning cycle (one candidate's simulation, checked against the trial's digest),
checkpoints the cache and the search state, and the next cycle starts.

Stops at the budget: ``max_steps`` appended steps, a protocol that would exceed
``max_duration_ms``, or (``stop_when_no_improvement``) a cycle whose best score is not below
the best so far by ``min_improvement`` (relative); that cycle is recorded, not appended.

Which cells train: all cells that stay numerically stable under the voltage clamp (a clamped
trace is valid whatever the cell's AP phenotype), unless ``config.statuses`` restricts them
to AP statuses. A cell unstable under the protocol-so-far is dropped from then on; one unstable
only under a candidate's cycle is dropped from that trial (trials report ``n_unstable``).

Resuming: run again with the same directory and configuration (a larger budget is allowed):
the search continues after its last completed cycle; an interrupted cycle is run again. A
trailing "no improvement" cycle is decided again under the new stop rules without re-running
its trials.

The search directory is claimed first (:func:`cardiotwin.storage.outdir.claim_output_dir`: a
directory of another search, a damaged state or foreign files is refused with one line) and
held with the single-writer lock (:class:`cardiotwin.storage.lock.DirectoryLock`) while the
search runs: a second search into the same directory is refused, naming the holder. A cache
entry found damaged on resume is recomputed (:meth:`.cache.StateCache.get`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..storage.lock import DirectoryLock
from ..storage.outdir import claim_output_dir
from .cache import CacheEntry, StateCache, continue_simulation
from .cells import SearchCells, build_cells
from .config import FORMAT, SearchConfig
from .state import HISTORY, STATE, SearchState, load_state, save_state

CELLS = "cells.npz"
OWN_NAMES = frozenset({STATE, HISTORY, CELLS, "protocol.json", "protocol.csv",
                       "protocol_hash.txt", "cache", "tune", "search.png", "comparison.json",
                       "comparison.png", "fisher_state.npz"})


def run_search(config: SearchConfig, out_dir: str | Path, *, num_cpus: int | None = None,
               ray_address: str | None = None, ship_package: str = "auto",
               figure: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the search of ``config`` in ``out_dir``. Returns a summary: protocol
    (Protocol), protocol_hash, n_steps, duration_ms, best_score, stop_reason, history, paths.

    Ray: started locally unless initialized (``num_cpus``) or reachable (``ray_address`` /
    ``$RAY_ADDRESS``); see :func:`cardiotwin.runtime.init_ray`. ``out_dir`` is claimed and
    locked (module docstring)."""
    out = claim_search_dir(out_dir, config)
    with DirectoryLock(out):
        if config.scorer == "fisher":
            from .fisher_search import run_fisher_locked

            return run_fisher_locked(config, out, figure, log)
        return _run_locked(config, out, num_cpus, ray_address, ship_package, figure, log)


def claim_search_dir(out_dir: str | Path, config: SearchConfig) -> Path:
    """``out_dir`` resolved, created and checked: new, or a search of ``config``'s identity;
    ValueError (one line) otherwise: another search (the differing fields named), a damaged
    state, a path that is not a directory, foreign files."""
    out = Path(out_dir).resolve()
    load_state(out, config)       # another identity: refused naming the fields that differ
    claim_output_dir(out, marker=STATE, fmt=FORMAT, config_hash=config.config_hash(),
                     own=OWN_NAMES.__contains__, what="protocol search")
    return out


def _run_locked(config: SearchConfig, out: Path, num_cpus: int | None,
                ray_address: str | None, ship_package: str, figure: bool,
                log: Callable[[str], None]) -> dict[str, Any]:
    from ..runtime import init_ray

    state = load_state(out, config)     # again under the lock
    cells = _load_cells(out, config, state)
    cache = StateCache(out / "cache")
    entry = _load_entry(cache, state, cells, log)
    started = False
    try:
        while True:
            reason = _budget_reason(state, config)
            if reason:
                break
            trailing = state.history[-1] if state.history and not \
                state.history[-1]["appended"] else None
            if trailing is not None:  # decided again under the current stop rules
                state.history.pop()
                record, results = trailing, trailing["candidates"]
            else:
                if not started:
                    started = init_ray(num_cpus, ray_address, ship_package)
                record, results = _run_cycle(len(state.history) + 1, entry, cells, config,
                                             out, log)
            best, v, score, stop = decide_cycle(record, results, state, config)
            if stop:
                state.stop_reason = "no_improvement"
                save_state(out, state, config)
                log(f"cycle {record['cycle']}: best {v:g} mV, {config.score} {score:.5g} does "
                    f"not improve on {state.best_score:.5g}: stop")
                reason = "no_improvement"
                break
            entry = _append(entry, v, results[best], record, cells, config, cache, log)
            state.protocol_json = entry.protocol_json
            state.best_score = score if state.best_score is None else min(score,
                                                                          state.best_score)
            state.history.append(record)
            state.stop_reason = None
            save_state(out, state, config)
            cache.prune({entry.key})
            log(f"cycle {record['cycle']}: appended {v:g} mV ({config.score} {score:.5g}); "
                f"protocol {state.duration_ms:g} ms, {state.n_steps} steps, "
                f"{record['timing']['wall_s']:.1f} s")
        state.stop_reason = reason
        save_state(out, state, config)
    finally:
        if started:
            import ray

            ray.shutdown()
    fig = None
    if figure and state.protocol_json is not None:
        from .figures import plot_search

        fig = plot_search(state.history, state.protocol(), out / "search.png", config.score)
    log(f"search stopped ({reason}): {state.n_steps} steps, {state.duration_ms:g} ms, "
        f"protocol_hash {_hash(state)} -> {out}")
    return {"protocol": state.protocol(), "protocol_hash": _hash(state),
            "n_steps": state.n_steps, "duration_ms": state.duration_ms,
            "best_score": state.best_score, "stop_reason": reason, "history": state.history,
            "dir": out, "figure": fig}


# ---- pieces of the loop -----------------------------------------------------------------

def _hash(state: SearchState) -> str | None:
    p = state.protocol()
    return None if p is None else p.protocol_hash


def _score(r: dict[str, Any]) -> float:
    s = r.get("score")
    return float("inf") if s is None or not np.isfinite(s) else float(s)


def _improves(score: float, best: float | None, min_improvement: float) -> bool:
    return best is None or score < best * (1.0 - min_improvement)


def decide_cycle(record: dict[str, Any], results: list[dict[str, Any]], state: SearchState,
                 config: SearchConfig) -> tuple[int, float, float, bool]:
    """The best candidate of a cycle (lowest score): (its index, mV, score, stop). ``stop``:
    the stop rule says it does not improve enough; the record then goes into the history as
    not appended. Shared by the network and Fisher searches."""
    best = int(np.argmin([_score(r) for r in results]))
    v, score = results[best]["candidate_mV"], _score(results[best])
    record.update(best_mV=v, best_score=score)
    stop = config.stop_when_no_improvement and not _improves(score, state.best_score,
                                                             config.min_improvement)
    if stop:
        record.update(appended=False, protocol_hash=None)
        state.history.append(record)
    return best, v, score, stop


def _budget_reason(state: SearchState, config: SearchConfig) -> str | None:
    """Why no further cycle may run, or None."""
    if state.n_steps >= config.max_steps:
        return "max_steps"
    if config.max_duration_ms is not None and \
            state.duration_ms + config.cycle_ms > config.max_duration_ms * (1 + 1e-12):
        return "max_duration_ms"
    return None


def _load_cells(out: Path, config: SearchConfig, state: SearchState) -> SearchCells:
    """The population: read back from cells.npz when it belongs to this search, else built
    (and classified when ``config.statuses``) and saved."""
    path = out / CELLS
    if path.is_file() and (out / "state.json").is_file():
        cells = SearchCells.load(path)
        if cells.n == config.n_cells:
            return cells
    cells = build_cells(config)
    if not cells.eligible.any():
        raise ValueError(f"no cell of the population has a status in {config.statuses}")
    cells.save(path)
    return cells


def _load_entry(cache: StateCache, state: SearchState, cells: SearchCells,
                log: Callable[[str], None]) -> CacheEntry:
    """The cached end states of the protocol-so-far (re-simulated from the start, and
    overwritten, when the cache lost them or they are damaged)."""
    if state.protocol_json is None:
        return CacheEntry.initial(cells.n)
    entry = cache.get(state.cache_key, cells.n, log)
    if entry is not None:
        return entry
    log("cache entry of the protocol-so-far is missing or damaged: simulating it from the "
        "start")
    entry, _, _ = continue_simulation(CacheEntry.initial(cells.n), state.protocol(),
                                      cells.inputs())
    cache.save(entry)
    return entry


def _run_cycle(cycle: int, entry: CacheEntry, cells: SearchCells, config: SearchConfig,
               out: Path, log: Callable[[str], None]) -> tuple[dict[str, Any], list[dict]]:
    from .trials import run_cycle

    t0 = time.perf_counter()
    log(f"cycle {cycle}: {len(config.candidates_mV)} candidates after "
        f"{entry.i_total.shape[1] * config.sample_interval_ms:g} ms")
    results, info = run_cycle(cycle, entry, cells, config, out / "tune")
    record = {"cycle": cycle, "protocol_hash_before": None if entry.protocol_json is None
              else entry.key, "score_metric": config.score, "candidates": results,
              "timing": {"wall_s": time.perf_counter() - t0, "tune_s": info["tune_s"],
                         "trials_sim_s": float(sum(r["sim_s"] for r in results)),
                         "trials_train_s": float(sum(r["train_s"] for r in results)),
                         "gpus_per_trial": info["gpus_per_trial"]}}
    return record, results


def _append(entry: CacheEntry, v: float, best: dict[str, Any], record: dict[str, Any],
            cells: SearchCells, config: SearchConfig, cache: StateCache,
            log: Callable[[str], None]) -> CacheEntry:
    """Continue the cached states through the winning cycle, check it against the trial's
    digest, save the new cache entry and complete ``record``."""
    from .trials import segment_digest

    t0 = time.perf_counter()
    new, seg, sim_s = continue_simulation(entry, config.cycle_protocol(v), cells.inputs())
    match = segment_digest(seg, new.state) == best.get("digest")
    if not match:
        log(f"warning: cycle {record['cycle']}: the driver's simulation of {v:g} mV differs "
            "bitwise from the trial's (another CPU kind?); the driver's is kept")
    cache.save(new)
    p = new.protocol()
    record.update(appended=True, protocol_hash=p.protocol_hash, duration_ms=p.duration_ms,
                  digest_match=match)
    timing = record.setdefault("timing", {})
    timing["extend_s"] = time.perf_counter() - t0
    timing["extend_sim_s"] = sim_s
    timing["wall_s"] = timing.get("wall_s", 0.0) + timing["extend_s"]
    return new
