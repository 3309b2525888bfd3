"""Command line of the offline twin::

  cardiotwin twin RECORDING [RECORDING ...] --model DIR [--out-dir DIR | --out TWIN.json]
                  [--ap-recording AP.abf] [--ap-samples N] [--no-simulate]
                  [--export-mmt TWIN.mmt]

Recordings are ABF (ABF1/ABF2) or CSV (.csv/.csv.gz). The model is loaded once; every
recording is read and estimated, then all twins are simulated in one batch. With ``--out-dir``
each recording gets ``<stem>.json`` and ``<stem>.png`` there; one recording may instead use
``--out`` (figure beside it) or neither (the JSON printed). Files are written atomically.
With several recordings a file that cannot be read or estimated is reported on stderr as
``FILE: message`` and the others are still written; the exit code is then 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# what a bad recording raises (RecordingError and ProtocolMismatchError are ValueErrors)
RECORDING_ERRORS = (ValueError, FileNotFoundError)


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".gz"))


def _stem(path: str) -> str:
    """The output name of a recording: its file name without .gz and the format suffix."""
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


def _check_args(a: argparse.Namespace) -> Path | None:
    """Refuse inconsistent options before any work; returns the output directory (created,
    its parent must exist) or None."""
    recs = a.recording
    if a.out and a.out_dir:
        raise ValueError("twin: --out and --out-dir together; use --out for one recording, "
                         "--out-dir for several")
    if len(recs) > 1 and not a.out_dir:
        raise ValueError(f"twin: {len(recs)} recordings need --out-dir DIR (one <stem>.json "
                         "and <stem>.png each)")
    if a.ap_recording and len(recs) > 1:
        raise ValueError(f"twin: --ap-recording is for one recording, found {len(recs)} "
                         "recordings")
    seal = (a.ap_seal_resistance_mohm, a.ap_cm_pf)
    if any(x is not None for x in seal) and not a.ap_recording:
        raise ValueError("twin: --ap-seal-resistance-mohm / --ap-cm-pf describe the "
                         "--ap-recording's seal; give the AP recording too")
    if (seal[0] is None) != (seal[1] is None):
        raise ValueError("twin: give both --ap-seal-resistance-mohm and --ap-cm-pf (the seal "
                         "conductance is 1000 / (R Cm) nS/pF)")
    if a.ap_samples < 0:
        raise ValueError(f"twin: --ap-samples: expected 0 or more, found {a.ap_samples}")
    seen: dict[str, str] = {}
    for r in recs:
        key = _stem(r).casefold()
        if key in seen:
            raise ValueError(f"twin: {seen[key]} and {r} have the same name {_stem(r)!r} "
                             "(their twins would overwrite each other in --out-dir)")
        seen[key] = r
    if not a.out_dir:
        return None
    out_dir = Path(a.out_dir)
    if not out_dir.parent.is_dir():
        raise ValueError(f"--out-dir {a.out_dir}: parent directory does not exist: "
                         f"{out_dir.parent}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {a.out_dir}: exists and is not a directory")
    out_dir.mkdir(exist_ok=True)
    return out_dir


def _read(path: str, est, a: argparse.Namespace):
    from . import read_abf, read_trace_csv

    kw: dict[str, Any] = dict(capacitance_pF=a.capacitance_pf, protocol=est.protocol)
    if _is_csv(path):
        return read_trace_csv(path, **kw)
    return read_abf(path, sweep=a.sweep if a.sweep == "mean" else int(a.sweep), **kw)


def _failure(path: str, exc: Exception) -> str:
    from ..cli import one_line

    msg = one_line(exc)
    return msg if msg.startswith(path) else f"{path}: {msg}"


def _summary(path: str, out: Path, tw) -> str:
    """One line for a written twin: file, fit, AP status, P(beating), OOD flag."""
    parts = [f"twin: {path} -> {out}"]
    if tw.fit:
        parts.append(f"fit relative RMS {tw.fit['relative_rms']:.3f}, AP {tw.status}")
    pred = tw.ap_prediction
    if pred is not None and pred.get("p_beating") is not None:
        parts.append(f"P(beating) {pred['p_beating']:.2f} of {pred['n_samples']}")
    if tw.recording_quality is not None:
        q = tw.recording_quality
        parts.append(f"recording quality: leak {q['leak_conductance_nS']:.2f} nS, R_s "
                     f"{q['estimates']['rs_MOhm']:.1f} MOhm, offset "
                     f"{q['estimates']['v_offset_mV']:.1f} mV, relative RMS with artefacts "
                     f"{q['relative_rms']:.3f}" + (f" (flag: {q['reason']})" if q["flag"]
                                                   else ""))
    if tw.out_of_distribution is not None:
        ood = tw.out_of_distribution
        flag = f"yes ({ood.get('reason')})" if ood.get("flag") else "no"
        parts.append(f"out of distribution: {flag}")
    return "; ".join(parts)


def run_twin(a: argparse.Namespace) -> int:
    """``twin``: parameters, fit and AP of recorded cells from a model artifact."""
    from ..learn import load_estimator
    from ..storage.atomic import jsonable, write_bytes_atomic, write_text_atomic
    from . import read_ap_abf, read_ap_csv
    from .inference import estimate_twin, plot_twin, simulate_twins
    from .recording_quality import assess_recording

    out_dir = _check_args(a)
    if a.export_mmt and len(a.recording) > 1:
        raise ValueError(f"twin: --export-mmt is for one recording, found {len(a.recording)}")
    single_out = Path(a.out) if a.out else None
    if single_out is not None and not single_out.parent.is_dir():
        raise ValueError(f"--out {a.out}: output directory does not exist: "
                         f"{single_out.parent}")
    many = len(a.recording) > 1
    est = load_estimator(a.model)
    ap = None
    if a.ap_recording:
        ap = read_ap_csv(a.ap_recording) if _is_csv(a.ap_recording) \
            else read_ap_abf(a.ap_recording)
        if a.ap_seal_resistance_mohm is not None or a.ap_cm_pf is not None:
            ap = ap.with_seal(a.ap_seal_resistance_mohm, a.ap_cm_pf, a.ap_seal_reversal_mv)
    done: list[tuple[str, Any, Any]] = []   # (file, twin, checked recording)
    failed: list[str] = []
    for path in a.recording:
        try:
            tw, rec = estimate_twin(est, _read(path, est, a), temperature_K=a.temperature_k)
        except RECORDING_ERRORS as exc:
            if not many:
                raise
            failed.append(_failure(path, exc))
            print(failed[-1], file=sys.stderr)
            continue
        done.append((path, tw, rec))
    if done and (artefacts := _artefact_priors(a, est)) is not None:
        kept = []
        for path, tw, rec in done:
            assess_recording(tw, rec, est.protocol, *artefacts)
            q = tw.recording_quality
            if a.refuse_out_of_prior and q["flag"]:
                failed.append(f"{path}: refused (--refuse-out-of-prior): {q['reason']}")
                print(failed[-1], file=sys.stderr)
                continue
            kept.append((path, tw, rec))
        done = kept
    if done and a.simulate:
        simulate_twins(est.protocol, [tw for _, tw, _ in done], [rec for _, _, rec in done],
                       ap_duration_ms=a.ap_duration_ms, ap_recordings=[ap] * len(done),
                       ap_samples=a.ap_samples)
    for path, tw, _ in done:
        text = json.dumps(jsonable(tw.to_json()), indent=1, allow_nan=False) + "\n"
        if out_dir is not None:
            out = out_dir / f"{_stem(path)}.json"
        elif single_out is not None:
            out = single_out
        else:
            print(text, end="")
            continue
        write_text_atomic(out, text)
        if a.simulate:
            write_bytes_atomic(out.with_suffix(".png"), plot_twin(tw))
        print(_summary(path, out, tw))
    if a.export_mmt and done:
        from .mmt_export import twin_inputs, write_mmt

        tw = done[0][1]
        write_mmt(a.export_mmt, twin_inputs(tw.multipliers), temperature_K=tw.temperature_K,
                  name="kernik_clancy_2019_twin",
                  description=f"twin of {done[0][0]} (protocol {tw.protocol_hash[:12]}): "
                              "Kernik-Clancy 2019 with the twin's parameter values, written "
                              "by cardiotwin")
        print(f"twin: Myokit model -> {a.export_mmt}")
    if failed:
        print(f"twin: {len(failed)} of {len(a.recording)} recordings failed", file=sys.stderr)
        return 2
    return 0


def _artefact_priors(a: argparse.Namespace, est):
    """(search prior, trained prior or None) of the recording-quality fit, or None when not
    asked for and the model was trained on an ideal clamp."""
    from ..population.artefact_prior import ArtefactPrior
    from ..population.cli_args import artefact_prior_from_args
    from .recording_quality import trained_artefact_prior

    trained = trained_artefact_prior(est)
    search = artefact_prior_from_args(a)
    if search is None and trained is None:
        return None
    return search or ArtefactPrior(), trained


def _sweep(text: str) -> str:
    if text != "mean" and not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"expected a sweep index or 'mean', found {text!r}")
    return text


def register(subparsers: Any) -> None:
    """Add ``twin`` to the ``cardiotwin`` commands."""
    from .inference import DEFAULT_AP_SAMPLES

    tw = subparsers.add_parser("twin", help="the digital twins of recorded cells: parameters "
                                            "(posterior for a flow model), fit, AP (offline; "
                                            "the Serve app does the same live)")
    tw.add_argument("recording", nargs="+",
                    help="voltage-clamp recordings of the model's protocol: ABF (ABF1/ABF2) or "
                         "CSV (t_ms, command_mV, i_pA_per_pF in pA/pF or i_pA in pA)")
    tw.add_argument("--model", required=True, metavar="DIR", help="model artifact directory")
    tw.add_argument("--capacitance-pf", type=float, default=None,
                    help="membrane capacitance in pF (default: from the ABF header)")
    tw.add_argument("--sweep", type=_sweep, default="0",
                    help="sweep index or 'mean' (default 0)")
    tw.add_argument("--ap-recording", default=None, metavar="FILE",
                    help="current-clamp recording of the same cell (ABF or CSV: t_ms, v_mV) to "
                         "compare; one recording only")
    tw.add_argument("--ap-seal-resistance-mohm", type=float, default=None, metavar="MOHM",
                    help="seal resistance of the AP recording (MOhm; with --ap-cm-pf): the "
                         "twin's AP is simulated with the same seal leak, g = 1000 / (R Cm) "
                         "nS/pF, so twin and recording compare like for like (the lab's Rm "
                         "of a current-clamp trial is an upper bound of the seal's)")
    tw.add_argument("--ap-cm-pf", type=float, default=None, metavar="PF",
                    help="membrane capacitance of the AP recording's cell (pF)")
    tw.add_argument("--ap-seal-reversal-mv", type=float, default=0.0, metavar="MV",
                    help="reversal potential of the seal leak (mV, default 0)")
    tw.add_argument("--temperature-k", type=float, default=None,
                    help="temperature of the twin's AP in K (default: the protocol's)")
    tw.add_argument("--ap-duration-ms", type=float, default=10000.0,
                    help="free-running AP duration in ms (default 10000)")
    tw.add_argument("--ap-samples", type=int, default=DEFAULT_AP_SAMPLES, metavar="N",
                    help="posterior samples simulated for the AP prediction (P(beating), "
                         "cycle length, APD90 and MDP quantiles in ms/mV) and the figure's "
                         f"bands (default {DEFAULT_AP_SAMPLES}; 0: none; posterior models only)")
    tw.add_argument("--export-mmt", default=None, metavar="FILE",
                    help="also write the twin as a Myokit model file (.mmt: the Kernik-Clancy "
                         "model with the twin's parameter values); one recording only")
    tw.add_argument("--no-simulate", dest="simulate", action="store_false",
                    help="parameters only: no voltage-clamp fit, AP or figure")
    from ..population.cli_args import add_artefact_arguments

    va = tw.add_argument_group("recording quality (voltage-clamp artefacts)")
    add_artefact_arguments(va, "estimate the recording's artefacts (series resistance, leak, "
                               "offset, Cm and the amplifier's estimates; Lei et al. 2020) "
                               "with the twin's ionic parameters: recording_quality in the "
                               "JSON (always done for a model trained on a population with "
                               "artefacts)")
    va.add_argument("--refuse-out-of-prior", action="store_true",
                    help="refuse (exit 2) a recording whose artefact estimates lie at the "
                         "search bounds or outside the model population's artefact prior; "
                         "default: flag it in recording_quality")
    out = tw.add_argument_group("output (default with one recording: print the JSON)")
    out.add_argument("--out", default=None, metavar="TWIN.json",
                     help="one recording: write the twin JSON here and the figure beside it")
    out.add_argument("--out-dir", default=None, metavar="DIR",
                     help="write <stem>.json and <stem>.png per recording here (created; its "
                          "parent must exist); required for several recordings")
    tw.set_defaults(func=run_twin)
