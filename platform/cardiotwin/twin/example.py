"""An example recording: a synthetic cell written as real ABF1 files, with its true parameters.

:func:`write_example_recording` simulates one synthetic Kernik cell (baseline x multipliers)
on a protocol (default ``protocol_a``), converts I_total (pA/pF) to pA with a membrane
capacitance, adds Gaussian noise and writes:

* ``<name>_vc.abf``: voltage clamp, ABF1, one sweep, two ADC channels: 0 = membrane current
  (pA), 1 = command voltage (mV, recorded as a voltage channel); the capacitance (pF) in the
  telegraph membrane-capacitance field of channel 0.
* ``<name>_ap.abf``: current clamp, ABF1, one channel: the same cell's free-running membrane
  potential (mV), after a pre-pacing period without recording.
* ``<name>.json``: the truth: multipliers of the 52 inferred parameters (by name), seed,
  spread, capacitance, noise levels, protocol (canonical dict and hash), temperature.

The files are written by pyabf's own ABF1 writer (``pyabf.abfWriter.writeABF1``). That writer
stores one channel with its units and the sample rate only (16-bit integers, a 2048-byte
header, no command waveform, no capacitance), so :func:`write_abf1` extends its output: it
interleaves the channels, marks the file as multi-channel (units, names, per-channel scale
factors) and moves the data behind a full-size (6144-byte) header that holds the telegraphed
capacitance. The command is thus recovered from channel 1 by :func:`~.recording.read_abf`
(``command_source`` "channel 1"), and checked against the protocol like any recorded command.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.parameters import (
    INFERRED_NAMES,
    N_INFERRED,
    REGISTRY_VERSION,
    inputs_from_multipliers,
)
from ..protocols import Protocol, builtin_protocol
from ..storage.atomic import atomic_path, write_json_atomic
from .abf_header import ABF1_FIELDS, BLOCK

FORMAT = "cardiotwin.example-recording/1"
#: Entropy that keeps example cells apart from population cells (which use [seed, i]).
_EXAMPLE_STREAM = 0x7E1E

_HEADER_BLOCKS = 12  # 6144 bytes: the full ABF1 header


@dataclass(frozen=True)
class ExamplePaths:
    """Files written by :func:`write_example_recording`."""

    voltage_clamp_abf: Path
    current_clamp_abf: Path | None
    truth_json: Path


def write_abf1(path: str | os.PathLike, signals: Sequence[tuple[np.ndarray, str, str]],
               sample_rate_Hz: float, *, capacitance_pF: float | None = None,
               comment: str = "cardiotwin example") -> Path:
    """Write one sweep of ``signals`` [(values, units, name), ...] (equal lengths; units as
    stored, e.g. "pA", "mV") as an ABF1 file sampled at ``sample_rate_Hz`` per channel.

    Uses pyabf's writer for the data, then extends the header (see the module docstring).
    Each channel gets its own scale so that it uses the full 16-bit range; values are stored
    truncated towards zero to a step of max|values| / ~3277 (pyabf's encoding). Header fields
    by name (:data:`.abf_header.ABF1_FIELDS`); written atomically (storage.atomic).
    """
    import pyabf.abfWriter

    path = Path(path)
    arrays = [np.asarray(v, dtype=np.float64) for v, _, _ in signals]
    n_ch, n = len(arrays), len(arrays[0])
    if not 1 <= n_ch <= 16 or any(a.shape != (n,) for a in arrays) or n < 2:
        raise ValueError(f"signals: expected 1..16 one-dimensional arrays of one length >= 2, "
                         f"found shapes {[a.shape for a in arrays]}")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("signals: values must be finite")
    peaks = [max(float(np.max(np.abs(a))), 1e-12) for a in arrays]
    top = max(peaks)
    prescale = [top / p for p in peaks]  # channel c is stored as values * prescale[c]
    interleaved = np.empty(n * n_ch)
    for c, a in enumerate(arrays):
        interleaved[c::n_ch] = a * prescale[c]
    f = ABF1_FIELDS
    with atomic_path(path) as tmp:
        pyabf.abfWriter.writeABF1(interleaved[None, :], str(tmp), sample_rate_Hz * n_ch,
                                  units=signals[0][1])
        raw = bytearray(tmp.read_bytes())
        old_start = f["lDataSectionPtr"].unpack(raw)[0] * BLOCK
        out = raw[:old_start] + bytearray(_HEADER_BLOCKS * BLOCK - old_start) + raw[old_start:]
        f["lDataSectionPtr"].pack_into(out, _HEADER_BLOCKS)
        f["nADCNumChannels"].pack_into(out, n_ch)
        f["nADCPtoLChannelMap"].pack_into(out, *range(16))
        f["nADCSamplingSeq"].pack_into(out, *range(n_ch), *([-1] * (16 - n_ch)))
        base_scale = f["fInstrumentScaleFactor"].unpack(out)[0]
        for c, (_, units, name) in enumerate(signals):
            f["sADCChannelName"].pack_into(out, _padded(name, 10), index=c)
            f["sADCUnits"].pack_into(out, _padded(units, 8), index=c)
            f["fInstrumentScaleFactor"].pack_into(out, base_scale * prescale[c], index=c)
            f["fTelegraphAdditGain"].pack_into(out, 1.0, index=c)
        if capacitance_pF is not None:
            f["nTelegraphEnable"].pack_into(out, 1)
            f["fTelegraphMembraneCap"].pack_into(out, float(capacitance_pF))
        f["sCreatorInfo"].pack_into(out, _padded("cardiotwin", 16))
        f["sFileCommentOld"].pack_into(out, _padded(comment, 56))
        tmp.write_bytes(bytes(out))
    return path


def _padded(text: str, size: int) -> bytes:
    """ASCII, space-padded to ``size`` bytes (the ABF1 convention for fixed-size strings)."""
    return text.encode("ascii", "replace")[:size].ljust(size)


def example_multipliers(seed: int = 0, spread: float = 0.4) -> np.ndarray:
    """The example cell's 52 multipliers, U(1 - spread, 1 + spread), in INFERRED_NAMES order;
    drawn from a stream separate from population sampling (so never a training cell)."""
    if not 0 < spread < 1:
        raise ValueError(f"spread must be in (0, 1), found {spread!r}")
    rng = np.random.default_rng(np.random.SeedSequence([_EXAMPLE_STREAM, int(seed), 0]))
    return rng.uniform(1 - spread, 1 + spread, N_INFERRED)


def write_example_recording(out_dir: str | os.PathLike, seed: int = 0, *,
                            multipliers: Sequence[float] | dict[str, float] | None = None,
                            spread: float = 0.4, capacitance_pF: float = 50.0,
                            noise_pA_per_pF: float = 0.5, protocol: Protocol | None = None,
                            temperature_K: float | None = None, sample_rate_Hz: float = 10000.0,
                            ap: bool = True, ap_duration_ms: float = 5000.0,
                            ap_prepace_ms: float = 5000.0, ap_noise_mV: float = 0.2,
                            name: str = "example_cell") -> ExamplePaths:
    """Simulate a synthetic cell and write it as ABF1 files plus a truth JSON in ``out_dir``.

    ``multipliers``: 52 values (INFERRED_NAMES order) or {name: value} (others 1.0); default
    :func:`example_multipliers` (seed, spread). Voltage clamp on ``protocol`` (default
    protocol_a) at ``temperature_K`` (default the protocol's), sampled at ``sample_rate_Hz``
    (a multiple of the protocol's rate divides exactly; the reader resamples to the model's
    0.1 ms); current = I_total (pA/pF) x ``capacitance_pF`` (pF) + N(0, noise_pA_per_pF x Cm)
    pA. With ``ap``: the free-running AP for ``ap_duration_ms`` (ms) after ``ap_prepace_ms``
    (ms) unrecorded, + N(0, ap_noise_mV) mV, at the same rate. Noise uses the seed too.
    """
    from ..simulate.api import simulate_current_clamp, simulate_voltage_clamp

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = protocol if protocol is not None else builtin_protocol("protocol_a")
    temp = float(temperature_K) if temperature_K is not None else base.temperature_K
    m = _as_multipliers(multipliers, seed, spread)
    for label, v in (("capacitance_pF", capacitance_pF), ("noise_pA_per_pF", noise_pA_per_pF),
                     ("ap_noise_mV", ap_noise_mV), ("sample_rate_Hz", sample_rate_Hz)):
        if not (math.isfinite(v) and v >= 0) or (v == 0 and label in ("capacitance_pF",
                                                                        "sample_rate_Hz")):
            raise ValueError(f"{label} must be a positive number, found {v!r}")
    dt = 1000.0 / sample_rate_Hz
    sim_protocol = Protocol(base.segments, dt, temp)  # ValueError if segments don't fit dt
    inputs = inputs_from_multipliers(m)
    noise = np.random.default_rng(np.random.SeedSequence([_EXAMPLE_STREAM, int(seed), 1]))

    vc = simulate_voltage_clamp(sim_protocol, inputs)
    if vc.unstable[0]:
        raise ValueError("the example cell is numerically unstable under voltage clamp; "
                         "choose other multipliers or seed")
    i_pA = vc.i_total[0].astype(np.float64) * capacitance_pF
    i_pA += noise.normal(0.0, noise_pA_per_pF * capacitance_pF, i_pA.shape)
    vc_path = write_abf1(out / f"{name}_vc.abf",
                         [(i_pA, "pA", "I_mem"), (vc.v_mV, "mV", "V_cmd")], sample_rate_Hz,
                         capacitance_pF=capacitance_pF,
                         comment=f"cardiotwin example cell seed {seed}: voltage clamp")
    ap_path = None
    ap_info = None
    if ap:
        cc = simulate_current_clamp(ap_duration_ms, inputs, temperature_K=temp,
                                    record_interval_ms=dt, prepace_ms=ap_prepace_ms)
        if cc.unstable[0]:
            raise ValueError("the example cell is numerically unstable in current clamp")
        v = cc.v_mV[0, :-1].astype(np.float64)  # n = duration / dt samples
        v += noise.normal(0.0, ap_noise_mV, v.shape)
        ap_path = write_abf1(out / f"{name}_ap.abf", [(v, "mV", "V_mem")], sample_rate_Hz,
                             capacitance_pF=capacitance_pF,
                             comment=f"cardiotwin example cell seed {seed}: current clamp")
        ap_info = {"file": ap_path.name, "duration_ms": ap_duration_ms,
                   "prepace_ms": ap_prepace_ms, "noise_mV": ap_noise_mV}
    truth = {
        "format": FORMAT, "seed": int(seed), "spread": spread,
        "registry_version": REGISTRY_VERSION,
        "multipliers": {n: float(x) for n, x in zip(INFERRED_NAMES, m, strict=True)},
        "capacitance_pF": capacitance_pF, "noise_pA_per_pF": noise_pA_per_pF,
        "sample_rate_Hz": sample_rate_Hz, "temperature_K": temp,
        "protocol": base.to_dict(), "protocol_hash": base.protocol_hash,
        "voltage_clamp": {"file": vc_path.name, "channels": ["I_mem (pA)", "V_cmd (mV)"]},
        "current_clamp": ap_info,
    }
    truth_path = out / f"{name}.json"
    write_json_atomic(truth_path, truth, indent=1)
    return ExamplePaths(vc_path, ap_path, truth_path)


def read_example_truth(path: str | os.PathLike) -> dict:
    """The truth JSON of an example (``multipliers`` as {name: value}); ValueError on a wrong
    format."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})"
                         ) from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        d = d if isinstance(d, dict) else {}
        raise ValueError(f"{path}: format {d.get('format')!r}; expected {FORMAT!r}")
    return d


def _as_multipliers(multipliers, seed: int, spread: float) -> np.ndarray:
    if multipliers is None:
        return example_multipliers(seed, spread)
    if isinstance(multipliers, dict):
        unknown = sorted(set(multipliers) - set(INFERRED_NAMES))
        if unknown:
            raise ValueError(f"multipliers: unknown names {unknown}; expected names from "
                             "INFERRED_NAMES")
        return np.array([float(multipliers.get(n, 1.0)) for n in INFERRED_NAMES])
    m = np.asarray(multipliers, dtype=np.float64)
    if m.shape != (N_INFERRED,):
        raise ValueError(f"multipliers: expected {N_INFERRED} values, found shape {m.shape}")
    return m
