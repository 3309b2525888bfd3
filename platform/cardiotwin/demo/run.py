"""``cardiotwin demo``: the whole platform on an embedded default, on a local Ray cluster:
population -> parameter network -> twin of the example ABF recording -> drug screen around the
twin -> ``report.html`` (and ``summary.json``) under one output directory."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DemoConfig
from .report import write_report
from .stages import population_stage, screen_stage, training_stage, twin_stage

REPORT = "report.html"
SUMMARY = "summary.json"
FORMAT = "cardiotwin.demo/1"
STAGE_DIRS = ("population", "model", "twin", "screen")
IDENTITY_EXCLUDES = {"out_dir", "num_cpus"}   # where and on how many CPUs: not what is made


def demo_identity(cfg: DemoConfig) -> dict[str, Any]:
    """The settings that determine the demo's results (its config hash is their hash)."""
    return cfg.model_dump(mode="json", exclude=IDENTITY_EXCLUDES)


def claim_demo_dir(cfg: DemoConfig) -> Path:
    """Check the output directory before anything runs: new, empty, or a demo of the same
    settings (rerun over it); another demo's or foreign files are refused (ValueError naming
    the settings that differ)."""
    from ..storage.identity import identity_hash
    from ..storage.outdir import claim_output_dir

    out = Path(cfg.out_dir).resolve()
    ident = demo_identity(cfg)
    claim_output_dir(out, marker=SUMMARY, fmt=FORMAT, config_hash=identity_hash(ident),
                     identity=ident, what="demo",
                     own=lambda name: name in STAGE_DIRS or name == REPORT)
    return out


def run_demo(cfg: DemoConfig | None = None, echo: Callable[[str], Any] = print) -> Path:
    """Run every stage (progress on stderr, stage lines through ``echo``) and return the path of
    the HTML report. A Ray session already initialized is used as is; otherwise a local one is
    started (``cfg.num_cpus``) and shut down at the end. One demo writes a directory at a
    time (:class:`cardiotwin.storage.DirectoryLock`)."""
    from ..runtime.ray_setup import ray_session
    from ..storage.atomic import jsonable, write_json_atomic
    from ..storage.identity import identity_hash
    from ..storage.lock import DirectoryLock

    cfg = cfg or DemoConfig()
    out = claim_demo_dir(cfg)
    t0 = time.perf_counter()
    stages = 4
    with DirectoryLock(out), ray_session(cfg.num_cpus, None, "auto"):
        echo(f"[1/{stages}] population: {cfg.n_cells} cells (first run compiles the numba "
             "kernels, about a minute)")
        pop = population_stage(cfg, out, echo)
        echo(f"[2/{stages}] training the parameter network ({cfg.preset})")
        net = training_stage(cfg, out, pop.data["store"], echo)
        echo(f"[3/{stages}] twin of the example recording")
        twin = twin_stage(cfg, out, echo)
        echo(f"[4/{stages}] {cfg.drug} screen: {cfg.screen_cells} cells around the twin")
        screen = screen_stage(cfg, out, twin.data["multipliers"], echo)
        sections = [pop, net, twin, screen]
        wall = time.perf_counter() - t0
        ident = demo_identity(cfg)
        summary = {"format": FORMAT, "config_hash": identity_hash(ident), "config": ident,
                   "wall_s": round(wall, 1),
                   "stages": {s.title: {"wall_s": round(s.wall_s, 1),
                                        **{k: v for k, v in s.data.items()
                                           if k != "multipliers"}}
                              for s in sections},
                   "figures": [str(p) for s in sections for _, p in s.figures]}
        report = write_report(
            out / REPORT, sections, "cardiotwin demo",
            f"The whole pipeline on an embedded default, in {wall:.0f} s: a population of "
            f"{cfg.n_cells} synthetic iPSC-CMs (Kernik-Clancy model), the network that reads "
            f"their 52 parameters off the voltage-clamp current, the twin of a (synthetic) "
            f"recorded cell and a {cfg.drug} screen of a population around that twin.")
        write_json_atomic(out / SUMMARY, jsonable(summary))   # last: marks a complete demo
    echo(f"done in {wall:.0f} s; report: {report}")
    return report
