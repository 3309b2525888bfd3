"""Action-potential biomarkers, EAD detection and the physiological filter (cell status).

Works on simulated Kernik iPSC-CM traces (clean) and on real current-clamp recordings (noisy,
possibly quiescent, stuck depolarized or paced). Units: time ms, voltage mV, dV/dt V/s
(= mV/ms), current pA/pF.

Pipeline of :func:`analyze_trace`:

1. Noise level: robust per-sample noise SD from the second differences. Traces noisier than
   ``noise_threshold_mV`` are smoothed lightly (Savitzky-Golay, cubic, ``dvdt_window_ms``) for
   peak and dV/dt, and with a ``detect_smooth_ms`` moving average for detection, MDP and
   repolarization crossings. Clean traces are used as they are (exact forward differences).
2. Upstrokes: V rises by at least ``min_amplitude_mV`` above its minimum over the preceding
   ``upstroke_window_ms``. An upstroke is accepted as a new AP only ``refractory_ms`` after the
   previous one and once V has re-armed, i.e. fallen by ``rearm_fraction`` of the previous AP's
   amplitude below its peak (so an EAD is never counted as a new beat).
3. Per beat: peak, MDP (minimum between the previous peak and this upstroke), amplitude,
   dV/dt max on the upstroke (between the 20% and 80%-of-amplitude crossings, stimulus
   excluded; on noisy slow upstrokes the Savitzky-Golay window widens to a quarter of that rise
   time, at most 10 ms), upstroke time (time of dV/dt max), APD30/50/90 from the upstroke time
   to the first crossing of ``peak - x% * amplitude`` (linear interpolation), cycle length
   (peak-to-peak from the previous AP) and the EAD flag (see :func:`analyze_trace`). Only
   complete beats (valid MDP before, APD90 crossing after) get APDs.
4. Status (see :func:`classify`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import savgol_coeffs, savgol_filter

from .trace_csv import (
    MEMBRANE_POTENTIAL_COLUMNS,
    STIMULUS_COLUMNS,
    Want,
    read_csv_trace,
)

STATUSES = ("ok", "quiescent", "non_repolarizing", "unstable")
BATCH_KEYS = (
    "n_beats", "beating", "cycle_length_ms", "mdp_mV", "peak_mV", "amplitude_mV",
    "dvdt_max_V_per_s", "apd30_ms", "apd50_ms", "apd90_ms", "n_eads", "ead_fraction",
)



@dataclass(frozen=True)
class FeatureConfig:
    """Thresholds (ms, mV, pA/pF). Override per call: ``analyze_trace(t, v, refractory_ms=200)``."""

    min_amplitude_mV: float = 30.0      # smallest AP (peak - MDP)
    upstroke_window_ms: float = 100.0   # the rise of min_amplitude_mV must happen within this
    refractory_ms: float = 100.0        # min time between two upstrokes
    rearm_fraction: float = 0.7         # V must fall this fraction of amplitude before a new AP
    peak_search_ms: float = 250.0       # the peak is searched this long after the upstroke
    noise_threshold_mV: float = 0.02    # per-sample noise SD above which the trace is smoothed
    smooth: bool | None = None          # None: decide from the noise level; True/False: force
    dvdt_window_ms: float = 0.7         # Savitzky-Golay (cubic) window for V and dV/dt (noisy)
    dvdt_rise_fraction: float = 0.25    # noisy slow upstrokes: window >= this x 20-80% rise time
    dvdt_max_window_ms: float = 10.0    # ... but at most this
    detect_smooth_ms: float = 2.0       # moving average for detection, MDP, APD crossings (noisy)
    ead_smooth_ms: float = 5.0          # moving average for the EAD search (noisy)
    ead_threshold_mV: float = 3.0       # re-depolarization above the preceding running minimum
    ead_min_rise_ms: float = 2.0        # ... rising for at least this long
    repolarized_mV: float = -40.0       # an AP must fall below this to count as repolarized
    stuck_ms: float = 1000.0            # stuck above repolarized_mV this long -> non_repolarizing
    quiescent_after_ms: float = 2000.0  # a single AP then this long without AP -> quiescent
    min_pre_ms: float = 20.0            # a first beat needs this much trace before its upstroke
    unstable_mV: float = 200.0          # |V| above this (or non-finite) -> unstable
    stim_min_pA_per_pF: float = 2.0     # stimulus: |I - median(I)| above this and half its max
    stim_pad_ms: float = 1.0            # samples this close to the stimulus are excluded


DEFAULT_CONFIG = FeatureConfig()


@dataclass
class Beat:
    """One AP. Times in ms (trace time), voltages in mV, dV/dt in V/s; NaN where undefined."""

    index: int
    peak_time_ms: float
    peak_mV: float
    mdp_mV: float
    amplitude_mV: float
    upstroke_time_ms: float
    dvdt_max_V_per_s: float
    apd30_ms: float = math.nan
    apd50_ms: float = math.nan
    apd90_ms: float = math.nan
    cycle_length_ms: float = math.nan
    ead: bool = False
    ead_mV: float = math.nan            # size of the largest re-depolarization (mV)
    has_mdp: bool = True                # MDP before the upstroke is in the trace
    repolarized: bool = False           # reached the APD90 level before the next upstroke/end
    below_threshold: bool = False       # fell below repolarized_mV before next upstroke/end

    @property
    def complete(self) -> bool:
        return self.has_mdp and self.repolarized

    def to_dict(self) -> dict:
        d = {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}
        d["complete"] = self.complete
        return d


@dataclass
class TraceFeatures:
    """Summary of one trace: status, reasons and biomarkers (ms, mV, V/s).

    Level/upstroke biomarkers are aggregated (median by default) over beats with an MDP; APDs
    over complete beats; cycle length over consecutive APs. ``beating``: at least 2 APs.
    ``ead_fraction``: n_eads / complete beats.
    """

    status: str
    reasons: list[str]
    n_beats: int = 0
    beating: bool = False
    cycle_length_ms: float = math.nan
    mdp_mV: float = math.nan
    peak_mV: float = math.nan
    amplitude_mV: float = math.nan
    dvdt_max_V_per_s: float = math.nan
    apd30_ms: float = math.nan
    apd50_ms: float = math.nan
    apd90_ms: float = math.nan
    n_eads: int = 0
    ead_fraction: float = math.nan
    n_complete: int = 0
    noise_mV: float = math.nan
    beats: list[Beat] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serializable dict (NaN -> None); ``beats`` is a list of dicts."""
        d = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
             if f.name != "beats"}
        d["reasons"] = list(self.reasons)
        d["beats"] = [b.to_dict() for b in self.beats]
        return d


