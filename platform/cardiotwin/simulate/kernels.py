"""Batched numba kernels: cells in SIMD lanes of CHUNK, chunks in parallel over cores.

Each chunk owns one flat workspace (see model.equations for the row layout); the time loop is
outside and the loop over lanes inside, so LLVM vectorizes the lane loop. A cell that becomes
numerically unstable (non-finite values, |V| > 250 mV) is flagged, its lane is reset to its
initial state so it cannot produce NaN, and its outputs from then on are NaN; other cells are
unaffected.

The kernels are compiled without numba's reference counting (``_nrt=False``): its incref/decref
calls inside the lane loop stop LLVM from vectorizing it. So they allocate nothing; the caller
passes the workspace (``workspace(n_cells)``).
"""

from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ..model import late_sodium
from ..model.artefacts import N_PROPAGATOR, artefact_step, membrane_after_step
from ..model.equations import (
    CAI,
    CP0,
    CP_TFAC,
    CUR0,
    ITOT,
    N_CP,
    N_CURRENTS,
    N_ROWS,
    N_STATE_ROWS,
    RYR_HOT,
    V_,
    advance,
    voltage_terms,
)
from ..storage.identity import sha256_bytes


def _drop_stale_cache() -> None:
    """numba's on-disk cache keys on this file only; the kernels also inline model/equations.py
    and vecmath.py, so drop the cached kernels when those change."""
    root = Path(__file__).resolve().parent.parent
    digest = sha256_bytes(b"".join(
        (root / rel).read_bytes()
        for rel in ("model/equations.py", "model/artefacts.py", "model/late_sodium.py",
                    "vecmath.py")))
    cache = Path(__file__).resolve().parent / "__pycache__"
    stamp = cache / "kernels.inlined-sources.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for f in cache.glob("kernels.*.nb[ic]"):
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # read-only install: numba falls back to its own cache directory
        pass


_drop_stale_cache()

CHUNK = 16  # lanes per workspace; a multiple of the SIMD width
V_LIMIT = 250.0  # mV: beyond this a cell is numerically unstable
N_WS = N_ROWS + 3  # workspace rows: the model's, then unstable flag, dV/dt, sub-step count
BAD = N_ROWS
DVDT = N_ROWS + 1
NSUB = N_ROWS + 2
# the artefact clamp's extra rows: V_est, I_out (model.artefacts), then the propagator
# (and one scratch row for the V_m of the step's ionic currents); DVDT holds the step's
# recorded current
VEST = N_WS
PROP = VEST + 2  # the propagator of a step dt, then of a sub-step dt / EDGE_SUBSTEPS
PROP_FINE = PROP + N_PROPAGATOR
VSTEP = PROP_FINE + N_PROPAGATOR  # V_m at which the step's ionic currents are evaluated
VTERMS = VSTEP + 1  # V_m at which the lane's voltage terms were last computed
N_WS_ARTEFACT = VTERMS + 1
VTERMS_TOL_MV = 0.05  # mV: gate steady states and time constants move by < 0.3% below this
EDGE_MS = 3.0  # ms after each command edge integrated in sub-steps ...
EDGE_SUBSTEPS = 8  # ... of dt / EDGE_SUBSTEPS

# the current-clamp variant's extra rows (current_clamp_kernel_variant): the late sodium
# current's (model.late_sodium) from NAL0, then one charge accumulator per CHARGE_CURRENTS
NAL0 = N_WS
Q0 = NAL0 + late_sodium.N_ROWS
CHARGE_CURRENTS = ("IKr", "ICaL", "INaL", "IKs", "IK1", "Ito")   # the CiPA qNet currents
N_Q = len(CHARGE_CURRENTS)
N_WS_CC_VARIANT = Q0 + N_Q
_JIT = dict(parallel=True, nogil=True, error_model="numpy", cache=True, _nrt=False,
            fastmath={"contract"})  # nogil: a served twin simulates while requests parse


def n_chunks(n_cells: int) -> int:
    """Number of CHUNK-lane workspaces for n_cells."""
    return (n_cells + CHUNK - 1) // CHUNK


def workspace(n_cells: int, rows: int = N_WS, dtype=np.float64) -> np.ndarray:
    """Workspace for the kernels: (n_chunks, rows * CHUNK) of ``dtype`` (float32 for the
    float32 twin, simulate.precision; N_WS_ARTEFACT rows for the artefact clamp)."""
    return np.zeros((n_chunks(n_cells), rows * CHUNK), dtype)


