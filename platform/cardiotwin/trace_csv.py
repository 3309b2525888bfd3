"""One reader for trace CSV files (``.csv`` or ``.csv.gz``, UTF-8, optional BOM): voltage-clamp
recordings (``t_ms, command_mV, i_pA_per_pF``) and action-potential traces (``t_ms, v_mV`` or
``time_s, voltage_mV``), used by :mod:`cardiotwin.twin` and :mod:`cardiotwin.features`.

Rules (one set for every caller):

* Line 1 is the header: comma-separated column names (surrounding spaces stripped, each name at
  most once). Each role (time, voltage, current...) takes the first of its candidate names that
  the header holds; the unit of a column comes from its name (``t_ms`` ms, ``time_s`` s,
  ``i_nA`` nA, ``I_total`` pA/pF, see the tables). Other columns are ignored (not parsed).
* Blank lines are skipped; every other line must have as many fields as the header.
* The used cells must be finite numbers (a role may allow NaN: ``Want.finite``, for the
  voltage of a simulated trace that went unstable); time must increase strictly and, when
  ``uniform``, be uniformly sampled (every step within ``UNIFORM_TOLERANCE`` of the median step);
  at least ``min_samples`` rows.
* Every error is a :class:`TraceCsvError` (a ValueError) whose message starts with the file and
  the field, then the line (and column) and expected vs found.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Time columns: name -> unit; TIME_UNITS: unit -> factor to ms.
TIME_COLUMNS: dict[str, str] = {"t_ms": "ms", "time_ms": "ms", "time_s": "s"}
TIME_UNITS: dict[str, float] = {"ms": 1.0, "s": 1000.0}
#: Membrane potential of a current-clamp (AP) trace.
MEMBRANE_POTENTIAL_COLUMNS: dict[str, str] = {"v_mV": "mV", "voltage_mV": "mV"}
#: Command voltage of a voltage-clamp recording.
COMMAND_COLUMNS: dict[str, str] = {"command_mV": "mV", "v_mV": "mV", "voltage_mV": "mV"}
#: Membrane current of a voltage-clamp recording (``I_total``: the simulator's pA/pF column).
CURRENT_COLUMNS: dict[str, str] = {"i_pA_per_pF": "pA/pF", "I_total": "pA/pF", "i_pA": "pA",
                                   "i_nA": "nA"}
#: Injected (stimulus) current of a paced AP trace.
STIMULUS_COLUMNS: dict[str, str] = {"injected_current_pA_per_pF": "pA/pF", "i_stim": "pA/pF",
                                    "i_pA_per_pF": "pA/pF"}
GZIP_MAGIC = b"\x1f\x8b"
#: Uniform sampling: every time step within this fraction of the median step.
UNIFORM_TOLERANCE = 1e-3


class TraceCsvError(ValueError):
    """A trace CSV cannot be used. ``source`` (file), ``field`` (column or part of the file)
    and ``line`` (1-based, None when not one line) say where; the message says expected vs
    found."""

    def __init__(self, message: str, *, source: str, field: str, line: int | None = None):
        super().__init__(message)
        self.source = source
        self.field = field
        self.line = line


def _fail(source: str, field: str, msg: str, line: int | None = None) -> TraceCsvError:
    return TraceCsvError(f"{source}: {field}: {msg}", source=source, field=field, line=line)


@dataclass(frozen=True)
class Want:
    """A column role: ``candidates`` (name -> unit, in order of preference) and whether the file
    must have one; ``label`` names it in errors ("a current column"). ``finite``: refuse NaN and
    inf (False for a simulated trace that went unstable: its values are NaN from then on)."""

    label: str
    candidates: Mapping[str, str]
    required: bool = True
    finite: bool = True


@dataclass(frozen=True)
class CsvColumn:
    """One used column: its header name, unit (from the name) and values (float64)."""

    name: str
    unit: str
    values: np.ndarray


@dataclass(frozen=True)
class CsvTrace:
    """The used columns of a trace CSV. ``t_ms``: time converted to ms (as written, not
    re-based); ``sample_interval_ms``: the median step (ms); ``lines``: the file line of each
    row; ``columns``: role -> column (roles without a column are absent)."""

    source: str
    header: tuple[str, ...]
    time_column: str
    t_ms: np.ndarray
    sample_interval_ms: float
    lines: np.ndarray
    columns: dict[str, CsvColumn] = field(default_factory=dict)

    def get(self, role: str) -> CsvColumn | None:
        return self.columns.get(role)


TIME = Want("a time column", TIME_COLUMNS)


def read_csv_trace(data: str | os.PathLike | bytes, roles: Mapping[str, Want], *,
                   name: str | None = None, min_samples: int = 2,
                   uniform: bool = True) -> CsvTrace:
    """Read the time column and one column per role of ``roles`` from a trace CSV (rules in
    the module docstring): a path, or the file's bytes (an upload; gzip recognised by its
    magic number) named ``name`` in errors. Raises :class:`TraceCsvError`."""
    if isinstance(data, (bytes, bytearray)):
        src = name or "<upload>"
        header, rows = _split_rows(_decode(bytes(data), src), src)
    else:
        src = name or str(data)
        header, rows = _split_rows(_read_text(Path(data), src), src)
    picked = _pick_columns(header, {"time": TIME, **roles}, src)
    lines = np.array([ln for ln, _ in rows], dtype=np.int64)
    if len(rows) < min_samples:
        raise _fail(src, "rows", f"expected >= {min_samples} samples, found {len(rows)}")
    wants = {"time": TIME, **roles}
    cols = {role: CsvColumn(name, unit, _parse_column(rows, header.index(name), name, src,
                                                      finite=wants[role].finite))
            for role, (name, unit) in picked.items()}
    tcol = cols.pop("time")
    t = tcol.values * TIME_UNITS[tcol.unit]
    dt = uniform_interval_ms(t, source=src, field=tcol.name, lines=lines, uniform=uniform)
    return CsvTrace(src, tuple(header), tcol.name, t, dt, lines, cols)


def uniform_interval_ms(t_ms, *, source: str, field: str = "t_ms",
                        lines: np.ndarray | None = None, uniform: bool = True) -> float:
    """Median step (ms) of a strictly increasing, finite, (when ``uniform``) uniformly sampled
    time axis of >= 2 samples; TraceCsvError naming the line (or sample) otherwise."""
    t = np.asarray(t_ms, dtype=np.float64)

    def at(k: int) -> str:
        return f"line {int(lines[k])}" if lines is not None else f"sample {k}"

    def line(k: int) -> int | None:
        return int(lines[k]) if lines is not None else None

    if t.ndim != 1 or len(t) < 2:
        raise _fail(source, field, f"expected >= 2 samples, found shape {t.shape}")
    bad = ~np.isfinite(t)
    if bad.any():
        k = int(np.argmax(bad))
        raise _fail(source, field, f"{at(k)}: expected a finite time, found {float(t[k])!r}",
                    line(k))
    d = np.diff(t)
    back = d <= 0
    if back.any():
        k = int(np.argmax(back)) + 1
        raise _fail(source, field, f"{at(k)}: time is not strictly increasing: t = "
                    f"{t[k]:g} ms after {t[k - 1]:g} ms", line(k))
    dt = float(np.median(d))
    off = np.abs(d - dt) > UNIFORM_TOLERANCE * dt
    if uniform and off.any():
        k = int(np.argmax(off)) + 1
        raise _fail(source, field, f"not uniformly sampled: {at(k)} (t = {t[k]:g} ms) comes "
                    f"{d[k - 1]:g} ms after the previous sample, expected {dt:g} ms", line(k))
    return dt


def _read_text(path: Path, src: str) -> str:
    if not path.is_file():
        raise _fail(src, "path", "file not found (or not a regular file)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _fail(src, "file", f"cannot read ({type(e).__name__}: {e})") from None
    if path.suffix == ".gz" and raw[:2] != GZIP_MAGIC:
        raise _fail(src, "file", "cannot read as text CSV: a .gz name, but not gzip data")
    return _decode(raw, src)


def _decode(raw: bytes, src: str) -> str:
    """The text of a CSV's bytes: gunzipped when gzip, UTF-8 (optional BOM)."""
    try:
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise _fail(src, "file", f"cannot read as text CSV ({type(e).__name__}: {e})"
                    ) from None


