"""Conditioning of a voltage-clamp recording: resampling and leak subtraction.

* :func:`resample_signal` / :func:`resample`: to another sample interval (ms); the current with
  a polyphase anti-aliasing filter (``scipy.signal.resample_poly``), the command by linear
  interpolation (a command is piecewise linear; filtering would ring).
* :func:`subtract_leak`: a leak current fitted in windows (offset, or linear in V).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from .records import LeakFit, Recording, fail

#: Largest trace (samples) that resampling may produce.
MAX_SAMPLES = 50_000_000
#: Leak fit: window potentials spanning at least this (mV) give a linear fit, else an offset.
LEAK_MIN_SPAN_MV = 5.0


# ----------------------------------------------------------------------------- resampling


def _ratio(dt_in: float, dt_out: float, source: str) -> tuple[int, int]:
    """(up, down) with dt_out / dt_in = down / up exactly enough (1e-9 relative)."""
    r = Fraction(dt_out / dt_in).limit_denominator(1000)
    if r.numerator == 0 or abs(float(r) - dt_out / dt_in) > 1e-9 * (dt_out / dt_in) \
            or max(r.numerator, r.denominator) > 1000:
        raise fail(source, "sample_interval_ms", f"cannot resample from {dt_in:g} ms to "
                    f"{dt_out:g} ms: the ratio is not a simple fraction")
    return r.denominator, r.numerator


def resample_signal(x, dt_in_ms: float, dt_out_ms: float, *, source: str = "<data>"
                    ) -> np.ndarray:
    """Resample a uniformly sampled signal from ``dt_in_ms`` to ``dt_out_ms`` (ms) with a
    polyphase anti-aliasing FIR filter (scipy.signal.resample_poly, Kaiser window, edges padded
    linearly). Output sample j lies at t = j * dt_out_ms; length ceil(n * dt_in / dt_out)."""
    from scipy.signal import resample_poly

    x = np.asarray(x, dtype=np.float64)
    up, down = _ratio(dt_in_ms, dt_out_ms, source)
    if up == down:
        return x.copy()
    if len(x) * up / down > MAX_SAMPLES:
        raise fail(source, "sample_interval_ms", f"resampling {len(x)} samples from "
                    f"{dt_in_ms:g} ms to {dt_out_ms:g} ms would give {len(x) * up // down} "
                    f"samples; at most {MAX_SAMPLES} are allowed")
    return resample_poly(x, up, down, padtype="line")


def _interp_command(c: np.ndarray, dt_in: float, dt_out: float, n_out: int) -> np.ndarray:
    t_in = np.arange(len(c)) * dt_in
    return np.interp(np.arange(n_out) * dt_out, t_in, c)


def resample(recording: Recording, sample_interval_ms: float) -> Recording:
    """The recording resampled to ``sample_interval_ms`` (ms): the current anti-aliased
    (:func:`resample_signal`), the command linearly interpolated. Same object when equal."""
    dt_in, dt_out = recording.sample_interval_ms, float(sample_interval_ms)
    if not (math.isfinite(dt_out) and dt_out > 0):
        raise fail(recording.source, "sample_interval_ms", f"must be a positive number of ms, "
                    f"found {sample_interval_ms!r}")
    if abs(dt_in - dt_out) <= 1e-9 * dt_out:
        return recording
    i = resample_signal(recording.current_pA_per_pF, dt_in, dt_out, source=recording.source)
    c = recording.command_mV
    if c is not None:
        c = _interp_command(c, dt_in, dt_out, len(i))
    note = (f"resampled from {dt_in:g} ms ({1000 / dt_in:g} kHz) to {dt_out:g} ms "
            f"({1000 / dt_out:g} kHz): current anti-aliased (resample_poly), command interpolated")
    return recording.replace(t_ms=np.arange(len(i)) * dt_out, current_pA_per_pF=i,
                             command_mV=c, sample_interval_ms=dt_out,
                             notes=recording.notes + (note,))



# ----------------------------------------------------------------------------- leak


def first_change(x: np.ndarray, tol: float) -> int:
    """Index of the first sample more than ``tol`` from x[0] (len(x) when none)."""
    moved = np.abs(x - x[0]) > tol
    return int(np.argmax(moved)) if moved.any() else len(x)


def _holding_window(rec: Recording) -> tuple[float, float]:
    """Second half of the first constant stretch of the command (the holding segment)."""
    c = rec.command_mV
    k = first_change(c, 1.0)
    if k < 20:
        raise fail(rec.source, "leak_subtraction", f"the command starts with only {k} samples "
                    "at one level; expected a holding segment of >= 20 samples")
    return (k // 2) * rec.sample_interval_ms, k * rec.sample_interval_ms


def subtract_leak(recording: Recording, windows: str | Sequence[tuple[float, float]] = "holding"
                  ) -> Recording:
    """Subtract a leak current fitted in ``windows`` (ms, on the recording's time axis:
    protocol time once checked) and return the corrected recording with ``leak`` set.

    ``"holding"``: the second half of the first constant stretch of the command. When the
    window potentials span >= LEAK_MIN_SPAN_MV, I = g_leak (V - E_leak) is fitted by least
    squares (g in nS/pF = pA/pF per mV) and subtracted at every sample's command voltage;
    otherwise the mean current in the windows is subtracted as a constant offset (pA/pF).
    Whatever flows in the windows is removed, including the cell's own current there
    (e.g. IK1 at -80 mV), so choose windows where the cell's ionic current is negligible or
    use the result only where that is intended.
    """
    src = recording.source
    if recording.command_mV is None:
        raise fail(src, "leak_subtraction", "needs a command voltage; the recording has none")
    if isinstance(windows, str):
        if windows != "holding":
            raise fail(src, "leak_subtraction", f"unknown option {windows!r}; expected "
                        "'holding' or a list of (t0_ms, t1_ms) windows")
        windows = [_holding_window(recording)]
    wins = []
    t = recording.t_ms
    mask = np.zeros(recording.n_samples, bool)
    for w in windows:
        try:
            t0, t1 = (float(x) for x in w)
        except (TypeError, ValueError):
            raise fail(src, "leak_subtraction", f"window {w!r} is not a (t0_ms, t1_ms) pair"
                        ) from None
        sel = (t >= t0) & (t < t1)
        if not (t0 < t1) or sel.sum() < 2:
            raise fail(src, "leak_subtraction", f"window ({t0:g}, {t1:g}) ms holds "
                        f"{int(sel.sum())} samples of the {t[0]:g}..{t[-1]:g} ms recording; "
                        "expected t0 < t1 and >= 2 samples")
        mask |= sel
        wins.append((t0, t1))
    v, i = recording.command_mV[mask], recording.current_pA_per_pF[mask]
    if np.ptp(v) >= LEAK_MIN_SPAN_MV:
        g, i0 = np.polyfit(v, i, 1)
        fit = LeakFit("linear", float(g), float(i0), tuple(wins))
    else:
        fit = LeakFit("offset", 0.0, float(i.mean()), tuple(wins))
    corrected = recording.current_pA_per_pF - fit.current(recording.command_mV)
    note = (f"leak subtracted ({fit.method}): g_leak = {fit.g_leak_nS_per_pF:.4g} nS/pF, "
            f"I(0 mV) = {fit.i0_pA_per_pF:.4g} pA/pF")
    return recording.replace(current_pA_per_pF=corrected, leak=fit,
                             notes=recording.notes + (note,))
