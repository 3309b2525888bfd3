"""The simulator on NVIDIA GPUs (numba-cuda): voltage clamp and current clamp, one thread per cell.

One definition of the equations. The kernels below call the very functions the CPU kernels
call (``model.equations.voltage_terms`` / ``advance``, ``vecmath.vexp`` / ``vlog3`` / ``vsqrt``,
``kernels._stimulus``): these are ``numba.njit`` functions, and numba's CUDA target compiles an
njit function called from a CUDA kernel as a CUDA device function with the same options
(``inline="always"``). Nothing of the model is written twice. The equations address a flat
workspace ``ws[row * S + c]``; on the CPU ``S`` = 16 SIMD lanes, here every thread owns a
one-lane workspace in thread-local memory (``cuda.local.array``, ``S = 1``, ``c = 0``), so after
inlining every index is a compile-time constant and the compiler may keep rows in registers.

Every argument of ``advance`` is passed explicitly (no defaults): under the CUDA simulator
the kernels are Python calling njit dispatchers, and a call that omits defaulted arguments takes
numba's slow dispatch path (~130 us a call instead of ~1 us, under the compiler lock).

The time stepping mirrors ``kernels.voltage_clamp_kernel`` / ``current_clamp_kernel`` step for
step (the same dt, the same adaptive sub-steps in current clamp, the same handling of unstable
cells), so a cell's trace agrees with the CPU's to rounding (FMA contraction and instruction
order differ): relative RMS <= 1e-9, checked in tests/test_gpu.py under numba's CUDA simulator.

Precision: float64 inside, float32 traces out (as on the CPU). Is float32 inside safe? For
voltage-clamp training data at dt = 0.1 ms, yes in accuracy: storing every state, constant and
factor in float32 (float64 arithmetic) changes I_total on protocol_a by 0.005 / 0.004 / 0.009 %
relative RMS (baseline / set1 / set2; ``benchmarks/bench_gpu.py --float32-check``), and the CPU
float32 kernel of PERFORMANCE.md (float32 arithmetic too) measured an error floor of ~0.07 %,
both below the dt = 0.1 ms discretisation error against the reference (0.10-0.27 %). It is not
safe for long current-clamp runs or small dt: Euler increments of Ki (~105 mM) and Nai fall
below one float32 ulp, so the slow concentration drift is lost; and it would break the GPU = CPU
check (1e-9). Not implemented: on an H100 float32 is only twice the float64 rate (not 64x as on
consumer GPUs), so it can at most halve the time.

Compilation: checked without a GPU (numba-cuda 0.30.4 with numba 0.68.1, NVVM of CUDA 13.0,
``cuda.compile_ptx`` for sm_90, then ``ptxas -v``; ``benchmarks/bench_gpu.py --ptx-check``):
every kernel compiles, 254-255 registers and 350-420 bytes of spill stores per thread. The
CUDA target built into numba 0.68 itself cannot compile them (it fails on the builtins min/max:
"Signature mismatch"), so numba-cuda is required.

Availability: importing this module never fails and never touches a GPU. ``gpu_available()``
says whether a CUDA GPU and numba-cuda (``pip install cardiotwin[gpu]``) can run the kernels.
With ``NUMBA_ENABLE_CUDASIM=1`` (set before numba.cuda is first imported) the kernels run in
numba's CUDA simulator on the CPU (slow: tests only); ``gpu_available()`` is False there.

Memory: a batch larger than what fits on the GPU (about half its free memory: traces, inputs,
states) is run in launches of ``max_cells_per_launch`` cells; the host result arrays are
allocated once, full size (49,500 float32 = 198 KB per cell on protocol_a: use ``decimate`` or
split very large populations before calling).
"""

from __future__ import annotations

import math
import os
import time

import numba
import numpy as np

from ..model.equations import (
    CAI,
    CP0,
    CUR0,
    CURRENT_NAMES,
    ITOT,
    N_CP,
    N_CURRENTS,
    N_ROWS,
    N_STATE_ROWS,
    V_,
    advance,
    voltage_terms,
)
from ..model.parameters import N_STATES
from .api import CurrentClampResult, Pacing, SealLeak, VoltageClampResult, cc_setup, vc_setup
from .kernels import V_LIMIT, _floor, _stimulus

try:  # numba's CUDA target: the simulator when NUMBA_ENABLE_CUDASIM=1; no driver is touched here
    from numba import cuda
    from numba import float64 as _f64
except Exception:  # a broken CUDA install must not break the package
    cuda = None
    _f64 = None

