"""Beats for the hybrid: reading AP traces, refusing unusable ones, cutting and normalizing.

Per beat (beats found by :func:`cardiotwin.features.analyze_trace`): v = (V - MDP) / (peak - MDP)
with the beat's maximum diastolic potential and peak (mV) from the features (smoothed on noisy
recordings), so the beat spans [0, 1]. A beat starts where its upstroke, smoothed over
``smooth_ms``, crosses ``start_level`` (0.5 > v_gate = 0.13): spontaneous beats have no
stimulus, so the model starts from that measured state past threshold (v0 = start_level,
h0 = 1 by default). Half amplitude, not lower, because the slow diastolic depolarization and
foot of iPSC-CM upstrokes (up to ~0.3 of the amplitude) are not Mitchell-Schaeffer dynamics.
The window runs ``window_ms`` or up to ``next_beat_margin_ms`` before the next beat's start.
Observations are the raw (unsmoothed) normalized samples every ``output_ms``.

Unusable traces raise :class:`TraceError` (a ValueError) naming the file, the field, what was
expected and what was found; quiescent, stuck-depolarized and unstable cells raise
:class:`NotBeatingError` with the measured reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d

from .config import DataConfig


class TraceError(ValueError):
    """A trace the hybrid cannot use (message: file, field, expected vs found)."""


class NotBeatingError(TraceError):
    """A readable trace without usable beats (quiescent, depolarized, unstable)."""

    def __init__(self, message: str, status: str, reasons: list[str]):
        super().__init__(message)
        self.status = status
        self.reasons = reasons


@dataclass
class Beat:
    """One normalized beat: observations ``v_obs`` at t = k * output_ms after the start (k = 0..),
    ``v_clean`` the noise-free ones for simulations (else None); normalization levels (mV)."""

    index: int
    t0_ms: float
    v0: float
    v_obs: np.ndarray
    v_lo_mV: float
    v_hi_mV: float
    apd90_ms: float = math.nan
    v_clean: np.ndarray | None = None


@dataclass
class BeatSet:
    """The usable beats of one trace, with the trace's AP features and the skipped beats."""

    name: str
    beats: list[Beat]
    output_ms: float
    features: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def arrays(self, n_out: int, max_beats: int) -> dict:
        """Fixed-shape batch of the first ``max_beats`` beats: x0v (B,), y and mask (n_out, B)
        for the observations k = 1 .. n_out (padding has mask 0), n_beats."""
        use = self.beats[:max_beats]
        x0v = np.zeros(max_beats, np.float32)
        y = np.zeros((n_out, max_beats), np.float32)
        mask = np.zeros((n_out, max_beats), np.float32)
        for i, b in enumerate(use):
            k = min(n_out, b.v_obs.size - 1)
            x0v[i] = b.v0
            y[:k, i] = b.v_obs[1:k + 1]
            mask[:k, i] = 1.0
        x0v[len(use):] = use[0].v0 if use else 0.5
        return {"x0v": x0v, "y": y, "mask": mask, "n_beats": len(use)}

    def subset(self, indices) -> BeatSet:
        return BeatSet(self.name, [self.beats[i] for i in indices], self.output_ms,
                       dict(self.features), list(self.skipped))


# ----------------------------------------------------------------------------- reading

def read_trace(path) -> tuple[np.ndarray, np.ndarray]:
    """(t_ms, v_mV) of a CSV(.gz) with columns time_s, voltage_mV (real recordings; other columns
    such as injected_current_pA_per_pF are ignored) or t_ms, v_mV (simulations), read by
    :func:`cardiotwin.trace_csv.read_csv_trace`; TraceError naming the file, field and line."""
    from ..trace_csv import MEMBRANE_POTENTIAL_COLUMNS, TraceCsvError, Want, read_csv_trace

    try:
        tr = read_csv_trace(path, {"v": Want("a voltage column", MEMBRANE_POTENTIAL_COLUMNS)},
                            uniform=False)
    except TraceCsvError as e:
        raise TraceError(str(e)) from None
    v = tr.columns["v"]
    check_trace(tr.t_ms, v.values, tr.source, time_field=tr.time_column, voltage_field=v.name)
    return tr.t_ms, v.values