@numba.njit(inline="always")
def _load_chunk(ws, cp, y0, c0, n):
    for c in range(CHUNK):
        cell = min(c0 + c, n - 1)  # padding lanes repeat the last cell
        for r in range(N_STATE_ROWS):
            ws[r * CHUNK + c] = y0[cell, r]
        for r in range(N_CP):
            ws[(CP0 + r) * CHUNK + c] = cp[cell, r]
        for r in range(N_CURRENTS):
            ws[(CUR0 + r) * CHUNK + c] = 0.0
        ws[BAD * CHUNK + c] = 0.0
        ws[DVDT * CHUNK + c] = 0.0
        ws[NSUB * CHUNK + c] = 0.0
        ws[RYR_HOT * CHUNK + c] = 0.0


@numba.njit(inline="always")
def _store_chunk(ws, final_state, unstable, c0, n):
    for c in range(CHUNK):
        cell = c0 + c
        if cell < n:
            bad = ws[BAD * CHUNK + c] != 0.0
            unstable[cell] = bad
            for r in range(N_STATE_ROWS):
                final_state[cell, r] = np.nan if bad else ws[r * CHUNK + c]


@numba.njit(inline="always")
def _any_hot(ws) -> bool:
    """Whether some lane's RyR chain was near stiff at its last step (model.equations.RYR_HOT):
    then the chunk steps with the backward Euler branch compiled in."""
    hot = 0.0
    for c in range(CHUNK):
        hot = max(hot, ws[RYR_HOT * CHUNK + c])
    return hot > 0.0


@numba.njit(inline="always")
def _reset_lane(ws, y0, cell, c):
    for r in range(N_STATE_ROWS):
        ws[r * CHUNK + c] = y0[cell, r]


def _make_voltage_clamp_kernel(store_currents):
    @numba.njit(**_JIT)
    def kernel(wsall, cp, y0, seg_n, seg_v0, seg_v1, dt, rec_every, itot_out, cur_out,
               final_state, unstable):
        """Voltage clamp of n cells on a protocol of segments.

        wsall from workspace(n); cp (n, N_CP) per-cell constants; y0 (n, 23) initial states;
        seg_n (steps of dt per segment), seg_v0/seg_v1 (mV, ramp when different); dt (ms).
        Sample k (every ``rec_every`` steps) holds I_ion at t = k * rec_every * dt with
        V = command(t) and the state reached at t.
        Writes itot_out (n, n_rec), cur_out (n, 13, n_rec) when store_currents (a compile-time
        constant, so the lane loop has no branch), final_state, unstable.
        """
        n = cp.shape[0]
        for ch in prange(wsall.shape[0]):
            ws = wsall[ch]
            c0 = ch * CHUNK
            _load_chunk(ws, cp, y0, c0, n)
            k = 0
            for s in range(seg_n.size):
                ns = seg_n[s]
                v0 = seg_v0[s]
                dv = (seg_v1[s] - v0) / float(ns)  # float(): the float32 twin stays float32
                ramp = seg_v1[s] != v0
                for i in range(ns):
                    v = v0 + dv * float(i)
                    if i == 0 or ramp:
                        for c in range(CHUNK):
                            voltage_terms(ws, c, CHUNK, v, dt)
                    if _any_hot(ws):
                        for c in range(CHUNK):
                            ws[V_ * CHUNK + c] = v
                            advance(ws, c, CHUNK, v, dt, 0.0, True, store_currents, True)
                    else:
                        for c in range(CHUNK):
                            ws[V_ * CHUNK + c] = v
                            advance(ws, c, CHUNK, v, dt, 0.0, True, store_currents, False)
                    if k % rec_every == 0:
                        j = k // rec_every
                        for c in range(CHUNK):
                            cell = c0 + c
                            if cell >= n:
                                continue
                            itot = ws[ITOT * CHUNK + c]
                            if not np.isfinite(itot):
                                ws[BAD * CHUNK + c] = 1.0
                            bad = ws[BAD * CHUNK + c] != 0.0
                            if bad:
                                _reset_lane(ws, y0, cell, c)
                            itot_out[cell, j] = np.nan if bad else itot
                            if store_currents:
                                for q in range(N_CURRENTS):
                                    cur_out[cell, q, j] = (np.nan if bad
                                                           else ws[(CUR0 + q) * CHUNK + c])
                    k += 1
            _store_chunk(ws, final_state, unstable, c0, n)

    return kernel


