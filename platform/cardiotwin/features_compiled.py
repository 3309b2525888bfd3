"""Compiled (numba) status and biomarkers of a batch of clean traces: the fast path of
:func:`cardiotwin.features.classify_batch`.

:func:`classify_batch_compiled` computes, per cell, what :func:`cardiotwin.features.analyze_trace`
computes with the default :class:`~cardiotwin.features.FeatureConfig`, ``aggregate="median"``
and no ``i_stim`` on its noise-free path (no smoothing: noise SD <= ``noise_threshold_mV``, the
case of simulated traces): the status (ok / quiescent / non_repolarizing / unstable) and every
:data:`~cardiotwin.features.BATCH_KEYS` biomarker (ms, mV, V/s), the same numbers (the same
floating-point operations in the same order), without the reasons. A cell whose trace is noisy
(it would be smoothed) goes to ``analyze_trace`` (Python, per cell), as does a whole batch whose
trace is shorter than half the upstroke window (50 ms), where the Python filter has its own
edge behaviour. Any other configuration, override or aggregate is the Python path's
(``classify_batch`` passes those there).

The noise test is exact without a full median: noise_sd > threshold is decided from the number
of absolute second differences at or below the largest value whose noise SD is still <= the
threshold (and, for an even count on the boundary, from the two middle values).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .features import BATCH_KEYS, DEFAULT_CONFIG, STATUSES, analyze_trace, check_time_axis

#: Float biomarkers of the kernel's output, in column order (the others are counts).
FLOAT_KEYS = ("cycle_length_ms", "mdp_mV", "peak_mV", "amplitude_mV", "dvdt_max_V_per_s",
              "apd30_ms", "apd50_ms", "apd90_ms", "ead_fraction")
FALLBACK = -1          # status code: analyze_trace decides (noisy trace)
_OK, _QUIESCENT, _NON_REPOLARIZING, _UNSTABLE = range(4)
assert STATUSES == ("ok", "quiescent", "non_repolarizing", "unstable")

# thresholds passed to the kernel (indices into its ``thr`` array)
_MIN_AMP, _REARM, _EAD_MV, _EAD_MS, _REPOL, _STUCK, _QUIET, _MIN_PRE, _UNSTABLE_MV, \
    _NOISE_CUT, _NOISE_DIV, _NOISE_THR = range(12)
_NOISE_DIV_VALUE = 0.6745 * math.sqrt(6.0)     # as in features.noise_sd


def _noise_cut(threshold: float) -> float:
    """Largest x (mV) with x / (0.6745 sqrt 6) <= threshold in float64 (the division is
    monotone, so noise_sd > threshold exactly when the median exceeds it)."""
    x = threshold * _NOISE_DIV_VALUE
    while x / _NOISE_DIV_VALUE > threshold:
        x = float(np.nextafter(x, -np.inf))
    while float(np.nextafter(x, np.inf)) / _NOISE_DIV_VALUE <= threshold:
        x = float(np.nextafter(x, np.inf))
    return x


def _kernel_thresholds(cfg=DEFAULT_CONFIG) -> np.ndarray:
    return np.array([cfg.min_amplitude_mV, cfg.rearm_fraction, cfg.ead_threshold_mV,
                     cfg.ead_min_rise_ms, cfg.repolarized_mV, cfg.stuck_ms,
                     cfg.quiescent_after_ms, cfg.min_pre_ms, cfg.unstable_mV,
                     _noise_cut(cfg.noise_threshold_mV), _NOISE_DIV_VALUE,
                     cfg.noise_threshold_mV], dtype=np.float64)


@njit(cache=True, error_model="numpy")
def _noisy(v, n, cut, div, thr):
    """noise_sd(v[:n]) > thr, exactly (see the module docstring)."""
    m = n - 2
    n_le = 0
    for j in range(m):                   # branch-free count (vectorised)
        n_le += abs((v[j + 2] - v[j + 1]) - (v[j + 1] - v[j])) <= cut
    k = m // 2
    if m % 2 == 1:
        return n_le <= k                 # the middle value is above the cut
    if n_le >= k + 1:
        return False
    if n_le <= k - 1:
        return True
    max_le = -np.inf                     # the two middle values straddle the cut
    min_gt = np.inf
    for j in range(m):
        d = abs((v[j + 2] - v[j + 1]) - (v[j + 1] - v[j]))
        if d <= cut:
            max_le = max(max_le, d)
        else:
            min_gt = min(min_gt, d)
    return (max_le + min_gt) / 2.0 / div > thr


@njit(cache=True, error_model="numpy")
def _crossing_down(t, v, level, start, first, stop):
    """features._crossing_down(t, v, level, start, stop): first time in v[start:stop] at or below
    level (interpolated) and its index, else (NaN, -1), searching from ``first`` (v is above
    level on [start, first))."""
    for j in range(first, stop):
        if v[j] <= level:
            if j == start:
                return t[j], j
            x0 = v[j - 1]
            x1 = v[j]
            frac = (x0 - level) / (x0 - x1) if x0 != x1 else 1.0
            return t[j - 1] + frac * (t[j] - t[j - 1]), j
    return np.nan, -1


@njit(cache=True, error_model="numpy")
def _median(a, count):
    """np.median of a[:count] (sorts it in place); NaN when empty."""
    for i in range(1, count):            # insertion sort: a few dozen beats
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x
    if count == 0:
        return np.nan
    k = count // 2
    if count % 2 == 1:
        return a[k]
    return (a[k - 1] + a[k]) / 2.0


@njit(cache=True, error_model="numpy")
def _block_range(v, bs, be):
    """(min, max) of v[bs:be] (finite), over four interleaved accumulators (independent
    chains: min and max are exact in any order)."""
    lo0 = lo1 = lo2 = lo3 = hi0 = hi1 = hi2 = hi3 = v[bs]
    j = bs
    while j + 4 <= be:
        x0, x1, x2, x3 = v[j], v[j + 1], v[j + 2], v[j + 3]
        lo0 = x0 if x0 < lo0 else lo0
        lo1 = x1 if x1 < lo1 else lo1
        lo2 = x2 if x2 < lo2 else lo2
        lo3 = x3 if x3 < lo3 else lo3
        hi0 = x0 if x0 > hi0 else hi0
        hi1 = x1 if x1 > hi1 else hi1
        hi2 = x2 if x2 > hi2 else hi2
        hi3 = x3 if x3 > hi3 else hi3
        j += 4
    for k in range(j, be):
        x = v[k]
        lo0 = x if x < lo0 else lo0
        hi0 = x if x > hi0 else hi0
    return min(min(lo0, lo1), min(lo2, lo3)), max(max(hi0, hi1), max(hi2, hi3))


SUB_BLOCK = 64          # samples: the finer skip inside a block that may hold a start


@njit(cache=True, error_model="numpy")
def _upstroke_starts(v, n, w, hs, starts, min_amp):
    """Starts of the runs where v rises >= min_amp above its minimum over the trailing w
    samples (features: minimum_filter1d(2h+1, "nearest") shifted by h, w = 2h+1), by block
    suffix and running prefix minima (van Herk / Gil-Werman) over blocks of w. Exact skips:
    a block, then a sub-block of SUB_BLOCK samples, whose maximum is less than min_amp above
    a lower bound of every trailing minimum in it (the minimum of the span its windows cover)
    holds no candidate. Returns the number of starts."""
    ns = 0
    prev = False                         # the sample before is a candidate
    prev_min = np.inf                    # minimum of the block before
    for bs in range(0, n, w):
        be = min(bs + w, n)
        lo, top = _block_range(v, bs, be)
        floor = lo if lo < prev_min else prev_min
        prev_min = lo
        if not top - floor >= min_amp:
            prev = False                 # no rise of min_amp within this block: no start
            continue
        if bs > 0:                       # suffix minima of the block before
            x = v[bs - 1]
            hs[bs - 1] = x
            for j in range(bs - 2, bs - w - 1, -1):
                y = v[j]
                x = y if y < x else x
                hs[j] = x
        g = v[bs]                        # running minimum of this block
        for s0 in range(bs, be, SUB_BLOCK):
            s1 = min(s0 + SUB_BLOCK, be)
            a0 = s0 - w + 1              # windows of [s0, s1) lie in [a0, s1)
            sub_lo, sub_hi = _block_range(v, s0, s1)
            g_end = sub_lo if sub_lo < g else g      # the running minimum at s1 - 1
            bound = g_end
            if 0 < a0 < bs and hs[a0] < bound:
                bound = hs[a0]
            if not sub_hi - bound >= min_amp:
                prev = False             # no candidate in this sub-block
                g = g_end
                continue
            for j in range(s0, s1):      # window [j - w + 1, j]: a suffix of the block
                y = v[j]                 # before and a prefix of this one (all of this
                g = y if y < g else g    # one at j = bs + w - 1)
                a = j - w + 1
                trail = g if a <= 0 or a == bs else (hs[a] if hs[a] < g else g)
                cand = y - trail >= min_amp
                starts[ns] = j
                ns += cand and not prev
                prev = cand
    return ns


@njit(cache=True, error_model="numpy")
def _cell(t, v, n, dt, h, refr, psearch, thr, hs, starts, ups_s, ups_p, ups_m, buf, fout,
          iout):
    """One clean, finite trace: status code; biomarkers into fout (FLOAT_KEYS), counts into
    iout (n_beats, n_eads)."""
    ns = _upstroke_starts(v, n, 2 * h + 1, hs, starts, thr[_MIN_AMP])
    repol = thr[_REPOL]

    # --- accepted upstrokes (start, peak, MDP index = argmin since the previous peak); the
    # re-arm test comes before the peak search here (both must pass, neither has effects)
    nu = 0
    nxt = 0
    m = 0                                # argmin of v[lo:upto + 1], extended start by start
    upto = 0
    for q in range(ns):
        s = starts[q]
        if nu > 0 and s - ups_s[nu - 1] < refr:
            continue
        vm = v[m]
        for j in range(upto + 1, s + 1):
            if v[j] < vm:
                vm = v[j]
                m = j
        upto = s
        if nu > 0:                       # re-armed: fell enough below the previous peak
            pp = ups_p[nu - 1]
            amp_prev = v[pp] - v[ups_m[nu - 1]]
            if v[m] > v[pp] - thr[_REARM] * amp_prev:
                continue
        if nxt <= q:
            nxt = q + 1
        while nxt < ns and starts[nxt] < s + refr:
            nxt += 1
        stop = min(n, s + psearch)
        if nxt < ns:
            stop = min(stop, starts[nxt])
        p = s
        vp = v[s]
        for j in range(s + 1, stop):
            if v[j] > vp:
                vp = v[j]
                p = j
        if p >= n - 2:
            continue
        ups_s[nu] = s
        ups_p[nu] = p
        ups_m[nu] = m
        nu += 1
        m = p                            # the next MDP is searched from this peak
        upto = p

    # --- per-beat biomarkers into buf rows: mdp, peak, amp, dvdt (beats with MDP),
    # cycle (beats after the first), apd30, apd50, apd90 (complete beats)
    n_mdp = 0
    n_dvdt = 0
    n_cyc = 0
    n_apd = np.zeros(3, np.int64)
    n_complete = 0
    n_eads = 0
    n_bad = 0
    last_repolarized = False
    for k in range(nu):
        s = ups_s[k]
        p = ups_p[k]
        m = ups_m[k]
        has_mdp = not (k == 0 and m == 0 and t[s] - t[0] < thr[_MIN_PRE])
        peak = v[p]
        mdp = v[m]
        amp = peak - mdp
        level = mdp + 0.2 * amp
        i20 = m
        for j in range(p, m - 1, -1):
            if v[j] <= level:
                i20 = j
                break
        level = mdp + 0.8 * amp
        i80 = p
        for j in range(i20, p + 1):
            if v[j] >= level:
                i80 = j
                break
        u = i20
        dvmax = (v[i20 + 1] - v[i20]) / (t[i20 + 1] - t[i20])
        for j in range(i20 + 1, min(p, i80) + 1):
            d = (v[j + 1] - v[j]) / (t[j + 1] - t[j])
            if d > dvmax:
                dvmax = d
                u = j
        t_up = t[u] + 0.5 * (t[u + 1] - t[u])
        if has_mdp:
            buf[0, n_mdp] = mdp
            buf[1, n_mdp] = peak
            buf[2, n_mdp] = amp
            n_mdp += 1
            if np.isfinite(dvmax):
                buf[3, n_dvdt] = dvmax
                n_dvdt += 1
        if k:
            buf[4, n_cyc] = t[p] - t[ups_p[k - 1]]
            n_cyc += 1
        end = ups_s[k + 1] if k + 1 < nu else n
        # levels 30% > 50% > 90% down from the peak: each crossing is at or after the last
        l30 = peak - 0.3 * amp
        l50 = peak - 0.5 * amp
        l90 = peak - 0.9 * amp
        t30, j30 = _crossing_down(t, v, l30, p, p, end)
        t50, j50 = _crossing_down(t, v, l50, p, j30 if j30 >= 0 else end, end)
        t90, j90 = _crossing_down(t, v, l90, p, j50 if j50 >= 0 else end, end)
        if k + 1 < nu:                   # falls below repolarized_mV before the next upstroke
            first = p                    # (not before the crossing of a level above it)
            for lv, jv in ((l30, j30), (l50, j50), (l90, j90)):
                if lv >= repol:
                    first = max(first, jv if jv >= 0 else end)
            below = False
            for j in range(first, end):
                if v[j] <= repol:
                    below = True
                    break
            n_bad += not below
        last_repolarized = j90 >= 0
        if has_mdp and j90 >= 0:
            n_complete += 1
            apds = (t30 - t_up, t50 - t_up, t90 - t_up)
            for r in range(3):
                if np.isfinite(apds[r]):
                    buf[5 + r, n_apd[r]] = apds[r]
                    n_apd[r] += 1
            runmin = v[p]
            imin = 0
            for i in range(j90 - p + 1):
                x = v[p + i]
                runmin = min(runmin, x)
                if x <= runmin:
                    imin = i
                if x - runmin >= thr[_EAD_MV] and (i - imin) * dt >= thr[_EAD_MS]:
                    n_eads += 1
                    break

    iout[0] = nu
    iout[1] = n_eads
    fout[0] = _median(buf[4], n_cyc)
    fout[1] = _median(buf[0], n_mdp)
    fout[2] = _median(buf[1], n_mdp)
    fout[3] = _median(buf[2], n_mdp)
    fout[4] = _median(buf[3], n_dvdt)
    for r in range(3):
        fout[5 + r] = _median(buf[5 + r], n_apd[r])
    fout[8] = n_eads / n_complete if n_complete else np.nan

    # --- status (features._status)
    if nu == 0:
        return _QUIESCENT
    p_last = ups_p[nu - 1]
    i_stuck = p_last
    for j in range(n - 1, p_last - 1, -1):
        if v[j] <= repol:
            i_stuck = j + 1
            break
    stuck = t[n - 1] - t[min(i_stuck, n - 1)]
    if i_stuck < n and stuck >= thr[_STUCK]:
        return _NON_REPOLARIZING
    if nu > 1 and 2 * n_bad > nu - 1:
        return _NON_REPOLARIZING
    if nu == 1 and last_repolarized and t[n - 1] - t[p_last] >= thr[_QUIET]:
        return _QUIESCENT
    return _OK


@njit(cache=True, error_model="numpy")
def _classify_cells(t, V, dt, h, refr, psearch, thr):
    """Status codes (n_cells,) int8 (FALLBACK: noisy), float biomarkers (n_cells, 9) and counts
    (n_cells, 2) of the rows of V (float32 or float64, computed in float64)."""
    ncell, n = V.shape
    status = np.empty(ncell, np.int8)
    fout = np.full((ncell, 9), np.nan)
    iout = np.zeros((ncell, 2), np.int64)
    v = np.empty(n)
    hs = np.empty(n)
    starts = np.empty(n, np.int64)
    max_beats = n // refr + 2
    ups_s = np.empty(max_beats, np.int64)
    ups_p = np.empty(max_beats, np.int64)
    ups_m = np.empty(max_beats, np.int64)
    buf = np.empty((8, max_beats))
    for c in range(ncell):
        n_bad = 0
        limit = thr[_UNSTABLE_MV]
        for j in range(n):               # vectorised: no branch, an integer count
            x = np.float64(V[c, j])
            v[j] = x
            n_bad += not abs(x) <= limit
        if n_bad:
            status[c] = _UNSTABLE        # non-finite or |V| > unstable_mV
        elif _noisy(v, n, thr[_NOISE_CUT], thr[_NOISE_DIV], thr[_NOISE_THR]):
            status[c] = FALLBACK
        else:
            status[c] = _cell(t, v, n, dt, h, refr, psearch, thr, hs, starts, ups_s, ups_p,
                              ups_m, buf, fout[c], iout[c])
    return status, fout, iout


def kernel_arguments(t: np.ndarray, cfg=DEFAULT_CONFIG) -> tuple:
    """(dt ms, h, refractory and peak-search samples, thresholds) of :func:`_classify_cells`
    for the time axis t (ms), as analyze_trace derives them."""
    dt = float((t[-1] - t[0]) / (t.size - 1))
    return (dt, int(max(1, round(cfg.upstroke_window_ms / dt / 2))),
            int(max(1, round(cfg.refractory_ms / dt))),
            int(max(1, round(cfg.peak_search_ms / dt))), _kernel_thresholds(cfg))


def classify_batch_compiled(t_ms, V) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`cardiotwin.features.classify_batch` with the default configuration, compiled.

    t_ms: (n_samples,) strictly increasing, uniformly sampled (ms); V: (n_cells, n_samples) mV,
    float32 or float64 (others are converted to float64). Same results and types as the Python
    path; noisy cells are analysed by ``analyze_trace`` (see the module docstring).
    """
    V = np.atleast_2d(np.asarray(V))
    if V.dtype not in (np.float32, np.float64):
        V = V.astype(np.float64)
    ncell = V.shape[0]
    statuses = np.empty(ncell, dtype=object)
    out: dict[str, np.ndarray] = {k: np.full(ncell, np.nan) for k in BATCH_KEYS}
    out["n_beats"] = np.zeros(ncell, dtype=int)
    out["n_eads"] = np.zeros(ncell, dtype=int)
    out["beating"] = np.zeros(ncell, dtype=bool)
    if ncell == 0:
        return statuses.astype(str), out
    t = np.asarray(t_ms, dtype=float)
    check_time_axis(t, V[0])
    args = kernel_arguments(t)
    V = np.ascontiguousarray(V)
    if t.size < args[1]:
        # the Python trailing filter's own edge case: every cell goes to analyze_trace; the
        # kernel still runs (on no cell), so that a short warm-up call compiles and caches it
        _classify_cells(t, V[:0], *args)
        codes = np.full(ncell, FALLBACK, np.int8)
    else:
        codes, fout, iout = _classify_cells(t, V, *args)
        for c, key in enumerate(FLOAT_KEYS):
            out[key][:] = fout[:, c]
        out["n_beats"][:] = iout[:, 0]
        out["n_eads"][:] = iout[:, 1]
        out["beating"][:] = iout[:, 0] >= 2
    statuses[:] = np.asarray(STATUSES, dtype=object)[np.maximum(codes, 0)]
    for i in np.flatnonzero(codes == FALLBACK):
        tf = analyze_trace(t, V[i])
        statuses[i] = tf.status
        for k in BATCH_KEYS:
            out[k][i] = getattr(tf, k)
    return statuses.astype(str), out
