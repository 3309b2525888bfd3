"""A lab's per-cell recording metadata (membrane capacitance, access resistance, membrane
resistance from the amplifier's membrane test) and the artefact ranges it implies.

Read from a CSV with columns ``Cm`` (pF), ``Ra`` (or ``Rs``; MOhm) and ``Rm`` (MOhm), any
others ignored; with several rows, the last row that has all three (the Christini-lab sheets,
``cell_metadata_*.csv``, list the trials in order with values only where measured), or from a
JSON object ``{"cm_pF": .., "rs_MOhm": .., "rm_MOhm": ..}``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

_ALIASES = {"cm_pF": ("cm", "cm_pf"), "rs_MOhm": ("ra", "rs", "ra_mohm", "rs_mohm"),
            "rm_MOhm": ("rm", "rm_mohm")}
#: how far the recording's true values may lie from the membrane test's (fractions): Cm is
#: measured well; R_s drifts during a recording; R_m includes the cell's own resting
#: conductance, so the seal leak is at most 1 / R_m
CM_SPREAD = (0.85, 1.15)
RS_SPREAD = (0.6, 1.5)
LEAK_SPREAD = (0.1, 1.5)


def _number(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def read_cell_metadata(path: str | Path) -> dict[str, float]:
    """{cm_pF, rs_MOhm, rm_MOhm} of a metadata file; ValueError naming the file and what is
    missing."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such metadata file")
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not a JSON object ({e})") from None
        rows = [raw] if isinstance(raw, dict) else []
    else:
        try:
            with p.open(newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{p}: unreadable CSV ({e})") from None
    found: dict[str, float] | None = None
    for row in rows:
        keys = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        vals = {}
        for name, aliases in _ALIASES.items():
            v = next((_number(keys[a]) for a in (name.lower(), *aliases) if a in keys), None)
            if v is not None:
                vals[name] = v
        if len(vals) == len(_ALIASES):
            found = vals
    if found is None:
        raise ValueError(f"{p}: expected a row with positive Cm (pF), Ra or Rs (MOhm) and Rm "
                         "(MOhm) values, found none")
    return found


def artefact_ranges(meta: dict[str, float]) -> dict[str, tuple[float, float]]:
    """ArtefactPrior ranges (cm_pF, rs_MOhm, g_leak_nS_per_pF) around a cell's metadata."""
    cm, rs, rm = meta["cm_pF"], meta["rs_MOhm"], meta["rm_MOhm"]
    g = 1e3 / (rm * cm)  # nS/pF
    return {"cm_pF": (cm * CM_SPREAD[0], cm * CM_SPREAD[1]),
            "rs_MOhm": (rs * RS_SPREAD[0], rs * RS_SPREAD[1]),
            "g_leak_nS_per_pF": (g * LEAK_SPREAD[0], g * LEAK_SPREAD[1])}