#: voltage_clamp_kernel[store_currents](wsall, cp, y0, seg_n, seg_v0, seg_v1, dt, rec_every,
#:                                       itot_out, cur_out, final_state, unstable)
voltage_clamp_kernel = {False: _make_voltage_clamp_kernel(False),
                        True: _make_voltage_clamp_kernel(True)}


@numba.njit(inline="always")
def _artefact_substep(ws, prow, v_cmd, h, weight, store_currents):
    """One (sub-)step h (ms) of the artefact clamp for every lane: V_m predicted with the last
    I_ion, the voltage terms moved to it lane by lane once it is VTERMS_TOL_MV away, the cell
    model advanced at it, then the exact amplifier step with the propagator at row prow; adds
    weight times the sub-step's mean recorded current to row DVDT."""
    moved = 0.0
    for c in range(CHUNK):
        vm = membrane_after_step(ws, c, CHUNK, VEST, prow, v_cmd, ws[ITOT * CHUNK + c])
        ws[VSTEP * CHUNK + c] = vm
        far = abs(vm - ws[VTERMS * CHUNK + c]) > VTERMS_TOL_MV
        ws[VTERMS * CHUNK + c] = vm if far else ws[VTERMS * CHUNK + c]
        moved = max(moved, 1.0 if far else 0.0)
    if moved > 0.0:  # recomputing a lane at the same V changes nothing in it
        for c in range(CHUNK):
            voltage_terms(ws, c, CHUNK, ws[VTERMS * CHUNK + c], h)
    if _any_hot(ws):
        for c in range(CHUNK):
            advance(ws, c, CHUNK, ws[VSTEP * CHUNK + c], h, 0.0, True, store_currents, True)
    else:
        for c in range(CHUNK):
            advance(ws, c, CHUNK, ws[VSTEP * CHUNK + c], h, 0.0, True, store_currents, False)
    for c in range(CHUNK):
        ws[DVDT * CHUNK + c] += weight * artefact_step(ws, c, CHUNK, VEST, prow, v_cmd,
                                                       ws[ITOT * CHUNK + c])