THREADS_PER_BLOCK = 128
MEMORY_FRACTION = 0.5  # of the GPU's free memory used for one launch's arrays
DEFAULT_LAUNCH_CELLS = 65536  # when the free memory cannot be read (simulator)


# ---------------------------------------------------------------------------------- availability

def simulator_enabled() -> bool:
    """True when numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1 at numba.cuda import)."""
    if cuda is None:
        return False
    try:
        from numba import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:
        return False


def backend() -> str:
    """Which CUDA target numba uses: "numba-cuda <version>", "numba.cuda (built into numba
    <version>)", "simulator" or "none"."""
    if cuda is None:
        return "none"
    if simulator_enabled():
        return "simulator"
    try:
        from importlib.metadata import version

        return f"numba-cuda {version('numba-cuda')}"
    except Exception:
        import numba

        return f"numba.cuda (built into numba {numba.__version__})"


def gpu_available() -> bool:
    """True when a CUDA GPU can run the kernels (numba-cuda installed, driver found, a device
    present, not the simulator). Never raises."""
    if cuda is None or simulator_enabled() or not backend().startswith("numba-cuda"):
        return False
    try:
        return bool(cuda.is_available()) and len(cuda.gpus) > 0
    except Exception:
        return False


def gpu_info() -> dict:
    """Backend and device facts for reports ({} entries that cannot be read are left out)."""
    info = {"backend": backend(), "available": gpu_available()}
    if info["available"]:
        try:
            dev = cuda.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            free, total = cuda.current_context().get_memory_info()
            info.update(name=name, compute_capability=".".join(map(str, dev.compute_capability)),
                        memory_GiB=round(total / 2**30, 1), free_GiB=round(free / 2**30, 1),
                        multiprocessors=dev.MULTIPROCESSOR_COUNT)
        except Exception as e:
            info["error"] = str(e)
    return info


def _require_cuda() -> None:
    if cuda is None:
        raise RuntimeError("numba's CUDA target cannot be imported: install numba-cuda "
                           "(pip install 'cardiotwin[gpu]')")
    if not (simulator_enabled() or gpu_available()):
        raise RuntimeError("no CUDA GPU available (numba-cuda, the CUDA driver or a device not "
                           f"found; backend: {backend()}): use the CPU simulator "
                           "(cardiotwin.simulate.simulate_voltage_clamp / "
                           "simulate_current_clamp), or set NUMBA_ENABLE_CUDASIM=1 before "
                           "numba.cuda is imported to run these kernels in the (slow) simulator")


# ---------------------------------------------------------------------------------- kernels

def _make_voltage_clamp_kernel(store_currents: bool):
    def kernel(cp, y0, seg_n, seg_v0, seg_v1, dt, rec_every, keep_every, itot_out, cur_out,
               final_state, unstable):
        """One thread per cell; the steps of kernels.voltage_clamp_kernel. Sample j (every
        rec_every steps) is checked for instability and, when j % keep_every == 0, written to
        column j // keep_every of itot_out (and cur_out[cell, q, :] when store_currents)."""
        cell = cuda.grid(1)
        if cell >= cp.shape[0]:
            return
        ws = cuda.local.array(N_ROWS, _f64)
        for r in range(N_STATE_ROWS):
            ws[r] = y0[cell, r]
        for r in range(N_CP):
            ws[CP0 + r] = cp[cell, r]
        ws[ITOT] = 0.0
        for r in range(N_CURRENTS):
            ws[CUR0 + r] = 0.0
        bad = False
        k = 0
        for s in range(seg_n.shape[0]):
            ns = seg_n[s]
            v0 = seg_v0[s]
            dv = (seg_v1[s] - v0) / ns
            ramp = seg_v1[s] != v0
            for i in range(ns):
                v = v0 + dv * i
                if i == 0 or ramp:
                    voltage_terms(ws, 0, 1, v, dt)
                ws[V_] = v
                advance(ws, 0, 1, v, dt, 0.0, True, store_currents, True, False, 0)
                if k % rec_every == 0:
                    j = k // rec_every
                    itot = ws[ITOT]
                    if not math.isfinite(itot):
                        bad = True
                    if bad:
                        for r in range(N_STATE_ROWS):
                            ws[r] = y0[cell, r]
                    if j % keep_every == 0:
                        q = j // keep_every
                        itot_out[cell, q] = math.nan if bad else itot
                        if store_currents:
                            for m in range(N_CURRENTS):
                                cur_out[cell, m, q] = math.nan if bad else ws[CUR0 + m]
                k += 1
        unstable[cell] = 1 if bad else 0
        for r in range(N_STATE_ROWS):
            final_state[cell, r] = math.nan if bad else ws[r]

    return kernel