def _split_rows(text: str, src: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header names, [(line number, fields)] of the non-blank data lines)."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise _fail(src, "header", "the file is empty; expected a CSV header and rows", 1)
    header = [c.strip() for c in lines[0].split(",")]
    seen: set[str] = set()
    for j, name in enumerate(header):
        if not name or name in seen:
            what = "an empty name" if not name else f"{name!r} a second time"
            raise _fail(src, "header", f"line 1, column {j + 1}: expected unique column "
                        f"names, found {what}", 1)
        seen.add(name)
    rows = [(k, ln.split(",")) for k, ln in enumerate(lines[1:], start=2) if ln.strip()]
    if not rows:
        raise _fail(src, "rows", "no data rows after the header")
    for k, f in rows:
        if len(f) != len(header):
            raise _fail(src, "rows", f"line {k}: expected {len(header)} fields (header "
                        f"{header}), found {len(f)}", k)
    return header, rows


def _pick_columns(header: list[str], roles: Mapping[str, Want], src: str
                  ) -> dict[str, tuple[str, str]]:
    picked, missing = {}, []
    for role, want in roles.items():
        name = next((c for c in want.candidates if c in header), None)
        if name is not None:
            picked[role] = (name, want.candidates[name])
        elif want.required:
            missing.append(want.label)
    if missing:
        need = " and ".join(f"{w.label} ({' | '.join(w.candidates)})" for w in roles.values()
                            if w.required)
        raise _fail(src, "columns", f"expected {need}; found {header} in the header (line 1), "
                    f"without {' or '.join(missing)}", 1)
    return picked


def _parse_column(rows: list[tuple[int, list[str]]], j: int, name: str, src: str, *,
                  finite: bool = True) -> np.ndarray:
    cells = [f[j] for _, f in rows]
    try:
        x = np.array(cells, dtype=np.float64)
    except ValueError:
        for (k, _), cell in zip(rows, cells, strict=True):
            try:
                float(cell)
            except ValueError:
                raise _fail(src, name, f"line {k}, column {j + 1}: expected a number, found "
                            f"{cell.strip()!r}", k) from None
        raise  # numpy refused a cell that float() takes: not expected
    bad = ~np.isfinite(x)
    if finite and bad.any():
        i = int(np.argmax(bad))
        k = rows[i][0]
        raise _fail(src, name, f"line {k}, column {j + 1}: expected a finite number, found "
                    f"{cells[i].strip()!r} ({int(bad.sum())} non-finite values in all)", k)
    return x