def _make_artefact_clamp_kernel(store_currents):
    @numba.njit(**_JIT)
    def kernel(wsall, cp, y0, prop, prop_fine, seg_n, seg_v0, seg_v1, dt, rec_every,
               edge_steps, iout_out, record_vm, vm_out, cur_out, final_state, unstable):
        """Voltage clamp of n cells through the amplifier and seal (model.artefacts): like
        voltage_clamp_kernel, but the membrane follows V_m of equations (1)-(4), so the gates'
        voltage terms are updated every step, and sample k holds the recorded current I_out
        (pA/pF of Cm*) averaged over the step from t_k, and vm_out (when record_vm) the V_m
        at which that step's ionic currents (cur_out) were evaluated (see model.artefacts).
        prop (n, N_PROPAGATOR) from model.artefacts.propagators(table, dt); wsall from
        workspace(n, N_WS_ARTEFACT). The command is taken at mid-step on ramps.
        """
        n = cp.shape[0]
        for ch in prange(wsall.shape[0]):
            ws = wsall[ch]
            c0 = ch * CHUNK
            _load_chunk(ws, cp, y0, c0, n)
            for c in range(CHUNK):
                cell = min(c0 + c, n - 1)
                ws[ITOT * CHUNK + c] = 0.0
                ws[VTERMS * CHUNK + c] = np.inf  # the first step computes them
                ws[V_ * CHUNK + c] = seg_v0[0]
                ws[VEST * CHUNK + c] = seg_v0[0]
                ws[(VEST + 1) * CHUNK + c] = 0.0
                for r in range(N_PROPAGATOR):
                    ws[(PROP + r) * CHUNK + c] = prop[cell, r]
                    ws[(PROP_FINE + r) * CHUNK + c] = prop_fine[cell, r]
            k = 0
            was_fine = False
            for s in range(seg_n.size):
                ns = seg_n[s]
                v0 = seg_v0[s]
                dv = (seg_v1[s] - v0) / float(ns)
                for i in range(ns):
                    # the first EDGE_STEPS steps after a command edge in EDGE_SUBSTEPS sub-steps
                    # (INa and the capacitive transient), the others in one
                    fine = i < edge_steps
                    n_sub = EDGE_SUBSTEPS if fine else 1
                    h = dt / float(n_sub)
                    prow = PROP_FINE if fine else PROP
                    if fine != was_fine:  # the gates' decay factors are for the other step
                        for c in range(CHUNK):
                            ws[VTERMS * CHUNK + c] = np.inf
                    was_fine = fine
                    for c in range(CHUNK):
                        ws[DVDT * CHUNK + c] = 0.0
                    for sub in range(n_sub):
                        v_cmd = v0 + dv * (float(i) + (float(sub) + 0.5) / float(n_sub))
                        _artefact_substep(ws, prow, v_cmd, h, 1.0 / float(n_sub),
                                          store_currents)
                    if k % rec_every == 0:
                        j = k // rec_every
                        for c in range(CHUNK):
                            cell = c0 + c
                            if cell >= n:
                                continue
                            i_rec = ws[DVDT * CHUNK + c]
                            if not (np.isfinite(i_rec) and abs(ws[V_ * CHUNK + c]) < V_LIMIT):
                                ws[BAD * CHUNK + c] = 1.0
                            bad = ws[BAD * CHUNK + c] != 0.0
                            if bad:
                                _reset_lane(ws, y0, cell, c)
                                ws[V_ * CHUNK + c] = seg_v0[0]
                                ws[VEST * CHUNK + c] = seg_v0[0]
                                ws[(VEST + 1) * CHUNK + c] = 0.0
                            iout_out[cell, j] = np.nan if bad else i_rec
                            if record_vm:
                                vm_out[cell, j] = np.nan if bad else ws[VSTEP * CHUNK + c]
                            if store_currents:
                                for q in range(N_CURRENTS):
                                    cur_out[cell, q, j] = (np.nan if bad
                                                           else ws[(CUR0 + q) * CHUNK + c])
                    k += 1
            _store_chunk(ws, final_state, unstable, c0, n)

    return kernel


#: artefact_clamp_kernel[store_currents](wsall, cp, y0, prop, prop_fine, seg_n, seg_v0, seg_v1,
#:     dt, rec_every, edge_steps, iout_out, record_vm, vm_out, cur_out, final_state, unstable)
artefact_clamp_kernel = {False: _make_artefact_clamp_kernel(False),
                         True: _make_artefact_clamp_kernel(True)}


@intrinsic
def _floor(typingctx, x):
    """floor(x) of a float64 (or float32) as the LLVM intrinsic (what np.floor compiles to on
    the CPU, so it vectorizes); unlike np.floor it also compiles for numba's CUDA target
    (simulate.cuda)."""
    if x not in (types.float32, types.float64):
        return None
    sig = x(x)

    def codegen(context, builder, signature, args):
        ty = ir.FloatType() if signature.args[0] == types.float32 else ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.floor", [ty])
        return builder.call(fn, args)

    return sig, codegen


@numba.njit(inline="always")
def _stimulus(t, amp, start, period, width):
    """Stimulus (pA/pF) at t (ms); floor instead of % so that it vectorizes. Shared with the
    CUDA kernels (simulate.cuda)."""
    x = t - start
    phase = x - period * _floor(x / period)
    return amp if (x >= 0.0) & (phase < width) else 0.0


