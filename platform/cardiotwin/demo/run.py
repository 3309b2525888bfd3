"""``cardiotwin demo``: the whole platform on an embedded default, on a local Ray cluster:
population -> parameter network -> twin of the example ABF recording -> drug screen around the
twin -> ``report.html`` (and ``summary.json``) under one output directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from .config import DemoConfig
from .report import write_report
from .stages import population_stage, screen_stage, training_stage, twin_stage

REPORT = "report.html"
SUMMARY = "summary.json"


def run_demo(cfg: DemoConfig = DemoConfig(), echo: Callable[[str], Any] = print) -> Path:
    """Run every stage (progress on stderr, stage lines through ``echo``) and return the path of
    the HTML report. A Ray session already initialized is used as is; otherwise a local one is
    started (``cfg.num_cpus``) and shut down at the end."""
    import ray

    from ..population.generate import init_ray

    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = init_ray(cfg.num_cpus, None, "auto")
    stages = 4
    try:
        echo(f"[1/{stages}] population: {cfg.n_cells} cells (first run compiles the numba "
             "kernels, about a minute)")
        pop = population_stage(cfg, out, echo)
        echo(f"[2/{stages}] training the parameter network ({cfg.preset})")
        net = training_stage(cfg, out, pop.data["store"], echo)
        echo(f"[3/{stages}] twin of the example recording")
        twin = twin_stage(cfg, out, echo)
        echo(f"[4/{stages}] {cfg.drug} screen: {cfg.screen_cells} cells around the twin")
        screen = screen_stage(cfg, out, twin.data["multipliers"], echo)
    finally:
        if started:
            ray.shutdown()
    sections = [pop, net, twin, screen]
    wall = time.perf_counter() - t0
    summary = {"config": cfg.model_dump(mode="json"), "wall_s": round(wall, 1),
               "stages": {s.title: {"wall_s": round(s.wall_s, 1),
                                    **{k: v for k, v in s.data.items() if k != "multipliers"}}
                          for s in sections},
               "figures": [str(p) for s in sections for _, p in s.figures]}
    (out / SUMMARY).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    report = write_report(
        out / REPORT, sections, "cardiotwin demo",
        f"The whole pipeline on an embedded default, in {wall:.0f} s: a population of "
        f"{cfg.n_cells} synthetic iPSC-CMs (Kernik-Clancy model), the network that reads their "
        f"52 parameters off the voltage-clamp current, the twin of a (synthetic) recorded cell "
        f"and a {cfg.drug} screen of a population around that twin.")
    echo(f"done in {wall:.0f} s; report: {report}")
    return report
