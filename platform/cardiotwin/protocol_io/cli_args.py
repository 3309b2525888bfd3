"""``cardiotwin protocol export|import``::

  cardiotwin protocol export P --format atf|csv|json --out FILE [--no-description]
  cardiotwin protocol import RECORDING [--sweep N] [--column NAME] --out P.json

``P`` is a protocol file (.json or .csv) or a built-in name (protocol_a). ``export`` writes the
command waveform: ``atf`` an Axon Text File stimulus (Clampex), ``csv`` the sampled waveform
(``t_ms,command_mV``), ``json`` the canonical protocol; beside it ``FILE.md``, the one-page
description for the rig operator. ``import`` turns the command recorded in an ABF (the DAC
waveform, else a voltage channel) or a CSV command column into a canonical protocol JSON,
merging samples into steps and ramps (:mod:`.importer`). Files are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FORMATS = ("atf", "csv", "json")


def _protocol(spec: str, a: argparse.Namespace):
    from ..protocols import BUILTIN_PROTOCOLS, builtin_protocol, load_protocol

    kw = {k: v for k, v in (("sample_interval_ms", a.sample_interval_ms),
                            ("temperature_K", a.temperature_k)) if v is not None}
    if spec in BUILTIN_PROTOCOLS and not Path(spec).exists():
        return builtin_protocol(spec, **kw)
    return load_protocol(spec, **kw)


def _out(path: str) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise ValueError(f"--out {path}: output directory does not exist: {out.parent}")
    return out


def waveform_csv(protocol) -> str:
    """The sampled command as CSV text: t_ms,command_mV (floats as repr)."""
    rows = ["t_ms,command_mV"]
    rows += [f"{t!r},{v!r}" for t, v in zip(protocol.times_ms().tolist(),
                                            protocol.command_voltage().tolist(), strict=True)]
    return "\n".join(rows) + "\n"


def export_protocol(protocol, fmt: str, out: str | Path, *, description: bool = True,
                    name: str = "protocol") -> list[Path]:
    """Write ``protocol`` as ``fmt`` to ``out`` (and the description beside it, ``.md``);
    returns the written paths."""
    from ..storage.atomic import write_text_atomic
    from .atf import write_atf
    from .describe import describe_protocol

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, found {fmt!r}")
    out = Path(out)
    if fmt == "atf":
        write_atf(protocol, out)
    elif fmt == "csv":
        write_text_atomic(out, waveform_csv(protocol))
    else:
        write_text_atomic(out, protocol.to_json() + "\n")
    written = [out]
    if description:
        md = out.with_suffix(".md")
        if md == out:
            raise ValueError(f"--out {out}: the description would overwrite it; use another "
                             "suffix or --no-description")
        write_text_atomic(md, describe_protocol(protocol, name=name,
                                                waveform_file=out.name if fmt == "atf"
                                                else None))
        written.append(md)
    return written


def run_export(a: argparse.Namespace) -> int:
    p = _protocol(a.protocol, a)
    out = _out(a.out)
    paths = export_protocol(p, a.format, out, description=a.description,
                            name=Path(a.protocol).stem)
    print(f"protocol export: {p.protocol_hash[:12]} ({p.duration_ms:g} ms, "
          f"{len(p.segments)} segments, {p.n_samples} samples) -> "
          + ", ".join(str(x) for x in paths))
    return 0


def run_import(a: argparse.Namespace) -> int:
    from ..storage.atomic import write_text_atomic
    from .importer import import_recording

    out = _out(a.out)
    if a.sweep < 0:
        raise ValueError(f"--sweep: expected 0 or more, found {a.sweep}")
    p, src = import_recording(a.recording, sweep=a.sweep, column=a.column,
                              temperature_K=a.temperature_k, tolerance_mV=a.tolerance_mv,
                              jump_mV=a.jump_mv, resolution_mV=a.resolution_mv)
    write_text_atomic(out, p.to_json() + "\n")
    ramps = sum(s.is_ramp for s in p.segments)
    print(f"protocol import: {a.recording} ({src}) -> {out}: {len(p.segments)} segments "
          f"({ramps} ramps), {p.duration_ms:g} ms at {p.sample_interval_ms:g} ms, "
          f"protocol_hash {p.protocol_hash}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``protocol export|import`` to the ``cardiotwin`` commands."""
    from .importer import DEFAULT_JUMP_MV, DEFAULT_RESOLUTION_MV, DEFAULT_TOLERANCE_MV

    pr = subparsers.add_parser("protocol", help="protocols to and from the rig: export (ATF "
                                                "stimulus file, waveform CSV, JSON; with a "
                                                "description) and import (ABF or CSV command)")
    sub = pr.add_subparsers(dest="protocol_command", required=True)
    ex = sub.add_parser("export", help="write a protocol's command waveform for acquisition "
                                       "software, and its one-page description (FILE.md)")
    ex.add_argument("protocol", metavar="P", help="protocol file (.json/.csv) or built-in name "
                                                  "(protocol_a)")
    ex.add_argument("--format", choices=FORMATS, required=True,
                    help="atf: Axon Text File stimulus (Clampex); csv: t_ms,command_mV; json: "
                         "canonical protocol")
    ex.add_argument("--out", required=True, metavar="FILE")
    ex.add_argument("--sample-interval-ms", type=float, default=None,
                    help="resample at this interval, ms (default: the protocol's)")
    ex.add_argument("--temperature-k", type=float, default=None, help="K (default: the "
                                                                       "protocol's)")
    ex.add_argument("--no-description", dest="description", action="store_false",
                    help="do not write FILE.md")
    ex.set_defaults(func=run_export)
    im = sub.add_parser("import", help="the command waveform of a recording (ABF, or CSV with "
                                       "a command column) as a canonical protocol JSON")
    im.add_argument("recording", metavar="RECORDING", help="ABF (ABF1/ABF2) or CSV/CSV.gz")
    im.add_argument("--sweep", type=int, default=0, help="ABF sweep (default 0)")
    im.add_argument("--column", default=None, help="CSV command column (default: command_mV, "
                                                   "v_mV or voltage_mV)")
    im.add_argument("--out", required=True, metavar="P.json")
    im.add_argument("--temperature-k", type=float, default=310.0,
                    help="temperature of the protocol, K (default 310; recordings do not hold "
                         "it)")
    im.add_argument("--tolerance-mv", type=float, default=DEFAULT_TOLERANCE_MV,
                    help=f"largest deviation from a step or ramp, mV ({DEFAULT_TOLERANCE_MV})")
    im.add_argument("--jump-mv", type=float, default=DEFAULT_JUMP_MV,
                    help=f"smallest jump between segments, mV ({DEFAULT_JUMP_MV})")
    im.add_argument("--resolution-mv", type=float, default=DEFAULT_RESOLUTION_MV,
                    help=f"levels rounded to this, mV ({DEFAULT_RESOLUTION_MV}; 0: not "
                         "rounded)")
    im.set_defaults(func=run_import)
