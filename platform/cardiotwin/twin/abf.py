"""The ABF adapter: ABF1 and ABF2 files (a path, bytes or a binary file-like) through pyabf.

pyabf's public attributes give the channels, units, rates, sweeps and data; the few fields it
has no public attribute for (telegraphed capacitance, DAC waveform state, per-sweep lengths,
the telegraph gain of short ABF1 headers) come from :mod:`.abf_header`'s named-field table.
pyabf's own exceptions never escape: an empty, truncated, corrupt or non-ABF file raises
:class:`~.records.RecordingError`.

Channel choice: the current is the first ADC channel with current units unless
``current_channel`` says otherwise; the command voltage is, in this order, the DAC epoch
waveform (pyabf ``sweepC``), an ADC channel with voltage units, the DAC holding level
(waveform disabled), else absent.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .abf_header import AbfHeader
from .records import (
    CURRENT_UNITS,
    VOLTAGE_UNITS,
    Channel,
    clean_unit,
    fail,
    unit_list,
)

PathOrBytes = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

_ABF_SIGNATURES = {b"ABF ": 1, b"ABF2": 2}


class AbfSource:
    """Where the bytes come from: a path (kept) or bytes/file-like (a private temp file)."""

    def __init__(self, src: PathOrBytes, name: str | None):
        self._tmp = None
        if isinstance(src, (str, os.PathLike)):
            self.path = Path(src)
            self.name = name or str(src)
            if not self.path.is_file():
                raise fail(self.name, "path", "file not found (or not a regular file)")
            self.size = self.path.stat().st_size
            with self.path.open("rb") as fh:
                self.head = fh.read(4)
            return
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
        elif hasattr(src, "read"):
            data = src.read()
            if not isinstance(data, (bytes, bytearray)):
                raise fail(name or "<file-like>", "data", "the file-like returned "
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

    def __enter__(self):  # -> AbfSource
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_abf(s: AbfSource):
    """pyabf.ABF of the source with every pyabf failure turned into RecordingError."""
    import pyabf

    if s.size == 0:
        raise fail(s.name, "file", "the file is empty (0 bytes); expected an ABF file")
    if s.head not in _ABF_SIGNATURES:
        raise fail(s.name, "signature", f"not an ABF file: it starts with {s.head!r}; expected "
                    "b'ABF ' (ABF1) or b'ABF2' (ABF2)")
    try:
        hdr = pyabf.ABF(str(s.path), loadData=False, cacheStimulusFiles=False)
    except Exception as e:  # pyabf raises anything on a corrupt header
        raise fail(s.name, "header", f"cannot read the ABF header ({type(e).__name__}: {e}); "
                    f"the file ({s.size} bytes) is truncated or corrupt") from None
    need = hdr.dataByteStart + hdr.dataPointCount * hdr.dataPointByteSize
    if hdr.dataPointCount <= 0 or hdr.channelCount <= 0:
        raise fail(s.name, "data", f"the header declares {hdr.dataPointCount} data points in "
                    f"{hdr.channelCount} channels; expected a recording")
    if s.size < need:
        raise fail(s.name, "data", f"truncated: the header declares {hdr.dataPointCount} data "
                    f"points ({need} bytes with the header), the file has {s.size} bytes")
    try:
        abf = pyabf.ABF(str(s.path), loadData=True, cacheStimulusFiles=False)
    except Exception as e:
        raise fail(s.name, "data", f"cannot read the ABF data ({type(e).__name__}: {e})"
                    ) from None
    if not (abf.dataRate > 0 and abf.sweepCount >= 1 and abf.sweepPointCount >= 2):
        raise fail(s.name, "header", f"sample rate {abf.dataRate} Hz, {abf.sweepCount} sweeps "
                    f"of {abf.sweepPointCount} points; expected a positive rate and >= 2 points")
    _fix_short_abf1_header(abf, header_of(abf, s))
    return abf


def header_of(abf, s: AbfSource) -> AbfHeader:
    """The named-field reader of the file that ``abf`` was opened from."""
    return AbfHeader(s.path, int(abf.abfVersion["major"]))


def _fix_short_abf1_header(abf, hdr: AbfHeader) -> None:
    """ABF1 files written with a short header (e.g. pyabf's writer: 2048 bytes) keep data where
    the telegraph fields would be; pyabf reads them from the data anyway and may divide by a
    "telegraph gain" that is data. Undo that division."""
    if hdr.major != 1 or hdr.abf1_has("fTelegraphAdditGain"):
        return
    get = {n: hdr.abf1(n, header_only=False) for n in (
        "nADCSamplingSeq", "nTelegraphEnable", "fTelegraphAdditGain", "fInstrumentOffset",
        "fSignalOffset")}
    if any(v is None for v in get.values()):
        return
    for i in range(abf.channelCount):
        adc = get["nADCSamplingSeq"][i]
        if 0 <= adc < 16 and get["nTelegraphEnable"][adc] == 1:
            g = get["fTelegraphAdditGain"][adc]
            off = get["fInstrumentOffset"][adc] - get["fSignalOffset"][adc]
            if math.isfinite(g) and g != 0:
                abf.data[i] = (abf.data[i] - off) * g + off


def header_capacitance(hdr: AbfHeader, ch: int) -> float | None:
    """Telegraphed membrane capacitance (pF) of ADC channel ``ch``, None when absent."""
    if hdr.major == 2:
        cms = hdr.abf2_entries("ADCSection", "fTelegraphMembraneCap")
        cm = cms[ch] if cms is not None and ch < len(cms) else None
    else:
        seq, cms = hdr.abf1("nADCSamplingSeq"), hdr.abf1("fTelegraphMembraneCap")
        cm = cms[seq[ch]] if seq is not None and cms is not None and 0 <= seq[ch] < 16 \
            else None
    if cm is None:
        return None
    return float(cm) if math.isfinite(cm) and cm > 0 else None


def dac_state(abf, hdr: AbfHeader, ch: int) -> tuple[str, str | None]:
    """('waveform' | 'holding' | 'none', DAC units) for the DAC pyabf pairs with channel ch."""
    dac_units = clean_unit(abf.dacUnits[ch]) if ch < len(abf.dacUnits) else None
    if hdr.major == 1:
        if ch > 1 or not (hdr.abf1_has("nWaveformSource") and hdr.abf1_has("lEpochDurationInc")):
            return "none", dac_units
        enable, src = hdr.abf1("nWaveformEnable")[ch], hdr.abf1("nWaveformSource")[ch]
    else:
        en = hdr.abf2_entries("DACSection", "nWaveformEnable")
        so = hdr.abf2_entries("DACSection", "nWaveformSource")
        if en is None or so is None or ch >= min(len(en), len(so)):
            return "none", None
        enable, src = en[ch], so[ch]
        lengths = hdr.abf2_entries("SynchArraySection", "lLength") or []
        if abf.sweepCount > 1 and len(set(lengths)) > 1:
            return "none", dac_units  # variable-length sweeps: pyabf has no waveform
    if dac_units not in VOLTAGE_UNITS:
        return "none", dac_units
    if enable and src == 1:
        return "waveform", dac_units
    if not enable or src == 0:
        return "holding", dac_units
    return "none", dac_units  # source 2: a stimulus file we do not go looking for


def channels(abf) -> tuple[Channel, ...]:
    return tuple(Channel(i, clean_unit(abf.adcNames[i]), clean_unit(abf.adcUnits[i]))
                 for i in range(abf.channelCount))


def sweeps(abf, sweep, source: str) -> list[int]:
    if isinstance(sweep, str):
        if sweep != "mean":
            raise fail(source, "sweep", f"expected a sweep index or 'mean', found {sweep!r}")
        return list(range(abf.sweepCount))
    if isinstance(sweep, bool) or not isinstance(sweep, (int, np.integer)) \
            or not 0 <= int(sweep) < abf.sweepCount:
        raise fail(source, "sweep", f"expected an index in 0..{abf.sweepCount - 1} or 'mean', "
                    f"found {sweep!r}")
    return [int(sweep)]


def sweep_y(abf, s: int, ch: int, source: str) -> np.ndarray:
    try:
        abf.setSweep(s, channel=ch)
        return np.array(abf.sweepY, dtype=np.float64)
    except Exception as e:
        raise fail(source, "data", f"cannot read sweep {s} channel {ch} "
                    f"({type(e).__name__}: {e})") from None


def mean_of(traces: list[np.ndarray], source: str, what: str) -> np.ndarray:
    if len({len(t) for t in traces}) > 1:
        raise fail(source, "sweep", f"cannot average {what}: the sweeps have different lengths "
                    f"({sorted({len(t) for t in traces})} samples); choose one sweep")
    return np.mean(traces, axis=0)


def pick_channel(abf, channel, units: dict, source: str, what: str, field: str) -> int:
    chans = channels(abf)
    if channel is None:
        for c in chans:
            if c.units in units:
                return c.index
        raise fail(source, field, f"no channel with {what} units ({unit_list(units)}); "
                    f"found {[(c.index, c.name, c.units) for c in chans]}")
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) \
            or not 0 <= int(channel) < len(chans):
        raise fail(source, field, f"expected a channel index in 0..{len(chans) - 1}, "
                    f"found {channel!r}")
    c = chans[int(channel)]
    if c.units not in units:
        raise fail(source, field, f"channel {c.index} ({c.name!r}) has units {c.units!r}; "
                    f"expected {what} units ({unit_list(units)})")
    return c.index


def sweep_c(abf, s: int, ch: int, n: int, source: str) -> np.ndarray:
    try:
        abf.setSweep(s, channel=ch)
        c = np.array(abf.sweepC, dtype=np.float64)
    except Exception as e:
        raise fail(source, "command_mV", f"cannot build the DAC command of sweep {s} "
                    f"({type(e).__name__}: {e})") from None
    if len(c) != n:
        raise fail(source, "command_mV", f"DAC command of sweep {s} has {len(c)} samples, "
                    f"the current has {n}")
    return c


def _command_from_dac(abf, sweeps_: list[int], ch: int, n_by_sweep, dac_units, source: str
                      ) -> np.ndarray:
    """The DAC command (pyabf sweepC) shared by ``sweeps_``; refused when they differ."""
    cs = [sweep_c(abf, s, ch, n, source) for s, n in zip(sweeps_, n_by_sweep, strict=True)]
    for s, c in zip(sweeps_[1:], cs[1:], strict=True):
        d = np.abs(c - cs[0]) > 1e-6
        if d.any():
            k = int(np.argmax(d))
            raise fail(source, "sweep", f"cannot average: the DAC command of sweep {s} "
                       f"differs from sweep {sweeps_[0]}'s at t = {k * 1000 / abf.dataRate:g} "
                       f"ms ({c[k]:g} vs {cs[0][k]:g} {dac_units}); choose one sweep")
    return cs[0]


def _command_from_channel(abf, sweeps_: list[int], k: int, source: str
                          ) -> tuple[np.ndarray, str]:
    traces = [sweep_y(abf, s, k, source) for s in sweeps_]
    return mean_of(traces, source, "the voltage channel"), clean_unit(abf.adcUnits[k])


def read_command(abf, hdr: AbfHeader, sweeps_: list[int], ch: int, n_by_sweep,
                 command_channel, source: str):
    """(command or None, units, command_source, notes) for current channel ``ch``:
    ``command_channel`` None (auto, see the module docstring), "dac" or an ADC channel."""
    if command_channel not in (None, "dac") and not isinstance(command_channel, (int, np.integer)):
        raise fail(source, "command_channel", f"expected None, 'dac' or a channel index, "
                   f"found {command_channel!r}")
    state, dac_units = dac_state(abf, hdr, ch)
    if command_channel == "dac":
        if state == "none":
            raise fail(source, "command_channel", "the file defines no DAC command waveform "
                       f"for channel {ch} (DAC units {dac_units!r}); use a voltage channel")
        return (_command_from_dac(abf, sweeps_, ch, n_by_sweep, dac_units, source), dac_units,
                "dac" if state == "waveform" else "dac holding level", [])
    if command_channel is not None:
        k = pick_channel(abf, command_channel, VOLTAGE_UNITS, source, "voltage",
                         "command_channel")
        c, u = _command_from_channel(abf, sweeps_, k, source)
        return c, u, f"channel {k}", []
    if state == "waveform":
        return (_command_from_dac(abf, sweeps_, ch, n_by_sweep, dac_units, source), dac_units,
                "dac", [])
    volt = [c.index for c in channels(abf) if c.units in VOLTAGE_UNITS and c.index != ch]
    if volt:
        c, u = _command_from_channel(abf, sweeps_, volt[0], source)
        return c, u, f"channel {volt[0]}", []
    if state == "holding":
        return (_command_from_dac(abf, sweeps_, ch, n_by_sweep, dac_units, source), dac_units,
                "dac holding level",
                ["the DAC waveform is disabled: the command is the constant holding level"])
    return None, None, "none", [("the file holds no command voltage (no DAC waveform, no "
                                "voltage channel)")]


# ----------------------------------------------------------------------------- whole reads


@dataclass
class AbfTrace:
    """What an ABF read gives before units and conditioning: ``values`` (current, or
    membrane potential) in ``unit``; for voltage clamp also the command; ``dt_ms`` (ms);
    ``meta``: the Recording fields describing the file."""

    source: str
    values: np.ndarray
    unit: str
    dt_ms: float
    command: np.ndarray | None = None
    command_unit: str | None = None
    command_source: str = "none"
    header_capacitance_pF: float | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _sweep_note(abf, sweep, used: int) -> list[str]:
    if abf.sweepCount <= 1:
        return []
    return [f"file has {abf.sweepCount} sweeps; "
            + ("their mean is used" if sweep == "mean" else f"sweep {used} used")]


def read_voltage_clamp(path_or_bytes: PathOrBytes, name: str | None, *, sweep, current_channel,
                       command_channel) -> AbfTrace:
    """Current (mean over sweeps for ``sweep`` "mean"), command and header capacitance of a
    voltage-clamp ABF file (arguments as :func:`~.recording.read_abf`)."""
    with AbfSource(path_or_bytes, name) as s:
        abf = open_abf(s)
        hdr = header_of(abf, s)
        src = s.name
        sw = sweeps(abf, sweep, src)
        ch = pick_channel(abf, current_channel, CURRENT_UNITS, src, "current",
                          "current_channel")
        traces = [sweep_y(abf, k, ch, src) for k in sw]
        current = mean_of(traces, src, "the current")
        command, cunits, csource, notes = read_command(
            abf, hdr, sw, ch, [len(t) for t in traces], command_channel, src)
        meta = {"sweep": sweep if sweep == "mean" else sw[0], "n_sweeps": abf.sweepCount,
                    "current_channel": ch, "channels": channels(abf),
                    "abf_version": str(abf.abfVersionString)}
        return AbfTrace(src, current, abf.adcUnits[ch], 1000.0 / abf.dataRate, command, cunits,
                        csource, header_capacitance(hdr, ch),
                        notes + _sweep_note(abf, sweep, sw[0]), meta)


def read_current_clamp(path_or_bytes: PathOrBytes, name: str | None, *, sweep: int,
                       channel: int | None) -> AbfTrace:
    """Membrane potential of ``channel`` (default: the first with voltage units) in sweep
    ``sweep`` of a current-clamp ABF file."""
    with AbfSource(path_or_bytes, name) as s:
        abf = open_abf(s)
        src = s.name
        if isinstance(sweep, str):
            raise fail(src, "sweep", f"expected a sweep index, found {sweep!r}")
        k = sweeps(abf, sweep, src)[0]
        ch = pick_channel(abf, channel, VOLTAGE_UNITS, src, "voltage", "channel")
        y = sweep_y(abf, k, ch, src)
        meta = {"sweep": k, "n_sweeps": abf.sweepCount, "channel": ch, "channels": channels(abf),
                    "abf_version": str(abf.abfVersionString)}
        return AbfTrace(src, y, clean_unit(abf.adcUnits[ch]), 1000.0 / abf.dataRate,
                        notes=_sweep_note(abf, sweep, k), meta=meta)
