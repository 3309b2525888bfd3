"""Voltage-clamp protocols: the command-voltage contract shared by simulator, datasets and models.

A protocol is an ordered tuple of segments (duration ms, start and end voltage mV; a linear ramp
when they differ) sampled every ``sample_interval_ms`` at ``temperature_K``. Its canonical JSON
form (sorted keys, no spaces, floats as ``repr``) is hashed with sha256 into ``protocol_hash``,
which datasets, models and recordings carry to say which protocol they belong to.

Samples lie at t = 0, dt, ..., duration - dt; inside a segment of n steps the j-th sample is
``v_start + (v_end - v_start) * j / n``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .storage.identity import canonical_json, sha256_bytes

FORMAT = "cardiotwin.protocol/1"
SEGMENT_COLUMNS = ("duration_ms", "v_start_mV", "v_end_mV")
BREAKPOINT_COLUMNS = ("time_ms", "voltage_mV")
V_LIMIT_MV = 200.0
TEMPERATURE_RANGE_K = (250.0, 330.0)
_REL_TOL = 1e-9


class ProtocolMismatchError(ValueError):
    """Data (a store, a recording, a trace) of another protocol than the one required."""


@dataclass(frozen=True)
class Segment:
    """One piece of the command: ``duration_ms`` (ms) from ``v_start_mV`` to ``v_end_mV`` (mV).

    Values are stored as float (-0.0 becomes 0.0) so equal protocols have equal canonical JSON.
    """

    duration_ms: float
    v_start_mV: float
    v_end_mV: float

    def __post_init__(self) -> None:
        for f in SEGMENT_COLUMNS:
            object.__setattr__(self, f, float(getattr(self, f)) + 0.0)

    @property
    def is_ramp(self) -> bool:
        """True when the voltage changes linearly over the segment (start != end)."""
        return self.v_start_mV != self.v_end_mV


@dataclass(frozen=True)
class Protocol:
    """A voltage-clamp protocol: ``segments`` sampled every ``sample_interval_ms`` (ms) at
    ``temperature_K`` (K). Immutable and validated on construction (ValueError)."""

    segments: tuple[Segment, ...]
    sample_interval_ms: float = 0.1
    temperature_K: float = 310.0

    def __post_init__(self) -> None:
        segs = tuple(s if isinstance(s, Segment) else Segment(*s) for s in self.segments)
        dt, temp = float(self.sample_interval_ms), float(self.temperature_K)
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "sample_interval_ms", dt)
        object.__setattr__(self, "temperature_K", temp)
        if not segs:
            raise ValueError("protocol has no segments; expected at least one")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"sample_interval_ms must be finite and > 0, found {dt!r}")
        lo, hi = TEMPERATURE_RANGE_K
        if not lo < temp < hi:  # also rejects nan
            raise ValueError(f"temperature_K must be in ({lo:g}, {hi:g}) K, found {temp!r}")
        for k, s in enumerate(segs):
            for f in SEGMENT_COLUMNS:
                if not math.isfinite(getattr(s, f)):
                    raise ValueError(f"segment {k}: {f} must be finite, found {getattr(s, f)!r}")
            if s.duration_ms <= 0:
                raise ValueError(f"segment {k}: duration_ms must be > 0, found {s.duration_ms!r}")
            n = round(s.duration_ms / dt)
            if n < 1 or abs(s.duration_ms - n * dt) > _REL_TOL * s.duration_ms:
                raise ValueError(
                    f"segment {k}: duration_ms {s.duration_ms!r} is not an integer multiple of "
                    f"sample_interval_ms {dt!r} (found {s.duration_ms / dt!r} samples)")
            for f in ("v_start_mV", "v_end_mV"):
                v = getattr(s, f)
                if abs(v) > V_LIMIT_MV:
                    raise ValueError(f"segment {k}: {f} must be in [-{V_LIMIT_MV:g}, "
                                     f"{V_LIMIT_MV:g}] mV, found {v!r}")

    # ---- sampling -------------------------------------------------------------------------

    @property
    def duration_ms(self) -> float:
        """Total duration (ms): the sum of the segment durations."""
        return math.fsum(s.duration_ms for s in self.segments)

    @property
    def n_samples(self) -> int:
        """Number of samples, round(duration_ms / sample_interval_ms)."""
        return int(self.segment_steps()[0].sum())

    def segment_steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-segment (n_steps int64, v_start_mV float64, v_end_mV float64), for the kernels."""
        dt = self.sample_interval_ms
        steps = np.array([round(s.duration_ms / dt) for s in self.segments], dtype=np.int64)
        v0 = np.array([s.v_start_mV for s in self.segments], dtype=np.float64)
        v1 = np.array([s.v_end_mV for s in self.segments], dtype=np.float64)
        return steps, v0, v1

    def times_ms(self) -> np.ndarray:
        """Sample times (ms), float64 of length n_samples: 0, dt, ..., duration - dt."""
        return np.arange(self.n_samples, dtype=np.float64) * self.sample_interval_ms

    def command_voltage(self) -> np.ndarray:
        """Command voltage (mV) at each sample time, float64 of length n_samples."""
        steps, v0, v1 = self.segment_steps()
        seg = np.repeat(np.arange(len(steps)), steps)
        first = np.cumsum(steps) - steps
        frac = (np.arange(steps.sum()) - first[seg]) / steps[seg]
        return v0[seg] + (v1[seg] - v0[seg]) * frac

    def voltage_at(self, t_ms: float) -> float:
        """Command voltage (mV) at time ``t_ms`` (ms) in [0, duration_ms]; a segment boundary
        belongs to the segment it starts, and t = duration_ms gives the last v_end_mV."""
        t = float(t_ms)
        if not (0.0 <= t <= self.duration_ms):
            raise ValueError(f"t_ms must be in [0, {self.duration_ms!r}] ms, found {t!r}")
        steps, v0, v1 = self.segment_steps()
        dt = self.sample_interval_ms
        edges = np.concatenate(([0], np.cumsum(steps))) * dt  # same arithmetic as times_ms()
        k = min(int(np.searchsorted(edges, t, side="right")) - 1, len(steps) - 1)
        frac = min((t - edges[k]) / (steps[k] * dt), 1.0)
        return float(v0[k] + (v1[k] - v0[k]) * frac)

    # ---- derived protocols ----------------------------------------------------------------

    def with_temperature(self, temperature_K: float) -> Protocol:
        """The same protocol at another temperature (K)."""
        return dataclasses.replace(self, temperature_K=temperature_K)

    def extended(self, segments: Iterable[Segment]) -> Protocol:
        """A new protocol with ``segments`` appended (same sample interval and temperature)."""
        return dataclasses.replace(self, segments=self.segments + tuple(segments))

    # ---- canonical form -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (the content of the canonical JSON)."""
        return {
            "format": FORMAT,
            "sample_interval_ms": self.sample_interval_ms,
            "temperature_K": self.temperature_K,
            "segments": [dataclasses.asdict(s) for s in self.segments],
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, separators (',', ':'), floats as repr (exact)."""
        return canonical_json(self.to_dict())

    @property
    def protocol_hash(self) -> str:
        """sha256 hex digest of the canonical JSON."""
        return sha256_bytes(self.to_json().encode("utf-8"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        """Inverse of ``to_dict`` (ValueError on a wrong format, missing or unknown keys)."""
        if not isinstance(d, dict):
            raise ValueError(f"protocol must be a JSON object, found {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unknown protocol format {d['format']!r}; expected {FORMAT!r}")
        keys = {"format", "segments", "sample_interval_ms", "temperature_K"}
        if unknown := sorted(set(d) - keys):
            raise ValueError(f"unknown protocol keys {unknown}; expected {sorted(keys)}")
        if not isinstance(d.get("segments"), list):
            raise ValueError("protocol needs 'segments': a list of objects with keys "
                             f"{list(SEGMENT_COLUMNS)}")
        segs = []
        for k, s in enumerate(d["segments"]):
            if not isinstance(s, dict) or set(s) != set(SEGMENT_COLUMNS):
                found = sorted(s) if isinstance(s, dict) else type(s).__name__
                raise ValueError(f"segment {k}: expected keys {sorted(SEGMENT_COLUMNS)}, "
                                 f"found {found}")
            for f, v in s.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"segment {k}: {f} must be a number, found {v!r}")
            segs.append(Segment(**s))
        extra = {k: d[k] for k in ("sample_interval_ms", "temperature_K") if k in d}
        return cls(tuple(segs), **extra)

    @classmethod
    def from_json(cls, text: str) -> Protocol:
        """Parse a protocol from JSON text (ValueError on invalid JSON or content)."""
        return cls.from_dict(json.loads(text))

    # ---- CSV ------------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | os.PathLike, sample_interval_ms: float = 0.1,
                 temperature_K: float = 310.0) -> Protocol:
        """Read a segment CSV (duration_ms,v_start_mV,v_end_mV) or a breakpoint CSV
        (time_ms,voltage_mV: piecewise-linear through the points, starting at t = 0, time
        non-decreasing; two points at one time make a vertical jump). The CSV holds neither
        sample interval nor temperature: they come from the arguments."""
        path = Path(path)
        columns, rows = _read_csv(path)
        if columns == SEGMENT_COLUMNS:
            segs = [Segment(*vals) for _, vals in rows]
        else:
            segs = _breakpoints_to_segments(path, rows)
        try:
            return cls(tuple(segs), sample_interval_ms, temperature_K)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the segments as a segment CSV (floats as repr, so reading back is exact).
        Sample interval and temperature are not written."""
        with Path(path).open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(SEGMENT_COLUMNS)
            w.writerows([repr(getattr(s, f)) for f in SEGMENT_COLUMNS] for s in self.segments)


def concatenate(*protocols: Protocol) -> Protocol:
    """Join protocols end to end; they must share sample interval and temperature."""
    if not protocols:
        raise ValueError("concatenate needs at least one protocol")
    first = protocols[0]
    for i, p in enumerate(protocols[1:], start=1):
        for f in ("sample_interval_ms", "temperature_K"):
            if getattr(p, f) != getattr(first, f):
                raise ValueError(f"protocol {i}: {f} {getattr(p, f)!r} differs from "
                                 f"protocol 0's {getattr(first, f)!r}")
    return first.extended(s for p in protocols[1:] for s in p.segments)


def load_protocol(path: str | os.PathLike, **kw: float) -> Protocol:
    """Load a protocol from ``.json`` or ``.csv`` (by extension). ``kw`` (sample_interval_ms,
    temperature_K) are passed to ``from_csv``, and for JSON override the stored values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"protocol file not found: {path}")
    ext = path.suffix.lower()
    if ext == ".csv":
        return Protocol.from_csv(path, **kw)
    if ext == ".json":
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"{path}: file is empty")
        try:
            p = Protocol.from_json(text)
            changes: dict[str, Any] = dict(kw)  # sample_interval_ms / temperature_K
            return dataclasses.replace(p, **changes) if changes else p
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    raise ValueError(f"{path}: unknown protocol file extension {path.suffix!r}; "
                     "expected .json or .csv")


def _read_csv(path: Path) -> tuple[tuple[str, ...], list[tuple[int, list[float]]]]:
    """Header (one of the known column sets, in canonical order) and (line number, values)
    rows in that column order; blank lines are skipped."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        lines = [(reader.line_num, [c.strip() for c in row])
                 for row in reader if any(c.strip() for c in row)]
    if not lines:
        raise ValueError(f"{path}: file is empty; expected a CSV header and rows")
    (_, header), body = lines[0], lines[1:]
    columns = next((c for c in (SEGMENT_COLUMNS, BREAKPOINT_COLUMNS)
                    if len(header) == len(c) and set(header) == set(c)), None)
    if columns is None:
        raise ValueError(f"{path}: expected columns {','.join(SEGMENT_COLUMNS)} or "
                         f"{','.join(BREAKPOINT_COLUMNS)}, found {','.join(header)}")
    if not body:
        raise ValueError(f"{path}: no data rows after the header")
    order = [header.index(c) for c in columns]
    rows = []
    for line, row in body:
        if len(row) != len(header):
            raise ValueError(f"{path}: line {line}: expected {len(header)} fields, "
                             f"found {len(row)}")
        vals = []
        for i in order:
            try:
                v = float(row[i])
            except ValueError:
                raise ValueError(f"{path}: line {line}: cannot parse {header[i]} value "
                                 f"{row[i]!r} as a number") from None
            if not math.isfinite(v):
                raise ValueError(f"{path}: line {line}: {header[i]} must be finite, found {v!r}")
            vals.append(v)
        rows.append((line, vals))
    return columns, rows


