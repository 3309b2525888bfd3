"""Fitting many recordings: in this process, or as Ray tasks (one CPU and one TensorFlow thread
each; the driver writes every output, workers only return numbers and figure bytes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


SUMMARY = "summary.json"
FORMAT = "cardiotwin.hybrid-fit/1"


def figure_name(path: str) -> str:
    """The figure file of a recording: its name up to the first dot, ``.png``."""
    return Path(path).name.split(".")[0] + ".png"


def _identity(paths: list[str], cfg: FitConfig) -> dict[str, Any]:
    return {"config": cfg.model_dump(mode="json"), "files": [Path(p).name for p in paths]}


def claim_fit_dir(out_dir, paths: list[str], cfg: FitConfig) -> Path:
    """Check ``out_dir`` before fitting: new, empty, or a fit of the same recordings and
    settings (rewritten); another fit's or foreign files are refused (ValueError)."""
    from ..storage.identity import identity_hash
    from ..storage.outdir import claim_output_dir

    ident = _identity(paths, cfg)
    claim_output_dir(out_dir, marker=SUMMARY, fmt=FORMAT, config_hash=identity_hash(ident),
                     identity=ident, what="hybrid fit", own=lambda n: n.endswith(".png"))
    return Path(out_dir)


def fit_recordings(paths, cfg: FitConfig, *, use_ray: bool = False, num_cpus: int | None = None,
                   ray_address: str | None = None, ship_package: str = "auto",
                   out_dir=None, figure: bool = True, horizon_ms: float = 300.0,
                   log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Fit every recording (Ray tasks when ``use_ray``, through
    :func:`cardiotwin.runtime.fanout.run_tasks`: lost workers retried); with ``out_dir``
    (claimed first, :func:`claim_fit_dir`) write ``<recording>.png`` per fitted recording and
    then ``summary.json`` (rows, drug table, config), each atomically. Rows are in the order
    of ``paths``."""
    from ..storage.atomic import jsonable, write_bytes_atomic, write_json_atomic
    from ..storage.identity import identity_hash

    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no recording given")
    out = claim_fit_dir(out_dir, paths, cfg) if out_dir is not None else None
    t0 = time.perf_counter()
    results: list[tuple[dict, bytes | None]] = []
    if use_ray:
        import ray

        from ..runtime.fanout import run_tasks
        from ..runtime.ray_setup import ray_session

        with ray_session(num_cpus, ray_address, ship_package):
            remote = ray.remote(num_cpus=1, max_retries=0)(_task)
            n_cpus = int(ray.cluster_resources().get("CPU", 1))
            cfg_json = cfg.model_dump_json()
            results = run_tasks(remote, [(p, cfg_json, figure, horizon_ms) for p in paths],
                                max_in_flight=max(1, n_cpus),
                                describe=lambda i: Path(paths[i]).name, echo=log)
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
    if out is not None:
        for r, png in results:
            if png is not None:
                write_bytes_atomic(out / figure_name(r["file"]), png)
        ident = _identity(paths, cfg)
        summary = {"format": FORMAT, "config_hash": identity_hash(ident),
                   "recordings": rows, "drugs": drug_table(rows), **ident,
                   "seconds": time.perf_counter() - t0,
                   "units": "tau in ms; v_gate, h0 normalized; l_traj normalized^2; fdl_norm "
                            "normalized/ms; changes in %"}
        write_json_atomic(out / SUMMARY, jsonable(summary))
    return rows

