"""The coverage report: real AP phenotypes against a population store's (``cardiotwin
coverage``). :func:`coverage_report` computes it; :func:`run_coverage` also writes
``coverage.json`` and ``coverage.png`` into an output directory (claimed first:
:func:`cardiotwin.storage.outdir.claim_output_dir`, written atomically).

Counted in the matched fraction: real cells that beat (at least 2 APs, whatever their status)
and run free (spontaneous; a paced recording's cycle length is its pacing period). The others
are listed with ``matched`` null and do not count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .match import MatchCriterion
from .phenotypes import (
    PHENOTYPE_KEYS,
    RealPhenotype,
    read_real_selection,
    real_matrix,
    select_trace_files,
    store_phenotypes,
)

FORMAT = "cardiotwin.coverage/1"
REPORT = "coverage.json"
FIGURE = "coverage.png"
PERCENTILES = (1, 50, 99)
NOTE = ("only beating (>= 2 APs) free-running real cells are counted in the matched fraction; "
        "non-beating and paced recordings are listed (matched null) but not counted")

RealPaths = Iterable[str | os.PathLike] | str | os.PathLike


def _num(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def percentiles(values: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per phenotype: the finite values' count and their 1st, 50th and 99th percentiles (None
    when there is none)."""
    out: dict[str, dict[str, Any]] = {}
    for j, k in enumerate(PHENOTYPE_KEYS):
        col = values[:, j] if values.size else np.empty(0)
        col = col[np.isfinite(col)]
        ps = np.percentile(col, PERCENTILES) if col.size else [np.nan] * len(PERCENTILES)
        out[k] = {"n": int(col.size), **{f"p{p}": _num(v) for p, v in zip(PERCENTILES, ps,
                                                                            strict=True)}}
    return out


def _identity(store, files: Sequence[Path], include: str | None, criterion: MatchCriterion,
              statuses: Sequence[str]) -> dict[str, Any]:
    return {"store_config_hash": store.meta.config_hash, "store": Path(store.path).name,
            "statuses": list(statuses), "real_files": [f.name for f in files],
            "include": include,
            "criterion": {k: v for k, v in criterion.to_dict().items() if k != "text"}}


def summary_line(report: dict[str, Any]) -> str:
    """``matched 17 of 19 beating real cells (89%) ...``: the report in one line."""
    t, c = report["totals"], report["criterion"]
    frac = t["fraction_matched"]
    pct = f" ({100 * frac:.0f}%)" if frac is not None else ""
    others = []
    if t["not_beating"]:
        others.append(f"{t['not_beating']} not beating")
    if t["paced"]:
        others.append(f"{t['paced']} paced")
    rest = f"; {' and '.join(others)}, listed but not counted" if others else ""
    return (f"matched {t['matched']} of {t['counted']} beating real cells{pct} by "
            f"{report['store']['n_synthetic']:,} synthetic {'/'.join(report['store']['statuses'])}"
            f" cells (within {100 * c['cl_rel']:g}% CL, {100 * c['apd90_rel']:g}% APD90, "
            f"{c['mdp_abs_mV']:g} mV MDP){rest}")


