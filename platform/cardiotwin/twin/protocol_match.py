"""Matching a voltage-clamp recording to a protocol (:func:`check_protocol`), in named steps:

1. :func:`~.conditioning.resample` to the protocol's sample interval.
2. No command in the file: :func:`match_length_only` (the length must be exact; the command
   is taken from the protocol, flagged "protocol").
3. Shorter than the protocol: :func:`refuse_short` (a length error, naming where it ends).
4. :func:`find_alignment`: try the offsets of :func:`lag_candidates`; at each, every command
   sample must lie within the bounds of :func:`command_bounds`. The first offset that fits
   wins; else the one that matched longest is reported by :func:`command_mismatch`.
5. :func:`check_lead_trail`: the extra samples before and after must be one holding level.
6. :func:`aligned`: trim to the protocol's samples and time axis, ``protocol_hash`` set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..protocols import Protocol
from .conditioning import first_change, resample
from .records import ProtocolMismatchError, Recording

#: Each recorded command sample must lie within TOLERANCE_MV of the protocol's command at some
#: time from EDGE_MS before to one sample after it (timing slack at steps).
TOLERANCE_MV = 1.0
EDGE_MS = 0.5


@dataclass(frozen=True)
class Match:
    """What the steps share: the recording resampled to the protocol (``rec``), the protocol,
    its command ``p`` (mV) and the criteria (mV, ms)."""

    rec: Recording
    protocol: Protocol
    p: np.ndarray
    tolerance_mV: float
    edge_ms: float
    resampled_from_ms: float | None

    @property
    def source(self) -> str:
        return self.rec.source

    @property
    def dt(self) -> float:
        return self.protocol.sample_interval_ms

    @property
    def n_prot(self) -> int:
        return self.protocol.n_samples

    @property
    def hash(self) -> str:
        return self.protocol.protocol_hash

    @property
    def tag(self) -> str:
        pr = self.protocol
        return (f"protocol {self.hash[:12]} ({self.n_prot} samples, {pr.duration_ms:g} ms at "
                f"{self.dt:g} ms)")

    @property
    def at(self) -> str:
        was = self.resampled_from_ms
        return f"at {self.dt:g} ms" + (f", resampled from {was:g} ms" if was is not None else "")


def segment_of(protocol: Protocol, k: int) -> int:
    """Index of the protocol segment holding sample ``k`` (the last one past the end)."""
    steps = protocol.segment_steps()[0]
    return min(int(np.searchsorted(np.cumsum(steps), k, side="right")), len(steps) - 1)


def command_bounds(p: np.ndarray, dt: float, tol: float, edge_ms: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the range of protocol values from ``edge_ms`` before to one sample after,
    widened by +-``tol`` (mV)."""
    e = max(0, round(edge_ms / dt))
    padded = np.concatenate((np.full(e, p[0]), p, [p[-1]]))
    win = sliding_window_view(padded, e + 2)
    return win.min(axis=1) - tol, win.max(axis=1) + tol


