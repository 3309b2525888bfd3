"""From a voltage-clamp recording to a digital twin: the network's 52 parameters, the twin
simulated under the model's protocol (residual against the recording: the fit diagnostic) and
free-running (the twin's AP biomarkers), compared with a current-clamp recording of the same
cell when one is given.

Units: ms, mV, pA/pF, K. Timings of each stage are returned (``timings_s``).
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .recording import APRecording, Recording

DEFAULT_AP_MS = 10_000.0
DEFAULT_PREPACE_MS = 0.0
DEFAULT_AP_SAMPLES = 64  # posterior samples simulated for the AP prediction band
POSTERIOR_SAMPLES = 1000  # posterior samples behind the per-parameter summaries
PREDICTED_BIOMARKERS = ("cycle_length_ms", "apd90_ms", "mdp_mV")
COMPARED_BIOMARKERS = ("cycle_length_ms", "mdp_mV", "peak_mV", "amplitude_mV",
                       "dvdt_max_V_per_s", "apd30_ms", "apd50_ms", "apd90_ms")


@dataclass
class Twin:
    """A cell's twin. ``multipliers`` (52,) in ``names`` order (the posterior mean for a
    posterior model); ``values`` the model parameter values (baseline x multiplier, the
    registry's units); ``uncertainty`` per-parameter test RMSE of the network (multiplier);
    ``fit`` the voltage-clamp diagnostic; ``biomarkers`` of the twin's free-running AP;
    ``comparison`` twin vs recorded AP when given. A posterior model adds ``posterior`` (per
    parameter mean, sd, quantiles, contraction), ``identifiable``, ``out_of_distribution``,
    ``posterior_samples`` (multipliers, (n, 52)) and, once simulated, ``ap_prediction`` (the
    predictive quantiles of the AP of ``DEFAULT_AP_SAMPLES`` posterior samples)."""

    names: list[str]
    multipliers: np.ndarray
    values: np.ndarray
    uncertainty: np.ndarray
    protocol_hash: str
    temperature_K: float
    fit: dict[str, float] = field(default_factory=dict)
    status: str | None = None
    biomarkers: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, dict[str, float | None]] | None = None
    traces: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    timings_s: dict[str, float] = field(default_factory=dict)
    recording: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    posterior: list[dict[str, float]] | None = None
    identifiable: np.ndarray | None = None
    out_of_distribution: dict[str, Any] | None = None
    posterior_samples: np.ndarray | None = field(default=None, repr=False)
    ap_prediction: dict[str, Any] | None = None
    ap_seal: dict[str, float] | None = None  # the seal leak of the twin's AP run, if any
    recording_quality: dict[str, Any] | None = None  # twin.recording_quality, when estimated

    def to_json(self, figure: bool = False) -> dict[str, Any]:
        """The twin as JSON-ready data (ARCHITECTURE.md twin contract); ``figure``: add the
        twin figure as base64 PNG."""
        out = {
            "parameters": {n: self._parameter_json(j) for j, n in enumerate(self.names)},
            "scale": "multiplier: parameter value / baseline value; value in the registry's "
                     "units",
            "ap_prediction": self.ap_prediction,
            "out_of_distribution": self.out_of_distribution,
            "protocol_hash": self.protocol_hash, "temperature_K": self.temperature_K,
            "fit": self.fit, "status": self.status, "biomarkers": _clean(self.biomarkers),
            "comparison": self.comparison, "timings_s": self.timings_s,
            "simulation_batch_size": self.batch_size,
            "recording": self.recording, "ap_seal": self.ap_seal,
            "recording_quality": self.recording_quality,
        }
        if figure:
            out["figure_png_base64"] = base64.b64encode(plot_twin(self)).decode()
        return out

    def _parameter_json(self, j: int) -> dict[str, Any]:
        d: dict[str, Any] = {"value": float(self.values[j]),
                             "multiplier": float(self.multipliers[j]),
                             "uncertainty_multiplier": float(self.uncertainty[j]),
                             "posterior": None, "identifiable": None}
        if self.posterior is not None:
            d["posterior"] = {k: v for k, v in self.posterior[j].items() if k != "contraction"}
            d["contraction"] = self.posterior[j]["contraction"]
        if self.identifiable is not None:
            d["identifiable"] = bool(self.identifiable[j])
        return d


def read_twin_multipliers(path: str | Path) -> dict[str, float]:
    """The parameter multipliers {name: multiplier} of a twin JSON file (``Twin.to_json``, as
    written by ``cardiotwin twin --out`` and the /twin endpoint), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"twin file not found: {path}")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a twin JSON file ({e})") from None
    params = d.get("parameters") if isinstance(d, dict) else None
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{path}: expected a twin JSON object with 'parameters' "
                         "{name: {multiplier: ...}}")
    try:
        return {str(n): float(p["multiplier"]) for n, p in params.items()}
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{path}: every entry of 'parameters' needs a numeric 'multiplier'"
                         ) from None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            out[k] = None if not np.isfinite(v) else float(v)
        elif isinstance(v, (np.integer, np.bool_)):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def infer_multipliers(estimator, recording: Recording) -> np.ndarray:
    """The network's multipliers (52,) for a recording already checked against the model's
    protocol (``recording.protocol_hash`` set by :func:`~cardiotwin.twin.check_protocol`)."""
    if recording.protocol_hash is None:
        from .recording import check_protocol

        recording = check_protocol(recording, estimator.protocol)
    return estimator.predict(recording.current_pA_per_pF, recording.protocol_hash)[0]


