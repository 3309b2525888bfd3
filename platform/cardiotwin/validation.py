"""Readable errors from pydantic validation: one plain line per invalid field, for command lines
and HTTP error bodies (no pydantic boilerplate, no traceback)."""

from __future__ import annotations

from pydantic import ValidationError


def plain_errors(e: ValidationError, what: str | None = None) -> ValueError:
    """One ValueError from a pydantic error. With ``what`` (e.g. ``"screen"`` or ``"drugs.csv,
    line 3"``) each problem reads ``<what>.<field>: <message>``; without it ``<field>:
    <message>`` (just the message when it already names the field)."""
    msgs = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if what:
            msgs.append(f"{what}{'.' + loc if loc else ''}: {msg}")
        else:
            msgs.append(msg if not loc or loc in msg else f"{loc}: {msg}")
    return ValueError("; ".join(msgs))
