"""Settings from users: readable errors from pydantic validation (one plain line per invalid
field, for command lines and HTTP error bodies; no pydantic boilerplate, no traceback) and
settings files (``--config FILE.json``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def plain_errors(e: ValidationError, what: str | None = None) -> ValueError:
    """One ValueError from a pydantic error. With ``what`` (e.g. ``"screen"`` or ``"drugs.csv,
    line 3"``) each problem reads ``<what>.<field>: <message>``; without it ``<field>:
    <message>`` (just the message when it already names the field)."""
    msgs = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        found = err.get("input")
        if err.get("type") != "value_error" and isinstance(found, (int, float, str, bool)) \
                and "found" not in msg:
            msg = f"{msg}, found {found!r}"
        if what:
            msgs.append(f"{what}{'.' + loc if loc else ''}: {msg}")
        else:
            named = bool(loc) and re.search(rf"(?<![\w.]){re.escape(loc)}(?![\w])", msg)
            msgs.append(msg if not loc or named else f"{loc}: {msg}")
    return ValueError("; ".join(msgs))


def read_settings_file(path: str | Path, what: str = "settings") -> dict[str, Any]:
    """The JSON object of a ``--config FILE.json`` settings file; ValueError naming the file when
    it is missing, not JSON, or not an object (``what`` names the expected fields)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: expected a JSON object of {what}")
    return fields
