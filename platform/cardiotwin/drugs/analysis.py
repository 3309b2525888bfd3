"""Per-cell outcome of one drug-screen trace: status, APs, EADs, APD90 (ms, mV).

Built on :func:`cardiotwin.features.analyze_trace` (status, beats, the EAD criterion: a
re-depolarization of >= 3 mV lasting >= 2 ms between an AP's peak and its APD90 crossing).

Three things the screen adds:

- EADs after early repolarization only. The feature criterion searches from the AP peak, so a
  spike-and-dome upstroke (a phase-1 notch: the spike, a dip of ~10 mV, then the dome) passes
  as an EAD; in a 4000-cell control population 4 cells were flagged that way, all notches
  (re-rise 8-10 mV from about +30 mV; drug-induced EADs re-rise 30-50 mV from about -40 mV).
  Here the same criterion (>= 3 mV for >= 2 ms above the running minimum) is applied only
  from the first crossing of ``peak - ead_min_repolarization x amplitude`` (default 0.3: the
  APD30 level) to the APD90 crossing, i.e. to phase-2/3 re-depolarizations. In paced traces
  (``i_stim`` given) a rise during which the stimulus is on is a paced response, not an EAD
  (pacing a spontaneously active cell often lands a stimulus in phase 3).
- Full APs vs depolarized oscillations. Under strong IKr block Kernik cells can switch to small
  oscillations from a depolarized MDP (about -45 mV, peak about 0 mV), which the feature code
  counts as beats (amplitude > 30 mV). Their "APD90" is measured on a 45 mV excursion and is not
  comparable with a full AP's. A beat whose MDP is above ``depolarized_mdp_mV`` (default
  -60 mV) is a depolarized beat: counted in ``n_beats``, excluded from ``apd90_ms`` (APD90 of
  full APs; ``apd90_all_ms`` keeps every complete beat). ``None`` disables the split (use it
  for twins of cells whose control MDP is itself above -60 mV).
- One outcome per cell, by precedence: ``unstable``, ``non_repolarizing``, ``quiescent`` (the
  feature statuses), ``ead`` (>= 1 beat with an EAD), ``depolarized`` (beats, but none a full
  AP), ``beating``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..features import DEFAULT_CONFIG, analyze_trace

OUTCOMES = ("beating", "ead", "depolarized", "quiescent", "non_repolarizing", "unstable")
DEFAULT_DEPOLARIZED_MDP_MV = -60.0
DEFAULT_EAD_MIN_REPOLARIZATION = 0.3
FLOAT_KEYS = ("apd90_ms", "apd50_ms", "apd30_ms", "apd90_all_ms", "cycle_length_ms", "mdp_mV",
              "peak_mV", "v_median_mV", "ead_max_mV")
INT_KEYS = ("n_beats", "n_full_aps", "n_complete", "n_eads")


def _median(values) -> float:
    a = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    return float(np.median(a)) if a.size else math.nan


def beat_ead(t_ms: np.ndarray, v_mV: np.ndarray, beat,
             min_repolarization: float = DEFAULT_EAD_MIN_REPOLARIZATION,
             stim_count: np.ndarray | None = None
             ) -> tuple[bool, float, tuple[float, float] | None]:
    """EAD test of one complete beat after it has repolarized ``min_repolarization`` of its
    amplitude: (has an EAD, largest re-depolarization in mV, EAD segment (start, end) in ms
    from the minimum before the largest re-depolarization to the APD90 crossing, or None).
    ``stim_count``: stim_count[j] = number of stimulus samples before sample j (paced traces):
    a rise during which the stimulus is on is a paced response, not an EAD."""
    if not beat.complete or not math.isfinite(beat.apd90_ms):
        return False, math.nan, None
    n = t_ms.size
    dt = (t_ms[-1] - t_ms[0]) / (n - 1)
    p = int(np.searchsorted(t_ms, beat.peak_time_ms))
    e = min(n - 1, int(np.searchsorted(t_ms, beat.upstroke_time_ms + beat.apd90_ms)))
    level = beat.peak_mV - min_repolarization * beat.amplitude_mV
    below = np.flatnonzero(v_mV[p:e + 1] <= level)
    if below.size == 0:
        return False, math.nan, None
    s = p + int(below[0])
    seg = v_mV[s:e + 1]
    runmin = np.minimum.accumulate(seg)
    up = seg - runmin
    idx = np.arange(seg.size)
    i_min = np.maximum.accumulate(np.where(seg <= runmin, idx, 0))
    hit = (up >= DEFAULT_CONFIG.ead_threshold_mV) & ((idx - i_min) * dt
                                                     >= DEFAULT_CONFIG.ead_min_rise_ms)
    if stim_count is not None:
        paced = stim_count[s + idx + 1] > stim_count[s + i_min]   # stimulus in the rise
        hit &= ~paced
        up = np.where(paced, 0.0, up)
    size = float(up.max())
    if not hit.any():
        return False, size, None
    k = int(np.argmax(up))
    start = s + int(np.argmin(seg[:k + 1]))
    return True, size, (float(t_ms[start]), float(t_ms[e]))


def analyze_cell(t_ms, v_mV, *, i_stim=None,
                 depolarized_mdp_mV: float | None = DEFAULT_DEPOLARIZED_MDP_MV,
                 ead_min_repolarization: float = DEFAULT_EAD_MIN_REPOLARIZATION,
                 segments: bool = False) -> dict[str, Any]:
    """Outcome and biomarkers of one cell's trace (see the module docstring).

    Returns status, outcome, reason (the first reason of the feature status), n_beats,
    n_full_aps, n_complete, n_eads (beats with an EAD after early repolarization), ead (bool),
    apd90_ms / apd50_ms / apd30_ms (median over complete full
    APs), apd90_all_ms (median over all complete beats), cycle_length_ms, mdp_mV, peak_mV
    (median over beats), v_median_mV (median V of the trace), ead_max_mV (largest
    re-depolarization after early repolarization), and with ``segments`` the EAD segments
    [(start_ms, end_ms)].
    """
    t = np.asarray(t_ms, dtype=float)
    v = np.asarray(v_mV, dtype=float)
    tf = analyze_trace(t, v, i_stim=i_stim)
    beats = tf.beats
    thr = math.inf if depolarized_mdp_mV is None else float(depolarized_mdp_mV)
    full = [b for b in beats if b.has_mdp and b.mdp_mV <= thr]
    complete_full = [b for b in full if b.complete]
    stim_count = None
    if i_stim is not None:
        on = np.abs(np.asarray(i_stim, dtype=float)) > 0
        stim_count = np.concatenate(([0], np.cumsum(on)))       # stimulus samples before j
    eads = [beat_ead(t, v, b, ead_min_repolarization, stim_count) for b in beats if b.complete]
    ead_sizes = [size for _, size, _ in eads if math.isfinite(size)]
    n_eads = sum(has for has, _, _ in eads)
    out: dict[str, Any] = {
        "status": tf.status,
        "reason": tf.reasons[0] if tf.reasons else "",
        "n_beats": tf.n_beats,
        "n_full_aps": len(full),
        "n_complete": tf.n_complete,
        "n_eads": n_eads,
        "ead": n_eads > 0,
        "apd90_ms": _median(b.apd90_ms for b in complete_full),
        "apd50_ms": _median(b.apd50_ms for b in complete_full),
        "apd30_ms": _median(b.apd30_ms for b in complete_full),
        "apd90_all_ms": tf.apd90_ms,
        "cycle_length_ms": tf.cycle_length_ms,
        "mdp_mV": tf.mdp_mV,
        "peak_mV": tf.peak_mV,
        "v_median_mV": float(np.median(v)) if np.all(np.isfinite(v)) else math.nan,
        "ead_max_mV": max(ead_sizes) if ead_sizes else math.nan,
    }
    if tf.status != "ok":
        out["outcome"] = tf.status
    elif out["ead"]:
        out["outcome"] = "ead"
    elif beats and not full:
        out["outcome"] = "depolarized"
    else:
        out["outcome"] = "beating"
    if segments:
        out["ead_segments"] = [seg for has, _, seg in eads if has]
    return out
