"""Read-out of fitted hybrids: one row per recording (fitted tau's, ms) and the pre- vs post-drug
table (tau_close change next to the measured APD90 change, %), per drug.

Recording names follow the real-iPSC-CM data set: ``<cell>__<condition>_<mode>.csv.gz`` with the
drug as the last token of the cell name, e.g. ``7_042721_4_alex_quinine__post-drug_spont``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .config import PHYS_NAMES

_NAME = re.compile(r"^(?P<cell>.+?)__(?P<cond>pre-drug|post-drug|washoff)_(?P<mode>spont|paced)")
DRUGS = ("cisapride", "quinidine", "quinine", "verapamil")


def parse_recording_name(path) -> tuple[str, str | None, str | None, str | None]:
    """(cell, drug, condition, mode) of a recording file name; (stem, None, None, None) when the
    name does not follow the data set's pattern."""
    name = Path(str(path)).name
    stem = name.split(".")[0]
    m = _NAME.match(name)
    if not m:
        return stem, None, None, None
    cell = m["cell"]
    return cell, cell.rsplit("_", 1)[-1], m["cond"], m["mode"]


def fit_row(path, fit, beats) -> dict[str, Any]:
    """Summary row of a fitted recording: tau's of the final model (hybrid, else physics only;
    ms), the physics-only tau's (suffix _phys), h0, APD90 and cycle length measured on the
    recording (cardiotwin.features, ms), the fitted model's APD90 (:func:`model_apd90_ms`),
    final L_traj (normalized^2), ||F_dl|| (normalized/ms)."""
    final, phys = fit.final, fit.physics_only
    row: dict[str, Any] = {"file": str(path), "status": "fitted", "n_beats": fit.n_beats,
                           "model": "hybrid" if fit.hybrid is not None else "physics"}
    row.update({k: final.physics[k] for k in PHYS_NAMES})
    row["h0"] = final.h0
    row["apd_ms_model"] = model_apd90_ms(final, fit.config, fit.config.data.window_ms)
    row.update({f"{k}_phys": phys.physics[k] for k in PHYS_NAMES})
    hh, hp = fit.history_hybrid, fit.history_physics
    row["l_traj"] = (hh or hp)["l_traj"][-1]
    row["l_traj_phys"] = hp["l_traj"][-1] if hp.get("l_traj") else math.nan
    row["fdl_norm"] = fit.fdl_norm
    row["lambda_final"] = hh["lam"][-1] if hh.get("lam") else math.nan
    row["apd90_ms"] = beats.features.get("apd90_ms", math.nan)
    row["cycle_length_ms"] = beats.features.get("cycle_length_ms", math.nan)
    row["seconds"] = fit.seconds
    return row


def model_apd90_ms(state, config, horizon_ms: float) -> float:
    """APD90 of the fitted model's own beat (ms): forecast from the beat start (v0 =
    start level on the upstroke, h0) until v falls below 10% of its peak; NaN if it does not
    within ``horizon_ms``."""
    import numpy as np

    from .fit import forecast

    fc = forecast(state, config, config.data.start_level, horizon_ms)
    v = fc.v[:, 0]
    i = int(np.argmax(v))
    below = np.flatnonzero(v[i:] < 0.1 * v[i])
    if below.size == 0:
        return math.nan
    k = i + int(below[0])
    frac = (v[k - 1] - 0.1 * v[i]) / (v[k - 1] - v[k])
    return float(fc.t_ms[k - 1] + frac * (fc.t_ms[k] - fc.t_ms[k - 1]))


def skipped_row(path, reason: str) -> dict[str, Any]:
    return {"file": str(path), "status": "skipped", "reason": reason}


def _pct(pre: float, post: float) -> float:
    if not (math.isfinite(pre) and math.isfinite(post)) or pre == 0:
        return math.nan
    return 100.0 * (post / pre - 1.0)


def drug_table(rows: list[dict[str, Any]], drugs=DRUGS) -> list[dict[str, Any]]:
    """Per drug: the cells with both a fitted pre-drug and a fitted post-drug recording, their
    tau_close and APD90 changes (%, post / pre - 1), the means, and a note on the cells left out
    (with the reason of the skipped recording)."""
    by_cell: dict[str, dict[str, dict]] = {}
    for r in rows:
        cell, drug, cond, _ = parse_recording_name(r["file"])
        if drug is None or cond not in ("pre-drug", "post-drug"):
            continue
        by_cell.setdefault(cell, {})[cond] = r
    out = []
    for drug in drugs:
        pairs, missing = [], []
        for cell, conds in sorted(by_cell.items()):
            if parse_recording_name(f"{cell}__pre-drug_spont")[1] != drug:
                continue
            pre, post = conds.get("pre-drug"), conds.get("post-drug")
            ok = [c for c in (pre, post) if c is not None and c.get("status") == "fitted"]
            if len(ok) == 2:
                pairs.append({
                    "cell": cell, "tau_close_pre_ms": pre["tau_close_ms"],
                    "tau_close_post_ms": post["tau_close_ms"],
                    "tau_close_change_pct": _pct(pre["tau_close_ms"], post["tau_close_ms"]),
                    "apd90_pre_ms": pre.get("apd90_ms", math.nan),
                    "apd90_post_ms": post.get("apd90_ms", math.nan),
                    "apd90_change_pct": _pct(pre.get("apd90_ms", math.nan),
                                             post.get("apd90_ms", math.nan)),
                    "apd_model_change_pct": _pct(pre.get("apd_ms_model", math.nan),
                                                 post.get("apd_ms_model", math.nan))})
            else:
                why = []
                for cond, r in (("pre", pre), ("post", post)):
                    if r is None:
                        why.append(f"{cond}: no recording")
                    elif r.get("status") != "fitted":
                        why.append(f"{cond}: {r.get('reason', r.get('status'))}".split(";")[0])
                missing.append(f"{cell} ({', '.join(why)})")

        def mean(key, pairs=pairs):
            vals = [p[key] for p in pairs if math.isfinite(p[key])]
            return sum(vals) / len(vals) if vals else math.nan

        out.append({"drug": drug, "n_pairs": len(pairs), "pairs": pairs,
                    "tau_close_change_pct": mean("tau_close_change_pct"),
                    "apd90_change_pct": mean("apd90_change_pct"),
                    "note": ("no cell with both recordings fitted; " if not pairs else "")
                    + ("left out: " + "; ".join(missing) if missing else "")})
    return out
