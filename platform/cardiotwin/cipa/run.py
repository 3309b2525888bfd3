"""A CiPA risk run: every drug's screen on Ray, risk metrics, the leave-one-out classifier and
its baselines, files.

``run_cipa(config)`` runs one drug screen per drug (:func:`cardiotwin.drugs.screen.run_screens`:
all screens' tasks in one Ray session; the control simulations, the same for every drug, run
once; finished screens in ``out_dir/screens`` are reused), computes the metrics of
:mod:`.metrics` per drug and dose with bootstrap intervals over cells, fits the classifier of
:mod:`.classify` by leave-one-out over the CiPA drugs among those run (flecainide, not one of the
28, is predicted by the model of all of them) and writes into ``out_dir``:

- ``risk.csv``: drug, cipa_category, predicted_category, risk_score (each drug's prediction
  with that drug left out), risk_score_ci_low / _high (bootstrap over cells), set, the
  features;
- ``summary.json``: settings, per-drug metrics per dose with intervals, the classifier's
  scores with bootstrap intervals, the two baselines, timing;
- ``dose_response.png``, ``risk_by_category.png`` and ``index.html`` linking them.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.versions import code_version, package_versions
from ..storage.atomic import atomic_path, write_json_atomic
from . import classify as C
from . import metrics as M
from .config import CipaConfig

FORMAT = "cardiotwin.cipa/1"
FILES = {"risk": "risk.csv", "summary": "summary.json", "dose_response": "dose_response.png",
         "risk_by_category": "risk_by_category.png", "html": "index.html"}


def _features(dose: dict[str, np.ndarray], names: tuple[str, ...], doses: list[int]
              ) -> np.ndarray:
    """(n_replicates, n_features): each metric's mean over the doses ``doses`` (NaN doses
    skipped; a metric without any value: 0)."""
    cols = []
    for k in names:
        v = dose[k][:, doses]
        ok = np.isfinite(v)
        s = np.where(ok, v, 0.0).sum(axis=1)
        n = ok.sum(axis=1)
        cols.append(np.where(n > 0, s / np.maximum(n, 1), 0.0))
    return np.stack(cols, axis=1)


def _scores(x: np.ndarray, y: np.ndarray, make) -> tuple[np.ndarray, dict[str, Any]]:
    proba = C.leave_one_out(x, y, make)
    return proba, C.evaluate(y, proba)


def _interval(vals: list[float | None], level: float = 0.95) -> list[float | None]:
    a = np.asarray([v for v in vals if v is not None], dtype=float)
    if a.size == 0:
        return [None, None]
    q = np.quantile(a, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [round(float(q[0]), 6), round(float(q[1]), 6)]


def classify_drugs(rows: list, feats: np.ndarray, cfg: CipaConfig,
                   echo: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """LOO classification of the CiPA drugs among ``rows`` from features (n_replicates,
    n_drugs, n_features), with bootstrap intervals over the replicates, and the baselines."""
    make = (lambda: C.make_classifier(cfg.classifier_c))  # noqa: E731
    cipa = np.array([r.set != "extra" for r in rows])
    y_all = np.array([r.category for r in rows])
    y = y_all[cipa]
    if len(set(y.tolist())) < 2 or cipa.sum() < 4:
        raise ValueError(f"the classifier needs >= 4 CiPA drugs of >= 2 categories; found "
                         f"{int(cipa.sum())} of categories {sorted(set(y.tolist()))}")
    proba_all = np.full((len(rows), 3), np.nan)
    proba, scores = _scores(feats[0][cipa], y, make)
    proba_all[cipa] = proba
    if (~cipa).any():                           # not in the 28: the model of all of them
        model = make().fit(feats[0][cipa], y)
        proba_all[~cipa] = C._proba3(model, feats[0][~cipa])
    boot_scores, boot_risk = [], []
    for r in range(1, feats.shape[0]):
        p, s = _scores(feats[r][cipa], y, make)
        boot_scores.append(s)
        boot_risk.append(C.risk_score(p))
    for k in ("accuracy", "auc_high_vs_rest", "auc_low_vs_rest"):
        scores[f"{k}_ci"] = _interval([s[k] for s in boot_scores])
    scores["ci_method"] = (f"{len(boot_scores)} bootstrap resamples of the cells, the whole "
                           "leave-one-out repeated on each; percentile interval")
    risk = C.risk_score(proba_all)
    risk_ci = np.full((len(rows), 2), np.nan)
    if boot_risk:
        risk_ci[cipa] = np.quantile(np.array(boot_risk), [0.025, 0.975], axis=0).T
    # baselines: one feature each, the same leave-one-out classifier
    herg = C.herg_margin(np.array([r.block("IKr")[0] for r in rows]),
                         np.array([r.cmax_free_nM for r in rows]))
    bnet = np.array([C.block_score(r.drug, [m * r.cmax_free_nM for m in cfg.multiples])
                     for r in rows])
    baselines = {}
    for name, v, what in (("herg_margin", herg, "log10(hERG IC50 / free Cmax)"),
                          ("block_score", bnet, "b_hERG - b_CaL - b_NaL, mean over the doses")):
        _, s = _scores(v[cipa, None], y, make)
        s["feature"] = what
        baselines[name] = s
    if echo:
        echo(f"leave-one-out over {int(cipa.sum())} drugs: accuracy {scores['accuracy']:.2f}, "
             f"AUC high {scores['auc_high_vs_rest']}, low {scores['auc_low_vs_rest']}; "
             f"hERG margin {baselines['herg_margin']['accuracy']:.2f}, block score "
             f"{baselines['block_score']['accuracy']:.2f}")
    return {"scores": scores, "baselines": baselines, "proba": proba_all, "risk": risk,
            "risk_ci": risk_ci, "herg_margin": herg, "block_score": bnet}


def run_cipa(config: CipaConfig | dict[str, Any], progress: bool = True,
             num_cpus: int | None = None, ray_address: str | None = None, *,
             ship_package: str = "auto", use_ray: bool = True,
             echo: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Run the CiPA evaluation of ``config`` (module docstring); returns the summary."""
    from ..drugs.screen import run_screens

    cfg = config if isinstance(config, CipaConfig) else CipaConfig.create(**config)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = cfg.selected()
    screens = [cfg.screen_config(r) for r in rows]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results = run_screens(screens, progress=progress, num_cpus=num_cpus,
                          ray_address=ray_address, ship_package=ship_package, use_ray=use_ray,
                          echo=echo)
    t_sim = time.perf_counter() - t0
    weights = M.bootstrap_weights(cfg.n_cells, cfg.n_bootstrap, cfg.seed)
    per_drug, feats = [], []
    for row, res in zip(rows, results, strict=True):
        dose = M.dose_metrics(M.per_cell(res), weights)
        feats.append(_features(dose, cfg.features, cfg.feature_dose_index()))
        per_drug.append({"drug": row.name, "cipa_category": row.category_name,
                         "set": row.set, "cmax_free_nM": row.cmax_free_nM,
                         "cmax_note": row.cmax_note, "multiples": list(cfg.multiples),
                         "concentrations_nM": [m * row.cmax_free_nM for m in cfg.multiples],
                         "metrics": {k: M.summarize(v) for k, v in dose.items()},
                         "screen": str(Path("screens") / row.drug.key)})
    x = np.stack(feats, axis=1)                       # (replicates, drugs, features)
    cls = classify_drugs(rows, x, cfg, echo)
    wall = time.perf_counter() - t0
    timing = _timing(results, cfg, started, t_sim, wall)
    summary = {
        "format": FORMAT, "config": cfg.model_dump(mode="json"),
        "model": {"variant": "late_sodium" if cfg.late_sodium else "default",
                  "pacing": (f"{cfg.pacing_hz:g} Hz, 3 pA/pF for 5 ms" if cfg.pacing_hz
                             else "free-running")},
        "metrics": {"units": M.UNITS, "definitions": (M.__doc__ or "").strip()},
        "classifier": {"features": list(cfg.features),
                       "feature_definition": "each metric's mean over the doses (population "
                                             "value; bootstrap replicates for the intervals)",
                       "feature_multiples": [cfg.multiples[i] for i in cfg.feature_dose_index()],
                       "model": f"StandardScaler + multinomial LogisticRegression(C="
                                f"{cfg.classifier_c:g}), scikit-learn",
                       "risk_score": "P(intermediate) + 2 P(high), the drug left out",
                       **cls["scores"]},
        "baselines": cls["baselines"],
        "drugs": [dict(d, predicted_category=C.CATEGORIES[int(np.argmax(p))],
                       risk_score=round(float(s), 6),
                       risk_score_ci=[None if not np.isfinite(v) else round(float(v), 6)
                                      for v in ci],
                       probabilities=[round(float(v), 6) for v in p],
                       features={k: round(float(f), 6)
                                 for k, f in zip(cfg.features, x[0, i], strict=True)},
                       herg_margin_log10=round(float(cls["herg_margin"][i]), 6),
                       block_score=round(float(cls["block_score"][i]), 6))
                  for i, (d, p, s, ci) in enumerate(zip(per_drug, cls["proba"], cls["risk"],
                                                        cls["risk_ci"], strict=True))],
        "timing": timing,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "versions": package_versions(),
        "files": dict(FILES),
    }
    _write_risk_csv(out / FILES["risk"], summary, cfg.features)
    if cfg.figures:
        from . import figures as F

        for name, fn in (("dose_response", F.dose_response),
                         ("risk_by_category", F.risk_by_category)):
            with atomic_path(out / FILES[name]) as tmp:
                fn(summary, tmp)
    from .report import write_html

    write_html(summary, out / FILES["html"], figures=cfg.figures)
    write_json_atomic(out / FILES["summary"], summary)
    if echo:
        echo(f"{out}: risk.csv, summary.json, index.html ({wall:.0f} s, "
             f"{timing['simulations_per_s_per_cpu'] or 0:.2f} simulations/s/core)")
    return summary