def fit_diagnostic(recorded: np.ndarray, simulated: np.ndarray) -> dict[str, float]:
    """Residual of the twin's I_total against the recording (pA/pF): RMS, RMS relative to the
    recording's RMS about its mean, and R^2."""
    r = np.asarray(recorded, np.float64)
    s = np.asarray(simulated, np.float64)
    res = s - r
    rms = float(np.sqrt(np.mean(res ** 2)))
    spread = float(np.sqrt(np.mean((r - r.mean()) ** 2)))
    return {"residual_rms_pA_per_pF": rms, "recording_rms_pA_per_pF": spread,
            "relative_rms": rms / spread if spread > 0 else float("nan"),
            "r2": 1.0 - rms ** 2 / spread ** 2 if spread > 0 else float("nan")}


def make_twin(estimator, recording: Recording, *, temperature_K: float | None = None,
              ap_duration_ms: float = DEFAULT_AP_MS, prepace_ms: float = DEFAULT_PREPACE_MS,
              ap_recording: APRecording | None = None, simulate: bool = True) -> Twin:
    """The twin of the cell of ``recording``. ``temperature_K``: of the free-running AP
    (default: the protocol's). ``simulate=False``: parameters only (fast path)."""
    twin, recording = estimate_twin(estimator, recording, temperature_K=temperature_K)
    if simulate:
        simulate_twins(estimator.protocol, [twin], [recording], ap_duration_ms=ap_duration_ms,
                       prepace_ms=prepace_ms, ap_recordings=[ap_recording])
    return twin


def estimate_twin(estimator, recording: Recording, *, temperature_K: float | None = None
                  ) -> tuple[Twin, Recording]:
    """The network's parameters of ``recording``'s cell (a Twin not yet simulated) and the
    recording checked against the model's protocol (ProtocolMismatchError otherwise)."""
    from ..model.parameters import BASELINE, INFERRED_INDEX

    t0 = time.perf_counter()
    if recording.protocol_hash != estimator.protocol_hash:
        from .recording import check_protocol

        recording = check_protocol(recording, estimator.protocol)
    post = None
    if hasattr(estimator, "posterior"):
        post = estimator.posterior(recording.current_pA_per_pF, recording.protocol_hash,
                                   n_samples=POSTERIOR_SAMPLES)[0]
        m = post.mean
    else:
        m = infer_multipliers(estimator, recording)
    temp = float(temperature_K) if temperature_K is not None else \
        estimator.protocol.temperature_K
    twin = Twin(estimator.names, m, BASELINE[list(INFERRED_INDEX)] * m, estimator.uncertainty,
                estimator.protocol_hash, temp, recording=recording.metadata(),
                timings_s={"inference": time.perf_counter() - t0})
    if post is not None:
        twin.posterior = post.summaries()
        twin.identifiable = post.identifiable
        twin.out_of_distribution = post.ood
        twin.posterior_samples = post.samples
    return twin, recording


