"""The demo's HTML report: one self-contained page (figures embedded as base64 PNG, each also
linked to its file next to the report)."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..storage.atomic import write_text_atomic
from .stages import Section

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
.muted{color:#777;font-size:.9em}"""


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(caption: str, path: Path, report_dir: Path) -> str:
    rel = Path(os.path.relpath(path, report_dir)).as_posix()
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(rel)}">'
            f'<figcaption>{html.escape(caption)} — <a href="{html.escape(rel)}">'
            f'{html.escape(rel)}</a></figcaption></figure>')


def write_report(path: Path, sections: Sequence[Section], title: str, intro: str) -> Path:
    """Write the report to ``path`` (atomically) and return it. A figure file that is missing
    raises FileNotFoundError naming it (a report never silently lacks a figure)."""
    path = Path(path)
    missing = [str(p) for s in sections for _, p in s.figures if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"report figures missing: {', '.join(missing)}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(intro)}</p>",
             "<p class='muted'>Generated " +
             datetime.now(timezone.utc).isoformat(timespec="seconds") + "</p>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)} <span class='muted'>({s.wall_s:.1f} s)"
                     f"</span></h2>")
        parts += [f"<p>{html.escape(line)}</p>" for line in s.lines]
        if s.rows:
            parts.append(_table(s.header, s.rows))
        if s.preformatted:
            parts.append(f"<pre>{html.escape(s.preformatted)}</pre>")
        parts += [_figure(c, Path(p), path.parent) for c, p in s.figures]
    parts.append("</body></html>\n")
    write_text_atomic(path, "\n".join(parts))
    return path