@numba.njit(inline="always")
def _cc_substep(ws, c, sub, dt, t, stim_amp, stim_start, stim_period, stim_width, stiff_ryr,
                late_na=False, charge=False):
    """Sub-step ``sub`` of lane c (of its NSUB sub-steps of the outer step dt at t ms; past
    them h = 0, an exact no-op). ``late_na``, ``charge`` (compile-time constants): the
    variant's late sodium current, and its charge accumulators (h x each CHARGE_CURRENTS
    current at the sub-step's start)."""
    n_c = ws[NSUB * CHUNK + c]
    active = sub < n_c
    h = dt / n_c if active else 0.0
    v = ws[V_ * CHUNK + c]
    i_stim = _stimulus(t + float(sub) * h, stim_amp, stim_start, stim_period, stim_width)
    voltage_terms(ws, c, CHUNK, v, h)
    if late_na:
        late_sodium.voltage_terms(ws, c, CHUNK, v, h, ws[CP_TFAC * CHUNK + c], NAL0)
    d = advance(ws, c, CHUNK, v, h, i_stim, False, charge, stiff_ryr, late_na, NAL0)
    if charge:
        ws[Q0 * CHUNK + c] += h * ws[(CUR0 + 2) * CHUNK + c]                      # I_Kr
        ws[(Q0 + 1) * CHUNK + c] += h * ws[(CUR0 + 4) * CHUNK + c]                # I_CaL
        ws[(Q0 + 2) * CHUNK + c] += h * ws[(NAL0 + late_sodium.I_) * CHUNK + c]   # I_NaL
        ws[(Q0 + 3) * CHUNK + c] += h * ws[(CUR0 + 3) * CHUNK + c]                # I_Ks
        ws[(Q0 + 4) * CHUNK + c] += h * ws[(CUR0 + 0) * CHUNK + c]                # I_K1
        ws[(Q0 + 5) * CHUNK + c] += h * ws[(CUR0 + 1) * CHUNK + c]                # I_to
    ws[DVDT * CHUNK + c] = d if active else ws[DVDT * CHUNK + c]


@numba.njit(inline="always")
def _load_variant(ws, nal_y0, nal_g, c0, n, late_na):
    """The variant's rows of a chunk: late sodium gates and conductance, zero charges."""
    for c in range(CHUNK):
        cell = min(c0 + c, n - 1)
        for r in range(late_sodium.N_ROWS):
            ws[(NAL0 + r) * CHUNK + c] = 0.0
        if late_na:
            ws[(NAL0 + late_sodium.ML) * CHUNK + c] = nal_y0[cell, 0]
            ws[(NAL0 + late_sodium.HL) * CHUNK + c] = nal_y0[cell, 1]
            ws[(NAL0 + late_sodium.G) * CHUNK + c] = nal_g[cell]
        for q in range(N_Q):
            ws[(Q0 + q) * CHUNK + c] = 0.0


@numba.njit(inline="always")
def _cc_chunk(ws, c0, n, cp, y0, n_steps, dt, rec_every, stim_amp, stim_start, stim_period,
              stim_width, dv_max, max_sub, v_out, cai_out, final_state, unstable, late_na,
              charge, nal_y0, nal_g, nal_final, q_out):
    """One chunk of current_clamp_kernel (or, with late_na / charge, of its variant)."""
    n_rec = v_out.shape[1]
    _load_chunk(ws, cp, y0, c0, n)
    if late_na or charge:
        _load_variant(ws, nal_y0, nal_g, c0, n, late_na)
    for k in range(n_steps + 1):
        if k % rec_every == 0 and k // rec_every < n_rec:
            j = k // rec_every
            for c in range(CHUNK):
                if c0 + c < n:
                    bad = ws[BAD * CHUNK + c] != 0.0
                    v_out[c0 + c, j] = np.nan if bad else ws[V_ * CHUNK + c]
                    cai_out[c0 + c, j] = np.nan if bad else ws[CAI * CHUNK + c]
        if k == n_steps:
            break
        most = 0.0
        for c in range(CHUNK):
            rate = abs(ws[DVDT * CHUNK + c])
            n_c = min(float(max_sub), max(1.0, np.ceil(rate * dt / dv_max)))
            n_c = 0.0 if ws[BAD * CHUNK + c] != 0.0 else n_c
            ws[NSUB * CHUNK + c] = n_c
            most = max(most, n_c)
        t = float(k) * dt
        for sub in range(int(most)):
            if _any_hot(ws):
                for c in range(CHUNK):
                    _cc_substep(ws, c, sub, dt, t, stim_amp, stim_start, stim_period,
                                stim_width, True, late_na, charge)
            else:
                for c in range(CHUNK):
                    _cc_substep(ws, c, sub, dt, t, stim_amp, stim_start, stim_period,
                                stim_width, False, late_na, charge)
            for c in range(CHUNK):
                v = ws[V_ * CHUNK + c]
                if not (abs(v) < V_LIMIT and np.isfinite(ws[CAI * CHUNK + c])):
                    ws[BAD * CHUNK + c] = 1.0
                    ws[DVDT * CHUNK + c] = 0.0
                    ws[NSUB * CHUNK + c] = 0.0
                    _reset_lane(ws, y0, min(c0 + c, n - 1), c)
                    if late_na:
                        ws[(NAL0 + late_sodium.ML) * CHUNK + c] = nal_y0[min(c0 + c, n - 1), 0]
                        ws[(NAL0 + late_sodium.HL) * CHUNK + c] = nal_y0[min(c0 + c, n - 1), 1]
    _store_chunk(ws, final_state, unstable, c0, n)
    if late_na or charge:
        for c in range(CHUNK):
            cell = c0 + c
            if cell < n:
                bad = ws[BAD * CHUNK + c] != 0.0
                if late_na:
                    nal_final[cell, 0] = np.nan if bad else ws[(NAL0 + late_sodium.ML) * CHUNK + c]
                    nal_final[cell, 1] = np.nan if bad else ws[(NAL0 + late_sodium.HL) * CHUNK + c]
                if charge:
                    for q in range(N_Q):
                        q_out[cell, q] = np.nan if bad else ws[(Q0 + q) * CHUNK + c]


