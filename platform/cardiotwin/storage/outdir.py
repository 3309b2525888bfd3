"""Claiming an output directory: before a stage writes anything, it proves the directory is
writable and either new, or holds a run of the same configuration (to resume or reuse), and
refuses, with one line naming what differs, a directory that holds another run or foreign
files. Every stage's ``--out`` goes through :func:`claim_output_dir`."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import is_temporary

PROBE_PREFIX = ".write-test-"
HIDDEN_OWN = re.compile(r"^\.(cardiotwin\.lock.*|write-test-.*|.*\.tmp|.*\.old)$")


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming the file when it is missing, torn or not
    an object."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"cannot read {what} {p}: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: not a {what} (a JSON object expected)")
    return obj


def check_writable(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and prove it writable by creating and removing a
    file; ValueError with the reason otherwise."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"output directory {out} is not writable: {e}") from e
    return out


def config_diff(stored: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: A there, B here`` for each top-level key whose value differs."""
    diff = [k for k in sorted(set(stored) | set(new)) if stored.get(k) != new.get(k)]
    return "; ".join(f"{k}: {stored.get(k)!r} there, {new.get(k)!r} here" for k in diff)


def claim_output_dir(out: str | os.PathLike, *, marker: str, fmt: str, config_hash: str,
                     identity: dict[str, Any] | None = None,
                     own: Callable[[str], bool] | None = None, what: str = "run",
                     overwrite: bool = False, create: bool = True,
                     hint: str = "use a new --out, or the same settings to resume or reuse it"
                     ) -> dict[str, Any] | None:
    """Check ``out`` before a run writes there.

    ``marker``: the file whose presence says the directory holds a run (a manifest, a summary),
    with ``"format": fmt`` and ``"config_hash"``. Returns that marker's content when it names
    ``config_hash`` (resume or reuse), None when the directory is new or empty (or holds only
    temporary files and own names: ``own(name)``); with ``overwrite`` another run's marker
    also gives None (the caller replaces that run). ValueError, one line, for: a path that is
    not a directory, a torn or foreign marker, another run (the differing fields of
    ``identity`` named) or foreign files. With ``create`` the directory is made and proven
    writable (only after every check passed). ``hint``: what to do instead, ending the
    message of another run.
    """
    out = Path(out)
    previous: dict[str, Any] | None = None
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"output path {out} exists and is not a directory")
        if (out / marker).exists():
            m = read_json_file(out / marker, f"{what} {marker}")
            if m.get("format") != fmt:
                raise ValueError(f"{out / marker}: not a {what} (format {fmt!r} expected, found "
                                 f"{m.get('format')!r}); use a new --out")
            if m.get("config_hash") == config_hash:
                previous = m
            elif not overwrite:
                cfg = m.get("config")
                stored = cfg if isinstance(cfg, dict) else {}
                diff = config_diff(stored, identity) if identity is not None else ""
                raise ValueError(
                    f"directory {out} holds another {what} (config hash "
                    f"{str(m.get('config_hash'))[:12]}, this one {config_hash[:12]})"
                    + (f": {diff}" if diff else "") + f"; {hint}")
        else:
            names = sorted(p.name for p in out.iterdir())
            foreign = [n for n in names if not (is_temporary(n) or HIDDEN_OWN.match(n)
                                                 or (own is not None and own(n)))]
            if foreign:
                raise ValueError(
                    f"output directory {out} is not empty and holds no {marker} (found "
                    f"{', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); use a new "
                    "or empty directory")
    if create:
        check_writable(out)
    return previous
