"""Axon Text File (ATF 1.0) stimulus waveforms: the protocol's command voltage, one sample per
``sample_interval_ms``, as Clampex loads a stimulus file (Edit Protocol > Waveform > Stimulus
file; the file's sample interval must be the acquisition's).

Layout: line 1 ``ATF<TAB>1.0``; line 2 the number of optional header records and of data
columns (2); the header records (``"AcquisitionMode=Episodic Stimulation"``, comment with the
protocol hash, ``YTop``/``YBottom`` in mV, ``SweepStartTimesMS``, ``SignalsExported``,
``Signals``); the column titles ``"Time (s)"`` and ``"Trace #1 (mV)"``; then one row per
sample: time (s) from 0 and the command (mV), tab-separated. pyabf's ``pyabf.ATF`` reads it
back (tested: the same waveform within 0.1 mV).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..protocols import Protocol
from ..storage.atomic import write_text_atomic

SIGNAL = "Cmd 0"


def atf_text(protocol: Protocol, *, signal: str = SIGNAL) -> str:
    """The ATF text of ``protocol``'s command waveform (module docstring)."""
    v = protocol.command_voltage()
    t_s = protocol.times_ms() / 1000.0
    top, bottom = float(np.max(v)), float(np.min(v))
    header = [
        '"AcquisitionMode=Episodic Stimulation"',
        f'"Comment=cardiotwin protocol {protocol.protocol_hash} sampled every '
        f'{protocol.sample_interval_ms:g} ms"',
        f'"YTop={top:.4f}"',
        f'"YBottom={bottom:.4f}"',
        '"SyncTimeUnits=1"',
        '"SweepStartTimesMS=0.000"',
        f'"SignalsExported={signal}"',
        f'"Signals="\t"{signal}"',
    ]
    lines = ["ATF\t1.0", f"{len(header)}\t2", *header, '"Time (s)"\t"Trace #1 (mV)"']
    digits = max(4, int(np.ceil(-np.log10(protocol.sample_interval_ms / 1000.0))) + 3)
    body = "\n".join(f"{t:.{digits}f}\t{x:.5f}" for t, x in zip(t_s, v, strict=True))
    return "\n".join(lines) + "\n" + body + "\n"


def write_atf(protocol: Protocol, path: str | os.PathLike) -> Path:
    """Write ``protocol`` as an ATF stimulus file (atomically); returns the path."""
    path = Path(path)
    write_text_atomic(path, atf_text(protocol))
    return path


def read_atf_waveform(path: str | os.PathLike, sweep: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(time ms, command mV) of sweep ``sweep`` of an ATF file, through pyabf.ATF (ValueError
    when pyabf cannot read it)."""
    import pyabf

    try:
        atf = pyabf.ATF(str(path))
        atf.setSweep(sweep)
    except Exception as e:  # pyabf raises bare Exceptions
        raise ValueError(f"{path}: not a readable ATF file ({e})") from None
    return np.asarray(atf.sweepX, np.float64) * 1000.0, np.asarray(atf.sweepY, np.float64)
