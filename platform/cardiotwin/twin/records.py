"""Recording data objects in the model's units, their errors and the unit tables.

* :class:`Recording` (voltage clamp): time ms, command voltage mV, membrane current pA/pF.
* :class:`APRecording` (current clamp): time ms, membrane potential mV.
* :class:`RecordingError` (a ValueError naming the file and field) and
  :class:`ProtocolMismatchError` (where the first difference from a protocol is).
* Unit factors of header and column unit strings: current -> pA, voltage -> mV.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import protocols

#: Factors to pA and to mV of the unit strings accepted in file headers and CSV columns.
CURRENT_UNITS: dict[str, float] = {"A": 1e12, "mA": 1e9, "uA": 1e6, "\u00b5A": 1e6,
                                   "\u03bcA": 1e6, "nA": 1e3, "pA": 1.0, "fA": 1e-3}
VOLTAGE_UNITS: dict[str, float] = {"V": 1e3, "mV": 1.0, "uV": 1e-3, "\u00b5V": 1e-3,
                                   "\u03bcV": 1e-3}
NORMALIZED_UNIT = "pA/pF"


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


def fail(source: str, field: str, msg: str) -> RecordingError:
    """RecordingError with the message ``source: field: msg``."""
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
                raise fail(self.source, name, f"length {len(a)} differs from the current's {n}")
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
            raise fail(self.source, "capacitance_pF", "unknown; the data came in pA/pF")
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
    seal_resistance_MOhm: float | None = None  # the recording's seal (MOhm), when known ...
    cm_pF: float | None = None                 # ... with the cell's Cm (pF)
    seal_reversal_mV: float = 0.0

    def seal(self):
        """The recording's seal leak (:class:`cardiotwin.simulate.SealLeak`) when its seal
        resistance and Cm are known, else None."""
        from ..simulate import SealLeak

        if self.seal_resistance_MOhm is None or self.cm_pF is None:
            return None
        return SealLeak.from_resistance(self.seal_resistance_MOhm, self.cm_pF,
                                        self.seal_reversal_mV)

    def with_seal(self, resistance_MOhm: float | None, cm_pF: float | None,
                  reversal_mV: float = 0.0) -> APRecording:
        """A copy that knows its seal (checked: positive finite R and Cm, finite E)."""
        import dataclasses

        out = dataclasses.replace(self, seal_resistance_MOhm=resistance_MOhm, cm_pF=cm_pF,
                                  seal_reversal_mV=float(reversal_mV))
        if (resistance_MOhm is None) != (cm_pF is None):
            raise fail(self.source, "seal", "give both the seal resistance (MOhm) and Cm (pF), "
                       "or neither")
        if not np.isfinite(out.seal_reversal_mV):
            raise fail(self.source, "seal_reversal_mV", f"must be finite, found {reversal_mV}")
        out.seal()  # validates R and Cm
        return out

    def __post_init__(self) -> None:
        object.__setattr__(self, "t_ms", _frozen(self.t_ms))
        object.__setattr__(self, "v_mV", _frozen(self.v_mV))
        if len(self.t_ms) != len(self.v_mV):
            raise fail(self.source, "t_ms", f"length {len(self.t_ms)} differs from v_mV's "
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


def unit_list(units: dict) -> str:
    return ", ".join(k for k in units if k.isascii())


def clean_unit(unit) -> str:
    return str(unit).replace("\x00", "").strip()


def convert_current(values, unit: str, *, source: str = "<data>", field: str = "current"
                    ) -> np.ndarray:
    """Current in ``unit`` (A, mA, uA, nA, pA, fA) -> pA (float64). Other units raise
    RecordingError naming ``source`` and ``field``."""
    u = clean_unit(unit)
    if u not in CURRENT_UNITS:
        raise fail(source, field, f"unknown current unit {u!r}; expected one of "
                    f"{unit_list(CURRENT_UNITS)}")
    return np.asarray(values, dtype=np.float64) * CURRENT_UNITS[u]


def convert_voltage(values, unit: str, *, source: str = "<data>", field: str = "voltage"
                    ) -> np.ndarray:
    """Voltage in ``unit`` (V, mV, uV) -> mV (float64). Other units raise RecordingError."""
    u = clean_unit(unit)
    if u not in VOLTAGE_UNITS:
        raise fail(source, field, f"unknown voltage unit {u!r}; expected one of "
                    f"{unit_list(VOLTAGE_UNITS)}")
    return np.asarray(values, dtype=np.float64) * VOLTAGE_UNITS[u]


def check_finite(x: np.ndarray, dt_ms: float, source: str, field: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        k = int(np.argmax(bad))
        raise fail(source, field, f"{int(bad.sum())} non-finite values (first: {float(x[k])!r} at "
                    f"sample {k}, t = {k * dt_ms:g} ms); expected finite numbers")
