#!/usr/bin/env python
"""Benchmark of the numba-batched Kernik simulator (cardiotwin.simulate).

Reports, for a population of cells with multipliers U(1 - 0.4, 1 + 0.4) on the 52 parameters:

1. compilation time of the voltage-clamp (VC) and current-clamp (CC) kernels: the first call on a
   tiny batch minus a second call on the same batch, and whether numba compiled the kernel
   (cold compile) or loaded it from its on-disk cache (``cache=True``). ``--clear-cache`` deletes
   the cached kernels (*.nbi / *.nbc under platform/cardiotwin/simulate/__pycache__, and the
   float32 twins' under platform/cardiotwin/__pycache__/float32/__pycache__) first, so the
   figure is a cold compile;
2. speed, compilation excluded: ms per cell per core (wall * n_threads / n_cells) and cells/s,
   best of --repeats (the headline figure; the host is noisy) and median, for
   - VC: protocol_a (4950 ms, I_total every 0.1 ms = 49,500 samples per cell),
   - CC: 6 s of spontaneous beating (V every 0.1 ms = 60,001 samples per cell),
   at each thread count in --threads (default: 1 and numba's default count);
3. accuracy at the same settings: relative RMS of the baseline cell's I_total (VC) against the
   reference trace in ../shared/reference, beside the repository (and, for information, of V
   in spontaneous beating); skipped with a message when the reference is absent;
4. memory per cell of a VC run of --mem-cells cells on protocol_a, measured in a fresh
   subprocess after the timings: peak resident memory increase (Linux VmHWM reset through
   /proc/self/clear_refs, else ru_maxrss) and the tracemalloc peak of numpy allocations, in
   KB (1000 bytes) per cell, with the output array's share stated separately.

This is a script, not a test:

    python benchmarks/bench_simulator.py            # full size (several minutes at 1 thread)
    python benchmarks/bench_simulator.py --quick    # check that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _report import SHARED, compile_row, cpu_model, loadavg, table

REFERENCE_DIR = SHARED / "reference"
VC_REFERENCE = REFERENCE_DIR / "baseline_vc_protocol_a.csv.gz"
CC_REFERENCE = REFERENCE_DIR / "baseline_spontaneous_6s.csv.gz"
CC_DURATION_MS = 6000.0
RECORD_MS = 0.1
SPREAD = 0.4
SEED = 0
COMPILE_CELLS = 2  # "tiny batch" for the compilation call
KB = 1000.0  # 49,500 float32 = 198 KB


def _typical_artefacts():
    from cardiotwin.model.artefacts import VoltageClampArtefacts

    return VoltageClampArtefacts(cm_pF=50.0, rs_MOhm=20.0, compensation=0.7, prediction=0.7,
                                 g_leak_nS_per_pF=0.03)


# ---------------------------------------------------------------------------------------------
# helpers

def _cache_dir() -> Path:
    """platform/cardiotwin/simulate/__pycache__, located without importing the kernels."""
    spec = importlib.util.find_spec("cardiotwin.simulate")
    return Path(list(spec.submodule_search_locations)[0]) / "__pycache__"


def clear_kernel_cache() -> list[Path]:
    """The cached float64 kernels, and those of the float32 twins (simulate.precision)."""
    files = []
    for d in (_cache_dir(), _cache_dir().parent.parent / "__pycache__" / "float32" / "__pycache__"):
        files += sorted(list(d.glob("*.nbi")) + list(d.glob("*.nbc"))) if d.is_dir() else []
    for f in files:
        f.unlink()
    return files


def population(n_cells: int) -> np.ndarray:
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.population import sample_multipliers

    return inputs_from_multipliers(sample_multipliers(n_cells, spread=SPREAD, seed=SEED))


def rel_rms(sim: np.ndarray, ref: np.ndarray) -> float:
    sim = np.asarray(sim, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.sqrt(np.mean((sim - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))


def read_reference(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    data = np.genfromtxt(path, delimiter=",", names=True)
    return {c: np.asarray(data[c]) for c in columns}


# ---------------------------------------------------------------------------------------------
# 1. compilation

def measure_compilation(protocol) -> list[list[str]]:
    from cardiotwin.simulate import kernels, simulate_current_clamp, simulate_voltage_clamp
    from cardiotwin.simulate.precision import float32_module

    inputs = population(COMPILE_CELLS)
    cases = [
        ("voltage clamp", kernels.voltage_clamp_kernel[False],
         lambda: simulate_voltage_clamp(protocol, inputs)),
        ("voltage clamp float32", float32_module("cardiotwin.simulate.kernels")
         .voltage_clamp_kernel[False],
         lambda: simulate_voltage_clamp(protocol, inputs, precision="float32")),
        ("current clamp", kernels.current_clamp_kernel,
         lambda: simulate_current_clamp(CC_DURATION_MS, inputs, record_interval_ms=RECORD_MS)),
    ]
    return [compile_row(name, disp, call) for name, disp, call in cases]


# ---------------------------------------------------------------------------------------------
# 2. speed

def time_runs(kind: str, protocol, inputs: np.ndarray, repeats: int) -> dict:
    from cardiotwin.simulate import simulate_current_clamp, simulate_voltage_clamp

    walls = []
    res = None
    for _ in range(repeats):
        res = None  # free the previous result first: peak memory stays one result
        t0 = time.perf_counter()
        if kind == "VC":
            res = simulate_voltage_clamp(protocol, inputs)
        elif kind == "VC32":
            res = simulate_voltage_clamp(protocol, inputs, precision="float32")
        elif kind in ("VCA", "VCA32"):
            res = simulate_voltage_clamp(protocol, inputs, artefacts=_typical_artefacts(),
                                         precision="float32" if kind == "VCA32" else "float64")
        else:
            res = simulate_current_clamp(CC_DURATION_MS, inputs, record_interval_ms=RECORD_MS,
                                         precision="float32" if kind == "CC32" else "float64")
        walls.append(time.perf_counter() - t0)
    out = res.v_mV if kind.startswith("CC") else res.i_total
    return {"walls": walls, "shape": out.shape, "unstable": int(res.unstable.sum()),
            "digest": hashlib.blake2b(np.ascontiguousarray(out).view(np.uint8),
                                      digest_size=16).hexdigest()}


# ---------------------------------------------------------------------------------------------
# 3. accuracy

def measure_accuracy(protocol) -> dict:
    from cardiotwin.simulate import simulate_current_clamp, simulate_voltage_clamp

    out = {}
    ref = read_reference(VC_REFERENCE, ("t_ms", "I_total"))
    if ref is None:
        out["vc"] = None
    else:
        for key, precision in (("vc", "float64"), ("vc32", "float32")):
            r = simulate_voltage_clamp(protocol, precision=precision)  # baseline cell
            sim = r.i_total[0]
            if (sim.shape != ref["I_total"].shape
                    or not np.allclose(r.t_ms, ref["t_ms"], atol=1e-6)):
                out[key] = (f"time grids differ: simulated {sim.shape}, "
                            f"reference {ref['I_total'].shape}")
            else:
                out[key] = rel_rms(sim, ref["I_total"])
    ref = read_reference(CC_REFERENCE, ("t_ms", "v_mV"))
    if ref is None:
        out["cc"] = None
    else:
        r = simulate_current_clamp(CC_DURATION_MS, None, record_interval_ms=RECORD_MS)
        sim = r.v_mV[0]
        if sim.shape != ref["v_mV"].shape or not np.allclose(r.t_ms, ref["t_ms"], atol=1e-6):
            out["cc"] = f"time grids differ: simulated {sim.shape}, reference {ref['v_mV'].shape}"
        else:
            out["cc"] = rel_rms(sim, ref["v_mV"])
    return out


# ---------------------------------------------------------------------------------------------
# 4. memory (in a fresh subprocess)

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(n_cells: int, protocol_name: str) -> dict:
    import tracemalloc

    from cardiotwin.protocols import builtin_protocol
    from cardiotwin.simulate import simulate_voltage_clamp

    protocol = builtin_protocol(protocol_name)
    simulate_voltage_clamp(protocol, population(COMPILE_CELLS))  # load/compile, start threads
    inputs = population(n_cells)  # the caller's data, built before the measurement
    rss0 = _rss_bytes()
    reset = _reset_hwm()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    res = simulate_voltage_clamp(protocol, inputs)
    wall = time.perf_counter() - t0
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss_bytes()
    hwm = _hwm_bytes()
    maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if reset and hwm is not None:
        peak, method = hwm, "VmHWM reset via /proc/self/clear_refs"
    else:
        peak = maxrss1
        method = "ru_maxrss" + ("" if maxrss1 > maxrss0 else
                                " (did not rise above its earlier peak: increase unreliable)")
    return {"n_cells": n_cells, "rss_before": rss0, "rss_after": rss1, "peak": peak,
            "method": method, "tracemalloc_peak": tm_peak, "output_bytes": res.i_total.nbytes,
            "inputs_bytes": inputs.nbytes, "n_samples": res.i_total.shape[1], "wall": wall}


def measure_memory(n_cells: int, protocol_name: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", str(n_cells),
           "--protocol", protocol_name]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"memory subprocess failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cells", type=int, default=2000,
                    help="cells per timed batch (default 2000)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed runs per case; best and median reported (default 5)")
    ap.add_argument("--threads", nargs="+", default=None, metavar="N",
                    help="numba thread counts to time, 'all' = numba's default count "
                         "(default: 1 all)")
    ap.add_argument("--mem-cells", type=int, default=10_000,
                    help="cells in the memory measurement (default 10000; 0 skips it)")
    ap.add_argument("--protocol", default="protocol_a", help="built-in VC protocol")
    ap.add_argument("--only", nargs="+", choices=("vc", "vc32", "vca", "vca32", "cc", "cc32"),
                    default=None,
                    help="time only these: voltage clamp, voltage clamp with artefacts, "
                         "current clamp (each in float64, and float32: the *32 cases)")
    ap.add_argument("--clear-cache", action="store_true",
                    help="delete numba's cached kernels (float64 and float32) first: cold "
                         "compile")
    ap.add_argument("--quick", action="store_true",
                    help="small check that the script runs: n-cells 200, repeats 2, "
                         "mem-cells 1000")
    ap.add_argument("--memory-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.n_cells, args.repeats, args.mem_cells = 200, 2, 1000
    if args.n_cells <= 0 or args.repeats <= 0 or args.mem_cells < 0:
        ap.error("--n-cells and --repeats must be positive, --mem-cells >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_worker is not None:
        print(json.dumps(memory_worker(args.memory_worker, args.protocol)))
        return 0

    removed = clear_kernel_cache() if args.clear_cache else None

    import numba

    from cardiotwin.protocols import builtin_protocol

    default_threads = numba.config.NUMBA_NUM_THREADS
    threads = []
    for t in args.threads or ["1", "all"]:
        n = default_threads if t == "all" else int(t)
        if not 1 <= n <= default_threads:
            sys.exit(f"--threads {t}: must be between 1 and {default_threads}")
        if n not in threads:
            threads.append(n)

    protocol = builtin_protocol(args.protocol)
    print("cardiotwin simulator benchmark")
    print(f"  host: {cpu_model()}, {os.cpu_count()} CPUs, numba default threads "
          f"{default_threads}; python {platform.python_version()}, numpy {np.__version__}, "
          f"numba {numba.__version__}")
    print(f"  load average at start: {loadavg()}")
    print(f"  cells: multipliers U({1 - SPREAD:g}, {1 + SPREAD:g}) on the 52 parameters, seed "
          f"{SEED}; batch {args.n_cells}, best of {args.repeats}; threads {threads}")
    if os.environ.get("NUMBA_CACHE_DIR"):
        print(f"  note: NUMBA_CACHE_DIR={os.environ['NUMBA_CACHE_DIR']} (cache not in __pycache__)")

    # 1. compilation
    print()
    if removed is not None:
        print(f"--clear-cache: removed {len(removed)} cached kernel file(s) from {_cache_dir()} "
              "and the float32 twins' cache")
    print(f"1. Compilation (first call on a {COMPILE_CELLS}-cell batch; compile/load = first "
          f"call - second call)")
    numba.set_num_threads(default_threads)
    rows = measure_compilation(protocol)
    print(table(["kernel", "first call", "second call", "compile/load", "how"], rows))
    with contextlib.suppress(ValueError):  # no parallel kernel has run yet
        print(f"  threading layer: {numba.threading_layer()}")

    # 2. speed
    print()
    print("2. Speed (compilation excluded); ms/cell/core = wall * threads / cells")
    print(f"  VC: {args.protocol}, {protocol.duration_ms:g} ms, I_total every "
          f"{protocol.sample_interval_ms:g} ms ({protocol.n_samples} samples/cell)")
    print("  VC32: the same VC in float32 arithmetic (precision='float32', simulate.precision)")
    print("  VCA: the same VC through the artefact model (model.artefacts: Cm 50 pF, R_s 20 "
          "MOhm, 70% compensation and prediction, leak 0.03 nS/pF)")
    print("  VCA32, CC32: the same VCA, CC in float32 arithmetic")
    print(f"  CC: {CC_DURATION_MS / 1000:g} s spontaneous beating, V every {RECORD_MS:g} ms "
          f"({int(round(CC_DURATION_MS / RECORD_MS)) + 1} samples/cell)")
    from cardiotwin.simulate.kernels import CHUNK, n_chunks

    chunks = n_chunks(args.n_cells)
    print(f"  {args.n_cells} cells = {chunks} chunks of {CHUNK} SIMD lanes"
          + ("" if args.n_cells % CHUNK == 0 else
             f" (last chunk partly empty: {chunks * CHUNK - args.n_cells} idle lanes)"))
    inputs = population(args.n_cells)
    kinds = [k for k in ("VC", "VC32", "VCA", "VCA32", "CC", "CC32")
             if args.only is None or k.lower() in args.only]
    results = {}
    rows = []
    for kind in kinds:
        for nt in threads:
            numba.set_num_threads(nt)
            r = time_runs(kind, protocol, inputs, args.repeats)
            results[(kind, nt)] = r
            best, med = min(r["walls"]), statistics.median(r["walls"])
            rows.append([kind, str(nt), str(args.n_cells), f"{best:.3f}", f"{med:.3f}",
                         f"{best * nt / args.n_cells * 1e3:.3f}",
                         f"{med * nt / args.n_cells * 1e3:.3f}",
                         f"{args.n_cells / best:,.0f}", f"{args.n_cells / med:,.0f}",
                         str(r["unstable"])])
    print(table(["case", "threads", "cells", "best s", "median s", "ms/cell/core best",
                 "ms/cell/core med", "cells/s best", "cells/s med", "unstable"], rows))
    for kind in kinds:
        digests = {results[(kind, nt)]["digest"] for nt in threads}
        if len(threads) > 1:
            same = "identical" if len(digests) == 1 else "DIFFERENT"
            print(f"  {kind} output at threads {threads}: {same}")
        if len(threads) > 1 and (kind, 1) in results:
            nt = max(threads)
            sp = min(results[(kind, 1)]["walls"]) / min(results[(kind, nt)]["walls"])
            print(f"  {kind} speed-up {nt} threads vs 1 (best): {sp:.2f}x "
                  f"(parallel efficiency {sp / nt:.0%})")
    numba.set_num_threads(default_threads)
    del results, inputs

    # 3. accuracy
    print()
    print("3. Accuracy (baseline cell, same settings: dt 0.1 ms, samples every 0.1 ms)")
    acc = measure_accuracy(protocol)
    if acc["vc"] is None:
        print(f"  VC I_total relative RMS: reference not found ({VC_REFERENCE})")
    elif isinstance(acc["vc"], str):
        print(f"  VC I_total relative RMS: {acc['vc']}")
    else:
        print(f"  VC I_total relative RMS vs {VC_REFERENCE.name}: {acc['vc']:.4%} (float64), "
              f"{acc['vc32']:.4%} (float32)")
    if acc["cc"] is None:
        print(f"  CC V relative RMS: reference not found ({CC_REFERENCE})")
    elif isinstance(acc["cc"], str):
        print(f"  CC V relative RMS: {acc['cc']}")
    else:
        print(f"  CC V relative RMS vs {CC_REFERENCE.name}: {acc['cc']:.4%} "
              f"(for information: sensitive to beat timing)")

    # 4. memory
    if args.mem_cells:
        print()
        print(f"4. Memory (VC on {args.protocol}, {args.mem_cells} cells, fresh subprocess, "
              f"{default_threads} threads; KB = 1000 bytes)")
        m = measure_memory(args.mem_cells, args.protocol)
        n = m["n_cells"]
        inc = m["peak"] - m["rss_before"]
        rows = [
            ["peak RSS increase", f"{inc / 1e6:,.1f}", f"{inc / n / KB:,.1f}"],
            ["  of which output i_total (float32)", f"{m['output_bytes'] / 1e6:,.1f}",
             f"{m['output_bytes'] / n / KB:,.1f}"],
            ["  rest (workspace, constants, states, ...)",
             f"{(inc - m['output_bytes']) / 1e6:,.1f}",
             f"{(inc - m['output_bytes']) / n / KB:,.1f}"],
            ["tracemalloc peak (numpy allocations)", f"{m['tracemalloc_peak'] / 1e6:,.1f}",
             f"{m['tracemalloc_peak'] / n / KB:,.1f}"],
            ["inputs (n, 87) float64, built before", f"{m['inputs_bytes'] / 1e6:,.1f}",
             f"{m['inputs_bytes'] / n / KB:,.2f}"],
        ]
        print(table(["", "MB", "KB/cell"], rows))
        print(f"  output share: {m['n_samples']:,} float32 samples = "
              f"{m['output_bytes'] / n / KB:.0f} KB/cell; peak measured with {m['method']}; "
              f"RSS before {m['rss_before'] / 1e6:,.0f} MB, after {m['rss_after'] / 1e6:,.0f} MB;"
              f" run took {m['wall']:.2f} s")

    print()
    print(f"load average at end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
