"""Recording quality of a voltage-clamp recording: its artefact parameters (series resistance,
leak, offset, capacitance and the amplifier's estimates, compensation; model.artefacts)
estimated with the twin's ionic parameters, the fit residual with them, and a flag when an
estimate lies outside the prior the twin's population was simulated with.

The estimate is a bounded least-squares fit of the simulated recorded current (the artefact
kernel, the twin's ionic inputs fixed) to the recording, over every range of the prior that is
not fixed (a known setting or metadata fixes or narrows it): the parameters are mapped to the
unit cube of the prior (log for the log-drawn ones), the Jacobian comes from finite differences
simulated in one batch (one SIMD chunk: about the cost of one cell).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import least_squares

from ..model.artefacts import ARTEFACT_FIELDS, VoltageClampArtefacts
from ..population.artefact_prior import LOG_DRAWN, ArtefactPrior

FD_STEP = 1e-3  # finite-difference step in the unit cube
EDGE = 0.01  # an estimate within this of a bound of the unit cube is "at the bound"
MAX_EVALUATIONS = 40


def _table(prior: ArtefactPrior, names: list[str], u: np.ndarray) -> np.ndarray:
    """Artefact tables (k, N_ARTEFACT_FIELDS) of unit-cube points u (k, len(names))."""
    base = {}
    for name in prior.range_names():
        lo, hi = getattr(prior, name)
        base[name] = np.sqrt(lo * hi) if name in LOG_DRAWN else 0.5 * (lo + hi)
    rows = []
    for point in np.atleast_2d(u):
        v = dict(base)
        for name, x in zip(names, point, strict=True):
            lo, hi = getattr(prior, name)
            v[name] = (float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * x))
                       if name in LOG_DRAWN else lo + (hi - lo) * float(x))
        v["cm_est_pF"] = v["cm_pF"] * v.pop("cm_est_ratio")
        v["rs_est_MOhm"] = v["rs_MOhm"] * v.pop("rs_est_ratio")
        rows.append([v[f] for f in ARTEFACT_FIELDS])
    return np.array(rows)


def fit_recording_artefacts(protocol, inputs: np.ndarray, recorded: np.ndarray,
                            prior: ArtefactPrior, *, trained_prior: ArtefactPrior | None = None
                            ) -> dict[str, Any]:
    """Artefact estimates of one recording (``recorded`` (n_samples,) pA/pF on ``protocol``)
    for the cell of model ``inputs`` (87,), searched within ``prior``; flagged when an
    estimate lies at a bound of ``prior`` or outside ``trained_prior`` (the population's).
    Returns {estimates {field: value}, relative_rms, relative_rms_ideal_clamp, free,
    at_bound, outside_trained_prior, flag, reason}."""
    from ..simulate import simulate_voltage_clamp

    rec = np.asarray(recorded, dtype=np.float64)
    if rec.shape != (protocol.n_samples,) or not np.all(np.isfinite(rec)):
        raise ValueError(f"recorded current: expected {protocol.n_samples} finite samples, "
                         f"found shape {rec.shape}")
    x = np.asarray(inputs, dtype=np.float64).reshape(1, -1)
    names = [n for n in prior.range_names()
             if getattr(prior, n)[0] < getattr(prior, n)[1] and n != "tau_sum_ms"]
    spread = float(np.sqrt(np.mean((rec - rec.mean()) ** 2))) or 1.0

    def simulate(u: np.ndarray) -> np.ndarray:
        table = _table(prior, names, u)
        r = simulate_voltage_clamp(protocol, np.repeat(x, len(table), axis=0),
                                   artefacts=VoltageClampArtefacts.from_columns(table))
        out = r.i_total.astype(np.float64)
        out[r.unstable] = 1e3  # a diverging clamp is a very bad fit, not a crash
        return np.nan_to_num(out, nan=1e3, posinf=1e3, neginf=-1e3)

    cache: dict[bytes, np.ndarray] = {}

    def residual(u: np.ndarray) -> np.ndarray:
        key = np.asarray(u).tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = (simulate(u[None, :])[0] - rec) / spread
        return cache[key]

    def jacobian(u: np.ndarray) -> np.ndarray:
        pts = [u]
        steps = []
        for j in range(len(names)):
            h = FD_STEP if u[j] + FD_STEP <= 1.0 else -FD_STEP
            p = u.copy()
            p[j] += h
            pts.append(p)
            steps.append(h)
        sims = (simulate(np.array(pts)) - rec[None, :]) / spread
        return ((sims[1:] - sims[0][None, :]) / np.array(steps)[:, None]).T

    u0 = np.full(len(names), 0.5)
    ideal = simulate_voltage_clamp(protocol, x).i_total[0].astype(np.float64)
    if names:
        sol = least_squares(residual, u0, jac=jacobian, bounds=(0.0, 1.0), method="trf",
                            max_nfev=MAX_EVALUATIONS, x_scale=1.0)
        u = sol.x
    else:
        u = u0
    best = _table(prior, names, u[None, :])[0]
    estimates = {f: float(v) for f, v in zip(ARTEFACT_FIELDS, best, strict=True)}
    at_bound = [n for n, v in zip(names, u, strict=True) if v < EDGE or v > 1.0 - EDGE]
    outside = (trained_prior is not None
               and not bool(trained_prior.contains(best[None, :])[0]))
    rel = float(np.sqrt(np.mean(residual(u) ** 2)))
    reasons = []
    if at_bound:
        reasons.append(f"estimate(s) at the bound of the search range: {', '.join(at_bound)}")
    if outside:
        reasons.append("estimates outside the artefact prior the twin's population was "
                       "simulated with")
    return {"estimates": estimates, "free": names,
            "relative_rms": rel,
            "relative_rms_ideal_clamp": float(np.sqrt(np.mean((ideal - rec) ** 2)) / spread),
            "leak_conductance_nS": estimates["g_leak_nS_per_pF"] * estimates["cm_pF"],
            "at_bound": at_bound, "outside_trained_prior": outside,
            "flag": bool(at_bound or outside), "reason": "; ".join(reasons) or None}


def trained_artefact_prior(estimator) -> ArtefactPrior | None:
    """The artefact prior of the population a model was trained on (None: an ideal clamp)."""
    d = (getattr(estimator, "metadata", None) or {}).get("data") or {}
    return ArtefactPrior.model_validate(d["vc_artefacts"]) if d.get("vc_artefacts") else None


def assess_recording(twin, recording, protocol, search: ArtefactPrior | None = None,
                     trained: ArtefactPrior | None = None) -> None:
    """Fill ``twin.recording_quality`` (and its timing) from the recording's artefacts fitted
    with the twin's ionic parameters within ``search`` (default: the default patch-clamp
    prior), flagged against ``trained`` (the model population's prior)."""
    import time

    from ..model.parameters import inputs_from_multipliers

    t0 = time.perf_counter()
    twin.recording_quality = fit_recording_artefacts(
        protocol, inputs_from_multipliers(twin.multipliers[None, :])[0],
        recording.current_pA_per_pF, search or ArtefactPrior(), trained_prior=trained)
    twin.timings_s["recording_quality"] = time.perf_counter() - t0