def check_trace(t_ms, v_mV, name: str, *, time_field: str = "t_ms",
                voltage_field: str = "v_mV", min_samples: int = 100) -> None:
    """Raise TraceError unless t (ms) and V (mV) are finite, of equal length, at least
    ``min_samples`` long and uniformly sampled."""
    t = np.asarray(t_ms, float)
    v = np.asarray(v_mV, float)
    if t.ndim != 1 or v.shape != t.shape:
        raise TraceError(f"{name}: {time_field} and {voltage_field} must be 1-D of equal length; "
                         f"found shapes {t.shape} and {v.shape}")
    if t.size == 0:
        raise TraceError(f"{name}: empty trace: expected >= {min_samples} samples, found 0")
    if t.size < min_samples:
        raise TraceError(f"{name}: trace too short: expected >= {min_samples} samples, found "
                         f"{t.size}")
    for arr, fld, unit in ((t, time_field, "time"), (v, voltage_field, "mV")):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            k = int(bad[0])
            where = f" (t = {t[k]:.1f} ms)" if fld == voltage_field and np.isfinite(t[k]) else ""
            raise TraceError(f"{name}: field {fld}: non-finite value {float(arr[k])} at row {k + 1}"
                             f"{where}; expected finite {unit} values ({bad.size} non-finite)")
    dt = np.diff(t)
    if not np.all(dt > 0):
        k = int(np.flatnonzero(dt <= 0)[0])
        raise TraceError(f"{name}: field {time_field}: not strictly increasing at row {k + 2} "
                         f"({t[k]:.4f} then {t[k + 1]:.4f} ms)")
    med = float(np.median(dt))
    if np.max(np.abs(dt - med)) > 0.01 * med:
        raise TraceError(f"{name}: field {time_field}: expected uniform sampling; intervals "
                         f"range {dt.min():.4g}-{dt.max():.4g} ms")


# ----------------------------------------------------------------------------- beats

