"""The unit of work of a drug screen: a block of cells at one concentration, simulated and
analysed in one call (a Ray task, or in the driver's process). :class:`ScreenTask` is
everything a task needs, typed, built once from the screen's configuration."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analysis import FLOAT_KEYS, INT_KEYS, analyze_cell
from .store import BOOL_KEYS, STR_KEYS


@dataclass(frozen=True)
class ScreenTask:
    """What every task of one screen shares. Units: ms, K, nM, pA/pF, mV.

    ``drug``: the resolved :class:`~cardiotwin.drugs.catalog.Drug`; ``twin_inputs``: the
    model inputs of the twin the population is sampled around; ``pacing_period_ms`` None:
    free-running; ``single_thread``: one numba thread (a Ray task holding one CPU);
    ``late_sodium``: simulate the model's late-sodium variant (model.late_sodium), the drug's
    INaL block on its conductance; ``record_charge``: also the charge carried by the CiPA
    currents (columns ``CHARGE_KEYS``)."""

    drug: Any
    concentrations_nM: tuple[float, ...]
    twin_inputs: np.ndarray
    temperature_K: float
    prepace_ms: float
    record_ms: float
    record_interval_ms: float
    pacing_period_ms: float | None
    pacing_amplitude: float
    pacing_width_ms: float
    depolarized_mdp_mV: float | None
    ead_min_repolarization: float
    n_keep_traces: int
    trace_interval_ms: float
    single_thread: bool
    late_sodium: bool = False
    record_charge: bool = False

    @classmethod
    def from_config(cls, cfg: Any, drug: Any, single_thread: bool) -> ScreenTask:
        """The task context of a :class:`~cardiotwin.drugs.config.ScreenConfig`."""
        return cls(drug=drug, concentrations_nM=tuple(float(c) for c in cfg.concentrations_nM),
                   twin_inputs=np.asarray(cfg.twin_inputs(), dtype=np.float64),
                   temperature_K=cfg.temperature_K, prepace_ms=cfg.prepace_ms,
                   record_ms=cfg.record_ms, record_interval_ms=cfg.record_interval_ms,
                   pacing_period_ms=cfg.pacing_period_ms,
                   pacing_amplitude=cfg.pacing_amplitude, pacing_width_ms=cfg.pacing_width_ms,
                   depolarized_mdp_mV=cfg.depolarized_mdp_mV,
                   ead_min_repolarization=cfg.ead_min_repolarization,
                   n_keep_traces=cfg.n_keep_traces, trace_interval_ms=cfg.trace_interval_ms,
                   single_thread=single_thread, late_sodium=cfg.late_sodium,
                   record_charge=cfg.net_charge)

    def stimulus(self, t_ms: np.ndarray) -> np.ndarray | None:
        """The pacing current (pA/pF) on the recorded run's time axis (it starts after the
        pre-pacing), or None when free-running."""
        if self.pacing_period_ms is None:
            return None
        phase = np.mod(t_ms + self.prepace_ms, self.pacing_period_ms)
        return np.where(phase < self.pacing_width_ms, self.pacing_amplitude, 0.0)


def task_variant(late_sodium: bool, record_charge: bool, inal_scale: float = 1.0
                 ) -> dict[str, Any]:
    """The keyword arguments of ``simulate_current_clamp`` for the model variant of a task
    (none for the default model without charge)."""
    kw: dict[str, Any] = {}
    if late_sodium:
        from ..model.late_sodium import LateSodium

        kw["late_sodium"] = LateSodium(scale=inal_scale)
    if record_charge:
        kw["record_charge"] = True
    return kw


def charge_columns(charge: dict[str, np.ndarray], record_ms: float) -> dict[str, np.ndarray]:
    """Per-cell charge columns (pA/pF ms per 1000 ms, i.e. per beat at 1 Hz): q_<current> of
    each CiPA current and qnet, their sum, from the kernel's charges over ``record_ms``."""
    per_s = 1000.0 / record_ms
    out = {f"q_{k}": np.asarray(v, dtype=np.float64) * per_s for k, v in charge.items()}
    out["qnet"] = np.sum([out[f"q_{k}"] for k in charge], axis=0)
    return out


