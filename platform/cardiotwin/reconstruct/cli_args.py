"""The ``cardiotwin reconstruct`` subcommand (added to cli.py with
``add_reconstruct_parser(sub)``)::

  cardiotwin reconstruct REC.csv|REC.abf --model DIR [--out-dir OUT] [--sweep 0] [--channel C]
                         [--max-beats N]

writes OUT/windows.csv, OUT/apd.csv, OUT/reconstruction.json and OUT/reconstruction.png.
"""

from __future__ import annotations

import argparse


def _cmd_reconstruct(a: argparse.Namespace) -> int:
    from .infer import load_reconstructor, read_recording, reconstruct_recording, write_outputs
    from .windows import APD_LEVELS

    est = load_reconstructor(a.model)
    t, e, desc = read_recording(a.recording, a.recording, sweep=a.sweep, channel=a.channel)
    res = reconstruct_recording(est, t, e, source=f"{a.recording} ({desc})",
                                max_beats=a.max_beats)
    paths = write_outputs(res, a.out_dir)
    import numpy as np

    apd90 = res.apd_ms["q50"][:, APD_LEVELS.index(90)]
    med = float(np.nanmedian(apd90)) if np.isfinite(apd90).any() else float("nan")
    print(f"reconstructed {len(res.anchor_ms)} beats from {a.recording}: APD90 median "
          f"{med:.0f} ms; "
          f"wrote {paths['windows']}, {paths['apd']}, {paths['json']}, {paths['figure']}")
    return 0


def add_reconstruct_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help="extracellular (eAP) recording: CSV (t_ms or time_s, and "
                                     "eap_uV / eap_mV / eap) or ABF (e.g. an MEA export)")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="reconstruction model artifact directory")
    p.add_argument("--out-dir", default="out/reconstruct", metavar="DIR",
                   help="output directory (default out/reconstruct)")
    p.add_argument("--sweep", type=int, default=0, help="ABF sweep index (default 0)")
    p.add_argument("--channel", type=int, default=None,
                   help="ABF ADC channel index (default: the first)")
    p.add_argument("--max-beats", type=int, default=None, metavar="N",
                   help="reconstruct at most the first N beats")


def add_reconstruct_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``reconstruct`` to the ``cardiotwin`` subcommands; returns its parser."""
    p = subparsers.add_parser("reconstruct", help="intracellular APs (normalized, 90 % band) "
                                                  "and APDs from an extracellular recording")
    add_reconstruct_arguments(p)
    p.set_defaults(func=_cmd_reconstruct)
    return p
