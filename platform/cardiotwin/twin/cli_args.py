"""Command line of the offline twin::

  cardiotwin twin RECORDING.abf|.csv --model DIR [--ap-recording AP.abf] [--out TWIN.json]

With ``--out`` the twin JSON and its figure (TWIN.png beside it) are written atomically;
without it the JSON is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".gz"))


def run_twin(a: argparse.Namespace) -> int:
    """``twin``: parameters, fit and AP of a recorded cell from a model artifact."""
    from ..learn import load_estimator
    from ..storage.atomic import write_bytes_atomic, write_text_atomic
    from . import read_abf, read_ap_abf, read_ap_csv, read_trace_csv
    from .inference import make_twin, plot_twin

    est = load_estimator(a.model)
    kw: dict[str, Any] = dict(capacitance_pF=a.capacitance_pf, protocol=est.protocol)
    if _is_csv(a.recording):
        rec = read_trace_csv(a.recording, **kw)
    else:
        rec = read_abf(a.recording, sweep=a.sweep if a.sweep == "mean" else int(a.sweep), **kw)
    ap = None
    if a.ap_recording:
        ap = read_ap_csv(a.ap_recording) if _is_csv(a.ap_recording) \
            else read_ap_abf(a.ap_recording)
    tw = make_twin(est, rec, temperature_K=a.temperature_k, ap_duration_ms=a.ap_duration_ms,
                   ap_recording=ap)
    text = json.dumps(tw.to_json(), indent=1)
    if not a.out:
        print(text)
        return 0
    out = Path(a.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {a.out}: output directory does not exist: {out.parent}")
    png = out.with_suffix(".png")
    write_text_atomic(out, text)
    write_bytes_atomic(png, plot_twin(tw))
    print(f"twin: {a.out}, figure: {png}; fit relative RMS "
          f"{tw.fit['relative_rms']:.3f}, AP {tw.status}")
    return 0


def _sweep(text: str) -> str:
    if text != "mean" and not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"expected a sweep index or 'mean', found {text!r}")
    return text


def register(subparsers: Any) -> None:
    """Add ``twin`` to the ``cardiotwin`` commands."""
    tw = subparsers.add_parser("twin", help="the digital twin of a recorded cell: parameters, "
                                            "fit, AP (offline; the Serve app does the same "
                                            "live)")
    tw.add_argument("recording", help="voltage-clamp recording of the model's protocol: ABF "
                                      "(ABF1/ABF2) or CSV (t_ms, command_mV, i_pA_per_pF)")
    tw.add_argument("--model", required=True, metavar="DIR", help="model artifact directory")
    tw.add_argument("--capacitance-pf", type=float, default=None,
                    help="membrane capacitance in pF (default: from the ABF header)")
    tw.add_argument("--sweep", type=_sweep, default="0",
                    help="sweep index or 'mean' (default 0)")
    tw.add_argument("--ap-recording", default=None, metavar="FILE",
                    help="current-clamp recording of the same cell (ABF or CSV) to compare")
    tw.add_argument("--temperature-k", type=float, default=None,
                    help="temperature of the twin's AP in K (default: the protocol's)")
    tw.add_argument("--ap-duration-ms", type=float, default=10000.0,
                    help="free-running AP duration in ms (default 10000)")
    tw.add_argument("--out", default=None, metavar="TWIN.json",
                    help="write the twin JSON here and the figure beside it (default: print)")
    tw.set_defaults(func=run_twin)
