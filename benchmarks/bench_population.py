#!/usr/bin/env python
"""Benchmark of population generation on Ray (cardiotwin.population.generate_population).

Measures, on this machine, with the numba kernels warm (compile / cache load reported apart):

1. bare: the per-shard work of the pipeline (``simulate_batch``: voltage clamp on the protocol
   + the classification AP run of the pipeline's length + ``features.classify_batch``) on the
   same cells, in this one process, numba with --workers threads, no Ray, no Parquet. The cells
   are taken shard by shard and chunk by chunk exactly as the actors take them (chunks of
   ``generate.CHUNK_CELLS``), so the batches are identical. Sampling is timed apart (it is not
   part of "bare"). ``classify_batch`` is serial (one compiled kernel, no threads), so it is
   reported per cell per core;
   the bare rate is

       bare cells/s = N / (simulation wall at W threads + classification seconds / W)

   i.e. simulation as measured at W threads plus classification perfectly spread over the W
   cores (what W actors get). The serial figure (classification on one core while the other
   idles) is printed too, for information; the overhead below is against the ideal one
   (the stricter reference).
2. pipeline: ``generate_population`` with ``n_workers`` = W (W actors, 1 CPU and 1 numba thread
   each) on the same N cells into a temporary directory: sampling, simulation,
   classification, filter and Parquet write. ``ray.init(num_cpus=W)`` (the call the library
   makes for a local cluster) runs and is timed before, so Ray start-up is excluded; actor
   start-up (process, imports, numba cache load) is inside. Pipeline cells/s = N / the
   driver's wall time around ``generate_population`` (the manifest's own ``wall_s`` is printed
   beside it). Overhead = 1 - pipeline cells/s / bare cells/s; target below 15%. The sidecars'
   per-stage actor seconds break the pipeline time down against the bare stages.
3. scaling: the same job (--scale-cells cells, no decimation) with 1 and with W workers.
4. bytes per cell on disk: sum of the shard Parquet files / cells simulated and / cells
   stored, without decimation and with ``decimate_to_hz=1000`` (10x fewer I_total samples), and
   the projection for 1.1 M simulated cells at the same acceptance rate.
5. projection of the source study's 1.1 M-cell dataset: hours = 1.1e6 / pipeline cells/s /
   3600 from the N-cell run (a valid basis needs N >= 20,000); target under 2 hours.

This is a script, not a test:

    python benchmarks/bench_population.py --quick    # check that it runs (1000 cells, ~1 min)
    python benchmarks/bench_population.py            # 20,000 cells (several minutes)

Run the full size on an otherwise idle machine. Temporary stores go under --tmp-dir (default:
the system temp dir) and are deleted after their size is taken (~40 KB per stored cell
without decimation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from _report import compile_row, cpu_model, loadavg, table

SOURCE_STUDY_CELLS = 1_100_000
TARGET_OVERHEAD = 0.15
TARGET_HOURS = 2.0
MIN_PROJECTION_CELLS = 20_000
COMPILE_CELLS = 2


# ---------------------------------------------------------------------------------------------
# helpers

def pct(x: float) -> str:
    return f"{x:.1%}"


def make_config(args, n_cells: int, n_workers: int, out_dir: Path, decimate_to_hz=None):
    from cardiotwin.population.config import GenerationConfig

    return GenerationConfig(n_cells=n_cells, spread=args.spread, seed=args.seed,
                            protocol=args.protocol, shard_size=args.shard_size,
                            decimate_to_hz=decimate_to_hz, n_workers=n_workers,
                            out_dir=out_dir, precision=args.precision)


# ---------------------------------------------------------------------------------------------
# 1. compilation / cache load

def measure_compilation(protocol, ap_ms: float, temperature_K: float,
                        precision: str = "float64") -> list[list[str]]:
    from cardiotwin.features import classify_batch
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.population import sample_multipliers
    from cardiotwin.population.config import AP_RECORD_INTERVAL_MS
    from cardiotwin.simulate import kernels, simulate_current_clamp, simulate_voltage_clamp
    from cardiotwin.simulate.precision import float32_module

    if precision == "float32":
        kernels = float32_module("cardiotwin.simulate.kernels")
    inputs = inputs_from_multipliers(sample_multipliers(COMPILE_CELLS, 0.4, 0))
    cc_out = {}

    def cc():
        cc_out["r"] = simulate_current_clamp(ap_ms, inputs, temperature_K=temperature_K,
                                             record_interval_ms=AP_RECORD_INTERVAL_MS,
                                             precision=precision)

    cases = [("voltage clamp kernel", kernels.voltage_clamp_kernel[False],
              lambda: simulate_voltage_clamp(protocol, inputs, precision=precision)),
             ("current clamp kernel", kernels.current_clamp_kernel, cc),
             ("classify_batch (compiled)", None,
              lambda: classify_batch(cc_out["r"].t_ms, cc_out["r"].v_mV))]
    return [compile_row(name, disp, call) for name, disp, call in cases]


# ---------------------------------------------------------------------------------------------
# 2. bare

def measure_bare(cfg, protocol, threads: int) -> dict:
    """simulate_batch on cfg's cells, shard by shard and chunk by chunk as the actors do."""
    import numba

    from cardiotwin.population import sample_population
    from cardiotwin.population.batch import CHUNK_CELLS, simulate_batch

    numba.set_num_threads(threads)
    stage = Counter()
    counts: Counter[str] = Counter()
    t_sample = 0.0
    t_all = time.perf_counter()
    for index in range(cfg.n_shards):
        first, n = cfg.shard_bounds(index)
        t0 = time.perf_counter()
        m = sample_population(cfg.sampler, cfg.n_cells, cfg.spread, cfg.seed, first, n)
        t_sample += time.perf_counter() - t0
        for a in range(0, n, CHUNK_CELLS):
            b = min(n, a + CHUNK_CELLS)
            st, _, itot, tt = simulate_batch(protocol, m[a:b], cfg.ap_ms, cfg.temperature_K,
                                             precision=cfg.precision)
            stage.update(tt)
            counts.update(st.tolist())
            del itot
    wall = time.perf_counter() - t_all
    return {"n": cfg.n_cells, "threads": threads, "sample": t_sample, "vc": stage["vc"],
            "ap": stage["ap"], "classify": stage["classify"], "wall": wall,
            "status_counts": dict(counts)}


