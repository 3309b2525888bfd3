"""Named ABF header fields that pyabf has no public attribute for, read from the file's bytes.

Each :class:`HeaderField` is (name, byte offset, struct format of one element, element count,
meaning). ABF1 offsets are from the start of the file; ABF2 offsets are inside one entry of a
section, whose position the section map at the start of the file gives (:data:`ABF2_SECTIONS`:
block index (512-byte blocks), entry size (bytes), entry count). All values little-endian.

Source: the Axon ABF file format (ABF 1.83 header ``ABFFileHeader`` and ABF 2.0
``ADCInfo``/``DACInfo``/``SynchArray`` structures of the Axon File Support Pack, abffio.h /
ProtocolStructs.h), with the offsets as pyabf 2.3 reads them (pyabf/abf1/headerV1.py,
pyabf/abf2/*Section.py). :mod:`cardiotwin.twin.example` writes ABF1 headers with the same table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

BLOCK = 512  #: bytes per ABF block (pointers in the header count blocks)


@dataclass(frozen=True)
class HeaderField:
    """One header field: ``count`` elements of struct format ``fmt`` at byte ``offset``."""

    name: str
    offset: int
    fmt: str
    count: int
    meaning: str

    @property
    def size(self) -> int:
        """Bytes the field occupies."""
        return struct.calcsize("<" + self.fmt) * self.count

    @property
    def struct_format(self) -> str:
        return "<" + self.fmt * self.count

    def unpack(self, buf: bytes, base: int = 0) -> tuple:
        """The field's values from ``buf`` (the field starts at base + offset)."""
        return struct.unpack_from(self.struct_format, buf, base + self.offset)

    def pack_into(self, buf: bytearray, *values, index: int = 0) -> None:
        """Write ``values`` into ``buf`` from element ``index`` of the field on (whole
        elements: a multiple of the values one element holds)."""
        one = struct.calcsize("<" + self.fmt)
        per = len(struct.unpack("<" + self.fmt, bytes(one)))
        n = len(values) // per
        if len(values) % per or index < 0 or index + n > self.count:
            raise ValueError(f"{self.name}: {len(values)} values from element {index}; "
                             f"expected whole elements of {per} within 0..{self.count - 1}")
        struct.pack_into("<" + self.fmt * n, buf, self.offset + index * one, *values)


def _table(*fields: HeaderField) -> dict[str, HeaderField]:
    return {f.name: f for f in fields}


#: ABF1 (file versions 1.x) header fields, offsets from the start of the file.
ABF1_FIELDS = _table(
    HeaderField("lDataSectionPtr", 40, "i", 1, "first block of the data section"),
    HeaderField("nADCNumChannels", 120, "h", 1, "number of ADC channels sampled"),
    HeaderField("sCreatorInfo", 294, "16s", 1, "name of the program that wrote the file"),
    HeaderField("sFileCommentOld", 310, "56s", 1, "file comment"),
    HeaderField("nADCPtoLChannelMap", 378, "h", 16, "physical to logical ADC channel"),
    HeaderField("nADCSamplingSeq", 410, "h", 16, "physical ADC channel of each sampled "
                "channel, in sampling order (-1: unused)"),
    HeaderField("sADCChannelName", 442, "10s", 16, "ADC channel names (physical order)"),
    HeaderField("sADCUnits", 602, "8s", 16, "ADC channel units (physical order)"),
    HeaderField("fInstrumentScaleFactor", 922, "f", 16, "ADC scale (V per user unit)"),
    HeaderField("fInstrumentOffset", 986, "f", 16, "ADC offset (user units)"),
    HeaderField("fSignalOffset", 1114, "f", 16, "signal conditioner offset (user units)"),
    HeaderField("nWaveformEnable", 2296, "h", 2, "DAC epoch waveform enabled, per DAC"),
    HeaderField("nWaveformSource", 2300, "h", 2, "DAC waveform source: 0 none (holding), "
                "1 epochs, 2 stimulus file"),
    HeaderField("lEpochDurationInc", 2588, "i", 20, "epoch duration increments (samples); the "
                "last field of the epoch table that pyabf's sweepC uses"),
    HeaderField("nTelegraphEnable", 4512, "h", 16, "amplifier telegraph enabled, per ADC"),
    HeaderField("fTelegraphAdditGain", 4576, "f", 16, "telegraphed additional gain, per ADC"),
    HeaderField("fTelegraphMembraneCap", 4704, "f", 16, "telegraphed membrane capacitance "
                "(pF), per ADC"),
)