@numba.njit(inline="always")
def _ceil(x):
    """ceil(x) kept in floating point (-floor(-x)), as np.ceil in the CPU kernel: math.ceil
    would convert to an integer, undefined for huge values on a GPU. An njit function so that
    the simulator (pure Python kernels) can call it too."""
    return -_floor(-x)


def _current_clamp_kernel(cp, y0, n_steps, dt, rec_every, keep_every, stim_amp, stim_start,
                          stim_period, stim_width, dv_max, max_sub, rec_cai, v_out, cai_out,
                          final_state, unstable):
    """One thread per cell; the steps of kernels.current_clamp_kernel (a lane that runs its
    own n_c sub-steps is what the CPU lane does when it steps with h = 0 past its n_c).
    Time k * dt (k = 0 .. n_steps) is recorded when k % rec_every == 0 and its sample index j
    is a multiple of keep_every, in column j // keep_every (while < v_out.shape[1])."""
    cell = cuda.grid(1)
    if cell >= cp.shape[0]:
        return
    ws = cuda.local.array(N_ROWS, _f64)
    for r in range(N_STATE_ROWS):
        ws[r] = y0[cell, r]
    for r in range(N_CP):
        ws[CP0 + r] = cp[cell, r]
    n_keep = v_out.shape[1]
    bad = False
    dvdt = 0.0
    for k in range(n_steps + 1):
        if k % rec_every == 0:
            j = k // rec_every
            if j % keep_every == 0 and j // keep_every < n_keep:
                q = j // keep_every
                v_out[cell, q] = math.nan if bad else ws[V_]
                if rec_cai:
                    cai_out[cell, q] = math.nan if bad else ws[CAI]
        if k == n_steps:
            break
        if bad:
            continue
        n_c = min(float(max_sub), max(1.0, _ceil(abs(dvdt) * dt / dv_max)))
        h = dt / n_c
        t = k * dt
        for sub in range(int(n_c)):
            v = ws[V_]
            i_stim = _stimulus(t + sub * h, stim_amp, stim_start, stim_period, stim_width)
            voltage_terms(ws, 0, 1, v, h)
            dvdt = advance(ws, 0, 1, v, h, i_stim, False, False, True, False, 0)
        v = ws[V_]
        if not (abs(v) < V_LIMIT and math.isfinite(ws[CAI])):
            bad = True
            dvdt = 0.0
            for r in range(N_STATE_ROWS):
                ws[r] = y0[cell, r]
    unstable[cell] = 1 if bad else 0
    for r in range(N_STATE_ROWS):
        final_state[cell, r] = math.nan if bad else ws[r]


_COMPILED: dict = {}
MAX_REGISTERS_ENV = "CARDIOTWIN_GPU_MAX_REGISTERS"  # a tuning knob (benchmarks/bench_gpu.py)

#: seconds of the last simulate_*_gpu call: host-to-device copies, kernels (synchronized),
#: device-to-host copies, number of launches (the last run only, for current clamp)
last_timings: dict = {}


def kernel(name: str):
    """The CUDA kernel ``"vc"``, ``"vc_currents"`` or ``"cc"`` (numba compiles it for the
    argument types on its first launch; the dispatcher is made once per process). With
    $CARDIOTWIN_GPU_MAX_REGISTERS set, the kernels are compiled with that register cap."""
    _require_cuda()
    if name not in _COMPILED:
        py = {"vc": lambda: _make_voltage_clamp_kernel(False),
              "vc_currents": lambda: _make_voltage_clamp_kernel(True),
              "cc": lambda: _current_clamp_kernel}[name]()
        opts = {}
        if os.environ.get(MAX_REGISTERS_ENV) and not simulator_enabled():
            opts["max_registers"] = int(os.environ[MAX_REGISTERS_ENV])
        _COMPILED[name] = cuda.jit(**opts)(py)
    return _COMPILED[name]


class _Timer:
    def __init__(self):
        self.t = {"h2d_s": 0.0, "kernel_s": 0.0, "d2h_s": 0.0, "launches": 0}
        self._t0 = time.perf_counter()

    def lap(self, key: str) -> None:
        if key == "kernel_s":
            cuda.synchronize()
            self.t["launches"] += 1
        now = time.perf_counter()
        self.t[key] += now - self._t0
        self._t0 = now

    def publish(self) -> None:
        last_timings.clear()
        last_timings.update(self.t)