def _timing(results: list, cfg: CipaConfig, started: str, t_sim: float, wall: float
            ) -> dict[str, Any]:
    """Wall times and simulation rate of the screens this run simulated (reused ones aside;
    the control, shared by all of them, counted once)."""
    ran = [r.summary["timing"] for r in results if r.summary["finished_utc"] >= started]
    n_run = cfg.n_cells * (1 + len(cfg.multiples) * len(ran)) if ran else 0
    cpus = ran[0]["cpus"] if ran else None
    sim_wall = ran[0]["wall_s"] if ran else None
    return {"wall_s": round(wall, 3), "screens_s": round(t_sim, 3),
            "screens_run": len(ran), "screens_reused": len(results) - len(ran),
            "simulation_wall_s": sim_wall, "cpus": cpus, "n_simulations": n_run,
            "simulated_ms_each": cfg.prepace_ms + cfg.record_ms,
            "simulations_per_s_per_cpu": (round(n_run / (sim_wall * cpus), 4)
                                          if sim_wall and cpus else None)}


def _write_risk_csv(path: Path, summary: dict[str, Any], features: tuple[str, ...]) -> None:
    cols = ["drug", "cipa_category", "predicted_category", "risk_score", "risk_score_ci_low",
            "risk_score_ci_high", "set", *[f"feature_{k}" for k in features]]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for d in summary["drugs"]:
            lo, hi = d["risk_score_ci"]
            w.writerow([d["drug"], d["cipa_category"], d["predicted_category"],
                        f"{d['risk_score']:.4f}", "" if lo is None else f"{lo:.4f}",
                        "" if hi is None else f"{hi:.4f}", d["set"],
                        *[f"{d['features'][k]:.6g}" for k in features]])