# ---------------------------------------------------------------------------------------------
# 3. pipeline

def run_pipeline(args, n_cells: int, n_workers: int, decimate_to_hz=None) -> dict:
    """One generate_population run into a fresh temporary directory (deleted afterwards)."""
    from cardiotwin.population import generate_population
    from cardiotwin.population.store import sidecar_name

    tmp = Path(tempfile.mkdtemp(prefix="bench_population_", dir=args.tmp_dir))
    try:
        out = tmp / "store"
        cfg = make_config(args, n_cells, n_workers, out, decimate_to_hz)
        t0 = time.perf_counter()
        store = generate_population(cfg, progress=False, echo=None)
        wall = time.perf_counter() - t0
        m = store.manifest
        shard_bytes = sum(f.stat().st_size for f in store.files)
        dir_bytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
        totals = m["totals"]
        run = m["runs"][-1]
        shards = [json.loads((out / sidecar_name(s["index"])).read_text(encoding="utf-8"))
                  for s in m["shards"]]
        stage = Counter()
        for s in shards:
            stage.update(s["stage_s"])
        return {"n": n_cells, "workers": n_workers, "decimate_to_hz": decimate_to_hz,
                "wall": wall, "manifest_wall": run["wall_s"],
                "cells_simulated": run["cells_simulated"], "rows": totals["rows"],
                "status_counts": totals["status_counts"], "shard_bytes": shard_bytes,
                "dir_bytes": dir_bytes, "n_files": len(store.files),
                "shard_wall": sum(s["wall_s"] for s in shards), "stage": dict(stage),
                "n_samples": m["i_total"]["n_samples"],
                "pids": sorted({s["pid"] for s in shards})}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rate(r: dict) -> float:
    return r["cells_simulated"] / r["wall"]


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cells", type=int, default=MIN_PROJECTION_CELLS,
                    help="cells of the bare run and of the main pipeline run, the basis of the "
                         f"projection (default {MIN_PROJECTION_CELLS})")
    ap.add_argument("--scale-cells", type=int, default=4000,
                    help="cells of the scaling runs (1 and W workers) and of the decimated run "
                         "(default 4000; equal to --n-cells reuses the main run for W workers)")
    ap.add_argument("--workers", type=int, default=2,
                    help="W: Ray actors of the pipeline, CPUs of the local Ray cluster and "
                         "numba threads of the bare run (default 2)")
    ap.add_argument("--shard-size", type=int, default=1000, help="cells per shard (default 1000)")
    ap.add_argument("--precision", choices=("float64", "float32"), default="float64",
                    help="simulation arithmetic (GenerationConfig.precision; default float64)")
    ap.add_argument("--protocol", default="protocol_a", help="VC protocol (default protocol_a)")
    ap.add_argument("--spread", type=float, default=0.4, help="multiplier range (default 0.4)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--decimate-to-hz", type=float, default=1000.0,
                    help="rate of the decimated run (default 1000; 0 skips that run)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling runs")
    ap.add_argument("--tmp-dir", default=None,
                    help="where the temporary stores go (default: the system temp dir)")
    ap.add_argument("--quick", action="store_true",
                    help="small check that the script runs: n-cells 1000, scale-cells 1000, "
                         "shard-size 250 (not a valid projection basis)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_cells, args.scale_cells, args.shard_size = 1000, 1000, 250
    if min(args.n_cells, args.scale_cells, args.workers, args.shard_size) <= 0:
        ap.error("--n-cells, --scale-cells, --workers and --shard-size must be positive")
    if args.decimate_to_hz < 0:
        ap.error("--decimate-to-hz must be >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("RAY_ADDRESS", None)  # always a local cluster of W CPUs

    import numba

    import cardiotwin
    from cardiotwin.population.batch import CHUNK_CELLS

    W = args.workers
    if W > numba.config.NUMBA_NUM_THREADS:
        sys.exit(f"--workers {W}: numba allows at most {numba.config.NUMBA_NUM_THREADS} threads")
    main_cfg = make_config(args, args.n_cells, W, Path("unused"))
    protocol = main_cfg.load_protocol()

    print("cardiotwin population generation benchmark")
    print(f"  host: {cpu_model()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}, cardiotwin "
          f"{cardiotwin.__version__}")
    print(f"  load average at start: {loadavg()}")
    print(f"  cells: uniform multipliers U({1 - args.spread:g}, {1 + args.spread:g}) on the 52 "
          f"parameters, seed {args.seed}; N = {args.n_cells}; shards of {args.shard_size}, "
          f"chunks of {CHUNK_CELLS}; W = {W}")
    print(f"  per cell: VC {args.protocol} {protocol.duration_ms:g} ms ({protocol.n_samples} "
          f"I_total samples) + classification AP run {main_cfg.ap_ms:g} ms at "
          f"{main_cfg.temperature_K:g} K (recorded every 0.1 ms) + classify_batch; "
          f"{args.precision} arithmetic")

    # 1. compilation
    print()
    print(f"1. Compilation / cache load ({COMPILE_CELLS}-cell batch; compile = first call - "
          f"second call; numba {W} threads)")
    numba.set_num_threads(W)
    print(table(["step", "first call", "second call", "compile/load", "how"],
                measure_compilation(protocol, main_cfg.ap_ms, main_cfg.temperature_K,
                                    args.precision)))
    print("  (each actor loads the cached kernels at its first shard: inside the pipeline time)")

    # 2. bare
    print()
    print(f"2. Bare simulator, one process, numba {W} threads, no Ray, no I/O ({args.n_cells} "
          f"cells)")
    bare = measure_bare(main_cfg, protocol, W)
    n = bare["n"]
    sim = bare["vc"] + bare["ap"]
    rows = [
        ["sampling (not part of bare)", f"{bare['sample']:.2f}", "1",
         f"{bare['sample'] / n * 1e3:.3f}", f"{n / bare['sample']:,.0f}"],
        ["voltage clamp", f"{bare['vc']:.2f}", str(W), f"{bare['vc'] * W / n * 1e3:.3f}",
         f"{n / bare['vc']:,.0f}"],
        ["AP run", f"{bare['ap']:.2f}", str(W), f"{bare['ap'] * W / n * 1e3:.3f}",
         f"{n / bare['ap']:,.0f}"],
        ["simulation (VC + AP)", f"{sim:.2f}", str(W), f"{sim * W / n * 1e3:.3f}",
         f"{n / sim:,.0f}"],
        ["classify_batch", f"{bare['classify']:.2f}", "1",
         f"{bare['classify'] / n * 1e3:.3f}", f"{n / bare['classify']:,.0f}"],
    ]
    print(table(["stage", "wall s", "threads", "ms/cell/core", "cells/s"], rows))
    bare_serial = n / (sim + bare["classify"])
    bare_rate = n / (sim + bare["classify"] / W)
    bare_ms_core = W / bare_rate * 1e3
    print(f"  bare simulation only: {n / sim:,.1f} cells/s")
    print(f"  bare = simulation + classification, classification spread over {W} cores: "
          f"{bare_rate:,.1f} cells/s ({bare_ms_core:.3f} ms/cell/core)  <- reference")
    print(f"  (serial, as run here: classification on 1 core while the other idles: "
          f"{bare_serial:,.1f} cells/s)")
    print(f"  statuses: {bare['status_counts']}")

    # 3. Ray start-up and the pipeline
    import ray

    print()
    t0 = time.perf_counter()
    ray.init(num_cpus=W)
    t_ray = time.perf_counter() - t0
    try:
        print(f"3. Pipeline: generate_population, {W} actors x 1 CPU x 1 numba thread "
              f"(Ray start-up excluded: ray.init(num_cpus={W}) took {t_ray:.2f} s)")
        main_run = run_pipeline(args, args.n_cells, W)
        runs = [main_run]
        scale = {}
        if not args.no_scaling:
            for w in sorted({1, W}):
                if w == W and args.scale_cells == args.n_cells:
                    scale[w] = main_run
                    continue
                scale[w] = run_pipeline(args, args.scale_cells, w)
                runs.append(scale[w])
        dec = None
        if args.decimate_to_hz:
            dec = run_pipeline(args, args.scale_cells, W, args.decimate_to_hz)
            runs.append(dec)
    finally:
        ray.shutdown()

    rows = []
    for r in runs:
        rows.append([f"{r['n']}", str(r["workers"]),
                     "none" if r["decimate_to_hz"] is None else f"{r['decimate_to_hz']:g} Hz",
                     f"{r['wall']:.2f}", f"{r['manifest_wall']:.2f}", f"{rate(r):,.1f}",
                     f"{r['cells_simulated'] / r['manifest_wall']:,.1f}", f"{r['rows']}",
                     str(len(r["pids"]))])
    print(table(["cells", "workers", "decimation", "driver wall s", "manifest wall s",
                 "cells/s", "cells/s (manifest)", "rows kept", "actor pids"], rows))
    same = main_run["status_counts"] == {k: bare["status_counts"].get(k, 0)
                                         for k in main_run["status_counts"]}
    print(f"  statuses of the {args.n_cells}-cell run: {main_run['status_counts']} "
          f"({'identical to' if same else 'DIFFERENT from'} the bare run)")

    pr = rate(main_run)
    overhead = 1.0 - pr / bare_rate
    print()
    print(f"  Overhead (Ray + sampling + filter + Parquet I/O + actor start-up) on "
          f"{args.n_cells} cells:")
    print(f"    pipeline {pr:,.1f} cells/s vs bare {bare_rate:,.1f} cells/s -> overhead "
          f"1 - {pr:,.1f}/{bare_rate:,.1f} = {pct(overhead)}  (target < "
          f"{TARGET_OVERHEAD:.0%}: {'PASS' if overhead < TARGET_OVERHEAD else 'FAIL'})")
    print(f"    against the serial bare figure ({bare_serial:,.1f} cells/s): "
          f"{pct(1.0 - pr / bare_serial)}")

    # breakdown: ms per cell per core, bare vs inside the actors
    st, nn = main_run["stage"], main_run["cells_simulated"]
    core_s = W * main_run["wall"]
    other_in_shard = main_run["shard_wall"] - sum(st.get(k, 0.0) for k in
                                                  ("vc", "ap", "classify", "write"))
    idle = core_s - main_run["shard_wall"]

    def ms(x):
        return f"{x / nn * 1e3:.3f}"

    rows = [["voltage clamp", f"{bare['vc'] * W / n * 1e3:.3f}", ms(st.get("vc", 0.0))],
            ["AP run", f"{bare['ap'] * W / n * 1e3:.3f}", ms(st.get("ap", 0.0))],
            ["classify_batch", f"{bare['classify'] / n * 1e3:.3f}", ms(st.get("classify", 0.0))],
            ["Parquet write (make_table, write, commit)", "-", ms(st.get("write", 0.0))],
            ["rest of run_shard (sampling, writer open)", "-", ms(other_in_shard)],
            ["actors not in run_shard (start-up, scheduling, tail)", "-", ms(idle)],
            ["total", f"{bare_ms_core:.3f}", ms(core_s)]]
    print()
    print(f"  Breakdown, ms per cell per core (bare: wall x threads / cells; pipeline: actor "
          f"seconds from the shard sidecars, total = {W} x driver wall / cells):")
    print(table(["stage", "bare", "pipeline"], rows))

    # 4. scaling
    if scale:
        print()
        print(f"4. Scaling: the same job ({args.scale_cells} cells, no decimation) with 1 and "
              f"{W} workers")
        r1 = rate(scale[1])
        rows = [[str(w), f"{scale[w]['wall']:.2f}", f"{rate(scale[w]):,.1f}",
                 f"{rate(scale[w]) / r1:.2f}x", pct(rate(scale[w]) / r1 / w)]
                for w in sorted(scale)]
        print(table(["workers", "driver wall s", "cells/s", "speed-up", "efficiency"], rows))
        print(f"  (the Ray cluster has {W} CPUs in both runs: with 1 worker the driver and "
              "the Ray daemons have a core to themselves)")

    # 5. bytes per cell
    print()
    print(f"5. Bytes per cell on disk (shard Parquet files; KB = 1000 bytes, GB = 1e9); "
          f"projection for {SOURCE_STUDY_CELLS:,} simulated cells at the same acceptance")
    size_runs = [main_run] + [r for r in runs[1:] if r["workers"] == W]
    rows = []
    for r in size_runs:
        b = r["shard_bytes"]
        rows.append([f"{r['n']}",
                     "none" if r["decimate_to_hz"] is None else f"{r['decimate_to_hz']:g} Hz",
                     str(r["n_samples"]), f"{b / 1e6:,.1f}",
                     f"{b / r['cells_simulated'] / 1e3:,.2f}",
                     f"{b / max(r['rows'], 1) / 1e3:,.2f}",
                     pct(r["rows"] / r["cells_simulated"]),
                     f"{(r['dir_bytes'] - b) / 1e3:,.1f}",
                     f"{b / r['cells_simulated'] * SOURCE_STUDY_CELLS / 1e9:,.1f}"])
    print(table(["cells", "decimation", "samples/row", "shards MB", "KB/cell simulated",
                 "KB/cell stored", "kept", "sidecars+manifest KB",
                 f"GB for {SOURCE_STUDY_CELLS / 1e6:g} M"], rows))
    raw = protocol.n_samples * 4
    print(f"  (uncompressed I_total: {raw / 1e3:.1f} KB per stored row without decimation)")

    # 6. projection
    print()
    hours = SOURCE_STUDY_CELLS / pr / 3600
    print(f"6. Projection of the source study's {SOURCE_STUDY_CELLS:,}-cell dataset on this "
          f"machine ({W} workers, no decimation)")
    print(f"  {SOURCE_STUDY_CELLS:,} / {pr:,.1f} cells/s / 3600 = {hours:.2f} h  (target < "
          f"{TARGET_HOURS:g} h: {'PASS' if hours < TARGET_HOURS else 'FAIL'})"
          + ("" if args.n_cells >= MIN_PROJECTION_CELLS else
             f"  [basis of {args.n_cells} cells: below {MIN_PROJECTION_CELLS:,}, not valid]"))
    bytes_per_cell = main_run["shard_bytes"] / main_run["cells_simulated"]
    print(f"  bare reference: {SOURCE_STUDY_CELLS / bare_rate / 3600:.2f} h; "
          f"disk {bytes_per_cell * SOURCE_STUDY_CELLS / 1e9:,.1f} GB")

    print()
    print(f"load average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