def violations(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Samples of the command ``c`` outside [lo, hi]."""
    return (c < lo) | (c > hi)


def lag_candidates(c: np.ndarray, p: np.ndarray, max_lag: int, tol: float) -> list[int]:
    """Offsets (samples) at which the protocol may start inside a longer recording: the
    cross-correlation peak of the first differences, the shift of the first voltage change,
    and 0 (each with +-1 sample), within 0..max_lag, without repeats."""
    from scipy.signal import correlate

    cands = []
    dc, dp = np.diff(c), np.diff(p)
    if len(dp) and np.any(dp) and np.any(dc):
        cands.append(int(np.argmax(correlate(dc, dp, mode="valid", method="auto"))))
    fc, fp = first_change(c, tol), first_change(p, tol)
    if fp < len(p):
        cands.append(fc - fp)
    cands.append(0)
    out = []
    for k in cands:
        for d in (0, -1, 1):
            if 0 <= k + d <= max_lag and k + d not in out:
                out.append(k + d)
    return out


def describe_lead_trail(c: np.ndarray, lag: int, n_prot: int, tol: float
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


def match_length_only(m: Match) -> Recording:
    """Step 2: a recording without a command must have exactly the protocol's length; it gets
    the protocol's command, flagged "protocol" (not verified)."""
    rec, n, dt = m.rec, m.rec.n_samples, m.dt
    if n != m.n_prot:
        seg = segment_of(m.protocol, min(n, m.n_prot - 1))
        raise ProtocolMismatchError(
            f"{m.source}: length: the recording has {n} samples ({n * dt:g} ms {m.at}), "
            f"{m.tag} needs {m.n_prot}; the file holds no command voltage to align with, so the "
            f"length must match exactly (the recording ends in segment {seg})",
            source=m.source, field="length", time_ms=min(n, m.n_prot) * dt, segment=seg,
            protocol_hash=m.hash)
    return rec.replace(t_ms=m.protocol.times_ms(), command_mV=m.p, command_source="protocol",
                       protocol_hash=m.hash, notes=rec.notes + (
                           ("the file holds no command voltage: the command is taken from "
                           f"protocol {m.hash[:12]} and was not verified (length only)"),))


def refuse_short(m: Match, lo: np.ndarray, hi: np.ndarray) -> ProtocolMismatchError:
    """Step 3: the error for a recording shorter than the protocol (and where its command
    already differs, if it does)."""
    c, n, dt, p = m.rec.command_mV, m.rec.n_samples, m.dt, m.p
    bad = violations(c, lo[:n], hi[:n])
    seg = segment_of(m.protocol, n)
    msg = (f"{m.source}: length: the recording has {n} samples ({n * dt:g} ms {m.at}), "
           f"{m.tag} needs {m.n_prot}: it ends at t = {n * dt:g} ms in segment {seg}")
    if bad.any():
        k = int(np.argmax(bad))
        msg += (f"; the command also differs from t = {k * dt:g} ms (segment "
                f"{segment_of(m.protocol, k)}): expected {p[k]:.2f} mV, found {c[k]:.2f} mV")
    return ProtocolMismatchError(msg, source=m.source, field="length", time_ms=n * dt,
                                 segment=seg, protocol_hash=m.hash)


def find_alignment(m: Match, lo: np.ndarray, hi: np.ndarray
                   ) -> tuple[int | None, tuple[int, int, int] | None]:
    """Step 4: (offset at which the whole command fits, None), or (None, (first bad sample,
    offset, number of bad samples)) of the candidate that matched longest."""
    c = m.rec.command_mV
    best = None
    for lag in lag_candidates(c, m.p, m.rec.n_samples - m.n_prot, m.tolerance_mV):
        bad = violations(c[lag:lag + m.n_prot], lo, hi)
        if not bad.any():
            return lag, None
        k = int(np.argmax(bad))
        if best is None or k > best[0]:
            best = (k, lag, int(bad.sum()))
    return None, best


def command_mismatch(m: Match, lag: int, k: int, n_bad: int) -> ProtocolMismatchError:
    """The error for a command that differs from the protocol first at protocol sample ``k``
    (recording sample lag + k). Reports where the difference begins: steps back over samples
    that were within the timing slack but already off the protocol's value at their own time."""
    c, p, dt, tol = m.rec.command_mV, m.p, m.dt, m.tolerance_mV
    while k > 0 and abs(c[lag + k - 1] - p[k - 1]) > tol:
        k -= 1
    seg = segment_of(m.protocol, k)
    s = m.protocol.segments[seg]
    level = (f"{s.v_start_mV:g} mV" if not s.is_ramp
             else f"ramp {s.v_start_mV:g} to {s.v_end_mV:g} mV")
    found = float(c[lag + k])
    where = f" (recording t = {(lag + k) * dt:g} ms)" if lag else ""
    n = m.rec.n_samples
    extra = (f"; the recording is {n - m.n_prot} samples longer than the protocol"
             if n > m.n_prot else "")
    return ProtocolMismatchError(
        f"{m.source}: command_mV: the command voltage differs from {m.tag}, tolerance "
        f"{tol:g} mV, {m.edge_ms:g} ms: first difference at t = {k * dt:g} ms{where} in "
        f"segment {seg} ({level}): expected {p[k]:.2f} mV, found {found:.2f} mV; {n_bad} of "
        f"{m.n_prot} samples differ{extra}",
        source=m.source, field="command_mV", time_ms=k * dt, segment=seg,
        expected_mV=float(p[k]), found_mV=found, protocol_hash=m.hash)


def check_lead_trail(m: Match, lag: int) -> None:
    """Step 5: ProtocolMismatchError unless the samples outside the protocol are holding."""
    before, after = describe_lead_trail(m.rec.command_mV, lag, m.n_prot, m.tolerance_mV)
    if before or after:
        n = m.rec.n_samples
        raise ProtocolMismatchError(
            f"{m.source}: length: the recording has {n} samples ({n * m.dt:g} ms), {m.tag} "
            f"matches from t = {lag * m.dt:g} ms, but "
            + "; ".join(x for x in (before, after) if x),
            source=m.source, field="length", time_ms=(lag if before else lag + m.n_prot) * m.dt,
            segment=0 if before else len(m.protocol.segments) - 1, protocol_hash=m.hash)


def aligned(m: Match, lag: int) -> Recording:
    """Step 6: the recording trimmed to the protocol's samples, on its time axis."""
    rec, n, n_prot = m.rec, m.rec.n_samples, m.n_prot
    notes = rec.notes
    if n > n_prot:
        notes += ((f"trimmed {lag * m.dt:g} ms of holding before the protocol (ABF pre-sweep) "
                  f"and {(n - n_prot - lag) * m.dt:g} ms after it"),)
    return rec.replace(t_ms=m.protocol.times_ms(), command_mV=rec.command_mV[lag:lag + n_prot],
                       current_pA_per_pF=rec.current_pA_per_pF[lag:lag + n_prot],
                       protocol_hash=m.hash, notes=notes)


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
    rec = resample(recording, protocol.sample_interval_ms)
    m = Match(rec, protocol, protocol.command_voltage(), tolerance_mV, edge_ms,
              recording.sample_interval_ms if rec is not recording else None)
    if rec.command_mV is None:
        return match_length_only(m)
    lo, hi = command_bounds(m.p, m.dt, tolerance_mV, edge_ms)
    if rec.n_samples < m.n_prot:
        raise refuse_short(m, lo, hi)
    lag, best = find_alignment(m, lo, hi)
    if lag is None:
        k, lag, n_bad = best
        raise command_mismatch(m, lag, k, n_bad)
    check_lead_trail(m, lag)
    return aligned(m, lag)