# ---------------------------------------------------------------------------------- launches

def _run_chunked(n: int, chunk: int, threads_per_block: int, cp: np.ndarray, y0: np.ndarray,
                 outputs: list, launch) -> None:
    """Launch a kernel over the ``n`` cells ``chunk`` at a time: upload each chunk's constants
    ``cp`` and initial states ``y0``, call ``launch((blocks, threads), d_cp, d_y0, m)`` for its
    ``m`` cells, copy each (device array, host array) of ``outputs`` back into the chunk's rows;
    the transfer and kernel times go to :data:`last_timings`."""
    timer = _Timer()
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        m = b - a
        d_cp = cuda.to_device(np.ascontiguousarray(cp[a:b]))
        d_y0 = cuda.to_device(np.ascontiguousarray(y0[a:b]))
        timer.lap("h2d_s")
        launch(_grid(m, threads_per_block), d_cp, d_y0, m)
        timer.lap("kernel_s")
        for dev, host in outputs:
            dev[:m].copy_to_host(host[a:b])
        timer.lap("d2h_s")
    timer.publish()


def _launch_cells(n: int, bytes_per_cell: int, max_cells_per_launch: int | None) -> int:
    if max_cells_per_launch is not None:
        if int(max_cells_per_launch) < 1:
            raise ValueError(f"max_cells_per_launch must be >= 1, found {max_cells_per_launch}")
        return min(n, int(max_cells_per_launch))
    cells = DEFAULT_LAUNCH_CELLS
    if not simulator_enabled():
        try:
            free, _ = cuda.current_context().get_memory_info()
            cells = max(1, int(MEMORY_FRACTION * free) // bytes_per_cell)
        except Exception:
            pass
    return max(1, min(n, cells))


def _grid(m: int, threads_per_block: int) -> tuple[int, int]:
    if int(threads_per_block) < 1:
        raise ValueError(f"threads_per_block must be >= 1, found {threads_per_block}")
    tpb = min(int(threads_per_block), m) if simulator_enabled() else int(threads_per_block)
    return (m + tpb - 1) // tpb, tpb


def _check_decimate(decimate) -> int:
    k = int(decimate)
    if k != decimate or k < 1:
        raise ValueError(f"decimate must be a positive integer (keep every k-th sample), "
                         f"found {decimate!r}")
    return k


def simulate_voltage_clamp_gpu(protocol, inputs=None, *, temperature_K: float | None = None,
                               record_currents: bool = False, initial_state=None,
                               decimate: int = 1, max_cells_per_launch: int | None = None,
                               threads_per_block: int = THREADS_PER_BLOCK
                               ) -> VoltageClampResult:
    """:func:`cardiotwin.simulate.simulate_voltage_clamp` on the GPU: same arguments, same
    result (I_total within rounding of the CPU's). GPU-only options: ``decimate`` k keeps
    every k-th sample (the result equals the CPU result's ``[:, ::k]``, t_ms and v_mV
    included), ``max_cells_per_launch`` (default: what fits in half the free GPU memory),
    ``threads_per_block``."""
    _require_cuda()
    keep = _check_decimate(decimate)
    protocol, cp, y0, rec_every, dt, seg_n, v0, v1 = vc_setup(protocol, inputs, temperature_K,
                                                              initial_state)
    n = cp.shape[0]
    n_keep = -(-protocol.n_samples // keep)
    n_cur = N_CURRENTS if record_currents else 0
    itot = np.empty((n, n_keep), np.float32)
    cur = np.empty((n, n_cur, n_keep), np.float32)  # (n, 0, n_keep) without currents
    final = np.empty((n, N_STATES))
    unstable = np.zeros(n, np.uint8)
    per_cell = 4 * n_keep * (1 + n_cur) + 8 * (N_CP + 2 * N_STATES) + 1
    chunk = _launch_cells(n, per_cell, max_cells_per_launch)
    k = kernel("vc_currents" if record_currents else "vc")
    d_seg = [cuda.to_device(np.ascontiguousarray(a)) for a in (seg_n * rec_every, v0, v1)]
    d_itot = cuda.device_array((chunk, n_keep), np.float32)
    d_cur = cuda.device_array((chunk, n_cur, n_keep) if record_currents else (1, 1, 1),
                              np.float32)
    d_final = cuda.device_array((chunk, N_STATES), np.float64)
    d_bad = cuda.device_array(chunk, np.uint8)
    outputs = [(d_itot, itot), (d_final, final), (d_bad, unstable)]
    if record_currents:
        outputs.append((d_cur, cur))
    _run_chunked(n, chunk, threads_per_block, cp, y0, outputs,
                 lambda grid, d_cp, d_y0, m: k[grid](
                     d_cp, d_y0, *d_seg, dt, rec_every, keep, d_itot[:m],
                     d_cur[:m] if record_currents else d_cur, d_final[:m], d_bad[:m]))
    currents = ({name: cur[:, i, :] for i, name in enumerate(CURRENT_NAMES)}
                if record_currents else None)
    return VoltageClampResult(protocol.times_ms()[::keep], protocol.command_voltage()[::keep],
                              itot, currents, final, unstable.astype(bool),
                              protocol.protocol_hash)


def simulate_current_clamp_gpu(duration_ms: float, inputs=None, *, temperature_K: float = 310.0,
                               record_interval_ms: float = 0.1, pacing: Pacing | None = None,
                               prepace_ms: float = 0.0, initial_state=None,
                               dv_max_mV: float = 0.5, max_substeps: int = 64,
                               seal: SealLeak | None = None,
                               decimate: int = 1, record_cai: bool = True,
                               max_cells_per_launch: int | None = None,
                               threads_per_block: int = THREADS_PER_BLOCK
                               ) -> CurrentClampResult:
    """:func:`cardiotwin.simulate.simulate_current_clamp` on the GPU: same arguments, same
    result (V within rounding of the CPU's). GPU-only options: ``decimate`` k keeps every
    k-th sample (equal to the CPU result's ``[:, ::k]``), ``record_cai`` False leaves
    ``cai_mM`` None (half the transfer), ``max_cells_per_launch``, ``threads_per_block``."""
    _require_cuda()
    keep = _check_decimate(decimate)
    cp, y0, rec_every, dt, n_rec, amp, stim = cc_setup(
        duration_ms, inputs, temperature_K, record_interval_ms, pacing, prepace_ms,
        initial_state, seal)
    n = cp.shape[0]
    k = kernel("cc")

    def run(y_start, n_steps, every, n_out, keep_every, start_ms, want_cai):
        v_out = np.empty((n, n_out), np.float32)
        cai_out = np.empty((n, n_out) if want_cai else (n, 0), np.float32)
        final = np.empty((n, N_STATES))
        bad = np.zeros(n, np.uint8)
        per_cell = 4 * n_out * (2 if want_cai else 1) + 8 * (N_CP + 2 * N_STATES) + 1
        chunk = _launch_cells(n, per_cell, max_cells_per_launch)
        d_v = cuda.device_array((chunk, n_out), np.float32)
        d_cai = cuda.device_array((chunk, n_out) if want_cai else (1, 1), np.float32)
        d_final = cuda.device_array((chunk, N_STATES), np.float64)
        d_bad = cuda.device_array(chunk, np.uint8)
        outputs = [(d_v, v_out), (d_final, final), (d_bad, bad)]
        if want_cai:
            outputs.append((d_cai, cai_out))
        _run_chunked(n, chunk, threads_per_block, cp, y_start, outputs,
                     lambda grid, d_cp, d_y0, m: k[grid](
                         d_cp, d_y0, n_steps, dt, every, keep_every, amp,
                         stim.start_ms - start_ms, stim.period_ms, stim.width_ms, dv_max_mV,
                         max_substeps, want_cai, d_v[:m], d_cai[:m] if want_cai else d_cai,
                         d_final[:m], d_bad[:m]))
        return v_out, (cai_out if want_cai else None), final, bad.astype(bool)

    pre_unstable = np.zeros(n, np.bool_)
    if prepace_ms > 0:
        n_pre = int(round(prepace_ms / dt))
        _, _, y_pre, pre_unstable = run(y0, n_pre, n_pre + 1, 1, 1, 0.0, False)
        y0 = np.where(pre_unstable[:, None], y0, y_pre)
        offset = n_pre * dt
    else:
        offset = 0.0
    n_keep = -(-(n_rec + 1) // keep)
    v, cai, final, unstable = run(y0, n_rec * rec_every, rec_every, n_keep, keep, offset,
                                  bool(record_cai))
    unstable |= pre_unstable
    v[pre_unstable] = np.nan
    if cai is not None:
        cai[pre_unstable] = np.nan
    final[pre_unstable] = np.nan
    t = (np.arange(n_rec + 1) * record_interval_ms)[::keep]
    return CurrentClampResult(t, v, cai, final, unstable)
