"""The size of an ABF upload's work, read from its header bytes before any parsing: sweeps,
samples and sample interval, so that a file of very many short sweeps (or a header declaring
huge sections) is refused before pyabf walks it.

Fields (little-endian, Axon ABF 1.83 ``ABFFileHeader`` / ABF 2.0 header and section map, as
pyabf 2.3 reads them): ABF1 ``lActualAcqLength`` (int32 at 10), ``lActualEpisodes`` (16),
``nOperationMode`` (int16 at 8; 3 = gap-free, one sweep), ``nADCNumChannels`` (int16 at 120),
``fADCSampleInterval`` (float32 at 122, us per channel sample). ABF2: ``lActualEpisodes``
(uint32 at 12); the section map from byte 76, 18 entries of (block uint32, entry size uint32,
entry count int64); ``nOperationMode`` (int16) and ``fADCSequenceInterval`` (float32, us) at
bytes 0 and 2 of the protocol section.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from .errors import ApiError

BLOCK = 512
ABF2_SECTION_MAP = (76, 18, 16)     # first entry, entries, bytes per entry
ABF2_PROTOCOL, ABF2_ADC, ABF2_DATA = 76, 92, 236
GAP_FREE = 3


@dataclass(frozen=True)
class AbfShape:
    """What an ABF header declares: ``sweeps``, ``channels``, ``data_points`` (all sweeps and
    channels) and ``sample_interval_ms`` (per sample of one channel)."""

    major: int
    sweeps: int
    channels: int
    data_points: int
    sample_interval_ms: float


def _unpack(fmt: str, data: bytes, offset: int):
    size = struct.calcsize("<" + fmt)
    if offset < 0 or offset + size > len(data):
        raise ApiError(f"the ABF header is truncated (a field at byte {offset} lies beyond "
                       f"the file's {len(data)} bytes)", 400, "file")
    return struct.unpack_from("<" + fmt, data, offset)


def _abf1(data: bytes) -> AbfShape:
    points, = _unpack("i", data, 10)
    episodes, = _unpack("i", data, 16)
    mode, = _unpack("h", data, 8)
    channels, = _unpack("h", data, 120)
    interval_us, = _unpack("f", data, 122)
    sweeps = 1 if mode == GAP_FREE else max(1, episodes)
    return AbfShape(1, sweeps, channels, points, interval_us * max(1, channels) / 1000.0)


def _abf2(data: bytes) -> AbfShape:
    episodes, = _unpack("I", data, 12)
    first, n, step = ABF2_SECTION_MAP
    sections = {}
    for k in range(n):
        off = first + k * step
        block, size, count = _unpack("IIq", data, off)
        if count < 0 or (count and block * BLOCK + size * count > len(data)):
            raise ApiError(f"the ABF header declares a section (map entry {k}) of {count} "
                           f"entries of {size} bytes beyond the file's {len(data)} bytes; the "
                           "file is truncated or corrupt", 400, "file")
        sections[off] = (block, size, count)
    pblock, psize, pcount = sections[ABF2_PROTOCOL]
    if pcount < 1 or psize < 6:
        raise ApiError("the ABF file has no protocol section", 400, "file")
    mode, = _unpack("h", data, pblock * BLOCK)
    interval_us, = _unpack("f", data, pblock * BLOCK + 2)
    sweeps = 1 if mode == GAP_FREE else max(1, episodes)
    return AbfShape(2, sweeps, sections[ABF2_ADC][2], sections[ABF2_DATA][2],
                    interval_us / 1000.0)


def abf_shape(data: bytes) -> AbfShape:
    """The declared shape of an ABF file (400 when it is not one or its header is cut)."""
    head = bytes(data[:4])
    if head == b"ABF ":
        return _abf1(data)
    if head == b"ABF2":
        return _abf2(data)
    raise ApiError("not an ABF file (expected the signature 'ABF ' or 'ABF2')", 400, "file")


def check_abf_work(shape: AbfShape, *, max_sweeps: int, max_samples: int,
                   target_interval_ms: float | None, max_resample_factor: float) -> None:
    """Refuse (422) a file whose declared work exceeds a limit: sweeps, samples, or a
    resampling factor (either way) to the protocol's ``target_interval_ms``."""
    if shape.sweeps > max_sweeps:
        raise ApiError(f"the file has {shape.sweeps} sweeps; this service reads at most "
                       f"{max_sweeps}", 422, "sweep")
    if shape.channels < 1 or shape.data_points < 1:
        raise ApiError(f"the ABF header declares {shape.data_points} samples in "
                       f"{shape.channels} channels; expected a recording", 400, "file")
    if shape.data_points > max_samples:
        raise ApiError(f"the file declares {shape.data_points} samples; this service reads "
                       f"at most {max_samples}", 422, "file")
    dt = shape.sample_interval_ms
    if not (math.isfinite(dt) and dt > 0):
        raise ApiError("the ABF header declares no valid sample interval", 400, "file")
    if target_interval_ms is not None:
        factor = max(dt / target_interval_ms, target_interval_ms / dt)
        if factor > max_resample_factor:
            raise ApiError(f"the file is sampled every {dt:g} ms; resampling it to "
                           f"{target_interval_ms:g} ms (x{factor:.3g}) exceeds this service's "
                           f"limit of x{max_resample_factor:g}", 422, "sample_interval_ms")