def beats_from_trace(t_ms, v_mV, name: str, cfg: DataConfig | None = None, *,
                     noise_sd: float = 0.0, seed: int = 0) -> BeatSet:
    """Normalized beats of one membrane-potential trace (t ms, V mV).

    ``noise_sd`` > 0 (simulations): Gaussian noise of that SD (normalized units; 0.05 = 5% of
    the AP amplitude, as the study) is added to the observations; ``v_clean`` keeps the clean
    values. Raises NotBeatingError for quiescent / non-repolarizing / unstable cells.
    """
    from ..features import analyze_trace

    cfg = cfg or DataConfig()
    check_trace(t_ms, v_mV, name)
    t = np.asarray(t_ms, float)
    v = np.asarray(v_mV, float)
    feat = analyze_trace(t, v)
    summary = {"status": feat.status, "reasons": list(feat.reasons), "n_aps": feat.n_beats,
               "apd90_ms": feat.apd90_ms, "cycle_length_ms": feat.cycle_length_ms,
               "mdp_mV": feat.mdp_mV, "amplitude_mV": feat.amplitude_mV}
    if feat.status != "ok":
        raise NotBeatingError(f"{name}: not beating ({feat.status}): "
                              f"{'; '.join(feat.reasons)}; the hybrid needs repolarizing APs",
                              feat.status, list(feat.reasons))
    dt = (t[-1] - t[0]) / (t.size - 1)
    vs = uniform_filter1d(v, max(1, int(round(cfg.smooth_ms / dt))), mode="nearest")
    starts, skipped, usable = [], [], []
    for b in feat.beats:
        amp = b.peak_mV - b.mdp_mV
        i_peak = int(round((b.peak_time_ms - t[0]) / dt))
        if not (b.has_mdp and b.repolarized) or not amp > 0:
            skipped.append(f"AP {b.index} at {b.peak_time_ms:.0f} ms: incomplete (no MDP before "
                           f"or no repolarization in the trace)")
            starts.append(math.nan)
            continue
        vn = (vs[:i_peak + 1] - b.mdp_mV) / amp
        below = np.flatnonzero(vn < cfg.start_level)
        if below.size == 0:
            skipped.append(f"AP {b.index}: no sample below the start level before its peak")
            starts.append(math.nan)
            continue
        i = int(below[-1])
        frac = (cfg.start_level - vn[i]) / (vn[i + 1] - vn[i])
        starts.append(float(t[i] + frac * dt))
        usable.append(b)
    rng = np.random.default_rng(seed)
    beats: list[Beat] = []
    for b in usable:
        k = feat.beats.index(b)
        t0 = starts[k]
        nxt = next((s for s in starts[k + 1:] if math.isfinite(s)), math.inf)
        t_end = min(t0 + cfg.window_ms, nxt - cfg.next_beat_margin_ms, float(t[-1]))
        if t_end - t0 < cfg.min_window_ms:
            skipped.append(f"AP {b.index} at {b.peak_time_ms:.0f} ms: window {t_end - t0:.0f} ms "
                           f"< {cfg.min_window_ms:g} ms")
            continue
        tk = t0 + np.arange(int(math.floor((t_end - t0) / cfg.output_ms + 1e-9)) + 1) \
            * cfg.output_ms
        amp = b.peak_mV - b.mdp_mV
        vk = (np.interp(tk, t, v) - b.mdp_mV) / amp
        clean = None
        if noise_sd > 0:
            clean = vk.astype(np.float32)
            vk = vk + rng.normal(0.0, noise_sd, vk.size)
        beats.append(Beat(b.index, t0, cfg.start_level, vk.astype(np.float32), b.mdp_mV,
                          b.peak_mV, b.apd90_ms, clean))
    if len(beats) < cfg.min_beats:
        raise NotBeatingError(f"{name}: {len(beats)} usable beat(s), expected >= "
                              f"{cfg.min_beats} ({'; '.join(skipped) or 'no complete AP'})",
                              "too_few_beats", skipped)
    return BeatSet(name, beats, cfg.output_ms, summary, skipped)


def load_beats(path, cfg: DataConfig | None = None) -> BeatSet:
    """:func:`read_trace` + :func:`beats_from_trace` (name: the file path)."""
    t, v = read_trace(path)
    return beats_from_trace(t, v, str(path), cfg)


def simulate_beats(n_cells: int = 1, *, spread: float = 0.2, seed: int = 0,
                   duration_ms: float = 4000.0, prepace_ms: float = 3000.0,
                   noise_sd: float = 0.05, cfg: DataConfig | None = None
                   ) -> tuple[list[BeatSet], list[str]]:
    """Free-running Kernik cells (baseline for cell 0 when spread is 0; else multipliers
    U(1 - spread, 1 + spread), seed) simulated with cardiotwin.simulate_current_clamp,
    normalized per beat, observations with Gaussian noise of ``noise_sd`` (normalized).

    Returns (beat sets of the beating cells, reasons of the skipped cells).
    """
    from ..model import inputs_from_multipliers
    from ..population.sampling import sample_multipliers
    from ..simulate import simulate_current_clamp

    mult = sample_multipliers(n_cells, spread, seed) if spread > 0 \
        else np.ones((n_cells, 52))
    res = simulate_current_clamp(duration_ms, inputs_from_multipliers(mult),
                                 prepace_ms=prepace_ms)
    sets, skipped = [], []
    for i in range(n_cells):
        name = f"kernik_cell{i}_seed{seed}"
        try:
            sets.append(beats_from_trace(res.t_ms, res.v_mV[i], name, cfg, noise_sd=noise_sd,
                                         seed=seed * 1000 + i))
        except TraceError as e:
            skipped.append(str(e))
    return sets, skipped