def simulate_twins(protocol, twins: list[Twin], recordings: list[Recording], *,
                   ap_duration_ms: float = DEFAULT_AP_MS, prepace_ms: float = DEFAULT_PREPACE_MS,
                   ap_recordings: list[APRecording | None] | None = None,
                   ap_samples: int = DEFAULT_AP_SAMPLES) -> None:
    """Simulate ``twins`` in one batch (the simulator runs up to 16 cells in SIMD lanes for
    about the cost of one): each twin under ``protocol`` (its fit to its recording) and
    free-running for ``ap_duration_ms`` at its temperature (one run per temperature), and with
    it the first ``ap_samples`` posterior samples of each posterior twin (its predictive bands
    and ``ap_prediction``). Fills each twin's fit, status, biomarkers, comparison,
    ap_prediction, traces and timings in place."""
    from ..features import analyze_trace
    from ..model.parameters import inputs_from_multipliers
    from ..simulate import SealLeak, simulate_current_clamp, simulate_voltage_clamp

    if not twins:
        return
    ap_recordings = ap_recordings or [None] * len(twins)
    seals = [ap.seal() if ap is not None else None for ap in ap_recordings]
    rows: list[list[int]] = []        # rows of each twin: its point estimate, then samples
    stack = []
    for tw in twins:
        extra = [] if tw.posterior_samples is None else list(tw.posterior_samples[:ap_samples])
        rows.append(list(range(len(stack), len(stack) + 1 + len(extra))))
        stack.extend([tw.multipliers, *extra])
    inputs = inputs_from_multipliers(np.stack(stack))
    t1 = time.perf_counter()
    vc = simulate_voltage_clamp(protocol, inputs)
    t2 = time.perf_counter()
    for tw, rec, r in zip(twins, recordings, rows, strict=True):
        tw.fit = fit_diagnostic(rec.current_pA_per_pF, vc.i_total[r[0]])
        tw.traces = {"t_vc_ms": vc.t_ms, "i_twin": vc.i_total[r[0]],
                     "i_recorded": rec.current_pA_per_pF}
        if len(r) > 1:
            band = vc.i_total[r[1:]][~vc.unstable[r[1:]]]
            if len(band):
                tw.traces["i_band"] = np.percentile(band, [5, 95], axis=0)
        tw.timings_s["vc_simulation"] = t2 - t1
    for temp in sorted({tw.temperature_K for tw in twins}):
        idx = [i for i, tw in enumerate(twins) if tw.temperature_K == temp]
        sel = [j for i in idx for j in rows[i]]
        # the AP of a recording whose seal is known is simulated with that seal (like for
        # like); the others without one
        g = np.array([float(seals[i].conductance_nS_per_pF) if seals[i] else 0.0
                      for i in idx for _ in rows[i]])
        e = np.array([float(seals[i].reversal_mV) if seals[i] else 0.0
                      for i in idx for _ in rows[i]])
        t3 = time.perf_counter()
        cc = simulate_current_clamp(ap_duration_ms, inputs[sel], temperature_K=temp,
                                    record_interval_ms=0.1, prepace_ms=prepace_ms,
                                    seal=SealLeak(g, e) if g.any() else None)
        t4 = time.perf_counter()
        where = {j: k for k, j in enumerate(sel)}
        for i in idx:
            tw = twins[i]
            if seals[i] is not None:
                ap = ap_recordings[i]
                tw.ap_seal = {"conductance_nS_per_pF": float(seals[i].conductance_nS_per_pF),
                              "reversal_mV": float(seals[i].reversal_mV),
                              "resistance_MOhm": ap.seal_resistance_MOhm, "cm_pF": ap.cm_pF}
            feats = [analyze_trace(cc.t_ms, cc.v_mV[where[j]]) for j in rows[i]]
            unstable = [bool(vc.unstable[j] or cc.unstable[where[j]]) for j in rows[i]]
            v = cc.v_mV[where[rows[i][0]]]
            tw.biomarkers = feats[0].to_dict()
            tw.status = "unstable" if unstable[0] else feats[0].status
            tw.traces.update({"t_ap_ms": cc.t_ms, "v_twin_mV": v})
            if len(rows[i]) > 1:
                tw.ap_prediction = ap_prediction(feats[1:], unstable[1:])
                tw.traces["v_samples_mV"] = cc.v_mV[[where[j] for j in rows[i][1:]]]
            ap = ap_recordings[i]
            if ap is not None:
                rec_feats = analyze_trace(ap.t_ms, ap.v_mV).to_dict()
                tw.comparison = {k: {"twin": _num(tw.biomarkers.get(k)),
                                     "recorded": _num(rec_feats.get(k))}
                                 for k in COMPARED_BIOMARKERS}
                tw.traces.update({"t_ap_rec_ms": ap.t_ms, "v_rec_mV": ap.v_mV})
            tw.timings_s["ap_simulation"] = t4 - t3
            tw.timings_s["analysis"] = time.perf_counter() - t4
            tw.timings_s["total"] = sum(tw.timings_s[k] for k in
                                        ("inference", "vc_simulation", "ap_simulation",
                                         "analysis"))
            tw.batch_size = len(twins)


