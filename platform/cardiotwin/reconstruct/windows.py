"""Beat windows, the study's normalizations, spike detection and APD measures.

A window is ``length`` samples every ``sample_interval_ms`` ms starting ``pre_ms`` before the
eAP spike (the anchor: the beat's largest |eAP - running median over spike_filter_ms|, i.e.
the peak of the fast spike, not of the slow repolarization wave). Normalizations (as in the study):

- iAP: min-max over the window to [0.1, 1] (``iap_range``); 0.1 keeps v away from 0, where the
  Aliev-Panfilov recovery variable w = -(v' + f)/v is singular.
- eAP: minus its window mean, then minus its (new) first value, divided by ``noise_factor``
  (60) x the recording-noise SD. The SD is estimated from the window itself (median absolute
  second difference, :func:`cardiotwin.features.noise_sd`), in training and in use alike, so
  the normalized spike height carries the recording's S/N (height ~ S/N / 60).

APDx (x = 10 ... 100) on a (normalized) iAP window: from the upstroke (the sample of largest
rise within ``upstroke_search_ms`` before the peak) to the first crossing, after the peak, of
``peak - x% (peak - base)`` (linear interpolation), base = the minimum before the upstroke.
APD100 (the level of base itself is often never reached again) is the time of the minimum
between the peak and the next upstroke (the end of repolarization). NaN where undefined.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from ..features import noise_sd
from ..settings import NonNegativeMs, PositiveFloat, PositiveMs, Settings

APD_LEVELS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


class WindowConfig(Settings):
    """Segmentation and normalization of beat windows."""

    sample_interval_ms: PositiveMs = Field(1.0, description="sample interval of the windows "
                                                              "(ms)")
    length: int = Field(1024, ge=64, description="samples per window (a multiple of "
                                                 "2^depth of the U-Net)")
    pre_ms: NonNegativeMs = Field(200.0, description="window start before the eAP spike (ms)")
    iap_range: tuple[float, float] = Field((0.1, 1.0), description="normalized iAP range "
                                           "(min, max) of a window")
    noise_factor: PositiveFloat = Field(60.0, description="eAP divisor in units of its noise SD")
    refractory_ms: PositiveMs = Field(250.0, description="minimum time between two detected "
                                                          "spikes (ms)")
    spike_threshold_sd: PositiveFloat = Field(6.0, description="spike detection threshold in "
                                                             "noise SDs")
    spike_fraction: PositiveFloat = Field(0.3, le=1, description="spike detection threshold as "
                                  "a fraction of the 99.9th percentile of |eAP - median|")
    upstroke_search_ms: PositiveMs = Field(50.0, description="APD: the upstroke is searched "
                                      "this long before the peak (ms)")
    spike_filter_ms: PositiveMs = Field(20.0, description="spikes are found on the eAP minus "
                                   "its running median over this window (ms), which removes "
                                   "the slow repolarization wave")

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.iap_range
        if not lo < hi:
            raise ValueError(f"iap_range must be (low, high) with low < high, found "
                             f"{self.iap_range}")
        if self.pre_samples >= self.length:
            raise ValueError(f"pre_ms ({self.pre_ms}) must be shorter than the window "
                             f"({self.length} x {self.sample_interval_ms} ms)")
        return self

    @property
    def pre_samples(self) -> int:
        return int(round(self.pre_ms / self.sample_interval_ms))

    @property
    def duration_ms(self) -> float:
        return self.length * self.sample_interval_ms


def normalize_iap(v: np.ndarray, cfg: WindowConfig) -> np.ndarray:
    """Min-max each window (last axis) to ``cfg.iap_range``."""
    v = np.asarray(v, dtype=np.float64)
    lo, hi = cfg.iap_range
    vmin, vmax = v.min(axis=-1, keepdims=True), v.max(axis=-1, keepdims=True)
    span = np.where(vmax > vmin, vmax - vmin, 1.0)
    return lo + (hi - lo) * (v - vmin) / span


def eap_noise_sd(e: np.ndarray) -> np.ndarray:
    """Robust noise SD of each window (last axis), in the eAP's units."""
    e = np.asarray(e, dtype=np.float64)
    flat = e.reshape(-1, e.shape[-1])
    return np.array([noise_sd(r) for r in flat]).reshape(e.shape[:-1])


def normalize_eap(e: np.ndarray, cfg: WindowConfig, sd=None) -> np.ndarray:
    """(e - mean - first value) / (noise_factor x noise SD), per window (last axis). ``sd``
    defaults to :func:`eap_noise_sd`; a zero SD (noise-free) falls back to 1/1000 of the peak
    |e - mean| so noise-free windows stay finite."""
    e = np.asarray(e, dtype=np.float64)
    x = e - e.mean(axis=-1, keepdims=True)
    x = x - x[..., :1]
    sd = eap_noise_sd(e) if sd is None else np.asarray(sd, dtype=np.float64)
    floor = 1e-3 * np.max(np.abs(x), axis=-1)
    sd = np.where(sd > 0, sd, np.where(floor > 0, floor, 1.0))
    return x / (cfg.noise_factor * np.asarray(sd)[..., None])


