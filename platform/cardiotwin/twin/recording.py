"""Recording ingestion: voltage-clamp and current-clamp traces from ABF (pyabf) or CSV files.

Everything ends in plain data objects in the model's units:

* :class:`Recording` (voltage clamp): time ms, command voltage mV, membrane current pA/pF.
* :class:`APRecording` (current clamp): time ms, membrane potential mV.

Pipeline of :func:`read_abf` (and, from step 2, :func:`read_trace_csv` and
:func:`recording_from_arrays`):

1. Open the file (a path, bytes or a file-like; pyabf needs a path, so bytes go to a private
   temporary directory that is removed afterwards). pyabf's own exceptions never escape: an
   empty, truncated, corrupt or non-ABF file raises :class:`RecordingError`.
2. Pick the sweep (an index, or ``"mean"`` over all sweeps) and the channels: the current is the
   first ADC channel with current units unless ``current_channel`` says otherwise; the command
   voltage is, in this order, the DAC epoch waveform (pyabf ``sweepC``), an ADC channel with
   voltage units, the DAC holding level (waveform disabled), else absent.
3. Units from the channel header: current A/mA/uA/nA/pA/fA -> pA, voltage V/mV/uV -> mV; any
   other unit is refused.
4. Normalize to pA/pF with the membrane capacitance (pF): ``capacitance_pF`` when given, else the
   amplifier telegraph value in the header (pyabf ``fTelegraphMembraneCap``), else an error.
5. Resample to ``protocol.sample_interval_ms`` (or ``sample_interval_ms``) when the rates differ:
   the current with a polyphase anti-aliasing filter (``scipy.signal.resample_poly``), the
   command by linear interpolation (a command is piecewise linear; filtering would ring).
6. With a protocol: :func:`check_protocol` aligns the recording (trims the ABF pre-sweep holding
   and any trailing holding) and compares the command sample by sample; a mismatch raises
   :class:`ProtocolMismatchError` naming the first difference.
7. Optional leak subtraction (:func:`subtract_leak`) on the final time axis.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import protocols
from ..protocols import Protocol

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Factors to pA and to mV of the unit strings accepted in file headers and CSV columns.
CURRENT_UNITS: dict[str, float] = {"A": 1e12, "mA": 1e9, "uA": 1e6, "\u00b5A": 1e6,
                                   "\u03bcA": 1e6, "nA": 1e3, "pA": 1.0, "fA": 1e-3}
VOLTAGE_UNITS: dict[str, float] = {"V": 1e3, "mV": 1.0, "uV": 1e-3, "\u00b5V": 1e-3,
                                   "\u03bcV": 1e-3}
NORMALIZED_UNIT = "pA/pF"

#: Protocol check: each recorded command sample must lie within TOLERANCE_MV of the protocol's
#: command at some time from EDGE_MS before to one sample after it (timing slack at steps).
TOLERANCE_MV = 1.0
EDGE_MS = 0.5
#: Header capacitances outside this range (pF) are treated as absent (stale telegraphs).
CAPACITANCE_RANGE_PF = (1.0, 1000.0)
#: |current| above this (pA) gets a note: implausible for one cell, the units may be wrong.
PLAUSIBLE_CURRENT_PA = 1e6
#: Largest trace (samples) that resampling may produce.
MAX_SAMPLES = 50_000_000
#: Leak fit: window potentials spanning at least this (mV) give a linear fit, else an offset.
LEAK_MIN_SPAN_MV = 5.0

_ABF_SIGNATURES = {b"ABF ": 1, b"ABF2": 2}


# ----------------------------------------------------------------------------- errors


class RecordingError(ValueError):
    """A recording cannot be read or used. ``source`` (file) and ``field`` name what is wrong;
    the message says expected vs found."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        super().__init__(message)
        self.source = source
        self.field = field


