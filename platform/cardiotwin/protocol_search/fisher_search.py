"""The greedy search with the Fisher score (``SearchConfig.scorer == "fisher"``): the study's
cycle structure (hold, then one candidate test step), each candidate scored by the posterior
variance its Fisher information leaves (:mod:`.fisher`), in this process (one simulator call
per chunk of base cells: numba-parallel and SIMD batched; no Ray, no training).

Per cycle every candidate continues the base cells and their 52 perturbed copies from the
protocol-so-far's end states through the hold and the step and adds that cycle's information
to the information so far; the candidate with the lowest score (ties: the first) is appended
under the same budget and stop rules as the network search (:mod:`.search`). The
protocol-so-far's sensitivity state is checkpointed as ``fisher_state.npz`` after every cycle
(a missing or damaged one is recomputed from the start: continuation is exact), so a stopped
search resumes; the state, history and protocol files are those of :mod:`.state`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import SearchConfig
from .fisher import SensitivityState, base_cells, information_metrics, piece_information
from .state import SearchState, load_state, save_state

FISHER_STATE = "fisher_state.npz"


def _so_far(out: Path, config: SearchConfig, state: SearchState,
            log: Callable[[str], None]) -> SensitivityState:
    unit = base_cells(config)
    if state.protocol_json is None:
        return SensitivityState.initial(unit)
    sens = SensitivityState.load(out / FISHER_STATE, len(unit))
    if sens is not None and np.array_equal(sens.unit, unit):
        return sens
    log("Fisher state of the protocol-so-far is missing or damaged: simulating it from the "
        "start")
    sens, _ = piece_information(SensitivityState.initial(unit), state.protocol(),
                                **_kw(config))
    sens.save(out / FISHER_STATE)
    return sens


def _kw(config: SearchConfig) -> dict[str, Any]:
    return {"spread": config.spread, "fd_step": config.fd_step,
            "noise_pA_per_pF": config.noise_pA_per_pF}


def score_cycle(sens: SensitivityState, config: SearchConfig
                ) -> tuple[list[dict[str, Any]], list[SensitivityState]]:
    """Every candidate's metrics (candidate_mV, score, trace, logdet, contraction,
    contraction_<family>, n_used, n_unstable, sim_s, fisher_s) after one more cycle, and the
    sensitivity state each candidate leaves."""
    results, states = [], []
    for v in config.candidates_mV:
        t0 = time.perf_counter()
        new, sim_s = piece_information(sens, config.cycle_protocol(v), **_kw(config))
        m = information_metrics(new.fisher, new.unstable, config.criterion)
        results.append({"candidate_mV": float(v), **m, "sim_s": sim_s,
                        "fisher_s": time.perf_counter() - t0 - sim_s})
        states.append(new)
    return results, states


def run_fisher_locked(config: SearchConfig, out: Path, figure: bool,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """The search loop of a claimed and locked directory (see :func:`.search.run_search`)."""
    from .search import _budget_reason, _hash, decide_cycle

    state = load_state(out, config)
    sens = _so_far(out, config, state, log)
    while True:
        reason = _budget_reason(state, config)
        if reason:
            break
        trailing = state.history[-1] if state.history and not \
            state.history[-1]["appended"] else None
        t0 = time.perf_counter()
        if trailing is not None:
            state.history.pop()
            record, results, states = trailing, trailing["candidates"], None
        else:
            cycle = len(state.history) + 1
            log(f"cycle {cycle}: {len(config.candidates_mV)} candidates (Fisher, "
                f"{sens.n} base cells x 53) after {state.duration_ms:g} ms")
            results, states = score_cycle(sens, config)
            record = {"cycle": cycle, "protocol_hash_before": _hash(state),
                      "score_metric": f"fisher_{config.criterion}", "candidates": results,
                      "timing": {"wall_s": time.perf_counter() - t0,
                                 "sim_s": float(sum(r["sim_s"] for r in results)),
                                 "fisher_s": float(sum(r["fisher_s"] for r in results))}}
        best, v, score, stop = decide_cycle(record, results, state, config)
        if stop:
            reason = "no_improvement"
            log(f"cycle {record['cycle']}: best {v:g} mV, score {score:.5g} does not improve "
                f"on {state.best_score:.5g}: stop")
            break
        if states is None:      # a trailing cycle now appended: its state is recomputed
            sens, _ = piece_information(sens, config.cycle_protocol(v), **_kw(config))
        else:
            sens = states[best]
        from ..protocols import Protocol

        p = state.protocol()
        p = config.cycle_protocol(v) if p is None else p.extended(config.cycle_segments(v))
        sens.save(out / FISHER_STATE)
        state.protocol_json = Protocol.from_dict(p.to_dict()).to_json()
        state.best_score = score if state.best_score is None else min(score, state.best_score)
        record.update(appended=True, protocol_hash=p.protocol_hash, duration_ms=p.duration_ms)
        state.history.append(record)
        state.stop_reason = None
        save_state(out, state, config)
        log(f"cycle {record['cycle']}: appended {v:g} mV (fisher {config.criterion} "
            f"{score:.5g}, contraction {results[best]['contraction']:.3f}); protocol "
            f"{state.duration_ms:g} ms, {record['timing']['wall_s']:.1f} s")
    state.stop_reason = reason
    save_state(out, state, config)
    fig = None
    if figure and state.protocol_json is not None:
        from .figures import plot_search

        fig = plot_search(state.history, state.protocol(), out / "search.png",
                          f"fisher {config.criterion}")
    log(f"search stopped ({reason}): {state.n_steps} steps, {state.duration_ms:g} ms, "
        f"protocol_hash {_hash(state)} -> {out}")
    return {"protocol": state.protocol(), "protocol_hash": _hash(state),
            "n_steps": state.n_steps, "duration_ms": state.duration_ms,
            "best_score": state.best_score, "stop_reason": reason, "history": state.history,
            "dir": out, "figure": fig}
