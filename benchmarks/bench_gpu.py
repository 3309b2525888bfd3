#!/usr/bin/env python
"""Benchmark of the GPU simulator (cardiotwin.simulate.cuda) next to the CPU simulator on the
same machine.

Reports:

1. the device, numba's CUDA backend, kernel compile times (first launch minus a second one) and
   registers / local memory per thread of each kernel;
2. GPU cells/s, compilation excluded, at batch sizes --sizes (default 10k, 100k, 1M) for
   - VC: voltage clamp on protocol_a (4950 ms; I_total every 0.1 ms, stored every --decimate
     samples: 1M cells x 49,500 float32 would be 198 GB),
   - CC: 6 s of spontaneous beating (V every 0.1 ms, stored every --decimate samples, no Cai),
   with the split host->device / kernels / device->host. A size whose time projected from the
   previous one exceeds --max-seconds is projected, not run (marked "projected");
3. CPU cells/s per core of the CPU simulator (numba, 1 thread; --cpu-cells cells) and the
   GPU / CPU-core ratio;
4. the projected time for the source study's 1.1 M cells (voltage clamp + a 4 s AP run per cell,
   the population pipeline's simulation work) on one GPU and on one CPU core;
5. a GPU = CPU check on --check-cells cells (relative RMS of I_total and V);
6. the float64 / float32 note (see the cardiotwin.simulate.cuda docstring).

The cells: multipliers U(0.6, 1.4) on the 52 parameters (seed 0); the batches beyond
--distinct-cells repeat those cells (the kernels' cost does not depend on which cells they are).

Runs without Ray and TensorFlow (the device machine has numba, numba-cuda and numpy):

    cd benchmarks && PYTHONPATH=../platform python bench_gpu.py            # full
    cd benchmarks && PYTHONPATH=../platform python bench_gpu.py --quick    # check that it runs
    cd benchmarks && PYTHONPATH=../platform python bench_gpu.py --ptx-check      # no GPU needed
    cd benchmarks && PYTHONPATH=../platform python bench_gpu.py --float32-check  # no GPU needed
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _report import cpu_model, loadavg, table

SPREAD, SEED = 0.4, 0
CC_MS = 6000.0
AP_RUN_MS = 4000.0  # the population pipeline's classification run
STUDY_CELLS = 1_100_000


def fmt_n(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))


def fmt_t(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.2f} s"


def population(n: int, distinct: int) -> np.ndarray:
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.population import sample_multipliers

    base = inputs_from_multipliers(sample_multipliers(min(n, distinct), spread=SPREAD, seed=SEED))
    reps = -(-n // base.shape[0])
    return np.tile(base, (reps, 1))[:n] if reps > 1 else base


def rel_rms(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def run_gpu(kind: str, x: np.ndarray, decimate: int, tpb: int):
    from cardiotwin.protocols import builtin_protocol
    from cardiotwin.simulate import cuda as g

    t0 = time.perf_counter()
    if kind == "VC":
        r = g.simulate_voltage_clamp_gpu(builtin_protocol("protocol_a"), x, decimate=decimate,
                                         threads_per_block=tpb)
        out = r.i_total
    else:
        r = g.simulate_current_clamp_gpu(CC_MS, x, decimate=decimate, record_cai=False,
                                         threads_per_block=tpb)
        out = r.v_mV
    wall = time.perf_counter() - t0
    return wall, dict(g.last_timings), out, r.unstable


def run_cpu(kind: str, x: np.ndarray):
    from cardiotwin.protocols import builtin_protocol
    from cardiotwin.simulate import simulate_current_clamp, simulate_voltage_clamp

    t0 = time.perf_counter()
    if kind == "VC":
        out = simulate_voltage_clamp(builtin_protocol("protocol_a"), x).i_total
    else:
        out = simulate_current_clamp(CC_MS, x).v_mV
    return time.perf_counter() - t0, out


def float32_storage_check() -> list[list[str]]:
    """The three reference cells on protocol_a, one cell at a time through the shared equation
    functions (numba, CPU) with a float64 workspace and with a float32 one: float64
    arithmetic, but every state, constant and per-step factor rounded to float32 when stored
    (the storage part of a float32 kernel's error; float32 arithmetic adds to it). Rows: cell,
    I_total relative RMS float32-storage vs float64, float64 vs reference, float32 vs
    reference."""
    import gzip

    import numba

    from cardiotwin.model import BASELINE, inputs_from_named, read_multipliers_csv, tau_factor
    from cardiotwin.model.equations import (
        CP0,
        ITOT,
        N_ROWS,
        V_,
        advance,
        cell_constants,
        voltage_terms,
    )
    from cardiotwin.model.parameters import INITIAL_STATE
    from cardiotwin.protocols import builtin_protocol

    @numba.njit
    def one_cell(ws, seg_n, seg_v0, seg_v1, dt, out):
        k = 0
        for s in range(seg_n.size):
            ns = seg_n[s]
            v0 = seg_v0[s]
            dv = (seg_v1[s] - v0) / ns
            ramp = seg_v1[s] != v0
            for i in range(ns):
                v = v0 + dv * i
                if i == 0 or ramp:
                    voltage_terms(ws, 0, 1, v, dt)
                ws[V_] = v
                advance(ws, 0, 1, v, dt, 0.0, True, False)
                out[k] = ws[ITOT]
                k += 1

    data = Path(__file__).resolve().parent.parent / "tests" / "data"
    proto = builtin_protocol("protocol_a")
    seg_n, v0, v1 = proto.segment_steps()
    rows = []
    for cell in ("baseline", "set1", "set2"):
        x = BASELINE.copy() if cell == "baseline" else inputs_from_named(
            read_multipliers_csv(data / f"{cell}_multipliers.csv"))
        cp = cell_constants(x[None, :], tau_factor(proto.temperature_K))[0]
        with gzip.open(data / f"sim_{cell}_vc_protocol_a.csv.gz", "rt") as fh:
            names = fh.readline().strip().split(",")
            ref = np.loadtxt(fh, delimiter=",")[:, names.index("I_total")]
        traces = {}
        for dtype in (np.float64, np.float32):
            ws = np.zeros(N_ROWS, dtype)
            ws[:INITIAL_STATE.size] = INITIAL_STATE
            ws[CP0:] = cp
            out = np.empty(proto.n_samples)
            one_cell(ws, seg_n, v0, v1, proto.sample_interval_ms, out)
            traces[dtype] = out
        rows.append([cell, f"{rel_rms(traces[np.float32], traces[np.float64]):.3%}",
                     f"{rel_rms(traces[np.float64], ref):.3%}",
                     f"{rel_rms(traces[np.float32], ref):.3%}"])
    return rows


def ptx_check(cc: tuple[int, int] = (9, 0)) -> list[list[str]]:
    """Compile each kernel to PTX for ``cc`` without a GPU (numba-cuda and NVVM needed; set
    CUDA_HOME) and, when ptxas is found, report its registers and spills per thread."""
    import re
    import shutil
    import subprocess
    import tempfile

    from numba import cuda, types

    from cardiotwin.simulate import cuda as g

    f64, i64, u8, f32 = types.float64, types.int64, types.uint8, types.float32

    def arr(t, nd):
        return types.Array(t, nd, "C")

    vc_sig = (arr(f64, 2), arr(f64, 2), arr(i64, 1), arr(f64, 1), arr(f64, 1), f64, i64, i64,
              arr(f32, 2), arr(f32, 3), arr(f64, 2), arr(u8, 1))
    cc_sig = (arr(f64, 2), arr(f64, 2), i64, f64, i64, i64, f64, f64, f64, f64, f64, i64,
              types.boolean, arr(f32, 2), arr(f32, 2), arr(f64, 2), arr(u8, 1))
    ptxas = shutil.which("ptxas") or next(
        (str(p) for p in (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "ptxas",)
         if p.is_file()), None)
    rows = []
    for name, py, sig in (("vc", g._make_voltage_clamp_kernel(False), vc_sig),
                          ("vc_currents", g._make_voltage_clamp_kernel(True), vc_sig),
                          ("cc", g._current_clamp_kernel, cc_sig)):
        t0 = time.perf_counter()
        ptx, _ = cuda.compile_ptx(py, sig, cc=cc)
        took = time.perf_counter() - t0
        facts = "ptxas not found"
        if ptxas:
            with tempfile.NamedTemporaryFile("w", suffix=".ptx") as fh:
                fh.write(ptx)
                fh.flush()
                r = subprocess.run([ptxas, "-v", f"-arch=sm_{cc[0]}{cc[1]}", fh.name, "-o",
                                    os.devnull], capture_output=True, text=True)
            out = r.stdout + r.stderr
            regs = re.search(r"Used (\d+) registers", out)
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
            facts = (f"{regs.group(1) if regs else '?'} registers, "
                     f"{spill.group(1) if spill else '?'} B spill stores / "
                     f"{spill.group(2) if spill else '?'} B loads")
        rows.append([name, f"{took:.1f} s", f"{len(ptx):,}", facts])
    return rows


def kernel_facts(g) -> list[list[str]]:
    rows = []
    for name in ("vc", "cc"):
        disp = g._COMPILED.get(name)
        for ov in getattr(disp, "overloads", {}).values():
            facts = []
            for attr in ("regs_per_thread", "local_mem_per_thread", "shared_mem_per_block",
                         "max_threads_per_block"):
                try:
                    facts.append(str(getattr(ov, attr)))
                except Exception:
                    facts.append("n/a")
            rows.append([name, *facts])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--decimate", type=int, default=10,
                    help="store every k-th sample (default 10: 1 kHz)")
    ap.add_argument("--max-seconds", type=float, default=90.0,
                    help="skip (project) a size whose projected GPU time exceeds this")
    ap.add_argument("--tpb", type=int, nargs="+", default=[128],
                    help="threads per block to try at the smallest size (default 128)")
    ap.add_argument("--cpu-cells", type=int, default=64)
    ap.add_argument("--check-cells", type=int, default=64)
    ap.add_argument("--distinct-cells", type=int, default=10_000)
    ap.add_argument("--only", choices=("vc", "cc"), default=None)
    ap.add_argument("--quick", action="store_true",
                    help="sizes 256 and 2048, 16 CPU cells: check that it runs")
    ap.add_argument("--ptx-check", action="store_true",
                    help="only compile the kernels to PTX for sm_90 and report ptxas registers "
                         "and spills (numba-cuda + NVVM, no GPU needed)")
    ap.add_argument("--float32-check", action="store_true",
                    help="only the float32-storage accuracy check (CPU, no GPU needed)")
    ap.add_argument("--simulator-smoke", action="store_true",
                    help="run the script's code paths in numba's CUDA simulator (tiny sizes; "
                         "needs NUMBA_ENABLE_CUDASIM=1): no GPU needed, figures meaningless")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.cpu_cells, a.check_cells, a.distinct_cells = [256, 2048], 16, 16, 2048
    if a.simulator_smoke:
        a.sizes, a.cpu_cells, a.check_cells, a.distinct_cells = [4, 8], 4, 4, 4

    import numba

    from cardiotwin.simulate import cuda as g

    if a.ptx_check:
        print(f"PTX for sm_90 (backend {g.backend()})")
        print(table(["kernel", "NVVM time", "PTX chars", "ptxas -v"], ptx_check()))
        return
    if a.float32_check:
        print("float32 storage check (CPU; protocol_a, dt 0.1 ms, I_total relative RMS)")
        print(table(["cell", "f32 storage vs f64", "f64 vs reference", "f32 vs reference"],
                    float32_storage_check()))
        return
    print("cardiotwin GPU simulator benchmark")
    print(f"  host: {cpu_model()}, {os.cpu_count()} CPUs; numba {numba.__version__}, "
          f"numpy {np.__version__}; load average {loadavg()}")
    info = g.gpu_info()
    print(f"  GPU: {info}")
    if not (g.gpu_available() or (a.simulator_smoke and g.simulator_enabled())):
        print("  no CUDA GPU available: nothing to measure (run this on the GPU machine, see "
              "benchmarks/README_gpu.md)")
        return
    if os.environ.get(g.MAX_REGISTERS_ENV):
        print(f"  kernels compiled with max_registers={os.environ[g.MAX_REGISTERS_ENV]}")
    kinds = [k for k in ("VC", "CC") if a.only in (None, k.lower())]

    # 1. compilation
    print("\n1. Compilation (first launch on 2 cells minus a second launch)")
    x2 = population(2, 2)
    rows = []
    for kind in kinds:
        t1 = run_gpu(kind, x2, a.decimate, a.tpb[0])[0]
        t2 = run_gpu(kind, x2, a.decimate, a.tpb[0])[0]
        rows.append([kind, f"{t1:.2f} s", f"{t2:.2f} s", f"{max(t1 - t2, 0):.2f} s"])
    print(table(["kernel", "first", "second", "compile"], rows))
    facts = kernel_facts(g)
    if facts:
        print(table(["kernel", "registers/thread", "local B/thread", "shared B/block",
                     "max threads/block"], facts))

    # 2. GPU speed
    print(f"\n2. GPU speed (compilation excluded; traces stored every {a.decimate} samples)")
    gpu_rate: dict[str, float] = {}
    rows = []
    for kind in kinds:
        best_tpb, best = a.tpb[0], None
        if len(a.tpb) > 1:
            x = population(a.sizes[0], a.distinct_cells)
            for tpb in a.tpb:
                wall, tm, _, _ = run_gpu(kind, x, a.decimate, tpb)
                rows.append([kind, fmt_n(a.sizes[0]), f"tpb {tpb}", f"{wall:.2f}",
                             f"{tm['kernel_s']:.2f}", f"{tm['h2d_s']:.2f}", f"{tm['d2h_s']:.2f}",
                             f"{a.sizes[0] / wall:,.0f}", "tpb scan"])
                if best is None or wall < best:
                    best, best_tpb = wall, tpb
        rate = None
        for n in a.sizes:
            if rate is not None and n / rate > a.max_seconds:
                rows.append([kind, fmt_n(n), f"tpb {best_tpb}", f"{n / rate:.1f}", "", "", "",
                             f"{rate:,.0f}", "projected"])
                continue
            x = population(n, a.distinct_cells)
            wall, tm, _, bad = run_gpu(kind, x, a.decimate, best_tpb)
            rate = n / wall
            rows.append([kind, fmt_n(n), f"tpb {best_tpb}", f"{wall:.2f}", f"{tm['kernel_s']:.2f}",
                         f"{tm['h2d_s']:.2f}", f"{tm['d2h_s']:.2f}", f"{rate:,.0f}",
                         f"measured ({tm['launches']} launch(es), {int(bad.sum())} unstable)"])
            del x
        gpu_rate[kind] = rate
    print(table(["case", "cells", "block", "wall s", "kernel s", "h2d s", "d2h s", "cells/s",
                 "note"], rows))

    # 3. CPU per core
    print(f"\n3. CPU simulator on this host, 1 numba thread, {a.cpu_cells} cells "
          "(compilation excluded)")
    numba.set_num_threads(1)
    cpu_rate: dict[str, float] = {}
    rows = []
    xc = population(a.cpu_cells, a.cpu_cells)
    for kind in kinds:
        run_cpu(kind, population(2, 2))  # compile / cache load
        wall, _ = run_cpu(kind, xc)
        cpu_rate[kind] = a.cpu_cells / wall
        rows.append([kind, f"{wall:.2f}", f"{cpu_rate[kind]:,.1f}",
                     f"{1e3 * wall / a.cpu_cells:.2f}",
                     f"{gpu_rate[kind] / cpu_rate[kind]:,.1f}x"])
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print(table(["case", "wall s", "cells/s/core", "ms/cell/core", "1 GPU = CPU cores"], rows))

    # 4. the source study's population
    if len(kinds) == 2:
        ap_frac = AP_RUN_MS / CC_MS
        per_cell_gpu = 1 / gpu_rate["VC"] + ap_frac / gpu_rate["CC"]
        per_cell_cpu = 1 / cpu_rate["VC"] + ap_frac / cpu_rate["CC"]
        print(f"\n4. {STUDY_CELLS:,} cells (VC protocol_a + {AP_RUN_MS / 1000:g} s AP run per "
              "cell, simulation only; the AP classification is serial CPU Python, ~2 ms/cell)")
        print(f"  one GPU: {fmt_t(STUDY_CELLS * per_cell_gpu)}; one CPU core: "
              f"{fmt_t(STUDY_CELLS * per_cell_cpu)}; cores for the GPU's speed: "
              f"{per_cell_cpu / per_cell_gpu:,.1f}")

    # 5. GPU = CPU
    print(f"\n5. GPU = CPU check ({a.check_cells} cells, full 0.1 ms sampling)")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    xk = population(a.check_cells, a.check_cells)
    rows = []
    for kind in kinds:
        _, _, out_g, _ = run_gpu(kind, xk, 1, a.tpb[0])
        _, out_c = run_cpu(kind, xk)
        ok = np.isfinite(out_c).all(axis=1)
        errs = [rel_rms(gi, ci) for gi, ci in zip(out_g[ok], out_c[ok], strict=True)]
        rows.append([kind, str(int(ok.sum())), f"{max(errs):.2e}", f"{np.median(errs):.2e}",
                     "yes" if np.array_equal(np.isnan(out_g), np.isnan(out_c)) else "NO"])
    print(table(["case", "finite cells", "max rel RMS", "median rel RMS", "same NaNs"], rows))

    print("\n6. Precision: float64 inside (as on the CPU), float32 traces out. float32 inside "
          "is not implemented: on an H100 it can at most double the rate (FP32:FP64 = 2:1); "
          "see cardiotwin.simulate.cuda. Its storage part, measured on the CPU:")
    print(table(["cell", "f32 storage vs f64", "f64 vs reference", "f32 vs reference"],
                float32_storage_check()))
    print(f"\nload average at end: {loadavg()}")


if __name__ == "__main__":
    main()