def simulate_block(task: ScreenTask, cell_ids: np.ndarray, multipliers: np.ndarray,
                   conc_index: int) -> dict[str, Any]:
    """Simulate and analyse cells ``cell_ids`` (multipliers (n, 52) float32) at concentration
    ``conc_index``: per-cell columns, kept traces, and seconds spent (the Ray task body)."""
    t_start = time.perf_counter()
    if task.single_thread:
        from ..runtime.threads import limit_numba_threads

        limit_numba_threads(1)
    from ..model.parameters import INFERRED_INDEX
    from ..simulate import Pacing, simulate_current_clamp

    conc = task.concentrations_nM[conc_index]
    n = len(cell_ids)
    base = np.repeat(task.twin_inputs[None, :], n, axis=0)
    base[:, INFERRED_INDEX] *= np.asarray(multipliers, dtype=np.float32).astype(np.float64)
    inputs = task.drug.apply(base, conc)
    pacing = None
    if task.pacing_period_ms is not None:
        pacing = Pacing(period_ms=task.pacing_period_ms, amplitude=task.pacing_amplitude,
                        width_ms=task.pacing_width_ms)
    variant = task_variant(task.late_sodium, task.record_charge,
                           task.drug.late_sodium_remaining(conc))
    t0 = time.perf_counter()
    res = simulate_current_clamp(task.record_ms, inputs, temperature_K=task.temperature_K,
                                 record_interval_ms=task.record_interval_ms, pacing=pacing,
                                 prepace_ms=task.prepace_ms, **variant)
    t1 = time.perf_counter()
    i_stim = task.stimulus(res.t_ms)
    cols: dict[str, list] = {k: [] for k in (*STR_KEYS, *BOOL_KEYS, *INT_KEYS, *FLOAT_KEYS)}
    traces = []
    k_dec = max(1, int(round(task.trace_interval_ms / task.record_interval_ms)))
    n_keep = task.n_keep_traces
    n_ead_kept = 0
    for i in range(n):
        r = analyze_cell(res.t_ms, res.v_mV[i], i_stim=i_stim,
                         depolarized_mdp_mV=task.depolarized_mdp_mV,
                         ead_min_repolarization=task.ead_min_repolarization, segments=True)
        if res.unstable[i]:
            r.update(status="unstable", outcome="unstable", ead=False, n_eads=0,
                     reason="numerically unstable (non-finite state)")
        for k in cols:
            cols[k].append(r[k])
        cid = int(cell_ids[i])
        keep_ead = r["ead"] and n_ead_kept < n_keep
        if n_keep and (keep_ead or cid < n_keep) and np.all(np.isfinite(res.v_mV[i])):
            n_ead_kept += bool(keep_ead)
            traces.append({"concentration_nM": conc, "cell_id": cid, "outcome": r["outcome"],
                           "ead": r["ead"], "dt_ms": task.record_interval_ms * k_dec,
                           "v_mV": res.v_mV[i, ::k_dec].astype(np.float32),
                           "ead_start_ms": [s for s, _ in r["ead_segments"]],
                           "ead_end_ms": [e for _, e in r["ead_segments"]]})
    t2 = time.perf_counter()
    out = {k: np.asarray(v) for k, v in cols.items()}
    for k in INT_KEYS:
        out[k] = out[k].astype(np.int32)
    for k in FLOAT_KEYS:
        out[k] = out[k].astype(np.float64)
    out["ead"] = out["ead"].astype(bool)
    if task.record_charge:
        charge = charge_columns(res.charge, task.record_ms)
        for k, v in charge.items():
            out[k] = np.where(res.unstable, np.nan, v)
    return {"conc_index": conc_index, "cell_id": np.asarray(cell_ids, dtype=np.int64),
            "columns": out, "traces": traces,
            "seconds": {"setup": t0 - t_start, "simulate": t1 - t0, "analyze": t2 - t1},
            "host": socket.gethostname(), "pid": os.getpid()}