def _jsonable(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


# ----------------------------------------------------------------------------- loading


def load_trace_csv(path, *, with_current: bool = False):
    """Read a trace from .csv or .csv.gz -> (t_ms, v_mV) [, i_pA_per_pF or None].

    Columns: time ``t_ms`` / ``time_ms`` (ms) or ``time_s`` (s, converted to ms) and membrane
    potential ``v_mV`` / ``voltage_mV`` (mV); with ``with_current``, also the injected current
    (``injected_current_pA_per_pF``, ``i_stim`` or ``i_pA_per_pF``, pA/pF) or None. Read by
    :func:`cardiotwin.trace_csv.read_csv_trace` (finite times and currents, strictly
    increasing and uniformly sampled time, >= 2 samples; NaN voltages allowed); a
    TraceCsvError (ValueError) names the file, line and column otherwise.
    """
    # NaN voltages are kept: a simulated run that went unstable is NaN from then on, and its
    # status (unstable) is the answer
    roles = {"v": Want("a voltage column", MEMBRANE_POTENTIAL_COLUMNS, finite=False)}
    if with_current:
        roles["i"] = Want("an injected-current column", STIMULUS_COLUMNS, required=False)
    tr = read_csv_trace(path, roles)
    v_mV = tr.columns["v"].values
    if with_current:
        i = tr.get("i")
        return tr.t_ms, v_mV, (i.values if i is not None else None)
    return tr.t_ms, v_mV


# ----------------------------------------------------------------------------- analysis


def noise_sd(v_mV) -> float:
    """Robust per-sample noise SD (mV) from the median absolute second difference."""
    d2 = np.diff(np.asarray(v_mV, dtype=float), 2)
    if d2.size == 0:
        return 0.0
    return float(np.median(np.abs(d2)) / (0.6745 * math.sqrt(6.0)))


def check_time_axis(t: np.ndarray, v: np.ndarray) -> None:
    """ValueError unless t (ms) is 1-D, finite, strictly increasing, >= 3 samples, as long as v."""
    if t.ndim != 1 or t.shape != v.shape or t.size < 3:
        raise ValueError(
            f"t_ms and v_mV must be 1-D of equal length >= 3; got {t.shape}, {v.shape}")
    if not np.all(np.isfinite(t)) or not np.all(np.diff(t) > 0):
        raise ValueError("t_ms must be finite and strictly increasing")


def _odd(n: float, lo: int = 1) -> int:
    n = max(lo, round(n))
    return n if n % 2 else n + 1


def _crossing_down(t, x, level, start, stop):
    """First time in x[start:stop] at or below level (interpolated) and its index; else NaN, -1."""
    below = np.flatnonzero(x[start:stop] <= level)
    if below.size == 0:
        return math.nan, -1
    j = start + int(below[0])
    if j == start:
        return float(t[j]), j
    x0, x1 = x[j - 1], x[j]
    frac = (x0 - level) / (x0 - x1) if x0 != x1 else 1.0
    return float(t[j - 1] + frac * (t[j] - t[j - 1])), j


@functools.lru_cache(maxsize=64)
def _sg_deriv_coeffs(window: int, dt: float) -> np.ndarray:
    """Cubic Savitzky-Golay first-derivative weights (dot-product order)."""
    return savgol_coeffs(window, 3, deriv=1, delta=dt, use="dot")


def _stim_mask(i_stim, n, dt, cfg: FeatureConfig):
    if i_stim is None:
        return None
    i = np.asarray(i_stim, dtype=float)
    if i.shape != (n,):
        raise ValueError(f"i_stim has shape {i.shape}, expected ({n},)")
    dev = np.abs(i - np.median(i))
    thr = max(cfg.stim_min_pA_per_pF, 0.5 * float(dev.max()))
    mask = dev > thr
    if not mask.any():
        return None
    pad = math.ceil(cfg.stim_pad_ms / dt)
    return uniform_filter1d(mask.astype(float), 2 * pad + 1, mode="constant") > 0


def _aggregate(values, how):
    a = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if a.size == 0:
        return math.nan
    return float(np.median(a) if how == "median" else np.mean(a))


def analyze_trace(t_ms, v_mV, *, i_stim=None, aggregate: str = "median",
                  config: FeatureConfig = DEFAULT_CONFIG, **overrides) -> TraceFeatures:
    """Biomarkers, EADs and status of one membrane-potential trace.

    t_ms: uniformly sampled times (ms); v_mV: membrane potential (mV); i_stim: optional injected
    current (pA/pF) of a paced recording: samples within ``stim_pad_ms`` of the stimulus are
    excluded from dV/dt max (the artifact is not an upstroke). ``aggregate``: "median" (default)
    or "mean" over beats (published paced features average beats). ``overrides``: any
    :class:`FeatureConfig` field.

    EAD criterion: only in beats that repolarize to their APD90 level (a non-repolarizing AP is
    never an EAD). Between the AP peak and the APD90 crossing (which precedes the next upstroke),
    on V (noisy traces: ``ead_smooth_ms`` moving average), let m(t) be the running minimum since
    the peak. The beat has an EAD if V(t) - m(t) >= ``ead_threshold_mV`` (3 mV) for some t, the
    rise from the time of that minimum to t lasting >= ``ead_min_rise_ms`` (2 ms), i.e. a
    sustained re-depolarization (dV/dt > 0) during repolarization.
    """
    cfg = dataclasses.replace(config, **overrides) if overrides else config
    if aggregate not in ("median", "mean"):
        raise ValueError(f"aggregate must be 'median' or 'mean', not {aggregate!r}")
    t = np.asarray(t_ms, dtype=float)
    v = np.asarray(v_mV, dtype=float)
    check_time_axis(t, v)
    n = t.size
    dt = (t[-1] - t[0]) / (n - 1)

    finite = np.isfinite(v)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        return TraceFeatures("unstable", [f"non-finite V from t = {t[k]:.1f} ms"])
    vmax_abs = float(np.abs(v).max())
    if vmax_abs > cfg.unstable_mV:
        return TraceFeatures(
            "unstable", [f"|V| reaches {vmax_abs:.1f} mV (> {cfg.unstable_mV:g} mV)"])

    sigma = noise_sd(v)
    smooth = sigma > cfg.noise_threshold_mV if cfg.smooth is None else cfg.smooth
    if smooth:
        w_light = min(_odd(cfg.dvdt_window_ms / dt, 5), n if n % 2 else n - 1)
        if w_light >= 5:
            vl = savgol_filter(v, w_light, 3)
            dvdt = savgol_filter(v, w_light, 3, deriv=1, delta=dt)
        else:
            vl, dvdt = v, np.gradient(v, dt)
        w_detect = _odd(cfg.detect_smooth_ms / dt)
        vd = uniform_filter1d(v, w_detect, mode="nearest")
        ve = uniform_filter1d(v, _odd(cfg.ead_smooth_ms / dt), mode="nearest")
        t_dv = t
    else:
        vl = vd = ve = v
        w_detect = 1
        dvdt = np.empty(n)
        dvdt[:-1] = np.diff(v) / np.diff(t)
        dvdt[-1] = dvdt[-2]
        t_dv = t + 0.5 * np.append(np.diff(t), dt)   # forward difference sits mid-interval
    stim = _stim_mask(i_stim, n, dt, cfg)
    h_detect = w_detect // 2

    # --- upstroke candidates: rise >= min amplitude above the trailing-window minimum
    h = max(1, round(cfg.upstroke_window_ms / dt / 2))
    centred = minimum_filter1d(vd, 2 * h + 1, mode="nearest")
    trailing = np.empty(n)
    trailing[h:] = centred[: max(n - h, 0)]  # a trace shorter than h: all trailing
    trailing[:h] = np.minimum.accumulate(vd[:h])
    rise = vd - trailing
    cand = rise >= cfg.min_amplitude_mV
    starts = np.flatnonzero(cand & ~np.concatenate(([False], cand[:-1])))

    refr = max(1, round(cfg.refractory_ms / dt))
    psearch = max(1, round(cfg.peak_search_ms / dt))
    ups: list[tuple[int, int]] = []        # (upstroke start index, peak index)
    for s in starts:
        s = int(s)
        if ups and s - ups[-1][0] < refr:
            continue
        nxt = int(np.searchsorted(starts, s + refr))
        stop = min(n, s + psearch, int(starts[nxt]) if nxt < starts.size else n)
        p = s + int(np.argmax(vl[s:stop]))
        if p >= n - 2 or (stim is not None and stim[p]):
            continue                        # truncated at the end, or a stimulus artifact
        if ups:
            sp, pp = ups[-1]
            lo = pp + int(np.argmin(vd[pp:s + 1]))
            amp_prev = vl[pp] - float(np.min(vd[ups[-2][1] if len(ups) > 1 else 0:sp + 1]))
            if vd[lo] > vl[pp] - cfg.rearm_fraction * amp_prev:
                continue                    # not re-armed: part of the previous AP (EAD)
        ups.append((s, p))

    # --- per-beat biomarkers
    beats: list[Beat] = []
    for k, (s, p) in enumerate(ups):
        lo = ups[k - 1][1] if k else 0
        m = lo + int(np.argmin(vd[lo:s + 1]))
        has_mdp = not (k == 0 and m == 0 and t[s] - t[0] < cfg.min_pre_ms)
        peak = float(vl[p])
        mdp = float(vd[m])
        amp = peak - mdp
        # upstroke: between the last 20%-of-amplitude crossing and the next 80% crossing
        below = np.flatnonzero(vd[m:p + 1] <= mdp + 0.2 * amp)
        i20 = m + int(below[-1]) if below.size else m
        above = np.flatnonzero(vd[i20:p + 1] >= mdp + 0.8 * amp)
        i80 = i20 + int(above[0]) if above.size else p
        i_lo, i_hi = max(m, i20 - h_detect), min(p, i80 + h_detect) + 1
        dv = dvdt[i_lo:i_hi]
        if smooth:                          # slow noisy upstroke: widen the window
            w_ms = min(cfg.dvdt_rise_fraction * (t[i80] - t[i20]), cfg.dvdt_max_window_ms)
            w = _odd(w_ms / dt, 5)
            hw = w // 2
            if w > w_light and i_lo >= hw and i_hi + hw <= n:
                dv = np.correlate(v[i_lo - hw:i_hi + hw], _sg_deriv_coeffs(w, dt), "valid")
        if stim is not None:
            dv = np.where(stim[i_lo:i_hi], -np.inf, dv)
        u = i_lo + int(np.argmax(dv))
        dvmax = float(dv[u - i_lo]) if np.isfinite(dv[u - i_lo]) else math.nan
        b = Beat(index=k, peak_time_ms=float(t[p]), peak_mV=peak, mdp_mV=mdp, amplitude_mV=amp,
                 upstroke_time_ms=float(t_dv[u]), dvdt_max_V_per_s=dvmax,
                 has_mdp=has_mdp)
        if k:
            b.cycle_length_ms = float(t[p] - t[ups[k - 1][1]])
        end = ups[k + 1][0] if k + 1 < len(ups) else n
        b.below_threshold = bool(np.min(vd[p:end]) <= cfg.repolarized_mV)
        t90, j90 = _crossing_down(t, vd, peak - 0.9 * amp, p, end)
        b.repolarized = j90 >= 0
        if b.complete:
            b.apd90_ms = t90 - b.upstroke_time_ms
            b.apd30_ms = _crossing_down(t, vd, peak - 0.3 * amp, p, end)[0] - b.upstroke_time_ms
            b.apd50_ms = _crossing_down(t, vd, peak - 0.5 * amp, p, end)[0] - b.upstroke_time_ms
            seg = ve[p:j90 + 1]
            runmin = np.minimum.accumulate(seg)
            up = seg - runmin
            idx = np.arange(seg.size)
            i_min = np.maximum.accumulate(np.where(seg <= runmin, idx, 0))  # time of running min
            b.ead_mV = float(up.max())
            b.ead = bool(np.any((up >= cfg.ead_threshold_mV)
                                & ((idx - i_min) * dt >= cfg.ead_min_rise_ms)))
        beats.append(b)

    return _summarize(t, vd, beats, sigma, cfg, aggregate, rise)


def _summarize(t, vd, beats, sigma, cfg, how, rise) -> TraceFeatures:
    withmdp = [b for b in beats if b.has_mdp]
    complete = [b for b in beats if b.complete]
    n_eads = sum(b.ead for b in complete)
    tf = TraceFeatures(
        status="ok", reasons=[], n_beats=len(beats), beating=len(beats) >= 2,
        cycle_length_ms=_aggregate([b.cycle_length_ms for b in beats], how),
        mdp_mV=_aggregate([b.mdp_mV for b in withmdp], how),
        peak_mV=_aggregate([b.peak_mV for b in withmdp], how),
        amplitude_mV=_aggregate([b.amplitude_mV for b in withmdp], how),
        dvdt_max_V_per_s=_aggregate([b.dvdt_max_V_per_s for b in withmdp], how),
        apd30_ms=_aggregate([b.apd30_ms for b in complete], how),
        apd50_ms=_aggregate([b.apd50_ms for b in complete], how),
        apd90_ms=_aggregate([b.apd90_ms for b in complete], how),
        n_eads=int(n_eads), ead_fraction=n_eads / len(complete) if complete else math.nan,
        n_complete=len(complete), noise_mV=sigma, beats=beats,
    )
    tf.status, tf.reasons = _status(t, vd, beats, cfg, tf, rise)
    return tf


def _status(t, vd, beats, cfg, tf, rise):
    thr = cfg.repolarized_mV
    t_end = float(t[-1])
    if not beats:
        med = float(np.median(vd))
        reasons = [(f"no upstroke > {cfg.min_amplitude_mV:g} mV amplitude (largest rise "
                   f"{float(rise.max()):.1f} mV within {cfg.upstroke_window_ms:g} ms)"),
                   f"membrane potential {med:.1f} mV (range {vd.min():.1f} to {vd.max():.1f} mV)"]
        if med > thr:
            reasons.append(f"depolarized: resting above {thr:g} mV")
        return "quiescent", reasons

    # stuck: after the last AP, V stays above the threshold until the end for >= stuck_ms
    p_last = int(np.searchsorted(t, beats[-1].peak_time_ms))
    below = np.flatnonzero(vd[p_last:] <= thr)
    i_stuck = p_last + (int(below[-1]) + 1 if below.size else 0)
    stuck = t_end - float(t[min(i_stuck, t.size - 1)])
    if i_stuck < t.size and stuck >= cfg.stuck_ms:
        return "non_repolarizing", [
            (f"stuck above {thr:g} mV for the last {stuck:.0f} ms (mean "
            f"{float(np.mean(vd[i_stuck:])):.1f} mV, last AP at {beats[-1].peak_time_ms:.1f} ms)")]
    followed = beats[:-1]
    if followed:
        bad = [b for b in followed if not b.below_threshold]
        if 2 * len(bad) > len(followed):
            return "non_repolarizing", [
                (f"{len(bad)} of {len(followed)} APs do not repolarize below {thr:g} mV before "
                f"the next upstroke (median MDP {tf.mdp_mV:.1f} mV)")]
    if len(beats) == 1:
        b = beats[0]
        after = t_end - b.peak_time_ms
        if b.repolarized and after >= cfg.quiescent_after_ms:
            return "quiescent", [(f"only 1 AP (peak at {b.peak_time_ms:.1f} ms), then no AP for "
                                 f"{after:.0f} ms (resting at {float(vd[-1]):.1f} mV)")]
        return "ok", [f"1 AP (peak at {b.peak_time_ms:.1f} ms): too short to measure a cycle"]
    reasons = [(f"{len(beats)} APs, cycle length {tf.cycle_length_ms:.1f} ms, "
               f"MDP {tf.mdp_mV:.1f} mV, APD90 {tf.apd90_ms:.1f} ms")]
    if tf.n_eads:
        reasons.append(f"EADs in {tf.n_eads} of {tf.n_complete} complete beats")
    return "ok", reasons


def classify(t_ms, v_mV, **kwargs) -> tuple[str, list[str]]:
    """Status of a cell and the reasons (measured numbers).

    - "unstable": non-finite V or |V| > ``unstable_mV`` (200 mV).
    - "quiescent": no AP (no upstroke of ``min_amplitude_mV``, 30 mV); or exactly one AP that
      repolarizes and is followed by >= ``quiescent_after_ms`` (2000 ms) without AP (the cell
      fired once, e.g. from its initial state, then stopped).
    - "non_repolarizing": at least one AP and either V stays above ``repolarized_mV`` (-40 mV)
      from the last AP (or its last dip below -40 mV) to the end for >= ``stuck_ms`` (1000 ms),
      or most APs followed by another do not fall below -40 mV in between.
    - "ok": otherwise: APs that repolarize (a single AP in a trace too short to tell gives "ok"
      with ``beating`` False and reason "too short to measure a cycle").
    """
    tf = analyze_trace(t_ms, v_mV, **kwargs)
    return tf.status, tf.reasons


def classify_batch(t_ms, V, *, compiled: bool = True,
                   **kwargs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Status and summary biomarkers of many cells sharing one time axis.

    V: (n_cells, n_samples) in mV. Returns (statuses: str array (n_cells,), dict of arrays keyed
    by :data:`BATCH_KEYS`, NaN where undefined). Without ``kwargs`` (default configuration,
    median over beats) the compiled path (:mod:`cardiotwin.features_compiled`, numba) gives the
    same statuses and numbers as :func:`analyze_trace` per cell, which still analyses the noisy
    cells; ``compiled=False``, or any ``kwargs`` (``config``, ``aggregate``, FeatureConfig
    overrides, passed to :func:`analyze_trace`), runs the Python loop over cells.
    """
    if compiled and not kwargs:
        from .features_compiled import classify_batch_compiled

        return classify_batch_compiled(t_ms, V)
    V = np.atleast_2d(np.asarray(V, dtype=float))
    ncell = V.shape[0]
    statuses = np.empty(ncell, dtype=object)
    out = {k: np.full(ncell, np.nan) for k in BATCH_KEYS}
    out["n_beats"] = np.zeros(ncell, dtype=int)
    out["n_eads"] = np.zeros(ncell, dtype=int)
    out["beating"] = np.zeros(ncell, dtype=bool)
    for i in range(ncell):
        tf = analyze_trace(t_ms, V[i], **kwargs)
        statuses[i] = tf.status
        for k in BATCH_KEYS:
            out[k][i] = getattr(tf, k)
    return statuses.astype(str), out