class ProtocolMismatchError(RecordingError, protocols.ProtocolMismatchError):
    """The recording is not of the expected protocol (wrong length or command voltage).

    ``time_ms`` (protocol time), ``segment`` (index into protocol.segments), ``expected_mV`` and
    ``found_mV`` locate the first difference (None where not applicable)."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 time_ms: float | None = None, segment: int | None = None,
                 expected_mV: float | None = None, found_mV: float | None = None,
                 protocol_hash: str | None = None):
        super().__init__(message, source=source, field=field)
        self.time_ms = time_ms
        self.segment = segment
        self.expected_mV = expected_mV
        self.found_mV = found_mV
        self.protocol_hash = protocol_hash


def _fail(source: str, field: str, msg: str) -> RecordingError:
    return RecordingError(f"{source}: {field}: {msg}", source=source, field=field)


# ----------------------------------------------------------------------------- data objects


@dataclass(frozen=True)
class Channel:
    """One ADC channel of a file: index, name and units as written in the header."""

    index: int
    name: str
    units: str


@dataclass(frozen=True)
class LeakFit:
    """Leak current I_leak(V) = g_leak_nS_per_pF * V + i0_pA_per_pF (pA/pF, V in mV) that was
    subtracted. ``method`` "offset" (g = 0: a constant) or "linear" (fit over windows at
    potentials spanning >= LEAK_MIN_SPAN_MV). ``windows_ms``: the fitted windows (ms)."""

    method: str
    g_leak_nS_per_pF: float
    i0_pA_per_pF: float
    windows_ms: tuple[tuple[float, float], ...]

    @property
    def e_leak_mV(self) -> float:
        """Leak reversal potential (mV); NaN for an offset (no conductance)."""
        g = self.g_leak_nS_per_pF
        return -self.i0_pA_per_pF / g if g != 0 else math.nan

    def current(self, v_mV) -> np.ndarray:
        """Leak current (pA/pF) at command voltage(s) ``v_mV`` (mV)."""
        return self.g_leak_nS_per_pF * np.asarray(v_mV, dtype=np.float64) + self.i0_pA_per_pF

    def to_dict(self) -> dict[str, Any]:
        e = self.e_leak_mV
        return {"method": self.method, "g_leak_nS_per_pF": self.g_leak_nS_per_pF,
                "i0_pA_per_pF": self.i0_pA_per_pF, "e_leak_mV": e if math.isfinite(e) else None,
                "windows_ms": [list(w) for w in self.windows_ms]}


def _frozen(a) -> np.ndarray | None:
    if a is None:
        return None
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Recording:
    """A voltage-clamp recording in model units.

    Arrays (float64, read-only, equal length n): ``t_ms`` (ms, from 0, uniform),
    ``command_mV`` (mV; None when the file holds no command and no protocol supplied one),
    ``current_pA_per_pF`` (pA/pF). ``sample_interval_ms`` is the current spacing;
    ``source_sample_interval_ms`` the file's. ``capacitance_pF`` (pF; None when the data came
    already in pA/pF) and ``capacitance_source`` ("header", "user" or None). ``command_source``:
    "dac" (DAC epoch waveform), "channel K" (a recorded voltage), "dac holding level",
    "csv", "arrays", "protocol" (taken from the protocol: not verified) or "none".
    ``units``: the units found ({"current": ..., "command": ...}). ``protocol_hash`` is set once
    :func:`check_protocol` has matched the recording to a protocol. ``leak``: the subtracted leak.
    """

    t_ms: np.ndarray
    command_mV: np.ndarray | None
    current_pA_per_pF: np.ndarray
    sample_interval_ms: float
    source: str
    capacitance_pF: float | None = None
    capacitance_source: str | None = None
    command_source: str = "none"
    units: dict[str, str] = field(default_factory=dict)
    source_sample_interval_ms: float | None = None
    sweep: int | str | None = None
    n_sweeps: int | None = None
    current_channel: int | None = None
    channels: tuple[Channel, ...] = ()
    abf_version: str | None = None
    leak: LeakFit | None = None
    protocol_hash: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("t_ms", "command_mV", "current_pA_per_pF"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        n = len(self.current_pA_per_pF)
        for name in ("t_ms", "command_mV"):
            a = getattr(self, name)
            if a is not None and len(a) != n:
                raise _fail(self.source, name, f"length {len(a)} differs from the current's {n}")
        if self.source_sample_interval_ms is None:
            object.__setattr__(self, "source_sample_interval_ms", self.sample_interval_ms)

    @property
    def n_samples(self) -> int:
        return len(self.current_pA_per_pF)

    @property
    def duration_ms(self) -> float:
        """n_samples * sample_interval_ms (ms)."""
        return self.n_samples * self.sample_interval_ms

    @property
    def current_pA(self) -> np.ndarray:
        """Membrane current (pA) = current_pA_per_pF * capacitance_pF."""
        if self.capacitance_pF is None:
            raise _fail(self.source, "capacitance_pF", "unknown; the data came in pA/pF")
        return self.current_pA_per_pF * self.capacitance_pF

    def replace(self, **changes) -> Recording:
        """A copy with ``changes`` applied (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    def with_note(self, note: str) -> Recording:
        return self.replace(notes=self.notes + (note,))

    def metadata(self) -> dict[str, Any]:
        """JSON-able description without the arrays."""
        return {
            "source": self.source, "n_samples": self.n_samples,
            "duration_ms": self.duration_ms, "sample_interval_ms": self.sample_interval_ms,
            "source_sample_interval_ms": self.source_sample_interval_ms,
            "capacitance_pF": self.capacitance_pF, "capacitance_source": self.capacitance_source,
            "command_source": self.command_source, "units": dict(self.units),
            "sweep": self.sweep, "n_sweeps": self.n_sweeps,
            "current_channel": self.current_channel,
            "channels": [dataclasses.asdict(c) for c in self.channels],
            "abf_version": self.abf_version,
            "leak": self.leak.to_dict() if self.leak else None,
            "protocol_hash": self.protocol_hash, "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class APRecording:
    """A current-clamp (action potential) trace: ``t_ms`` (ms, from 0) and ``v_mV`` (mV),
    float64 read-only; ``units`` found for the voltage; other fields as in :class:`Recording`."""

    t_ms: np.ndarray
    v_mV: np.ndarray
    sample_interval_ms: float
    source: str
    units: dict[str, str] = field(default_factory=dict)
    source_sample_interval_ms: float | None = None
    sweep: int | None = None
    n_sweeps: int | None = None
    channel: int | None = None
    channels: tuple[Channel, ...] = ()
    abf_version: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "t_ms", _frozen(self.t_ms))
        object.__setattr__(self, "v_mV", _frozen(self.v_mV))
        if len(self.t_ms) != len(self.v_mV):
            raise _fail(self.source, "t_ms", f"length {len(self.t_ms)} differs from v_mV's "
                        f"{len(self.v_mV)}")
        if self.source_sample_interval_ms is None:
            object.__setattr__(self, "source_sample_interval_ms", self.sample_interval_ms)

    @property
    def n_samples(self) -> int:
        return len(self.v_mV)

    @property
    def duration_ms(self) -> float:
        return self.n_samples * self.sample_interval_ms

    def metadata(self) -> dict[str, Any]:
        """JSON-able description without the arrays."""
        return {"source": self.source, "n_samples": self.n_samples,
                "duration_ms": self.duration_ms, "sample_interval_ms": self.sample_interval_ms,
                "source_sample_interval_ms": self.source_sample_interval_ms,
                "units": dict(self.units), "sweep": self.sweep, "n_sweeps": self.n_sweeps,
                "channel": self.channel,
                "channels": [dataclasses.asdict(c) for c in self.channels],
                "abf_version": self.abf_version, "notes": list(self.notes)}


# ----------------------------------------------------------------------------- units


def _unit_list(units: dict) -> str:
    return ", ".join(k for k in units if k.isascii())


def _clean_unit(unit) -> str:
    return str(unit).replace("\x00", "").strip()


def convert_current(values, unit: str, *, source: str = "<data>", field: str = "current"
                    ) -> np.ndarray:
    """Current in ``unit`` (A, mA, uA, nA, pA, fA) -> pA (float64). Other units raise
    RecordingError naming ``source`` and ``field``."""
    u = _clean_unit(unit)
    if u not in CURRENT_UNITS:
        raise _fail(source, field, f"unknown current unit {u!r}; expected one of "
                    f"{_unit_list(CURRENT_UNITS)}")
    return np.asarray(values, dtype=np.float64) * CURRENT_UNITS[u]


def convert_voltage(values, unit: str, *, source: str = "<data>", field: str = "voltage"
                    ) -> np.ndarray:
    """Voltage in ``unit`` (V, mV, uV) -> mV (float64). Other units raise RecordingError."""
    u = _clean_unit(unit)
    if u not in VOLTAGE_UNITS:
        raise _fail(source, field, f"unknown voltage unit {u!r}; expected one of "
                    f"{_unit_list(VOLTAGE_UNITS)}")
    return np.asarray(values, dtype=np.float64) * VOLTAGE_UNITS[u]


def _check_finite(x: np.ndarray, dt_ms: float, source: str, field: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        k = int(np.argmax(bad))
        raise _fail(source, field, f"{int(bad.sum())} non-finite values (first: {float(x[k])!r} at "
                    f"sample {k}, t = {k * dt_ms:g} ms); expected finite numbers")


# ----------------------------------------------------------------------------- resampling


def _ratio(dt_in: float, dt_out: float, source: str) -> tuple[int, int]:
    """(up, down) with dt_out / dt_in = down / up exactly enough (1e-9 relative)."""
    r = Fraction(dt_out / dt_in).limit_denominator(1000)
    if r.numerator == 0 or abs(float(r) - dt_out / dt_in) > 1e-9 * (dt_out / dt_in) \
            or max(r.numerator, r.denominator) > 1000:
        raise _fail(source, "sample_interval_ms", f"cannot resample from {dt_in:g} ms to "
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
        raise _fail(source, "sample_interval_ms", f"resampling {len(x)} samples from "
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
        raise _fail(recording.source, "sample_interval_ms", f"must be a positive number of ms, "
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


# ----------------------------------------------------------------------------- protocol check


def _segment_of(protocol: Protocol, k: int) -> int:
    steps = protocol.segment_steps()[0]
    return min(int(np.searchsorted(np.cumsum(steps), k, side="right")), len(steps) - 1)


def _bounds(p: np.ndarray, dt: float, tol: float, edge_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the range of protocol values from edge_ms before to one sample after, +- tol."""
    e = max(0, int(round(edge_ms / dt)))
    padded = np.concatenate((np.full(e, p[0]), p, [p[-1]]))
    win = sliding_window_view(padded, e + 2)
    return win.min(axis=1) - tol, win.max(axis=1) + tol


def _violations(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (c < lo) | (c > hi)


def _first_change(x: np.ndarray, tol: float) -> int:
    moved = np.abs(x - x[0]) > tol
    return int(np.argmax(moved)) if moved.any() else len(x)


def _lag_candidates(c: np.ndarray, p: np.ndarray, max_lag: int, tol: float) -> list[int]:
    """Offsets (samples) at which the protocol may start inside a longer recording: the
    cross-correlation peak of the first differences, the shift of the first voltage change,
    and 0 (each with +-1 sample)."""
    from scipy.signal import correlate

    cands = []
    dc, dp = np.diff(c), np.diff(p)
    if len(dp) and np.any(dp) and np.any(dc):
        cands.append(int(np.argmax(correlate(dc, dp, mode="valid", method="auto"))))
    fc, fp = _first_change(c, tol), _first_change(p, tol)
    if fp < len(p):
        cands.append(fc - fp)
    cands.append(0)
    out = []
    for k in cands:
        for d in (0, -1, 1):
            if 0 <= k + d <= max_lag and k + d not in out:
                out.append(k + d)
    return out


def _describe_lead_trail(c: np.ndarray, lag: int, n_prot: int, tol: float
                         ) -> tuple[str | None, str | None]:
    """Why the extra samples before/after the protocol are not holding (None when they are)."""
    problems = []
    for name, part in (("before", c[:lag]), ("after", c[lag + n_prot:])):
        if len(part) and np.ptp(part) > 2 * tol:
            problems.append(f"{len(part)} samples {name} the protocol are not at one holding "
                            f"level (from {part.min():.2f} to {part.max():.2f} mV)")
        else:
            problems.append(None)
    return problems[0], problems[1]


def check_protocol(recording: Recording, protocol: Protocol, *,
                   tolerance_mV: float = TOLERANCE_MV, edge_ms: float = EDGE_MS) -> Recording:
    """Match the recording to ``protocol`` and return it aligned to the protocol's time axis
    (t = 0 at the protocol's start, exactly protocol.n_samples samples, ``protocol_hash`` set).

    The recording is first resampled to the protocol's sample interval when needed. Extra
    samples are allowed only as a constant holding level before the protocol (the ABF pre-sweep
    of 1/64 of the sweep that pyabf's sweepC includes) and after it; they are trimmed. Each
    command sample must lie within ``tolerance_mV`` (mV) of the protocol's command at some time
    from ``edge_ms`` (ms) before to one sample after it (slack for step timing and settling).
    A recording without a command (``command_source`` "none") is checked for length only and
    gets the protocol's command, flagged "protocol".

    Raises ProtocolMismatchError (length or command) saying where the first difference is.
    """
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a cardiotwin Protocol, found {type(protocol).__name__}")
    src, h = recording.source, protocol.protocol_hash
    rec = resample(recording, protocol.sample_interval_ms)
    dt, n_prot, n = protocol.sample_interval_ms, protocol.n_samples, rec.n_samples
    p = protocol.command_voltage()
    tag = f"protocol {h[:12]} ({n_prot} samples, {protocol.duration_ms:g} ms at {dt:g} ms)"
    was = recording.sample_interval_ms
    at = f"at {dt:g} ms" + (f", resampled from {was:g} ms" if rec is not recording else "")

    if rec.command_mV is None:
        if n != n_prot:
            seg = _segment_of(protocol, min(n, n_prot - 1))
            raise ProtocolMismatchError(
                f"{src}: length: the recording has {n} samples ({n * dt:g} ms {at}), "
                f"{tag} needs {n_prot}; the file holds no command voltage to align with, so the "
                f"length must match exactly (the recording ends in segment {seg})",
                source=src, field="length", time_ms=min(n, n_prot) * dt, segment=seg,
                protocol_hash=h)
        return rec.replace(t_ms=protocol.times_ms(), command_mV=p, command_source="protocol",
                           protocol_hash=h, notes=rec.notes + (
                               "the file holds no command voltage: the command is taken from "
                               f"protocol {h[:12]} and was not verified (length only)",))

    c = rec.command_mV
    lo, hi = _bounds(p, dt, tolerance_mV, edge_ms)
    crit = f"tolerance {tolerance_mV:g} mV, {edge_ms:g} ms"

    def mismatch(lag: int, k: int, n_bad: int, extra: str = "") -> ProtocolMismatchError:
        # report where the difference begins: step back over samples that were within the
        # timing slack but already off the protocol's value at their own time
        while k > 0 and abs(c[lag + k - 1] - p[k - 1]) > tolerance_mV:
            k -= 1
        seg = _segment_of(protocol, k)
        s = protocol.segments[seg]
        level = (f"{s.v_start_mV:g} mV" if not s.is_ramp
                 else f"ramp {s.v_start_mV:g} to {s.v_end_mV:g} mV")
        found = float(c[lag + k])
        where = f" (recording t = {(lag + k) * dt:g} ms)" if lag else ""
        return ProtocolMismatchError(
            f"{src}: command_mV: the command voltage differs from {tag}, {crit}: first "
            f"difference at t = {k * dt:g} ms{where} in segment {seg} ({level}): expected "
            f"{p[k]:.2f} mV, found {found:.2f} mV; {n_bad} of {n_prot} samples differ{extra}",
            source=src, field="command_mV", time_ms=k * dt, segment=seg,
            expected_mV=float(p[k]), found_mV=found, protocol_hash=h)

    if n < n_prot:
        bad = _violations(c, lo[:n], hi[:n])
        seg = _segment_of(protocol, n)
        msg = (f"{src}: length: the recording has {n} samples ({n * dt:g} ms {at}), "
               f"{tag} needs {n_prot}: it ends at t = {n * dt:g} ms in segment {seg}")
        if bad.any():
            k = int(np.argmax(bad))
            msg += (f"; the command also differs from t = {k * dt:g} ms (segment "
                    f"{_segment_of(protocol, k)}): expected {p[k]:.2f} mV, found {c[k]:.2f} mV")
        raise ProtocolMismatchError(msg, source=src, field="length", time_ms=n * dt,
                                    segment=seg, protocol_hash=h)

    best = None  # (first bad index, lag, n_bad) of the candidate that matched longest
    for lag in _lag_candidates(c, p, n - n_prot, tolerance_mV):
        bad = _violations(c[lag:lag + n_prot], lo, hi)
        if bad.any():
            k = int(np.argmax(bad))
            if best is None or k > best[0]:
                best = (k, lag, int(bad.sum()))
            continue
        before, after = _describe_lead_trail(c, lag, n_prot, tolerance_mV)
        if before or after:
            raise ProtocolMismatchError(
                f"{src}: length: the recording has {n} samples ({n * dt:g} ms), {tag} matches "
                f"from t = {lag * dt:g} ms, but " + "; ".join(x for x in (before, after) if x),
                source=src, field="length", time_ms=(lag if before else lag + n_prot) * dt,
                segment=0 if before else len(protocol.segments) - 1, protocol_hash=h)
        notes = rec.notes
        if n > n_prot:
            notes += (f"trimmed {lag * dt:g} ms of holding before the protocol (ABF pre-sweep) "
                      f"and {(n - n_prot - lag) * dt:g} ms after it",)
        return rec.replace(t_ms=protocol.times_ms(), command_mV=c[lag:lag + n_prot],
                           current_pA_per_pF=rec.current_pA_per_pF[lag:lag + n_prot],
                           protocol_hash=h, notes=notes)
    k, lag, n_bad = best
    extra = (f"; the recording is {n - n_prot} samples longer than the protocol"
             if n > n_prot else "")
    raise mismatch(lag, k, n_bad, extra)


# ----------------------------------------------------------------------------- leak


def _holding_window(rec: Recording) -> tuple[float, float]:
    """Second half of the first constant stretch of the command (the holding segment)."""
    c = rec.command_mV
    k = _first_change(c, 1.0)
    if k < 20:
        raise _fail(rec.source, "leak_subtraction", f"the command starts with only {k} samples "
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
        raise _fail(src, "leak_subtraction", "needs a command voltage; the recording has none")
    if isinstance(windows, str):
        if windows != "holding":
            raise _fail(src, "leak_subtraction", f"unknown option {windows!r}; expected "
                        "'holding' or a list of (t0_ms, t1_ms) windows")
        windows = [_holding_window(recording)]
    wins = []
    t = recording.t_ms
    mask = np.zeros(recording.n_samples, bool)
    for w in windows:
        try:
            t0, t1 = (float(x) for x in w)
        except (TypeError, ValueError):
            raise _fail(src, "leak_subtraction", f"window {w!r} is not a (t0_ms, t1_ms) pair"
                        ) from None
        sel = (t >= t0) & (t < t1)
        if not (t0 < t1) or sel.sum() < 2:
            raise _fail(src, "leak_subtraction", f"window ({t0:g}, {t1:g}) ms holds "
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


# ----------------------------------------------------------------------------- assembly


def _resolve_capacitance(header_pF: float | None, user_pF, current_unit: str, source: str
                         ) -> tuple[float | None, str | None, list[str]]:
    notes = []
    lo, hi = CAPACITANCE_RANGE_PF
    if header_pF is not None and not (lo <= header_pF <= hi):
        notes.append(f"header membrane capacitance {header_pF:g} pF ignored (outside "
                     f"{lo:g}..{hi:g} pF)")
        header_pF = None
    if user_pF is not None:
        try:
            cm = float(user_pF)
        except (TypeError, ValueError):
            cm = math.nan
        if isinstance(user_pF, bool) or not (math.isfinite(cm) and cm > 0):
            raise _fail(source, "capacitance_pF", f"must be a positive number of pF, "
                        f"found {user_pF!r}")
        if header_pF is not None and abs(header_pF - cm) > 0.01 * cm:
            notes.append(f"capacitance_pF {cm:g} pF given; the header says {header_pF:g} pF")
        if not (lo <= cm <= hi):
            notes.append(f"capacitance {cm:g} pF is outside the usual {lo:g}..{hi:g} pF")
        return cm, "user", notes
    if header_pF is not None:
        return float(header_pF), "header", notes
    if current_unit == NORMALIZED_UNIT:
        return None, None, notes
    raise _fail(source, "capacitance_pF", "the file holds no membrane capacitance (no "
                "telegraphed Cm in the header); pass capacitance_pF (pF) to normalize the "
                f"current from {current_unit} to pA/pF")


def _assemble(current, current_unit: str, command, command_unit: str | None, dt_ms: float, *,
              source: str, header_capacitance_pF: float | None, capacitance_pF,
              command_source: str, protocol: Protocol | None, sample_interval_ms,
              leak_subtraction, notes: Sequence[str] = (), **meta) -> Recording:
    """Units -> pA (or pA/pF) and mV, normalization, checks, resampling, protocol, leak."""
    current = np.asarray(current, dtype=np.float64)
    if current.ndim != 1 or len(current) < 2:
        raise _fail(source, "current", f"expected a 1-D trace of >= 2 samples, found shape "
                    f"{current.shape}")
    _check_finite(current, dt_ms, source, "current")
    notes = list(notes)
    cu = _clean_unit(current_unit)
    if cu == NORMALIZED_UNIT:
        i_norm = current.copy()
    else:
        i_pA = convert_current(current, cu, source=source, field="current units")
        peak = float(np.max(np.abs(i_pA)))
        if peak > PLAUSIBLE_CURRENT_PA:
            notes.append(f"max |current| = {peak:.3g} pA is implausible for one cell; check the "
                         f"channel units ({cu!r})")
    cm, cm_source, cm_notes = _resolve_capacitance(header_capacitance_pF, capacitance_pF, cu,
                                                   source)
    notes += cm_notes
    if cu != NORMALIZED_UNIT:
        i_norm = i_pA / cm
    units = {"current": cu}
    cmd = None
    if command is not None:
        cmd = convert_voltage(command, command_unit or "mV", source=source,
                              field="command units")
        if cmd.shape != current.shape:
            raise _fail(source, "command_mV", f"length {len(cmd)} differs from the current's "
                        f"{len(current)}")
        _check_finite(cmd, dt_ms, source, "command_mV")
        units["command"] = _clean_unit(command_unit or "mV")
    rec = Recording(np.arange(len(i_norm)) * dt_ms, cmd, i_norm, dt_ms, source,
                    capacitance_pF=cm, capacitance_source=cm_source,
                    command_source=command_source if cmd is not None else "none", units=units,
                    source_sample_interval_ms=dt_ms, notes=tuple(notes), **meta)
    if sample_interval_ms is not None:
        rec = resample(rec, sample_interval_ms)
    if protocol is not None:
        rec = check_protocol(rec, protocol)
    if leak_subtraction is not None and leak_subtraction is not False:
        rec = subtract_leak(rec, "holding" if leak_subtraction is True else leak_subtraction)
    return rec


def _uniform_dt(t_ms: np.ndarray, source: str, field: str = "t_ms") -> float:
    t = np.asarray(t_ms, dtype=np.float64)
    _check_finite(t, 1.0, source, field)
    if len(t) < 2:
        raise _fail(source, field, f"expected >= 2 samples, found {len(t)}")
    d = np.diff(t)
    dt = float(np.median(d))
    if not dt > 0:
        raise _fail(source, field, f"time must increase; median step is {dt!r} ms")
    off = np.abs(d - dt) > 1e-3 * dt
    if off.any():
        k = int(np.argmax(off))
        raise _fail(source, field, f"not uniformly sampled: step {k} (t = {t[k]:g} ms) is "
                    f"{d[k]:g} ms, expected {dt:g} ms")
    return dt


def recording_from_arrays(current, *, current_units: str = NORMALIZED_UNIT, command_mV=None,
                          command_units: str = "mV", t_ms=None, sample_interval_ms=None,
                          capacitance_pF=None, protocol: Protocol | None = None,
                          resample_ms: float | None = None, leak_subtraction=None,
                          source: str = "<arrays>") -> Recording:
    """A :class:`Recording` from arrays (e.g. a JSON trace): ``current`` in ``current_units``
    ("pA/pF", or A/nA/pA... with ``capacitance_pF``), optional ``command_mV`` in
    ``command_units``, and either ``t_ms`` (uniform, ms) or ``sample_interval_ms`` (ms; defaults
    to the protocol's). ``protocol``, ``resample_ms`` and ``leak_subtraction`` as in
    :func:`read_abf`."""
    notes = []
    if t_ms is not None:
        t = np.asarray(t_ms, dtype=np.float64)
        dt = _uniform_dt(t, source)
        if len(t) != len(np.atleast_1d(current)):
            raise _fail(source, "t_ms", f"length {len(t)} differs from the current's "
                        f"{len(np.atleast_1d(current))}")
        if t[0] != 0:
            notes.append(f"time re-based to start at 0 (first sample was t = {t[0]:g} ms)")
    elif sample_interval_ms is not None:
        dt = float(sample_interval_ms)
        if not (math.isfinite(dt) and dt > 0):
            raise _fail(source, "sample_interval_ms", f"must be a positive number of ms, "
                        f"found {sample_interval_ms!r}")
    elif protocol is not None:
        dt = protocol.sample_interval_ms
        notes.append(f"sample interval assumed from the protocol ({dt:g} ms)")
    else:
        raise _fail(source, "t_ms", "give t_ms, sample_interval_ms or a protocol")
    return _assemble(current, current_units, command_mV, command_units, dt, source=source,
                     header_capacitance_pF=None, capacitance_pF=capacitance_pF,
                     command_source="arrays", protocol=protocol,
                     sample_interval_ms=resample_ms, leak_subtraction=leak_subtraction,
                     notes=notes)


# ----------------------------------------------------------------------------- ABF


class _Source:
    """Where the bytes come from: a path (kept) or bytes/file-like (a private temp file)."""

    def __init__(self, src: PathOrBytes, name: str | None):
        self._tmp = None
        if isinstance(src, (str, os.PathLike)):
            self.path = Path(src)
            self.name = name or str(src)
            if not self.path.is_file():
                raise _fail(self.name, "path", "file not found (or not a regular file)")
            self.size = self.path.stat().st_size
            with self.path.open("rb") as fh:
                self.head = fh.read(4)
            return
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
        elif hasattr(src, "read"):
            data = src.read()
            if not isinstance(data, (bytes, bytearray)):
                raise _fail(name or "<file-like>", "data", "the file-like returned "
                            f"{type(data).__name__}; open it in binary mode")
            data = bytes(data)
        else:
            raise TypeError(f"expected a path, bytes or a binary file-like, found "
                            f"{type(src).__name__}")
        self.name = name or getattr(src, "name", None) or "<uploaded bytes>"
        self.name = str(self.name)
        self.size, self.head = len(data), data[:4]
        self._tmp = tempfile.TemporaryDirectory(prefix="cardiotwin-abf-")
        self.path = Path(self._tmp.name) / "upload.abf"
        with open(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_abf(s: _Source):
    """pyabf.ABF of the source with every pyabf failure turned into RecordingError."""
    import pyabf

    if s.size == 0:
        raise _fail(s.name, "file", "the file is empty (0 bytes); expected an ABF file")
    if s.head not in _ABF_SIGNATURES:
        raise _fail(s.name, "signature", f"not an ABF file: it starts with {s.head!r}; expected "
                    "b'ABF ' (ABF1) or b'ABF2' (ABF2)")
    try:
        hdr = pyabf.ABF(str(s.path), loadData=False, cacheStimulusFiles=False)
    except Exception as e:  # noqa: BLE001 - pyabf raises anything on a corrupt header
        raise _fail(s.name, "header", f"cannot read the ABF header ({type(e).__name__}: {e}); "
                    f"the file ({s.size} bytes) is truncated or corrupt") from None
    need = hdr.dataByteStart + hdr.dataPointCount * hdr.dataPointByteSize
    if hdr.dataPointCount <= 0 or hdr.channelCount <= 0:
        raise _fail(s.name, "data", f"the header declares {hdr.dataPointCount} data points in "
                    f"{hdr.channelCount} channels; expected a recording")
    if s.size < need:
        raise _fail(s.name, "data", f"truncated: the header declares {hdr.dataPointCount} data "
                    f"points ({need} bytes with the header), the file has {s.size} bytes")
    try:
        abf = pyabf.ABF(str(s.path), loadData=True, cacheStimulusFiles=False)
    except Exception as e:  # noqa: BLE001
        raise _fail(s.name, "data", f"cannot read the ABF data ({type(e).__name__}: {e})"
                    ) from None
    if not (abf.dataRate > 0 and abf.sweepCount >= 1 and abf.sweepPointCount >= 2):
        raise _fail(s.name, "header", f"sample rate {abf.dataRate} Hz, {abf.sweepCount} sweeps "
                    f"of {abf.sweepPointCount} points; expected a positive rate and >= 2 points")
    _fix_short_abf1_header(abf)
    return abf


def _abf1_header_has(abf, offset: int, size: int) -> bool:
    """ABF1 files written with a short header (e.g. pyabf's writer: 2048 bytes) keep data where
    later header fields would be; pyabf reads those fields from the data anyway."""
    return abf.abfVersion["major"] != 1 or offset + size <= abf._headerV1.lDataSectionPtr * 512


def _fix_short_abf1_header(abf) -> None:
    """Undo a telegraph gain that pyabf read from the data section of a short ABF1 header."""
    if _abf1_header_has(abf, 4576, 64):
        return
    h = abf._headerV1
    for i in range(abf.channelCount):
        adc = h.nADCSamplingSeq[i]
        if 0 <= adc < 16 and h.nTelegraphEnable[adc] == 1:
            g = h.fTelegraphAdditGain[adc]
            if math.isfinite(g) and g != 0:
                abf.data[i] = (abf.data[i] - abf._dataOffset[i]) * g + abf._dataOffset[i]


def _channels(abf) -> tuple[Channel, ...]:
    return tuple(Channel(i, _clean_unit(abf.adcNames[i]), _clean_unit(abf.adcUnits[i]))
                 for i in range(abf.channelCount))


def _header_capacitance(abf, ch: int) -> float | None:
    """Telegraphed membrane capacitance (pF) of ADC channel ``ch``, None when absent."""
    try:
        if abf.abfVersion["major"] == 2:
            cm = abf._adcSection.fTelegraphMembraneCap[ch]
        elif _abf1_header_has(abf, 4704, 64):
            cm = abf._headerV1.fTelegraphMembraneCap[abf._headerV1.nADCSamplingSeq[ch]]
        else:
            return None
        cm = float(cm)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return cm if math.isfinite(cm) and cm > 0 else None


def _sweeps(abf, sweep, source: str) -> list[int]:
    if isinstance(sweep, str):
        if sweep != "mean":
            raise _fail(source, "sweep", f"expected a sweep index or 'mean', found {sweep!r}")
        return list(range(abf.sweepCount))
    if isinstance(sweep, bool) or not isinstance(sweep, (int, np.integer)) \
            or not 0 <= int(sweep) < abf.sweepCount:
        raise _fail(source, "sweep", f"expected an index in 0..{abf.sweepCount - 1} or 'mean', "
                    f"found {sweep!r}")
    return [int(sweep)]


def _sweep_y(abf, s: int, ch: int, source: str) -> np.ndarray:
    try:
        abf.setSweep(s, channel=ch)
        return np.array(abf.sweepY, dtype=np.float64)
    except Exception as e:  # noqa: BLE001
        raise _fail(source, "data", f"cannot read sweep {s} channel {ch} "
                    f"({type(e).__name__}: {e})") from None


def _mean_of(traces: list[np.ndarray], source: str, what: str) -> np.ndarray:
    if len({len(t) for t in traces}) > 1:
        raise _fail(source, "sweep", f"cannot average {what}: the sweeps have different lengths "
                    f"({sorted({len(t) for t in traces})} samples); choose one sweep")
    return np.mean(traces, axis=0)


def _pick_channel(abf, channel, units: dict, source: str, what: str, field: str) -> int:
    chans = _channels(abf)
    if channel is None:
        for c in chans:
            if c.units in units:
                return c.index
        raise _fail(source, field, f"no channel with {what} units ({_unit_list(units)}); "
                    f"found {[(c.index, c.name, c.units) for c in chans]}")
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) \
            or not 0 <= int(channel) < len(chans):
        raise _fail(source, field, f"expected a channel index in 0..{len(chans) - 1}, "
                    f"found {channel!r}")
    c = chans[int(channel)]
    if c.units not in units:
        raise _fail(source, field, f"channel {c.index} ({c.name!r}) has units {c.units!r}; "
                    f"expected {what} units ({_unit_list(units)})")
    return c.index


def _dac_state(abf, ch: int) -> tuple[str, str | None]:
    """('waveform' | 'holding' | 'none', DAC units) for the DAC pyabf pairs with channel ch."""
    try:
        dac_units = _clean_unit(abf.dacUnits[ch]) if ch < len(abf.dacUnits) else None
        if abf.abfVersion["major"] == 1:
            if not _abf1_header_has(abf, 2296, 2708 - 2296) or ch > 1:
                return "none", dac_units
            enable = abf._headerV1.nWaveformEnable[ch]
            src = abf._headerV1.nWaveformSource[ch]
        else:
            enable = abf._dacSection.nWaveformEnable[ch]
            src = abf._dacSection.nWaveformSource[ch]
            sync = getattr(abf, "_synchArraySection", None)
            if abf.sweepCount > 1 and sync is not None and len(set(sync.lLength)) > 1:
                return "none", dac_units  # variable-length sweeps: pyabf has no waveform
    except (AttributeError, IndexError, TypeError):
        return "none", None
    if dac_units not in VOLTAGE_UNITS:
        return "none", dac_units
    if enable and src == 1:
        return "waveform", dac_units
    if not enable or src == 0:
        return "holding", dac_units
    return "none", dac_units  # source 2: a stimulus file we do not go looking for


def _sweep_c(abf, s: int, ch: int, n: int, source: str) -> np.ndarray:
    try:
        abf.setSweep(s, channel=ch)
        c = np.array(abf.sweepC, dtype=np.float64)
    except Exception as e:  # noqa: BLE001
        raise _fail(source, "command_mV", f"cannot build the DAC command of sweep {s} "
                    f"({type(e).__name__}: {e})") from None
    if len(c) != n:
        raise _fail(source, "command_mV", f"DAC command of sweep {s} has {len(c)} samples, "
                    f"the current has {n}")
    return c


def _read_command(abf, sweeps, ch: int, n_by_sweep, command_channel, source: str):
    """(command or None, units, command_source, notes)."""
    if command_channel not in (None, "dac") and not isinstance(command_channel, (int, np.integer)):
        raise _fail(source, "command_channel", f"expected None, 'dac' or a channel index, "
                    f"found {command_channel!r}")
    state, dac_units = _dac_state(abf, ch)
    volt = [c.index for c in _channels(abf) if c.units in VOLTAGE_UNITS and c.index != ch]

    def from_dac():
        cs = [_sweep_c(abf, s, ch, n, source) for s, n in zip(sweeps, n_by_sweep)]
        for s, c in zip(sweeps[1:], cs[1:]):
            d = np.abs(c - cs[0]) > 1e-6
            if d.any():
                k = int(np.argmax(d))
                raise _fail(source, "sweep", f"cannot average: the DAC command of sweep {s} "
                            f"differs from sweep {sweeps[0]}'s at t = "
                            f"{k * 1000 / abf.dataRate:g} ms ({c[k]:g} vs {cs[0][k]:g} "
                            f"{dac_units}); choose one sweep")
        return cs[0]

    def from_channel(k: int):
        traces = [_sweep_y(abf, s, k, source) for s in sweeps]
        return _mean_of(traces, source, "the voltage channel"), _clean_unit(abf.adcUnits[k])

    if command_channel == "dac":
        if state == "none":
            raise _fail(source, "command_channel", "the file defines no DAC command waveform "
                        f"for channel {ch} (DAC units {dac_units!r}); use a voltage channel")
        return from_dac(), dac_units, "dac" if state == "waveform" else "dac holding level", []
    if command_channel is not None:
        k = _pick_channel(abf, command_channel, VOLTAGE_UNITS, source, "voltage",
                          "command_channel")
        c, u = from_channel(k)
        return c, u, f"channel {k}", []
    if state == "waveform":
        return from_dac(), dac_units, "dac", []
    if volt:
        c, u = from_channel(volt[0])
        return c, u, f"channel {volt[0]}", []
    if state == "holding":
        return (from_dac(), dac_units, "dac holding level",
                ["the DAC waveform is disabled: the command is the constant holding level"])
    return None, None, "none", ["the file holds no command voltage (no DAC waveform, no "
                                "voltage channel)"]


def read_abf(path_or_bytes: PathOrBytes, *, sweep: int | str = 0,
             current_channel: int | None = None, command_channel: int | str | None = None,
             capacitance_pF: float | None = None, protocol: Protocol | None = None,
             sample_interval_ms: float | None = None, leak_subtraction=None,
             name: str | None = None) -> Recording:
    """Read a voltage-clamp recording from an ABF1 or ABF2 file (path, bytes or binary file-like).

    ``sweep``: index, or "mean" (average of all sweeps; they must share length and command).
    ``current_channel``: ADC channel of the membrane current (default: the first with current
    units). ``command_channel``: None (auto: DAC epoch waveform, else a voltage channel, else
    the DAC holding level), "dac", or the index of an ADC channel with voltage units.
    ``capacitance_pF`` (pF): overrides the header's telegraphed Cm; required when the header has
    none. ``protocol``: resample to its sample interval and :func:`check_protocol` (trims the
    pre-sweep; ProtocolMismatchError on mismatch). ``sample_interval_ms``: resample target (ms)
    when no protocol is given. ``leak_subtraction``: None, "holding" (or True) or a list of
    (t0_ms, t1_ms) windows (see :func:`subtract_leak`). ``name``: shown in errors for bytes.

    Returns a :class:`Recording` (ms, mV, pA/pF). Raises RecordingError (unreadable file, units,
    capacitance, NaN) or ProtocolMismatchError.
    """
    with _Source(path_or_bytes, name) as s:
        abf = _open_abf(s)
        src = s.name
        sweeps = _sweeps(abf, sweep, src)
        ch = _pick_channel(abf, current_channel, CURRENT_UNITS, src, "current",
                           "current_channel")
        traces = [_sweep_y(abf, k, ch, src) for k in sweeps]
        current = _mean_of(traces, src, "the current")
        command, cunits, csource, notes = _read_command(
            abf, sweeps, ch, [len(t) for t in traces], command_channel, src)
        if abf.sweepCount > 1:
            notes.append(f"file has {abf.sweepCount} sweeps; "
                         + ("their mean is used" if sweep == "mean" else f"sweep {sweeps[0]} used"))
        meta = dict(sweep=sweep if sweep == "mean" else sweeps[0], n_sweeps=abf.sweepCount,
                    current_channel=ch, channels=_channels(abf),
                    abf_version=str(abf.abfVersionString))
        header_cm = _header_capacitance(abf, ch)
        dt = 1000.0 / abf.dataRate
        target = protocol.sample_interval_ms if protocol is not None else sample_interval_ms
    return _assemble(current, abf.adcUnits[ch], command, cunits, dt, source=src,
                     header_capacitance_pF=header_cm, capacitance_pF=capacitance_pF,
                     command_source=csource, protocol=protocol, sample_interval_ms=target,
                     leak_subtraction=leak_subtraction, notes=notes, **meta)


def read_ap_abf(path_or_bytes: PathOrBytes, *, sweep: int = 0, channel: int | None = None,
                sample_interval_ms: float | None = None, name: str | None = None
                ) -> APRecording:
    """Read a current-clamp (AP) trace from an ABF file: the membrane potential of ``channel``
    (default: the first ADC channel with voltage units, V or mV -> mV) in sweep ``sweep``,
    optionally resampled (anti-aliased) to ``sample_interval_ms`` (ms)."""
    with _Source(path_or_bytes, name) as s:
        abf = _open_abf(s)
        src = s.name
        if isinstance(sweep, str):
            raise _fail(src, "sweep", f"expected a sweep index, found {sweep!r}")
        k = _sweeps(abf, sweep, src)[0]
        ch = _pick_channel(abf, channel, VOLTAGE_UNITS, src, "voltage", "channel")
        y = _sweep_y(abf, k, ch, src)
        unit = _clean_unit(abf.adcUnits[ch])
        meta = dict(sweep=k, n_sweeps=abf.sweepCount, channel=ch, channels=_channels(abf),
                    abf_version=str(abf.abfVersionString))
        dt = 1000.0 / abf.dataRate
    notes = [f"file has {abf.sweepCount} sweeps; sweep {k} used"] if abf.sweepCount > 1 else []
    return _ap_from(y, unit, dt, src, sample_interval_ms, notes, **meta)


def _ap_from(v, unit: str, dt: float, source: str, sample_interval_ms, notes, **meta
             ) -> APRecording:
    v = convert_voltage(v, unit, source=source, field="voltage units")
    if v.ndim != 1 or len(v) < 2:
        raise _fail(source, "v_mV", f"expected a 1-D trace of >= 2 samples, found shape {v.shape}")
    _check_finite(v, dt, source, "v_mV")
    out_dt = dt
    if sample_interval_ms is not None and abs(float(sample_interval_ms) - dt) > 1e-9 * dt:
        out_dt = float(sample_interval_ms)
        v = resample_signal(v, dt, out_dt, source=source)
        notes = list(notes) + [f"resampled from {dt:g} ms to {out_dt:g} ms (anti-aliased)"]
    return APRecording(np.arange(len(v)) * out_dt, v, out_dt, source, units={"voltage": unit},
                       source_sample_interval_ms=dt, notes=tuple(notes), **meta)


# ----------------------------------------------------------------------------- CSV

#: Accepted CSV columns: time (factor to ms), command voltage (mV), current (unit).
CSV_TIME_COLUMNS = {"t_ms": 1.0, "time_ms": 1.0, "time_s": 1000.0}
CSV_COMMAND_COLUMNS = ("command_mV", "v_mV", "voltage_mV")
CSV_CURRENT_COLUMNS = {"i_pA_per_pF": NORMALIZED_UNIT, "I_total": NORMALIZED_UNIT,
                       "i_pA": "pA", "i_nA": "nA"}


def _read_csv_table(path: Path, source: str) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise _fail(source, "path", "file not found (or not a regular file)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise _fail(source, "file", f"cannot read as text CSV ({type(e).__name__}: {e})"
                    ) from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise _fail(source, "header", "the file is empty; expected a CSV header and rows")
    header = [c.strip() for c in lines[0].split(",")]
    body = "\n".join(lines[1:])
    if not body.strip():
        raise _fail(source, "rows", "no data rows after the header")
    try:
        data = np.loadtxt(io.StringIO(body), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise _fail(source, "rows", f"cannot parse the rows as {len(header)} numbers each "
                    f"({e})") from None
    if data.shape[1] != len(header):
        raise _fail(source, "rows", f"expected {len(header)} fields per row (header "
                    f"{header}), found {data.shape[1]}")
    return header, data


def read_trace_csv(path: str | os.PathLike, *, capacitance_pF: float | None = None,
                   protocol: Protocol | None = None, sample_interval_ms: float | None = None,
                   leak_subtraction=None) -> Recording:
    """Read a voltage-clamp trace from CSV (``.csv`` or ``.csv.gz``), one row per sample.

    Columns (header names, other columns ignored): time ``t_ms`` / ``time_ms`` (ms) or
    ``time_s`` (s), uniformly sampled; command ``command_mV`` / ``v_mV`` / ``voltage_mV`` (mV,
    optional: without it the protocol's command is used, flagged as not verified); current
    ``i_pA_per_pF`` or ``I_total`` (pA/pF), or ``i_pA`` (pA) / ``i_nA`` (nA), which need
    ``capacitance_pF``. Other arguments as in :func:`read_abf`.
    """
    path = Path(path)
    src = str(path)
    header, data = _read_csv_table(path, src)
    tcol = next((c for c in CSV_TIME_COLUMNS if c in header), None)
    icol = next((c for c in CSV_CURRENT_COLUMNS if c in header), None)
    vcol = next((c for c in CSV_COMMAND_COLUMNS if c in header), None)
    if tcol is None or icol is None:
        raise _fail(src, "columns", f"expected a time column ({' | '.join(CSV_TIME_COLUMNS)}) "
                    f"and a current column ({' | '.join(CSV_CURRENT_COLUMNS)}); found {header}")
    col = {c: data[:, header.index(c)] for c in (tcol, icol, vcol) if c is not None}
    for c, x in col.items():
        bad = ~np.isfinite(x)
        if bad.any():
            k = int(np.argmax(bad))
            raise _fail(src, c, f"non-finite value {float(x[k])!r} at line {k + 2} "
                        f"({int(bad.sum())} in all); expected finite numbers")
    t = col[tcol] * CSV_TIME_COLUMNS[tcol]
    dt = _uniform_dt(t, src, tcol)
    notes = [] if t[0] == 0 else [f"time re-based to start at 0 (first row t = {t[0]:g} ms)"]
    target = protocol.sample_interval_ms if protocol is not None else sample_interval_ms
    return _assemble(col[icol], CSV_CURRENT_COLUMNS[icol], col.get(vcol), "mV", dt, source=src,
                     header_capacitance_pF=None, capacitance_pF=capacitance_pF,
                     command_source="csv", protocol=protocol, sample_interval_ms=target,
                     leak_subtraction=leak_subtraction, notes=notes)


def read_ap_csv(path: str | os.PathLike, *, sample_interval_ms: float | None = None
                ) -> APRecording:
    """Read a current-clamp trace from CSV (``.csv``/``.csv.gz``) with columns ``t_ms, v_mV`` or
    ``time_s, voltage_mV`` (as :func:`cardiotwin.features.load_trace_csv`), uniformly sampled;
    optionally resampled (anti-aliased) to ``sample_interval_ms`` (ms)."""
    from ..features import load_trace_csv

    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise _fail(src, "path", "file not found (or not a regular file)")
    try:
        t, v = load_trace_csv(path)
    except (ValueError, OSError, EOFError, UnicodeDecodeError, IndexError) as e:
        msg = str(e)
        if msg.startswith(src):
            msg = msg[len(src):].lstrip(": ")
        raise _fail(src, "columns", msg) from None
    _check_finite(t, 1.0, src, "t_ms")
    dt = _uniform_dt(t, src)
    notes = [] if t[0] == 0 else [f"time re-based to start at 0 (first row t = {t[0]:g} ms)"]
    return _ap_from(v, "mV", dt, src, sample_interval_ms, notes)
