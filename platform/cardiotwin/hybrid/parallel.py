"""Fitting many recordings: in this process, or as Ray tasks (one CPU and one TensorFlow thread
each; the driver writes every output, workers only return numbers and figure bytes)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from .config import FitConfig
from .data import TraceError, load_beats
from .readout import drug_table, fit_row, skipped_row


def fit_recording(path, cfg: FitConfig, *, figure: bool = True, horizon_ms: float = 300.0,
                  log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], bytes | None]:
    """(summary row, PNG bytes or None) of one recording; unusable recordings give a
    ``skipped`` row with the reason (never an exception for bad data)."""
    from .fit import fit_beats

    try:
        beats = load_beats(path, cfg.data)
    except TraceError as e:
        return skipped_row(path, str(e)), None
    fit = fit_beats(beats, cfg, log=log)
    png = None
    if figure:
        from .figures import plot_fit

        png = plot_fit(fit, beats, horizon_ms)
    return fit_row(path, fit, beats), png


def _task(path: str, cfg_json: str, figure: bool, horizon_ms: float):
    from .fit import configure_threads

    configure_threads(1)
    return fit_recording(path, FitConfig.model_validate_json(cfg_json), figure=figure,
                         horizon_ms=horizon_ms)


def fit_recordings(paths, cfg: FitConfig, *, use_ray: bool = False, num_cpus: int | None = None,
                   ray_address: str | None = None, ship_package: str = "auto",
                   out_dir=None, figure: bool = True, horizon_ms: float = 300.0,
                   log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Fit every recording (Ray tasks when ``use_ray``); with ``out_dir`` write
    ``summary.json`` (rows, drug table, config) and ``<recording>.png`` per fitted recording.
    Rows are in the order of ``paths``."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no recording given")
    t0 = time.perf_counter()
    results: list[tuple[dict, bytes | None]] = []
    if use_ray:
        import ray

        from ..population.generate import init_ray

        started = init_ray(num_cpus, ray_address, ship_package)
        try:
            remote = ray.remote(num_cpus=1, max_retries=0)(_task)
            refs = [remote.remote(p, cfg.model_dump_json(), figure, horizon_ms) for p in paths]
            results = ray.get(refs)
        finally:
            if started:
                ray.shutdown()
    else:
        for p in paths:
            results.append(fit_recording(p, cfg, figure=figure, horizon_ms=horizon_ms))
    rows = [r for r, _ in results]
    if log:
        for r in rows:
            name = Path(r["file"]).name
            if r["status"] == "fitted":
                log(f"{name}: tau_in {r['tau_in_ms']:.3g} ms, tau_out {r['tau_out_ms']:.3g} ms, "
                    f"tau_close {r['tau_close_ms']:.4g} ms, h0 {r['h0']:.3f}, L_traj "
                    f"{r['l_traj']:.2e}, ||F_dl|| {r['fdl_norm']:.2e}, APD90 "
                    f"{r['apd90_ms']:.0f} ms ({r['n_beats']} beats, {r['seconds']:.0f} s)")
            else:
                log(f"{name}: skipped: {r['reason']}")
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for r, png in results:
            if png is not None:
                (out / (Path(r["file"]).name.split(".")[0] + ".png")).write_bytes(png)
        summary = {"recordings": rows, "drugs": drug_table(rows), "config": cfg.model_dump(),
                   "seconds": time.perf_counter() - t0,
                   "units": "tau in ms; v_gate, h0 normalized; l_traj normalized^2; fdl_norm "
                            "normalized/ms; changes in %"}
        (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1))
    return rows


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return x