def _cell_rows(cells: Sequence[RealPhenotype], counted: np.ndarray, matched: np.ndarray,
               nearest: np.ndarray, dist: np.ndarray, cell_ids: np.ndarray,
               synth: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for i, c in enumerate(cells):
        d = c.to_dict()
        j = int(nearest[i])
        if counted[i]:
            d["matched"] = bool(matched[i])
            d["scaled_distance"] = _num(dist[i])
            d["nearest"] = None if j < 0 else {
                "cell_id": int(cell_ids[j]),
                "values": {k: _num(synth[j, q]) for q, k in enumerate(PHENOTYPE_KEYS)}}
        else:
            d["matched"], d["scaled_distance"], d["nearest"] = None, None, None
        rows.append(d)
    return rows


def _compute(store, selection, criterion: MatchCriterion, include: str | None,
             statuses: Sequence[str]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(report, synthetic values, real values) for an opened store and a file selection."""
    from ..storage.identity import identity_hash

    t0 = time.perf_counter()
    cells, skipped = read_real_selection(selection)
    t_real = time.perf_counter() - t0
    cell_ids, synth = store_phenotypes(store, statuses)
    real = real_matrix(cells)
    counted = np.array([c.comparable for c in cells], dtype=bool)
    nearest, dist = criterion.nearest(real, synth)
    matched = (dist <= 1.0) & counted
    n_counted, n_matched = int(counted.sum()), int(matched.sum())
    ident = _identity(store, selection.files, include, criterion, statuses)
    sampling = store.meta.sampling          # as the manifest records it (the prior)
    report: dict[str, Any] = {
        "format": FORMAT, "config_hash": identity_hash(ident), "config": ident,
        "criterion": criterion.to_dict(),
        "store": {"path": str(store.path), "config_hash": store.meta.config_hash,
                  "n_cells": store.n_cells, "statuses": list(statuses),
                  "n_synthetic": int(cell_ids.size),
                  "sampling": sampling.model_dump(mode="json"),
                  "simulation": store.meta.simulation},
        "real": {"files": [str(f) for f in selection.files], "include": include,
                 "skipped_not_traces": skipped},
        "totals": {"real_cells": len(cells), "counted": n_counted, "matched": n_matched,
                   "fraction_matched": (n_matched / n_counted) if n_counted else None,
                   "not_beating": sum(not c.beating for c in cells),
                   "paced": sum(c.beating and c.paced for c in cells)},
        "note": NOTE,
        "percentiles": {"levels": list(PERCENTILES), "synthetic": percentiles(synth),
                        "real_counted": percentiles(real[counted])},
        "cells": _cell_rows(cells, counted, matched, nearest, dist, cell_ids, synth),
        "unmatched": [c.name for c, k, m in zip(cells, counted, matched, strict=True)
                      if k and not m],
        "timing_s": {"real_traces": round(t_real, 3),
                     "store_and_match": round(time.perf_counter() - t0 - t_real, 3)},
    }
    report["summary"] = summary_line(report)
    return report, synth, real


def _open(store_path):
    if isinstance(store_path, (str, os.PathLike)):
        from ..population import open_store

        return open_store(store_path)
    return store_path


def coverage_report(store_path, real_paths: RealPaths,
                    criterion: MatchCriterion | None = None, include: str | None = None, *,
                    statuses: Sequence[str] = ("ok",)) -> dict[str, Any]:
    """The coverage of the real recordings ``real_paths`` (files or directories, optionally
    only those matching the glob ``include``) by the cells of status ``statuses`` of the
    population store at ``store_path`` (or an opened store): per real cell its phenotype,
    status, whether it is counted and matched, its nearest synthetic cell and that cell's
    values; totals (counted real cells, matched, fraction); the 1st/50th/99th percentiles of
    each phenotype, synthetic and real; the criterion in words (module docstring).
    ValueError for bad input."""
    criterion = criterion or MatchCriterion()
    store = _open(store_path)
    selection = select_trace_files(real_paths, include)
    return _compute(store, selection, criterion, include, statuses)[0]


def run_coverage(store_path, real_paths: RealPaths, out: str | os.PathLike | None = None,
                 criterion: MatchCriterion | None = None, include: str | None = None, *,
                 statuses: Sequence[str] = ("ok",), figure: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """:func:`coverage_report`, and with ``out`` the report as ``out/coverage.json`` and
    (``figure``) ``out/coverage.png``. ``out`` is checked before any work: new, empty, or
    holding a coverage report (rewritten when it has the same inputs and criterion, else
    refused unless ``overwrite``); foreign files are refused."""
    from ..storage.atomic import jsonable, write_json_atomic
    from ..storage.identity import identity_hash
    from ..storage.outdir import claim_output_dir

    criterion = criterion or MatchCriterion()
    store = _open(store_path)
    selection = select_trace_files(real_paths, include)
    if out is not None:
        ident = _identity(store, selection.files, include, criterion, statuses)
        claim_output_dir(out, marker=REPORT, fmt=FORMAT, config_hash=identity_hash(ident),
                         identity=ident, what="coverage report", overwrite=overwrite,
                         own=lambda n: n == FIGURE,
                         hint="use a new --out, the same inputs and tolerances, or "
                              "--overwrite")
    report, synth, real = _compute(store, selection, criterion, include, statuses)
    if out is not None:
        out = Path(out)
        if figure:
            from .figures import coverage_figure

            coverage_figure(report, synth, out / FIGURE)
            report["figure"] = FIGURE
        write_json_atomic(out / REPORT, jsonable(report))
    return report


__all__ = ["FIGURE", "FORMAT", "NOTE", "REPORT", "coverage_report", "percentiles",
           "run_coverage", "summary_line"]