#: ABF2 section map entries (offsets from the start of the file): block index, entry size
#: (bytes), entry count.
ABF2_SECTIONS = _table(
    HeaderField("ADCSection", 92, "IIq", 1, "ADC channel entries (ADCInfo)"),
    HeaderField("DACSection", 108, "IIq", 1, "DAC channel entries (DACInfo)"),
    HeaderField("SynchArraySection", 316, "IIq", 1, "per-sweep start and length (SynchArray)"),
)

#: ABF2 fields inside one section entry: section name -> fields (offsets in the entry).
ABF2_FIELDS = {
    "ADCSection": _table(
        HeaderField("nADCNum", 0, "h", 1, "physical ADC channel"),
        HeaderField("nTelegraphEnable", 2, "h", 1, "amplifier telegraph enabled"),
        HeaderField("fTelegraphAdditGain", 6, "f", 1, "telegraphed additional gain"),
        HeaderField("fTelegraphMembraneCap", 14, "f", 1, "telegraphed membrane capacitance (pF)"),
    ),
    "DACSection": _table(
        HeaderField("nDACNum", 0, "h", 1, "DAC channel"),
        HeaderField("nWaveformEnable", 40, "h", 1, "DAC epoch waveform enabled"),
        HeaderField("nWaveformSource", 42, "h", 1, "DAC waveform source: 0 none (holding), "
                    "1 epochs, 2 stimulus file"),
    ),
    "SynchArraySection": _table(
        HeaderField("lStart", 0, "i", 1, "first sample of the sweep"),
        HeaderField("lLength", 4, "i", 1, "samples in the sweep (all channels)"),
    ),
}


class AbfHeader:
    """The named fields of one ABF file, read from its bytes on demand (a path: only the
    fields' bytes are read; bytes: used as they are). Absent fields (beyond the end of the
    file, or beyond the ABF1 header) read as None."""

    def __init__(self, source: str | Path | bytes, major: int):
        self._raw = bytes(source) if isinstance(source, (bytes, bytearray)) else None
        self._path = None if self._raw is not None else Path(source)
        self._size = len(self._raw) if self._raw is not None else self._path.stat().st_size
        self.major = major

    def _get(self, f: HeaderField, base: int = 0) -> tuple | None:
        start = base + f.offset
        if start < 0 or start + f.size > self._size:
            return None
        if self._raw is not None:
            buf = self._raw[start:start + f.size]
        else:
            with self._path.open("rb") as fh:
                fh.seek(start)
                buf = fh.read(f.size)
        if len(buf) != f.size:
            return None
        return f.unpack(buf, -f.offset)

    def abf1(self, name: str, *, header_only: bool = True) -> tuple | None:
        """ABF1 field ``name``; None when the file is shorter, or (``header_only``) when the
        field lies beyond the header, in the data section (short headers, e.g. pyabf's
        2048-byte writer)."""
        f = ABF1_FIELDS[name]
        if header_only and not self.abf1_has(name):
            return None
        return self._get(f)

    def abf1_has(self, name: str) -> bool:
        """Whether the ABF1 header (up to the data section) holds field ``name``."""
        if self.major != 1:
            return False
        f = ABF1_FIELDS[name]
        ptr = self._get(ABF1_FIELDS["lDataSectionPtr"])
        return ptr is not None and f.offset + f.size <= ptr[0] * BLOCK

    def abf2_entries(self, section: str, name: str) -> list | None:
        """Field ``name`` of every entry of ABF2 ``section``; None when absent (no such
        section, entries too small for the field, or the section ends past the file)."""
        if self.major != 2:
            return None
        loc = self._get(ABF2_SECTIONS[section])
        if loc is None:
            return None
        block, size, count = loc
        f = ABF2_FIELDS[section][name]
        if count < 0 or size < f.offset + f.size or block * BLOCK + count * size > self._size:
            return None
        out = []
        for i in range(count):
            v = self._get(f, block * BLOCK + i * size)
            if v is None:
                return None
            out.append(v[0])
        return out