def ap_prediction(features: list, unstable: list[bool]) -> dict[str, Any]:
    """The posterior predictive AP of simulated samples (their ``analyze_trace`` results):
    the fraction that beats (spontaneous, repolarizing APs: status ok and ``beating``), and
    the 5/50/95% quantiles of cycle length, APD90 and MDP over the beating samples (None when
    none beats)."""
    beats = [f for f, bad in zip(features, unstable, strict=True)
             if not bad and f.status == "ok" and f.beating]
    out: dict[str, Any] = {"n_samples": len(features),
                           "p_beating": len(beats) / len(features) if features else None,
                           "n_unstable": int(sum(unstable))}
    for k in PREDICTED_BIOMARKERS:
        vals = np.array([getattr(f, k) for f in beats], np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = ({q: float(np.percentile(vals, p)) for q, p in
                   (("q05", 5), ("q50", 50), ("q95", 95))} if len(vals) else None)
    return out


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def plot_twin(twin: Twin) -> bytes:
    """PNG: recorded vs twin I_total, and the twin's AP (with the recorded AP if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = twin.traces
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 6.5))
    if "i_twin" in tr:
        a.plot(tr["t_vc_ms"], tr["i_recorded"], color="0.6", lw=0.5, label="recorded")
        if "i_band" in tr:
            a.fill_between(tr["t_vc_ms"], tr["i_band"][0], tr["i_band"][1], color="C3",
                           alpha=0.25, lw=0, label="posterior 5-95%")
        a.plot(tr["t_vc_ms"], tr["i_twin"], color="C3", lw=0.7, label="twin")
        lo, hi = np.percentile(tr["i_recorded"], [0.5, 99.5])
        a.set_ylim(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo))
        a.set_title(f"voltage clamp: relative RMS residual {twin.fit['relative_rms']:.2f}")
        for k, v in enumerate(tr.get("v_samples_mV", [])):
            b.plot(tr["t_ap_ms"], v, color="C3", lw=0.3, alpha=0.15,
                   label="posterior samples" if k == 0 else None)
        b.plot(tr["t_ap_ms"], tr["v_twin_mV"], color="C3", lw=0.8, label="twin")
    if "v_rec_mV" in tr:
        b.plot(tr["t_ap_rec_ms"], tr["v_rec_mV"], color="0.4", lw=0.6, label="recorded")
    a.set_xlabel("time (ms)")
    a.set_ylabel("I_total (pA/pF)")
    a.legend(loc="upper right", fontsize=8)
    b.set_xlabel("time (ms)")
    b.set_ylabel("V (mV)")
    title = f"twin action potential at {twin.temperature_K:.0f} K: {twin.status}"
    if twin.ap_prediction is not None and twin.ap_prediction["p_beating"] is not None:
        title += (f"; P(beating) {twin.ap_prediction['p_beating']:.2f} over "
                  f"{twin.ap_prediction['n_samples']} posterior samples")
    if twin.out_of_distribution and twin.out_of_distribution.get("flag"):
        title += " (recording out of distribution)"
    b.set_title(title)
    b.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
