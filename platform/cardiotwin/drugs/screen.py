"""Population drug screen on Ray: cells around a twin x concentrations -> outcomes, EADs, APD90.

``run_screen(config)`` samples the population (``cardiotwin.population`` sampling: cell i from
(seed, i)), splits cells x concentrations into Ray tasks of ``batch_cells`` cells at one
concentration (one batched numba call each, one CPU and one numba thread per task), analyses
every trace in the task (:func:`cardiotwin.drugs.analysis.analyze_cell`) and returns only
per-cell numbers and a few traces to the driver, which summarizes per concentration
(:mod:`cardiotwin.drugs.summary`) and writes, when ``out_dir`` is set:

- ``results.parquet``: one row per (cell, concentration): cell_id, concentration_nM, status,
  outcome, reason, ead, n_eads, n_beats, n_full_aps, n_complete, apd90_ms, apd50_ms,
  apd90_all_ms, cycle_length_ms, mdp_mV, peak_mV, v_median_mV, ead_max_mV, arrested;
- ``cells.parquet``: cell_id and its 52 multipliers (float32, the simulated values);
- ``traces.parquet``: the kept traces (concentration_nM, cell_id, outcome, dt_ms, v_mV,
  ead_start_ms, ead_end_ms);
- ``summary.json``: the configuration (with the drug's IC50s and sources), the per-concentration
  summary, timing; written last: a directory with a summary is a finished screen;
- ``dose_response.png``, ``apd90_violins.png``, ``ap_traces.png``.

Each file is written atomically and summary.json records the Parquet files' SHA-256 and the
code version (:mod:`cardiotwin.drugs.store`). Re-running a finished screen with the same
settings and code returns it without simulating, its files verified (``overwrite``
recomputes); a directory holding another screen, a screen written by another code version or
other files is refused (:func:`cardiotwin.storage.outdir.claim_output_dir`). While it
simulates and writes, the screen holds the directory's single-writer lock
(:class:`cardiotwin.storage.lock.DirectoryLock`): a second screen into the same directory is
refused with one line naming the holder.

Ray: :func:`cardiotwin.runtime.init_ray` (``ray_address`` or ``$RAY_ADDRESS``, else a local
cluster of ``num_cpus``); the tasks run through :class:`cardiotwin.runtime.FanOut` (at most two
per CPU in flight, lost workers retried, a task running ``TASK_TIMEOUT_FACTOR`` times longer
than the longest finished one presumed hung and retried). ``use_ray=False`` runs the same
tasks in this process (numba's threads, no Ray).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.versions import code_version, package_versions
from ..storage.atomic import atomic_path, write_json_atomic
from ..storage.lock import DirectoryLock
from .config import FORMAT, ScreenConfig
from .store import (
    FIGURES,
    FILES,
    SUMMARY,
    ScreenResult,
    claim_screen_dir,
    load_screen,
    make_tables,
    write_parquet,
)
from .summary import arrested_flags, summarize
from .task import ScreenTask, simulate_block, task_variant

TASK_TIMEOUT_FACTOR = 10.0   # a task is hung after this x the longest finished one ...
TASK_MIN_TIMEOUT_S = 300.0   # ... and at least this long (s)
TASKS_PER_CPU = 2            # tasks in flight per cluster CPU

__all__ = ["ScreenResult", "list_drugs_text", "load_screen",
           "run_from_args", "run_screen", "run_screens", "simulate_block"]


# ---- the driver -----------------------------------------------------------------------------

def _select_traces(traces: list[dict[str, Any]], n_keep: int) -> list[dict[str, Any]]:
    """Per concentration: up to n_keep // 2 (at least 1) EAD cells, then the lowest cell ids."""
    out = []
    for c in sorted({t["concentration_nM"] for t in traces}):
        here = sorted((t for t in traces if t["concentration_nM"] == c),
                      key=lambda t: t["cell_id"])
        ead = [t for t in here if t["ead"]][:max(1, n_keep // 2)]
        ead_ids = {t["cell_id"] for t in ead}
        rest = [t for t in here if t["cell_id"] not in ead_ids][:max(0, n_keep - len(ead))]
        out += sorted(ead + rest, key=lambda t: t["cell_id"])
    return out


def run_screen(config: ScreenConfig | dict[str, Any], progress: bool = True,
               num_cpus: int | None = None, ray_address: str | None = None, *,
               ship_package: str = "auto", use_ray: bool = True,
               echo: Callable[[str], Any] | None = print,
               on_progress: Callable[[int, int], Any] | None = None) -> ScreenResult:
    """Run (or reopen) the drug screen of ``config`` and return it (:class:`ScreenResult`).

    ``num_cpus``: size of a local Ray cluster started here; ``ray_address``: connect to this
    cluster (default ``$RAY_ADDRESS``); ``ship_package``: auto / yes / no (as population
    generation); ``use_ray``: False runs in this process; ``echo``: where the summary lines go
    (None: silent); ``progress``: a tqdm bar on stderr; ``on_progress(done, total)``: called
    with the simulations done after each task (e.g. for a status endpoint).
    """
    cfg = config if isinstance(config, ScreenConfig) else ScreenConfig.create(**config)
    from ..runtime.ray_setup import ray_runtime_env

    ray_runtime_env(ship_package, ray_address)          # validates ship_package
    identity, chash = cfg.identity(), cfg.config_hash()
    out = Path(cfg.out_dir).resolve() if cfg.out_dir is not None else None
    if out is None:
        return _compute(cfg, None, identity, chash, progress, num_cpus, ray_address,
                        ship_package, use_ray, echo, on_progress)
    if claim_screen_dir(out, chash, identity, cfg.overwrite) is not None:
        return _reuse(out, echo)
    with DirectoryLock(out):
        # claimed again under the lock: another run may have finished it meanwhile
        if claim_screen_dir(out, chash, identity, cfg.overwrite) is not None:
            return _reuse(out, echo)
        return _compute(cfg, out, identity, chash, progress, num_cpus, ray_address,
                        ship_package, use_ray, echo, on_progress)


def _reuse(out: Path, echo: Callable[[str], Any] | None) -> ScreenResult:
    if echo:
        echo(f"screen already finished in {out} (same settings): reusing it")
    return load_screen(out)


@dataclass
class _Plan:
    """One screen's work before it runs: its config, output, task and population."""

    cfg: ScreenConfig
    out: Path | None
    identity: dict[str, Any]
    chash: str
    drug: Any
    task: ScreenTask
    mult: np.ndarray
    cell_ids: np.ndarray
    work: list[tuple[int, int, int]]      # (concentration index, first cell, end cell)

    @property
    def n_sims(self) -> int:
        return self.cfg.n_cells * len(self.cfg.concentrations_nM)

    def describe(self) -> str:
        cfg, concs = self.cfg, self.cfg.concentrations_nM
        return (f"{self.drug.name} at {', '.join(f'{c:g}' for c in concs)} nM on "
                f"{cfg.n_cells} cells (+-{100 * cfg.spread:g}% around {cfg.twin_name}): "
                f"{self.n_sims} simulations of {cfg.prepace_ms + cfg.record_ms:g} ms in "
                f"{len(self.work)} tasks" + (f" -> {self.out}" if self.out else ""))


def _plan(cfg: ScreenConfig, out: Path | None, identity: dict[str, Any], chash: str,
          use_ray: bool) -> _Plan:
    from ..population import sample_population

    drug = cfg.resolve_drug()
    mult = sample_population(cfg.sampler, cfg.n_cells, cfg.spread, cfg.seed)
    cell_ids = np.arange(cfg.n_cells, dtype=np.int64)
    task = ScreenTask.from_config(cfg, drug, single_thread=use_ray)
    bounds = [(a, min(cfg.n_cells, a + cfg.batch_cells))
              for a in range(0, cfg.n_cells, cfg.batch_cells)]
    work = [(ci, a, b) for a, b in bounds for ci in range(len(cfg.concentrations_nM))]
    return _Plan(cfg, out, identity, chash, drug, task, mult, cell_ids, work)


def _compute(cfg: ScreenConfig, out: Path | None, identity: dict[str, Any], chash: str,
             progress: bool, num_cpus: int | None, ray_address: str | None,
             ship_package: str, use_ray: bool, echo: Callable[[str], Any] | None,
             on_progress: Callable[[int, int], Any] | None) -> ScreenResult:
    """Simulate, summarize and (``out``) write the screen (the caller holds the lock)."""
    plan = _plan(cfg, out, identity, chash, use_ray)
    if echo:
        echo(plan.describe())
    t0 = time.perf_counter()
    parts, n_cpus, threads, startup = _execute([plan], progress, use_ray, num_cpus,
                                               ray_address, ship_package, on_progress)
    wall = time.perf_counter() - t0 - startup
    return _assemble(plan, parts[0], n_cpus, threads, wall, startup, echo)


def run_screens(configs: list[ScreenConfig | dict[str, Any]], progress: bool = True,
                num_cpus: int | None = None, ray_address: str | None = None, *,
                ship_package: str = "auto", use_ray: bool = True,
                echo: Callable[[str], Any] | None = print) -> list[ScreenResult]:
    """Run (or reopen) several screens with their tasks in one Ray session (one pool of
    tasks, so the cluster stays busy across screens); each is written and reused exactly as
    :func:`run_screen` would (each needs its own ``out_dir``, or none). Simulations that are
    the same in two screens (same population, settings and inputs: e.g. the control, 0 nM,
    of screens of different drugs) run once."""
    from contextlib import ExitStack

    from ..runtime.ray_setup import ray_runtime_env

    cfgs = [c if isinstance(c, ScreenConfig) else ScreenConfig.create(**c) for c in configs]
    ray_runtime_env(ship_package, ray_address)
    outs = [Path(c.out_dir).resolve() if c.out_dir is not None else None for c in cfgs]
    dup = sorted({str(o) for o in outs if o is not None and outs.count(o) > 1})
    if dup:
        raise ValueError(f"screens must have distinct out_dir; {', '.join(dup)} given twice")
    results: list[ScreenResult | None] = [None] * len(cfgs)
    with ExitStack() as stack:
        plans: list[tuple[int, _Plan]] = []
        for i, (cfg, out) in enumerate(zip(cfgs, outs, strict=True)):
            identity, chash = cfg.identity(), cfg.config_hash()
            if out is not None:
                if claim_screen_dir(out, chash, identity, cfg.overwrite) is None:
                    stack.enter_context(DirectoryLock(out))
                if claim_screen_dir(out, chash, identity, cfg.overwrite) is not None:
                    results[i] = load_screen(out)
                    continue
            plans.append((i, _plan(cfg, out, identity, chash, use_ray)))
        if echo:
            echo(f"{len(cfgs)} screens: {len(cfgs) - len(plans)} finished before (reused), "
                 f"{len(plans)} to run ({sum(p.n_sims for _, p in plans)} simulations)")
        if plans:
            t0 = time.perf_counter()
            parts, n_cpus, threads, startup = _execute([p for _, p in plans], progress,
                                                       use_ray, num_cpus, ray_address,
                                                       ship_package)
            wall = time.perf_counter() - t0 - startup
            for (i, plan), own in zip(plans, parts, strict=True):
                results[i] = _assemble(plan, own, n_cpus, threads, wall, startup, None,
                                       shared_with=len(plans))
    return [r for r in results if r is not None]


def _assemble(plan: _Plan, parts: list[dict[str, Any]], n_cpus: int, threads: int,
              wall: float, startup: float, echo: Callable[[str], Any] | None,
              shared_with: int = 1) -> ScreenResult:
    """Summarize and (``plan.out``) write one screen from its tasks' results."""
    cfg, out, identity, chash, drug = plan.cfg, plan.out, plan.identity, plan.chash, plan.drug
    concs, mult, cell_ids, n_sims = list(cfg.concentrations_nM), plan.mult, plan.cell_ids, \
        plan.n_sims

    # ---- assemble (rows ordered by concentration, then cell id)
    parts.sort(key=lambda p: (p["conc_index"], int(p["cell_id"][0])))
    keys = parts[0]["columns"].keys()
    columns = {k: np.concatenate([p["columns"][k] for p in parts]) for k in keys}
    columns["cell_id"] = np.concatenate([p["cell_id"] for p in parts])
    columns["concentration_nM"] = np.concatenate(
        [np.full(len(p["cell_id"]), concs[p["conc_index"]]) for p in parts])
    columns["arrested"] = arrested_flags(columns["cell_id"], columns["concentration_nM"],
                                         columns["outcome"])
    block = {c: drug.block_fractions(c) for c in concs}
    per_conc = summarize(columns, concs, block)
    traces = _select_traces([t for p in parts for t in p["traces"]], cfg.n_keep_traces)
    secs = {k: sum(p["seconds"][k] for p in parts) for k in ("setup", "simulate", "analyze")}
    busy = sum(secs.values()) * threads
    summary: dict[str, Any] = {
        "format": FORMAT, "status": "complete", "config": identity, "config_hash": chash,
        "drug": drug.model_dump(mode="json"),
        "model": {"variant": "late_sodium" if cfg.late_sodium else "default",
                  "ignored_blocks": cfg.ignored_blocks(),
                  "net_charge": cfg.net_charge},
        "population": {"n_cells": cfg.n_cells, "spread": cfg.spread,
                       "range": [1 - cfg.spread, 1 + cfg.spread], "sampler": cfg.sampler,
                       "seed": cfg.seed, "twin_name": cfg.twin_name,
                       "cell": "twin inputs with the 52 inferred parameters x multipliers "
                               "(float32), cell i from (seed, i)"},
        "simulation": {"temperature_K": cfg.temperature_K, "prepace_ms": cfg.prepace_ms,
                       "record_ms": cfg.record_ms, "record_interval_ms": cfg.record_interval_ms,
                       "mode": ("free-running" if cfg.pacing_period_ms is None else
                                f"paced every {cfg.pacing_period_ms:g} ms, "
                                f"{cfg.pacing_amplitude:g} pA/pF for {cfg.pacing_width_ms:g} ms"),
                       "initial_state": "model default at every (cell, concentration)"},
        "analysis": {
            "ead": "a complete beat re-depolarizes >= 3 mV above its running minimum for >= "
                   "2 ms (cardiotwin.features thresholds) between its first crossing of peak - "
                   "ead_min_repolarization x amplitude and its APD90 crossing; a cell has EADs "
                   "when >= 1 beat does",
            "ead_min_repolarization": cfg.ead_min_repolarization,
            "depolarized_mdp_mV": cfg.depolarized_mdp_mV,
            "apd90": "median over complete full APs (MDP <= depolarized_mdp_mV) per cell",
            "denominators": "EAD incidence and outcome fractions over analyzed (not unstable) "
                            "cells; arrested over cells beating at the lowest concentration"},
        "concentrations": per_conc,
        "timing": {"wall_s": round(wall, 3), "startup_s": round(startup, 3),
                   "n_simulations": n_sims,
                   "simulated_ms_each": cfg.prepace_ms + cfg.record_ms,
                   "simulations_per_s": round(n_sims / wall, 3) if wall > 0 else None,
                   "screens_sharing_the_run": shared_with,
                   "cpus": n_cpus, "threads_per_task": threads,
                   "task_seconds": {k: round(v, 3) for k, v in secs.items()},
                   "simulations_per_s_per_busy_core": round(n_sims / busy, 3) if busy else None,
                   "simulations_per_s_per_cpu": round(n_sims / (wall * n_cpus), 3)
                   if wall > 0 else None},
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "versions": package_versions(),
        "files": dict(FILES),
    }
    results, cells, tr_table = make_tables(columns, cell_ids, mult, traces)
    figures: dict[str, Path] = {}
    if out is not None:
        (out / SUMMARY).unlink(missing_ok=True)      # an overwritten screen is unfinished
        summary["sha256"] = {FILES[k]: write_parquet(t, out / FILES[k]) for k, t in
                             (("results", results), ("cells", cells), ("traces", tr_table))}
        if cfg.figures:
            figures = write_figures(summary, columns, traces, out)
            summary["figures"] = {k: p.name for k, p in figures.items()}
        else:                                        # none left from an overwritten screen
            for name in FIGURES.values():
                (out / name).unlink(missing_ok=True)
        write_json_atomic(out / SUMMARY, summary)
    if echo:
        for line in report_lines(summary):
            echo(line)
    return ScreenResult(summary, results, cells, traces, out, figures)


def write_figures(summary: dict[str, Any], columns: dict[str, np.ndarray],
                  traces: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """The three figures into ``out`` (each written atomically)."""
    from . import figures as F

    made = {}
    jobs = {"dose_response": lambda p: F.dose_response(summary, p),
            "apd90_violins": lambda p: F.apd90_violins(summary, columns["concentration_nM"],
                                                       columns["apd90_ms"], p),
            "ap_traces": lambda p: F.trace_overlays(summary, traces, p)}
    for name, fn in jobs.items():
        path = out / FIGURES[name]
        with atomic_path(path) as tmp:
            fn(tmp)
        made[name] = path
    return made


def report_lines(summary: dict[str, Any]) -> list[str]:
    """A plain-text table of the per-concentration summary."""
    lines = [f"{'conc (nM)':>9}  {'EAD % [95% CI]':>20}  {'APD90 ms mean+-SD (n)':>24}  "
             f"{'paired mean':>11}  {'beat':>5}  {'arrest':>6}  {'quiesc':>6}  {'non-rep':>7}"]

    def pct(x):
        return "  -  " if x is None else f"{100 * x:5.1f}"

    for r in summary["concentrations"]:
        a, p = r["apd90_ms"], r["apd90_paired_ms"]
        ci = r["ead_ci"]
        ead = ("-" if r["ead_incidence"] is None else
               f"{100 * r['ead_incidence']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")
        apd = ("-" if a["mean"] is None else
               f"{a['mean']:.0f} +- {'-' if a['sd'] is None else format(a['sd'], '.0f')} "
               f"({a['n']})")
        lines.append(f"{r['concentration_nM']:>9g}  {ead:>20}  {apd:>24}  "
                     f"{'-' if p['mean'] is None else format(p['mean'], '.0f'):>11}  "
                     f"{pct(r['fraction_beating']):>5}  {pct(r['fraction_arrested']):>6}  "
                     f"{pct(r['fraction_quiescent']):>6}  "
                     f"{pct(r['fraction_non_repolarizing']):>7}")
    t = summary["timing"]
    lines.append(f"{t['n_simulations']} simulations in {t['wall_s']:.1f} s (after "
                 f"{t.get('startup_s', 0):.1f} s of start-up): "
                 f"{t['simulations_per_s'] or 0:.1f}/s on {t['cpus']} CPU(s), "
                 f"{t['simulations_per_s_per_busy_core'] or 0:.1f}/s per busy core")
    lines.insert(1, "  (APD90 of full APs; paired mean: the cells with one at every concentration;"
                    " arrest: of the cells beating at the lowest concentration)")
    return lines


# ---- execution ------------------------------------------------------------------------------

def _shared_key(plan: _Plan, ci: int, a: int, b: int) -> tuple | None:
    """What a simulation depends on when the drug has no effect at its concentration (every
    current fully remaining, e.g. 0 nM): equal keys give equal results in any screen. None when
    the drug acts there."""
    import dataclasses
    import hashlib

    conc = plan.task.concentrations_nM[ci]
    if any(v != 1.0 for v in plan.drug.fraction_remaining(conc).values()):
        return None
    t = plan.task
    rest = (conc,) + tuple((f.name, getattr(t, f.name)) for f in dataclasses.fields(t)
                           if f.name not in ("drug", "twin_inputs", "concentrations_nM"))
    data = hashlib.sha256(np.ascontiguousarray(plan.mult[a:b]).tobytes()
                          + np.ascontiguousarray(plan.cell_ids[a:b]).tobytes()
                          + np.ascontiguousarray(t.twin_inputs).tobytes()).hexdigest()
    return rest, data


def _execute(plans: list[_Plan], progress, use_ray, num_cpus, ray_address, ship_package,
             on_progress=None) -> tuple[list[list[dict[str, Any]]], int, int, float]:
    """Run the tasks of every plan (a simulation shared by several plans, see
    :func:`_shared_key`, once); (results per plan, CPUs used, numba threads per task, seconds
    spent starting Ray and warming the kernel before the first task)."""
    from tqdm.auto import tqdm

    items: list[tuple[int, int, int, int]] = []           # (plan, conc index, a, b) to run
    copies: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
    first: dict[tuple, tuple[int, int, int, int]] = {}
    for pi, plan in enumerate(plans):
        for ci, a, b in plan.work:
            key = _shared_key(plan, ci, a, b)
            if key is not None and key in first:
                copies[first[key]].append((pi, ci))
                continue
            item = (pi, ci, a, b)
            if key is not None:
                first[key] = item
            items.append(item)
            copies[item] = []
    n_sims = sum(b - a for _, _, a, b in items)
    bar = tqdm(total=n_sims, unit="sim", disable=not progress, dynamic_ncols=True,
               smoothing=0.1, desc="cells x concentrations")
    done = [0]

    def advance(n: int) -> None:
        bar.update(n)
        done[0] += n
        if on_progress is not None:
            on_progress(done[0], n_sims)

    out: list[list[dict[str, Any]]] = [[] for _ in plans]

    def collect(item, part) -> None:
        out[item[0]].append(part)
        for pi, ci in copies[item]:
            out[pi].append(dict(part, conc_index=ci))
        advance(item[3] - item[2])

    try:
        if not use_ray:
            import numba

            for item in items:
                pi, ci, a, b = item
                p = plans[pi]
                collect(item, simulate_block(p.task, p.cell_ids[a:b], p.mult[a:b], ci))
            return out, numba.get_num_threads(), numba.get_num_threads(), 0.0
        n_cpus, threads, startup = _execute_ray(plans, items, collect, num_cpus, ray_address,
                                                ship_package)
        return out, n_cpus, threads, startup
    finally:
        bar.close()


def _execute_ray(plans: list[_Plan], items, collect, num_cpus, ray_address, ship_package):
    """The tasks on Ray through :class:`cardiotwin.runtime.FanOut` (module docstring)."""
    import ray

    from ..resources import simulation_resources
    from ..runtime import FanOut, ray_runtime_env, ray_session

    t0 = time.perf_counter()
    with ray_session(num_cpus, ray_address, ship_package):
        if ray_runtime_env(ship_package, ray_address) is None:
            _warm_kernel(plans)
        startup = time.perf_counter() - t0
        n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=0)(simulate_block).options(
            runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1"}},
            resources=simulation_resources())
        refs = [ray.put(p.task) for p in plans]

        def submit(_, w):
            p = plans[w[0]]
            return remote.remote(refs[w[0]], p.cell_ids[w[2]:w[3]], p.mult[w[2]:w[3]], w[1])

        fan = FanOut(submit, n_workers=TASKS_PER_CPU * n_cpus,
                     timeout_factor=TASK_TIMEOUT_FACTOR, min_timeout_s=TASK_MIN_TIMEOUT_S,
                     describe=lambda w: f"screen task ({plans[w[0]].drug.name}, cells "
                                        f"{w[2]}-{w[3] - 1} at "
                                        f"{plans[w[0]].task.concentrations_nM[w[1]]:g} nM)")
        for item, part in fan.run(items):
            collect(item, part)
        return n_cpus, 1, startup


def _warm_kernel(plans: list[_Plan]) -> None:
    """Run the current-clamp kernel(s) the plans use once on one cell here, so numba's on-disk
    cache is written before the tasks start (instead of every worker compiling at once after a
    change)."""
    from ..simulate import simulate_current_clamp

    for late, charge in sorted({(p.task.late_sodium, p.task.record_charge) for p in plans}):
        simulate_current_clamp(1.0, None, **task_variant(late, charge))



def list_drugs_text(drug_file: str | os.PathLike | None = None) -> str:
    """The catalog (and ``drug_file``'s drugs) as text: drug, current, IC50 (nM), Hill,
    source."""
    from .catalog import catalog

    lines = []
    for d in sorted(catalog(drug_file).values(), key=lambda d: d.name.lower()):
        lines.append(d.name)
        for b in d.blocks:
            lines.append(f"  {b.current:<5} IC50 {b.ic50_nM:>12g} nM  Hill {b.hill:<6g} "
                         f"{b.source}" + (f" [{b.note}]" if b.note else ""))
    return "\n".join(lines)


def run_from_args(a) -> ScreenResult | None:
    """Run the screen described by arguments parsed with
    :func:`cardiotwin.drugs.cli_args.add_screen_arguments` (``--list-drugs``: print the catalog
    and return None)."""
    from .cli_args import config_from_args

    if a.list_drugs:
        print(list_drugs_text(a.drug_file))
        return None
    return run_screen(config_from_args(a), progress=not a.no_progress, num_cpus=a.num_cpus,
                      ray_address=a.ray_address, ship_package=a.ship_package)