@numba.njit(**_JIT)
def current_clamp_kernel(wsall, cp, y0, n_steps, dt, rec_every, stim_amp, stim_start, stim_period,
                         stim_width, dv_max, max_sub, v_out, cai_out, final_state, unstable):
    """Free-running (or paced) membrane potential of n cells for n_steps of dt (ms).

    Adaptive sub-stepping per cell: each dt is split into n_c = ceil(|dV/dt| * dt / dv_max)
    equal sub-steps (at most max_sub), |dV/dt| from the cell's previous sub-step, so upstrokes are
    resolved to ~dv_max mV per step. The chunk runs max(n_c) sub-steps; a lane past its own n_c
    steps with h = 0, an exact no-op, so every cell's trace is independent of its batch.
    Unstable lanes are reset to their initial state and frozen (n_c = 0).
    Stimulus: stim_amp (pA/pF, depolarizing) for stim_width ms every stim_period ms from
    stim_start (none when stim_amp = 0). Records V (mV) and Cai (mM) at t = 0, rec_every*dt, ...
    into v_out/cai_out (n, n_rec). Pass rec_every > n_steps to record only t = 0.
    """
    n = cp.shape[0]
    for ch in prange(wsall.shape[0]):
        # the variant's arrays are not touched (late_na, charge False): any 2-D arrays do
        _cc_chunk(wsall[ch], ch * CHUNK, n, cp, y0, n_steps, dt, rec_every, stim_amp,
                  stim_start, stim_period, stim_width, dv_max, max_sub, v_out, cai_out,
                  final_state, unstable, False, False, y0, cp[:, 0], final_state, final_state)


def _make_current_clamp_variant(late_na, charge):
    @numba.njit(**_JIT)
    def kernel(wsall, cp, y0, n_steps, dt, rec_every, stim_amp, stim_start, stim_period,
               stim_width, dv_max, max_sub, v_out, cai_out, final_state, unstable, nal_y0,
               nal_g, nal_final, q_out):
        """current_clamp_kernel with the late sodium current (late_na: model.late_sodium;
        nal_y0 (n, 2) initial mL, hL; nal_g (n,) G_NaL x scale, nS/pF; nal_final (n, 2)) and/or
        the charge (charge: q_out (n, N_Q) pA/pF ms of each CHARGE_CURRENTS current over the
        run). wsall from workspace(n, N_WS_CC_VARIANT)."""
        n = cp.shape[0]
        for ch in prange(wsall.shape[0]):
            _cc_chunk(wsall[ch], ch * CHUNK, n, cp, y0, n_steps, dt, rec_every, stim_amp,
                      stim_start, stim_period, stim_width, dv_max, max_sub, v_out, cai_out,
                      final_state, unstable, late_na, charge, nal_y0, nal_g, nal_final, q_out)

    return kernel


#: current_clamp_kernel_variant[(late_na, charge)](... as current_clamp_kernel ..., nal_y0,
#:                                                  nal_g, nal_final, q_out)
current_clamp_kernel_variant = {(True, True): _make_current_clamp_variant(True, True),
                                (True, False): _make_current_clamp_variant(True, False),
                                (False, True): _make_current_clamp_variant(False, True)}