def _breakpoints_to_segments(path: Path, rows: list[tuple[int, list[float]]]) -> list[Segment]:
    """Segments of the piecewise-linear command through (time_ms, voltage_mV) points.
    Durations are rounded to 1e-9 ms so float noise in differences does not reach the hash."""
    (line0, (t0, _)) = rows[0]
    if t0 != 0:
        raise ValueError(f"{path}: line {line0}: time must start at 0 ms, found {t0!r}")
    segs = []
    for (_, (ta, va)), (line, (tb, vb)) in zip(rows, rows[1:], strict=False):
        if tb < ta:
            raise ValueError(f"{path}: non-monotonic time at line {line}: {tb!r} after {ta!r}")
        if tb > ta:
            segs.append(Segment(round(tb - ta, 9), va, vb))
    return segs


BUILTIN_PROTOCOLS = ("protocol_a",)


def builtin_protocol(name: str = "protocol_a", **kw: float) -> Protocol:
    """A protocol shipped with the package (``protocol_a``: the 16-segment, 4950 ms protocol of
    the model validation data)."""
    if name not in BUILTIN_PROTOCOLS:
        raise ValueError(f"unknown built-in protocol {name!r}; available: {BUILTIN_PROTOCOLS}")
    from importlib import resources

    with resources.as_file(resources.files("cardiotwin") / "data" / f"{name}.csv") as p:
        return Protocol.from_csv(p, **kw)
