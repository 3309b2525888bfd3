#!/usr/bin/env python
"""Benchmark of the batch classifier (cardiotwin.features.classify_batch): Python vs compiled.

The cells are what a population actor classifies: multipliers U(1 - spread, 1 + spread) (the
population prior's default, 0.4), a free-running AP run of --duration-ms (6000 ms: the cold
population's run; 4000 ms at >= 305 K) at 310 K recorded every
``population.config.AP_RECORD_INTERVAL_MS`` (0.1 ms), float32 as the simulator returns it,
classified in chunks of ``population.batch.CHUNK_CELLS`` (256) as the actor does. Both
classifiers run serially on one core: per-cell milliseconds = wall / cells, best and median of
--repeats. The compiled path's first call (compile or on-disk cache load) is reported apart,
and its results are checked against the Python path's (identical statuses, biomarkers to
1e-9 relative, NaN where NaN).

    python benchmarks/bench_classify.py --quick    # check that it runs (200 cells of 2 s)
    python benchmarks/bench_classify.py            # 2,048 cells of 6 s, 5 repeats (~2 min)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter

import numpy as np

from _report import compile_row, cpu_model, loadavg, table


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cells", type=int, default=2048, help="cells (default 2048)")
    ap.add_argument("--duration-ms", type=float, default=6000.0,
                    help="AP run length in ms (default 6000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    ap.add_argument("--spread", type=float, default=0.4, help="multiplier range (default 0.4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="200 cells of 2 s, 2 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_cells, args.duration_ms, args.repeats = 200, 2000.0, 2
    if args.n_cells < 1 or args.repeats < 1 or args.duration_ms <= 0:
        ap.error("--n-cells, --repeats and --duration-ms must be positive")
    return args


def classify_chunks(t, V, chunk, compiled):
    from cardiotwin.features import classify_batch

    parts = [classify_batch(t, V[i:i + chunk], compiled=compiled)
             for i in range(0, V.shape[0], chunk)]
    statuses = np.concatenate([p[0] for p in parts])
    return statuses, {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}


def timed(call, repeats):
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    return out, np.array(times)


def same(a, b) -> bool:
    if not np.array_equal(a[0], b[0]):
        return False
    for k, x in b[1].items():
        y = a[1][k]
        if x.dtype.kind == "f":
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                return False
            ok = ~np.isnan(x)
            if np.any(np.abs(y[ok] - x[ok]) > 1e-9 * np.abs(x[ok])):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    from cardiotwin import features_compiled
    from cardiotwin.model.parameters import N_INFERRED, inputs_from_multipliers
    from cardiotwin.population.batch import CHUNK_CELLS
    from cardiotwin.population.config import AP_RECORD_INTERVAL_MS
    from cardiotwin.simulate import simulate_current_clamp

    print(f"host: {cpu_model()}, {platform.python_version()}, load average {loadavg()}")
    rng = np.random.default_rng(args.seed)
    m = rng.uniform(1 - args.spread, 1 + args.spread, (args.n_cells, N_INFERRED))
    t0 = time.perf_counter()
    cc = simulate_current_clamp(args.duration_ms, inputs_from_multipliers(m),
                                record_interval_ms=AP_RECORD_INTERVAL_MS)
    sim_s = time.perf_counter() - t0
    t, V = cc.t_ms, cc.v_mV
    print(f"cells: {args.n_cells} x {args.duration_ms:g} ms at {AP_RECORD_INTERVAL_MS} ms "
          f"({t.size} samples, {V.dtype}), simulated in {sim_s:.1f} s; chunks of "
          f"{CHUNK_CELLS}")

    print("\ncompiled path, first call (1 chunk):")
    print(table(["call", "first", "second", "compile/load", "how"],
                [compile_row("classify_batch_compiled", features_compiled._classify_cells,
                             lambda: classify_chunks(t, V[:CHUNK_CELLS], CHUNK_CELLS, True))]))

    py, t_py = timed(lambda: classify_chunks(t, V, CHUNK_CELLS, False), args.repeats)
    co, t_co = timed(lambda: classify_chunks(t, V, CHUNK_CELLS, True), args.repeats)
    n = args.n_cells
    rows = [[name, f"{ts.min() / n * 1e3:.3f}", f"{np.median(ts) / n * 1e3:.3f}",
             f"{ts.min():.2f}"] for name, ts in (("Python", t_py), ("compiled", t_co))]
    print(f"\nper cell, one core, {args.repeats} repeats:")
    print(table(["path", "best ms/cell", "median ms/cell", "best wall s"], rows))
    print(f"  speed-up (median): {np.median(t_py) / np.median(t_co):.1f}x")
    t64 = t.astype(float)
    codes = features_compiled._classify_cells(t64, V, *features_compiled.kernel_arguments(t64))[0]
    print(f"  cells handed to analyze_trace (noisy): {int((codes < 0).sum())}")
    counts = Counter(py[0].tolist())
    print("  statuses: " + ", ".join(f"{k} {counts[k]}" for k in sorted(counts))
          + f"; cells with EADs {int((py[1]['n_eads'] > 0).sum())}")
    ok = same(co, py)
    print(f"  compiled == Python (statuses identical, biomarkers <= 1e-9 relative): "
          f"{'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