def spike_signal(e: np.ndarray, cfg: WindowConfig) -> np.ndarray:
    """|eAP - its running median over ``spike_filter_ms``|: the fast spike, without the slow
    waves (the anchor of a window is this signal's maximum)."""
    from scipy.ndimage import median_filter

    e = np.asarray(e, dtype=np.float64)
    k = max(3, int(round(cfg.spike_filter_ms / cfg.sample_interval_ms)) | 1)
    return np.abs(e - median_filter(e, size=k, mode="nearest"))


def detect_spikes(e: np.ndarray, cfg: WindowConfig) -> np.ndarray:
    """Indices of the eAP spikes (maxima of :func:`spike_signal`, one per beat) in a recording
    sampled every ``cfg.sample_interval_ms``: above max(threshold_sd x noise SD,
    spike_fraction x its 99.9th percentile) and at least ``refractory_ms`` apart."""
    from scipy.signal import find_peaks

    e = np.asarray(e, dtype=np.float64)
    x = spike_signal(e, cfg)
    thr = max(cfg.spike_threshold_sd * noise_sd(e), cfg.spike_fraction * np.percentile(x, 99.9))
    if thr <= 0:
        return np.zeros(0, dtype=np.int64)
    dist = max(1, int(round(cfg.refractory_ms / cfg.sample_interval_ms)))
    peaks, _ = find_peaks(x, height=thr, distance=dist)
    return peaks.astype(np.int64)


def window_starts(anchors: np.ndarray, n: int, cfg: WindowConfig) -> np.ndarray:
    """Start indices of the windows of the anchors that fit inside a recording of n samples."""
    s = np.asarray(anchors, dtype=np.int64) - cfg.pre_samples
    return s[(s >= 0) & (s + cfg.length <= n)]


def cut(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Windows (len(starts), length) of the 1-D signal x."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length)[None, :]
    return np.asarray(x)[idx]


def apd(v: np.ndarray, dt_ms: float, cfg: WindowConfig, levels=APD_LEVELS) -> np.ndarray:
    """APDx (ms) of each window (..., n) for x in ``levels`` (see the module docstring):
    array (..., len(levels)), NaN where undefined."""
    v = np.asarray(v, dtype=np.float64)
    flat = v.reshape(-1, v.shape[-1])
    out = np.full((flat.shape[0], len(levels)), np.nan)
    for i, row in enumerate(flat):
        out[i] = _apd_one(row, dt_ms, cfg, levels)
    return out.reshape(v.shape[:-1] + (len(levels),))


def _apd_one(v: np.ndarray, dt: float, cfg: WindowConfig, levels) -> np.ndarray:
    n = len(v)
    res = np.full(len(levels), np.nan)
    if not np.all(np.isfinite(v)):
        return res
    a = min(cfg.pre_samples, n - 1)
    lo, hi = max(0, a - int(50 / dt)), min(n, a + int(150 / dt))
    peak = lo + int(np.argmax(v[lo:hi]))
    s0 = max(0, peak - max(1, int(round(cfg.upstroke_search_ms / dt))))
    if peak - s0 < 1:
        return res
    rise = np.diff(v[s0:peak + 1])
    up = s0 + int(np.argmax(rise))        # the largest rise is between up and up + 1
    t_up = (up + 0.5) * dt
    base = float(np.min(v[:up + 1]))
    amp = float(v[peak]) - base
    if amp <= 0:
        return res
    # the end of this beat: the next rise back above half amplitude after repolarizing
    after = v[peak:]
    half = base + 0.5 * amp
    below = np.flatnonzero(after < half)
    stop = n
    if below.size:
        again = np.flatnonzero(after[below[0]:] > half)
        if again.size:
            stop = peak + below[0] + int(again[0])
    seg = v[peak:stop]
    for j, x in enumerate(levels):
        if x >= 100:
            res[j] = (peak + int(np.argmin(seg))) * dt - t_up
            continue
        level = float(v[peak]) - x / 100.0 * amp
        k = np.flatnonzero(seg <= level)
        if k.size == 0:
            continue
        i1 = peak + int(k[0])
        i0 = i1 - 1
        frac = (v[i0] - level) / (v[i0] - v[i1]) if v[i0] != v[i1] else 0.0
        res[j] = (i0 + frac) * dt - t_up
    return res
