"""Recording ingestion: voltage-clamp and current-clamp traces from ABF (pyabf) or CSV files.

This module is the public face of the ingestion modules, one concern each: :mod:`.records`
(data objects, errors, unit tables), :mod:`.abf` with :mod:`.abf_header` (the ABF adapter),
:mod:`cardiotwin.trace_csv` (the CSV reader shared with :mod:`cardiotwin.features`),
:mod:`.conditioning` (resampling, leak subtraction) and :mod:`.protocol_match` (the protocol
check); here the readers join them (units, capacitance, then conditioning).

Everything ends in plain data objects in the model's units:

* :class:`Recording` (voltage clamp): time ms, command voltage mV, membrane current pA/pF.
* :class:`APRecording` (current clamp): time ms, membrane potential mV.

Pipeline of :func:`read_abf` (and, from step 3, :func:`read_trace_csv` and
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
   amplifier telegraph value in the header (field ``fTelegraphMembraneCap``), else an error.
5. Resample to ``protocol.sample_interval_ms`` (or ``sample_interval_ms``) when the rates differ:
   the current with a polyphase anti-aliasing filter (``scipy.signal.resample_poly``), the
   command by linear interpolation (a command is piecewise linear; filtering would ring).
6. With a protocol: :func:`check_protocol` aligns the recording (trims the ABF pre-sweep holding
   and any trailing holding) and compares the command sample by sample; a mismatch raises
   :class:`ProtocolMismatchError` naming the first difference.
7. Optional leak subtraction (:func:`subtract_leak`) on the final time axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from .. import trace_csv
from ..protocols import Protocol
from . import abf as _abf
from .abf import PathOrBytes
from .conditioning import (
    LEAK_MIN_SPAN_MV,
    MAX_SAMPLES,
    resample,
    resample_signal,
    subtract_leak,
)
from .protocol_match import EDGE_MS, TOLERANCE_MV, check_protocol
from .records import (
    CURRENT_UNITS,
    NORMALIZED_UNIT,
    VOLTAGE_UNITS,
    APRecording,
    Channel,
    LeakFit,
    ProtocolMismatchError,
    Recording,
    RecordingError,
    check_finite,
    clean_unit,
    convert_current,
    convert_voltage,
    fail,
)

__all__ = [
    "CAPACITANCE_RANGE_PF",
    "CSV_COMMAND_COLUMNS",
    "CSV_CURRENT_COLUMNS",
    "CSV_TIME_COLUMNS",
    "CURRENT_UNITS",
    "EDGE_MS",
    "LEAK_MIN_SPAN_MV",
    "MAX_SAMPLES",
    "NORMALIZED_UNIT",
    "PLAUSIBLE_CURRENT_PA",
    "TOLERANCE_MV",
    "VOLTAGE_UNITS",
    "APRecording",
    "Channel",
    "LeakFit",
    "PathOrBytes",
    "ProtocolMismatchError",
    "Recording",
    "RecordingError",
    "check_protocol",
    "convert_current",
    "convert_voltage",
    "read_abf",
    "read_ap_abf",
    "read_ap_csv",
    "read_trace_csv",
    "recording_from_arrays",
    "resample",
    "resample_signal",
    "subtract_leak",
]

#: Header capacitances outside this range (pF) are treated as absent (stale telegraphs).
CAPACITANCE_RANGE_PF = (1.0, 1000.0)
#: |current| above this (pA) gets a note: implausible for one cell, the units may be wrong.
PLAUSIBLE_CURRENT_PA = 1e6
#: Accepted CSV columns (the tables of :mod:`cardiotwin.trace_csv`): time (unit), command
#: voltage (unit), current (unit).
CSV_TIME_COLUMNS = trace_csv.TIME_COLUMNS
CSV_COMMAND_COLUMNS = trace_csv.COMMAND_COLUMNS
CSV_CURRENT_COLUMNS = trace_csv.CURRENT_COLUMNS


# ----------------------------------------------------------------------------- ABF


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
    tr = _abf.read_voltage_clamp(path_or_bytes, name, sweep=sweep,
                                 current_channel=current_channel,
                                 command_channel=command_channel)
    target = protocol.sample_interval_ms if protocol is not None else sample_interval_ms
    return _assemble(tr.values, tr.unit, tr.command, tr.command_unit, tr.dt_ms, source=tr.source,
                     header_capacitance_pF=tr.header_capacitance_pF,
                     capacitance_pF=capacitance_pF, command_source=tr.command_source,
                     protocol=protocol, sample_interval_ms=target,
                     leak_subtraction=leak_subtraction, notes=tr.notes, **tr.meta)


def read_ap_abf(path_or_bytes: PathOrBytes, *, sweep: int = 0, channel: int | None = None,
                sample_interval_ms: float | None = None, name: str | None = None
                ) -> APRecording:
    """Read a current-clamp (AP) trace from an ABF file: the membrane potential of ``channel``
    (default: the first ADC channel with voltage units, V or mV -> mV) in sweep ``sweep``,
    optionally resampled (anti-aliased) to ``sample_interval_ms`` (ms)."""
    tr = _abf.read_current_clamp(path_or_bytes, name, sweep=sweep, channel=channel)
    return _ap_from(tr.values, tr.unit, tr.dt_ms, tr.source, sample_interval_ms, tr.notes,
                    **tr.meta)


def _ap_from(v, unit: str, dt: float, source: str, sample_interval_ms, notes, **meta
             ) -> APRecording:
    v = convert_voltage(v, unit, source=source, field="voltage units")
    if v.ndim != 1 or len(v) < 2:
        raise fail(source, "v_mV", f"expected a 1-D trace of >= 2 samples, found shape {v.shape}")
    check_finite(v, dt, source, "v_mV")
    out_dt = dt
    if sample_interval_ms is not None and abs(float(sample_interval_ms) - dt) > 1e-9 * dt:
        out_dt = float(sample_interval_ms)
        v = resample_signal(v, dt, out_dt, source=source)
        notes = list(notes) + [f"resampled from {dt:g} ms to {out_dt:g} ms (anti-aliased)"]
    return APRecording(np.arange(len(v)) * out_dt, v, out_dt, source, units={"voltage": unit},
                       source_sample_interval_ms=dt, notes=tuple(notes), **meta)


# ----------------------------------------------------------------------------- CSV


def _csv(path, roles: dict[str, trace_csv.Want]) -> trace_csv.CsvTrace:
    """The shared CSV reader, its errors as RecordingError (same message, file and field)."""
    try:
        return trace_csv.read_csv_trace(path, roles)
    except trace_csv.TraceCsvError as e:
        raise RecordingError(str(e), source=e.source, field=e.field) from None


def _rebase_note(t: np.ndarray) -> list[str]:
    return [] if t[0] == 0 else [f"time re-based to start at 0 (first row t = {t[0]:g} ms)"]


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
    tr = _csv(path, {"current": trace_csv.Want("a current column", CSV_CURRENT_COLUMNS),
                     "command": trace_csv.Want("a command column", CSV_COMMAND_COLUMNS,
                                               required=False)})
    cur, cmd = tr.columns["current"], tr.get("command")
    target = protocol.sample_interval_ms if protocol is not None else sample_interval_ms
    return _assemble(cur.values, cur.unit, cmd.values if cmd else None,
                     cmd.unit if cmd else None, tr.sample_interval_ms, source=tr.source,
                     header_capacitance_pF=None, capacitance_pF=capacitance_pF,
                     command_source="csv", protocol=protocol, sample_interval_ms=target,
                     leak_subtraction=leak_subtraction, notes=_rebase_note(tr.t_ms))


def read_ap_csv(path: str | os.PathLike, *, sample_interval_ms: float | None = None
                ) -> APRecording:
    """Read a current-clamp trace from CSV (``.csv``/``.csv.gz``) with columns ``t_ms, v_mV`` or
    ``time_s, voltage_mV`` (as :func:`cardiotwin.features.load_trace_csv`), uniformly sampled;
    optionally resampled (anti-aliased) to ``sample_interval_ms`` (ms)."""
    tr = _csv(path, {"v": trace_csv.Want("a voltage column",
                                         trace_csv.MEMBRANE_POTENTIAL_COLUMNS)})
    v = tr.columns["v"]
    return _ap_from(v.values, v.unit, tr.sample_interval_ms, tr.source, sample_interval_ms,
                    _rebase_note(tr.t_ms))


# ----------------------------------------------------------------------------- assembly


def _uniform_dt(t_ms: np.ndarray, source: str, field: str = "t_ms") -> float:
    """Sample interval (ms) of a uniform time axis (the CSV reader's rule), else
    RecordingError naming the sample."""
    try:
        return trace_csv.uniform_interval_ms(t_ms, source=source, field=field)
    except trace_csv.TraceCsvError as e:
        raise RecordingError(str(e), source=e.source, field=e.field) from None


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
            raise fail(source, "capacitance_pF", f"must be a positive number of pF, "
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
    raise fail(source, "capacitance_pF", "the file holds no membrane capacitance (no "
                "telegraphed Cm in the header); pass capacitance_pF (pF) to normalize the "
                f"current from {current_unit} to pA/pF")


def _assemble(current, current_unit: str, command, command_unit: str | None, dt_ms: float, *,
              source: str, header_capacitance_pF: float | None, capacitance_pF,
              command_source: str, protocol: Protocol | None, sample_interval_ms,
              leak_subtraction, notes: Sequence[str] = (), **meta) -> Recording:
    """Units -> pA (or pA/pF) and mV, normalization, checks, resampling, protocol, leak."""
    current = np.asarray(current, dtype=np.float64)
    if current.ndim != 1 or len(current) < 2:
        raise fail(source, "current", f"expected a 1-D trace of >= 2 samples, found shape "
                    f"{current.shape}")
    check_finite(current, dt_ms, source, "current")
    notes = list(notes)
    cu = clean_unit(current_unit)
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
            raise fail(source, "command_mV", f"length {len(cmd)} differs from the current's "
                        f"{len(current)}")
        check_finite(cmd, dt_ms, source, "command_mV")
        units["command"] = clean_unit(command_unit or "mV")
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
            raise fail(source, "t_ms", f"length {len(t)} differs from the current's "
                        f"{len(np.atleast_1d(current))}")
        if t[0] != 0:
            notes.append(f"time re-based to start at 0 (first sample was t = {t[0]:g} ms)")
    elif sample_interval_ms is not None:
        dt = float(sample_interval_ms)
        if not (math.isfinite(dt) and dt > 0):
            raise fail(source, "sample_interval_ms", f"must be a positive number of ms, "
                        f"found {sample_interval_ms!r}")
    elif protocol is not None:
        dt = protocol.sample_interval_ms
        notes.append(f"sample interval assumed from the protocol ({dt:g} ms)")
    else:
        raise fail(source, "t_ms", "give t_ms, sample_interval_ms or a protocol")
    return _assemble(current, current_units, command_mV, command_units, dt, source=source,
                     header_capacitance_pF=None, capacitance_pF=capacitance_pF,
                     command_source="arrays", protocol=protocol,
                     sample_interval_ms=resample_ms, leak_subtraction=leak_subtraction,
                     notes=notes)
