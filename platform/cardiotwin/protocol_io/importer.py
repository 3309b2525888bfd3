"""A recorded command waveform back into a canonical protocol: samples merged into steps and
ramps.

The samples follow the protocol convention (:mod:`cardiotwin.protocols`): inside a segment of
n samples the j-th is v_start + (v_end - v_start) j / n, so a ramp's end value is never
sampled and the sample at a corner is the first of the later segment. The merge:

1. jumps: sample k + 1 starts a new piece where the change v[k+1] - v[k] differs from both its
   neighbours' changes by more than ``jump_mV`` (the first and last changes: from their one
   neighbour);
2. corners: each jump-free piece is split recursively (Douglas-Peucker) at its sample farthest
   from the least-squares line while that distance exceeds ``tolerance_mV``; each such
   boundary is then moved (within +-3 samples) to where the two least-squares fits leave the
   least squared error, the earliest on a tie (the corner sample goes to the later segment);
3. levels: a piece whose fitted slope changes it by less than ``tolerance_mV`` over its length
   is a step at its mean; otherwise a ramp whose v_start and v_end are its fitted line at
   j = 0 and j = n. Levels are rounded to ``resolution_mV`` (default 0.1 mV: 16-bit ADC or DAC
   quantization disappears; the levels of a protocol written by cardiotwin come back exactly)
   and adjacent steps at one level are joined.

Durations are whole numbers of the recording's sample interval (rounded to 1e-9 ms as
:meth:`cardiotwin.protocols.Protocol.from_csv` does), so the protocol_a command of an ABF
written at 10 kHz imports hash-equal to protocol_a (tested).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..protocols import Protocol, Segment

DEFAULT_TOLERANCE_MV = 0.1
DEFAULT_JUMP_MV = 0.5
DEFAULT_RESOLUTION_MV = 0.1
_REFINE = 3


def _fit(v: np.ndarray) -> tuple[float, float, float]:
    """(intercept at j = 0, slope per sample, squared error) of the least-squares line."""
    n = v.size
    if n == 1:
        return float(v[0]), 0.0, 0.0
    j = np.arange(n, dtype=np.float64)
    jm, vm = j.mean(), v.mean()
    sxx = float(np.sum((j - jm) ** 2))
    slope = float(np.sum((j - jm) * (v - vm)) / sxx)
    icpt = float(vm - slope * jm)
    sse = float(np.sum((v - (icpt + slope * j)) ** 2))
    return icpt, slope, sse


def _split(v: np.ndarray, a: int, b: int, tol: float, out: list[int]) -> None:
    """Douglas-Peucker on v[a:b] against its least-squares line: boundary indices into out."""
    if b - a < 3:
        return
    icpt, slope, _ = _fit(v[a:b])
    dev = np.abs(v[a:b] - (icpt + slope * np.arange(b - a)))
    k = int(np.argmax(dev))
    if dev[k] <= tol:
        return
    # the corner sits at the farthest sample of the chord line (more robust than the fit's)
    chord = v[a] + (v[b - 1] - v[a]) * np.arange(b - a) / max(1, b - a - 1)
    k = int(np.argmax(np.abs(v[a:b] - chord)))
    k = min(max(k, 1), b - a - 1)
    _split(v, a, a + k, tol, out)
    out.append(a + k)
    _split(v, a + k, b, tol, out)


def _refine(v: np.ndarray, lo: int, c: int, hi: int) -> int:
    """The boundary near c in (lo, hi) with the least total squared error of both fits
    (earliest on a tie)."""
    best, best_err = c, math.inf
    for b in range(max(lo + 1, c - _REFINE), min(hi - 1, c + _REFINE) + 1):
        err = _fit(v[lo:b])[2] + _fit(v[b:hi])[2]
        if err < best_err - 1e-9 * max(1.0, best_err):
            best, best_err = b, err
    return best


def _jumps(v: np.ndarray, jump_mV: float) -> list[int]:
    d = np.diff(v)
    if d.size == 0:
        return []
    left = np.concatenate(([np.inf], np.abs(np.diff(d))))     # |d[k] - d[k-1]|
    right = np.concatenate((np.abs(np.diff(d)), [np.inf]))    # |d[k] - d[k+1]|
    if d.size == 1:
        left = right = np.abs(d)
    return [int(k) + 1 for k in np.nonzero((left > jump_mV) & (right > jump_mV))[0]]


def _round(x: float, res: float) -> float:
    return float(round(round(x / res) * res, 9)) + 0.0 if res > 0 else float(x)


def segments_from_samples(v_mV, dt_ms: float, *, tolerance_mV: float = DEFAULT_TOLERANCE_MV,
                          jump_mV: float = DEFAULT_JUMP_MV,
                          resolution_mV: float = DEFAULT_RESOLUTION_MV) -> list[Segment]:
    """Steps and ramps of a sampled command (module docstring)."""
    v = np.asarray(v_mV, np.float64).ravel()
    if v.size == 0:
        raise ValueError("the command waveform has no samples")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"the command waveform has non-finite samples (first at index "
                         f"{int(np.argmax(~np.isfinite(v)))})")
    if not (math.isfinite(dt_ms) and dt_ms > 0):
        raise ValueError(f"sample interval must be a positive number of ms, found {dt_ms!r}")
    hard = [0, *_jumps(v, jump_mV), v.size]
    bounds: list[int] = [0]
    for a, b in zip(hard[:-1], hard[1:], strict=True):
        soft: list[int] = []
        _split(v, a, b, tolerance_mV, soft)
        edges = [a, *soft, b]
        for i in range(1, len(edges) - 1):
            edges[i] = _refine(v, edges[i - 1], edges[i], edges[i + 1])
        bounds += [e for e in edges[1:] if e > bounds[-1]]
    segs: list[Segment] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        n = b - a
        icpt, slope, _ = _fit(v[a:b])
        if abs(slope) * n <= tolerance_mV:
            v0 = v1 = _round(float(v[a:b].mean()), resolution_mV)
        else:
            v0, v1 = _round(icpt, resolution_mV), _round(icpt + slope * n, resolution_mV)
        dur = round(n * dt_ms, 9)
        if segs and v0 == v1 and segs[-1].v_start_mV == segs[-1].v_end_mV == v0:
            segs[-1] = Segment(round(segs[-1].duration_ms + dur, 9), v0, v0)
        else:
            segs.append(Segment(dur, v0, v1))
    return segs


def import_command(v_mV, dt_ms: float, *, temperature_K: float = 310.0,
                   **kw: float) -> Protocol:
    """The canonical Protocol of a sampled command (mV every ``dt_ms`` ms)."""
    return Protocol(tuple(segments_from_samples(v_mV, dt_ms, **kw)), round(dt_ms, 12),
                    temperature_K)


def read_command_samples(path: str | os.PathLike, *, sweep: int = 0,
                         column: str | None = None) -> tuple[np.ndarray, float, str]:
    """(command mV, sample interval ms, where it came from) of a recording: an ABF file (the
    command as :func:`cardiotwin.twin.read_abf` finds it: the DAC waveform, pyabf ``sweepC``,
    else a voltage channel) or a CSV/CSV.gz with a time column and a command column
    (``command_mV``, ``v_mV`` or ``voltage_mV``, or ``column``)."""
    name = os.fspath(path)
    if name.lower().endswith((".csv", ".gz")):
        from ..trace_csv import COMMAND_COLUMNS, TIME, Want, read_csv_trace

        cols = {column: "mV"} if column else COMMAND_COLUMNS
        tr = read_csv_trace(path, {"time": TIME, "command": Want("a command column", cols)},
                            uniform=True)
        return _csv_values(tr)
    if column is not None:
        raise ValueError("--column is for CSV recordings; an ABF's command is its DAC "
                         "waveform or voltage channel")
    from ..twin.abf import read_voltage_clamp
    from ..twin.records import convert_voltage

    abf = read_voltage_clamp(path, None, sweep=int(sweep), current_channel=None,
                             command_channel=None)
    if abf.command is None:
        raise ValueError(f"{name}: the file holds no command voltage (no DAC waveform, no "
                         "voltage channel)")
    cmd = convert_voltage(abf.command, abf.command_unit or "mV", source=name, field="command")
    return np.asarray(cmd, np.float64), float(abf.dt_ms), f"{abf.command_source}, sweep {sweep}"


def _csv_values(tr) -> tuple[np.ndarray, float, str]:
    c = tr.columns["command"]
    return np.asarray(c.values, np.float64), float(tr.sample_interval_ms), f"column {c.name}"


def import_recording(path: str | os.PathLike, *, sweep: int = 0, column: str | None = None,
                     temperature_K: float = 310.0, **kw: float) -> tuple[Protocol, str]:
    """(canonical Protocol, source description) of a recording's command waveform."""
    v, dt, src = read_command_samples(path, sweep=sweep, column=column)
    dt = round(dt, 9)
    try:
        return import_command(v, dt, temperature_K=temperature_K, **kw), src
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
