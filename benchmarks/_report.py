"""Report helpers shared by the benchmark scripts: host facts, plain-text tables, a Keras
epoch-timing callback, and where the shared reference data lies (``SHARED``: a ``shared/``
folder beside the repository, found relative to this file; a benchmark skips a figure, saying
so, when its data is absent)."""

import os
import platform
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """Plain-text table: the first column left-aligned, numeric columns right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def isnum(s: str) -> bool:
        s = s.replace(",", "").replace(".", "").replace("-", "").replace("%", "").strip()
        return s.isdigit() or s == ""

    numeric = [i > 0 and all(isnum(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells):
        cols = zip(cells, widths, numeric, strict=True)
        return (indent + "  ".join(c.rjust(w) if num else c.ljust(w)
                                   for c, w, num in cols)).rstrip()

    return "\n".join([line(headers), indent + "  ".join("-" * w for w in widths)]
                     + [line(r) for r in rows])


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_s(x: float) -> str:
    return f"{x:.2f} s" if x >= 0.1 else f"{x * 1e3:.1f} ms"


def dispatcher_counts(disp) -> tuple[int, int]:
    st = disp.stats
    return sum(st.cache_hits.values()), sum(st.cache_misses.values())


def compile_row(name: str, disp, call) -> list[str]:
    """Time ``call`` twice (first call - second call = compile or cache load) and say which it
    was from the numba dispatcher's cache counters; ``disp`` None for plain Python."""
    h0, m0 = dispatcher_counts(disp) if disp is not None else (0, 0)
    n_sig0 = len(disp.signatures) if disp is not None else 0
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    call()
    second = time.perf_counter() - t0
    if disp is None:
        how = "no compilation (first call: imports, caches)"
    else:
        h1, m1 = dispatcher_counts(disp)
        if n_sig0:
            how = "already compiled in this process"
        elif h1 > h0:
            how = "cache load (on-disk cache hit)"
        elif m1 > m0:
            how = "cold compile (cache miss)"
        else:
            how = "cold compile (no cache)"
    return [name, fmt_s(first), fmt_s(second), fmt_s(max(first - second, 0.0)), how]


def timing_callback(budget_s: float | None):
    """Keras callback: wall and validation seconds per epoch; with ``budget_s``, stops when
    the next epoch would end past it (from the start of fit)."""
    import keras

    class Timing(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t_start, self.epoch_s, self.val_s, self.hit_budget = time.perf_counter(), [], \
                [], False

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self._val = time.perf_counter(), 0.0

        def on_test_begin(self, logs=None):
            self.tv = time.perf_counter()

        def on_test_end(self, logs=None):
            self._val += time.perf_counter() - self.tv

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epoch_s.append(now - self.t0)
            self.val_s.append(self._val)
            typical = float(np.median(self.epoch_s[1:] or self.epoch_s))
            if budget_s and now - self.t_start + typical > budget_s:
                self.hit_budget = True
                self.model.stop_training = True

    return Timing()
