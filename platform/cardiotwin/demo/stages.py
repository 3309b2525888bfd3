"""The demo's stages, one function each: population -> training -> twin of the example
recording -> drug screen around the twin. Each writes under its own sub-directory of the demo
output and returns a :class:`Section` of the report (text, a table, figures)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import DemoConfig

TRAIN_STATUSES = ("ok", "quiescent", "non_repolarizing")  # the voltage clamp needs no AP
POPULATION_AP_MS = 3000.0  # free-running run drawn in the population figure


@dataclass
class Section:
    """One part of the report: a title, lines of text, an optional table, fixed-width text and
    figures (caption, PNG path)."""

    title: str
    lines: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    preformatted: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def population_stage(cfg: DemoConfig, out: Path, echo: Callable[[str], Any]) -> Section:
    """A +-spread population on protocol_a (Ray actors, Parquet store) and its figure."""
    from ..model import inputs_from_multipliers
    from ..population import GenerationConfig, generate_population
    from ..population.store import list_to_numpy
    from ..protocols import builtin_protocol
    from ..simulate import simulate_current_clamp, simulate_voltage_clamp
    from .figures import plot_population

    t0 = time.perf_counter()
    store = generate_population(GenerationConfig(
        n_cells=cfg.n_cells, spread=cfg.spread, seed=cfg.seed, ap_duration_ms=cfg.ap_duration_ms,
        keep_rejected=True, decimate_to_hz=cfg.decimate_to_hz,
        shard_size=max(50, min(1000, -(-cfg.n_cells // 4))), out_dir=out / "population"),
        echo=echo)
    counts = store.manifest["totals"]["status_counts"]
    table = store.read_table(columns=["multipliers", "status"])
    n_show = min(cfg.n_population_traces, table.num_rows)
    mult = list_to_numpy(table.column("multipliers"))[:n_show].astype(np.float64)
    statuses = np.asarray(table.column("status").to_pylist()[:n_show])
    inputs = inputs_from_multipliers(mult)
    vc = simulate_voltage_clamp(builtin_protocol("protocol_a"), inputs)
    cc = simulate_current_clamp(POPULATION_AP_MS, inputs, temperature_K=310.0)
    fig = plot_population(out / "population" / "population.png", vc, cc, statuses, n_show)
    s = Section("Population", header=["status", "cells"],
                rows=[[k, v] for k, v in counts.items()],
                figures=[(f"Protocol_a, I_total and {POPULATION_AP_MS / 1000:g} s of free-running "
                          f"APs of {n_show} cells (colour: status from the "
                          f"{cfg.ap_duration_ms / 1000:g} s classification run)", fig)],
                data={"store": str(store.path), "n_cells": store.n_cells,
                      "status_counts": counts})
    s.lines.append(f"{store.n_cells} cells, multipliers U({1 - cfg.spread:g}, "
                   f"{1 + cfg.spread:g}) (seed {cfg.seed}), voltage clamp on protocol_a "
                   f"(I_total at {cfg.decimate_to_hz:g} Hz) and a {cfg.ap_duration_ms:g} ms AP "
                   f"run each; store: {store.path}")
    s.wall_s = time.perf_counter() - t0
    return s


def training_stage(cfg: DemoConfig, out: Path, store_dir: str,
                   echo: Callable[[str], Any]) -> Section:
    """The parameter network on the population (artifact with its evaluation)."""
    from ..learn import preset
    from ..learn.train import train_model
    from ..protocols import builtin_protocol

    t0 = time.perf_counter()
    model_dir = out / "model"
    tc = preset(cfg.preset, epochs=cfg.epochs, input_pool=cfg.input_pool,
                statuses=TRAIN_STATUSES)
    meta = train_model(store_dir, model_dir, tc, protocol=builtin_protocol("protocol_a"),
                       overwrite=True, log=echo)
    m = meta["test_metrics"]
    sizes = meta["data"]["split_sizes"]
    s = Section("Parameter network", data={"model": str(model_dir), "test_metrics": m})
    s.lines.append(f"preset {cfg.preset}: {sizes['train']} training / {sizes['val']} validation "
                   f"/ {sizes['test']} test cells, {meta['training']['epochs']} epochs in "
                   f"{meta['training']['wall_s']:.1f} s; artifact: {model_dir}")
    s.header = ["test metric", "network", "trivial (mid-range)"]
    s.rows = [["median MAE (unit scale)", f"{m['median_mae_unit']:.4f}",
               f"{m['trivial']['median_mae_unit']:.4f}"],
              ["median MAE (% of baseline)", f"{m['median_mae_pct_baseline']:.2f}", ""],
              ["parameters with R² >= 0.5", f"{m['n_identifiable']} / 52", ""]]
    post = meta.get("posterior")
    if post is not None:
        cal = post["calibration"]
        s.rows += [["90% / 50% interval coverage (calibrated: 0.90 / 0.50)",
                    f"{cal['coverage']['0.9']:.3f} / {cal['coverage']['0.5']:.3f}", ""],
                   ["parameters with posterior contraction >= 0.5",
                    f"{cal['n_identifiable']} / 52", ""],
                   ["held-out recordings flagged out of distribution",
                    f"{post['ood']['test_flag_rate']:.3f}", ""]]
        s.figures.append(("Calibration on the test cells: interval coverage per parameter, "
                          "the SBC rank histogram and the posterior contraction",
                          model_dir / "evaluation" / "calibration.png"))
    s.figures.append(("Recovered vs true multiplier on the test cells, one panel per parameter",
                      model_dir / "evaluation" / "parameter_recovery.png"))
    s.wall_s = time.perf_counter() - t0
    return s


def twin_stage(cfg: DemoConfig, out: Path, echo: Callable[[str], Any]) -> Section:
    """The example recording (a synthetic cell written as ABF1) -> its twin."""
    from ..learn import load_estimator
    from ..storage.atomic import jsonable, write_bytes_atomic, write_json_atomic
    from ..twin import read_abf, read_ap_abf, write_example_recording
    from ..twin.example import read_example_truth
    from ..twin.inference import make_twin, plot_twin

    t0 = time.perf_counter()
    tdir = out / "twin"
    ex = write_example_recording(tdir / "recording", seed=cfg.example_seed, spread=cfg.spread,
                                 ap_duration_ms=cfg.twin_ap_ms)
    est = load_estimator(out / "model")
    rec = read_abf(ex.voltage_clamp_abf, protocol=est.protocol)
    ap = read_ap_abf(ex.current_clamp_abf)
    tw = make_twin(est, rec, ap_duration_ms=cfg.twin_ap_ms, ap_recording=ap)
    write_json_atomic(tdir / "twin.json", jsonable(tw.to_json()))
    fig = tdir / "twin.png"
    write_bytes_atomic(fig, plot_twin(tw))
    true_m = read_example_truth(ex.truth_json)["multipliers"]
    truth = np.array([true_m[n] for n in tw.names])
    mae, trivial = float(np.mean(np.abs(tw.multipliers - truth))), float(np.mean(np.abs(truth - 1)))
    echo(f"twin: parameter MAE {mae:.4f} vs {trivial:.4f} for the baseline guess; voltage-clamp "
         f"fit relative RMS {tw.fit['relative_rms']:.3f}; AP {tw.status}")
    s = Section("Twin of the example recording",
                data={"twin": str(tdir / "twin.json"), "recording": str(ex.voltage_clamp_abf),
                      "multiplier_mae": mae, "baseline_guess_mae": trivial,
                      "multipliers": tw.multipliers.tolist()})
    s.lines += [f"Recording: {ex.voltage_clamp_abf.name} (synthetic cell, seed "
                f"{cfg.example_seed}, ABF1 with noise) and its AP {ex.current_clamp_abf.name}.",
                f"Mean absolute error of the 52 multipliers against the cell's truth: {mae:.4f} "
                f"(the baseline guess: {trivial:.4f}); voltage-clamp fit relative RMS "
                f"{tw.fit['relative_rms']:.3f}; twin AP: {tw.status}."]
    if tw.ap_prediction is not None:
        ap = tw.ap_prediction
        s.lines.append(f"Posterior predictive AP over {ap['n_samples']} posterior samples: "
                       f"P(beating) {ap['p_beating']:.2f}; out of distribution: "
                       f"{(tw.out_of_distribution or {}).get('flag')}.")
    s.header = ["biomarker", "twin", "recorded"]
    s.rows = [[k, _fmt(v["twin"]), _fmt(v["recorded"])]
              for k, v in (tw.comparison or {}).items()]
    s.figures.append(("Recorded vs twin I_total under protocol_a; the twin's AP over the "
                      "recorded one", fig))
    s.wall_s = time.perf_counter() - t0
    return s


def screen_stage(cfg: DemoConfig, out: Path, twin_multipliers: list[float],
                 echo: Callable[[str], Any]) -> Section:
    """A drug screen of a population around the twin."""
    from ..drugs.config import ScreenConfig
    from ..drugs.screen import report_lines, run_screen

    t0 = time.perf_counter()
    sc = ScreenConfig.create(
        drug=cfg.drug, concentrations_nM=cfg.concentrations_nM, n_cells=cfg.screen_cells,
        spread=cfg.spread, seed=cfg.seed, twin_multipliers=tuple(twin_multipliers),
        twin_name="twin of the example cell", prepace_ms=cfg.screen_prepace_ms,
        record_ms=cfg.screen_record_ms, out_dir=out / "screen", overwrite=True)
    res = run_screen(sc, echo=echo)
    s = Section(f"{cfg.drug} screen around the twin", data={"screen": str(res.out_dir)})
    s.lines.append(f"{cfg.screen_cells} cells +-{cfg.spread:.0%} around the twin, free-running "
                   f"at 310 K ({cfg.screen_prepace_ms:g} ms unrecorded + "
                   f"{cfg.screen_record_ms:g} ms recorded) at each concentration.")
    s.preformatted = "\n".join(report_lines(res.summary))
    captions = {"dose_response": "EAD incidence and APD90 vs concentration",
                "apd90_violins": "APD90 distribution per concentration",
                "ap_traces": "Example APs per concentration"}
    s.figures += [(captions.get(k, k), p) for k, p in res.figures.items()]
    s.wall_s = time.perf_counter() - t0
    return s


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"
