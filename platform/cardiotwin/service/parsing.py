"""Requests into validated inputs, with every limit checked while the bytes stream in or
before the work starts.

- :func:`read_body`: the body, counted as it streams (a chunked upload with no Content-Length
  is cut off at the limit, 413), after the declared Content-Length is checked.
- :func:`media_type` / :func:`require_media_type`: ``application/json`` for JSON routes,
  ``multipart/form-data`` for uploads (415 otherwise: a browser page cannot send either
  cross-site without the service's tokens; see :mod:`.security`).
- :func:`read_upload`: the multipart field ``file`` (one file, a few small fields).
- :func:`parse_json`: a JSON document (bad JSON, deep nesting: 400).
- :class:`TwinQuery`, :class:`ReconstructQuery`, :class:`JsonTrace`: the query strings and
  the JSON trace as declarative pydantic models (finite numbers, ranges, known names).
- :func:`screen_config`: a screen request as a :class:`cardiotwin.drugs.ScreenConfig` with
  the service's own output directory; no request field may name a server path, and the
  screen's cost is checked against the budget.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..settings import FiniteFloat, NonNegativeInt, PositiveMs, TemperatureK
from .errors import ApiError, as_api_error

JSON = "application/json"
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 8
MAX_FORM_FIELD_BYTES = 4096
MAX_NAME_CHARS = 120
SERVER_ONLY_SCREEN_FIELDS = {
    "drug_file": "the service reads no files; give the drug by catalog name or inline as "
                 "{'name': ..., 'blocks': [{'current': 'IKr', 'ic50_nM': ..., 'hill': ...}]}",
    "out_dir": "the service chooses where a screen's results go",
    "overwrite": "set by the service",
    "batch_cells": "set by the service (screen_batch_cells)",
    "figures": "the service serves the summary only (no figures)",
}


# ---- bytes ------------------------------------------------------------------------------

def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def require_media_type(content_type: str | None, *allowed: str) -> str:
    """The request's media type when it is one of ``allowed`` (415 otherwise)."""
    mt = media_type(content_type)
    if mt not in allowed:
        raise ApiError(f"content type {mt or 'none'!r}; send {' or '.join(allowed)}", 415,
                       "content-type")
    return mt


def check_declared_length(content_length: str | None, limit: int, field: str) -> None:
    """413 before reading a body whose declared Content-Length exceeds ``limit`` bytes (400
    for a malformed one)."""
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise ApiError("malformed Content-Length header", 400, "content-length")
    if int(content_length) > limit:
        raise ApiError(f"the body of {int(content_length)} bytes exceeds the limit of {limit} "
                       "bytes", 413, field)


async def limited_stream(chunks: AsyncIterator[bytes], limit: int, field: str
                         ) -> AsyncGenerator[bytes, None]:
    """``chunks`` passed through, 413 as soon as more than ``limit`` bytes have come."""
    n = 0
    async for chunk in chunks:
        n += len(chunk)
        if n > limit:
            raise ApiError(f"the body exceeds the limit of {limit} bytes", 413, field)
        yield chunk


async def read_body(request, limit: int, field: str = "body") -> bytes:
    """The whole body of ``request`` (a Starlette Request), at most ``limit`` bytes."""
    check_declared_length(request.headers.get("content-length"), limit, field)
    parts = [c async for c in limited_stream(request.stream(), limit, field)]
    return b"".join(parts)


def parse_json(body: bytes, field: str = "body") -> Any:
    """The JSON document of ``body`` (400 when it is not UTF-8 JSON or nests too deeply)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError("the JSON document is nested too deeply", 400, field) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError("the body is not valid JSON", 400, field) from None


def clean_name(name: str | None, default: str) -> str:
    """A client's file name for messages: printable, without directories, shortened."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:MAX_NAME_CHARS]
    return base or default


async def read_upload(request, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of the multipart field ``file``; the body streams through the
    limit and the multipart parser (one file, a few small text fields)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    require_media_type(request.headers.get("content-type"), MULTIPART)
    check_declared_length(request.headers.get("content-length"), limit, "file")
    parser = MultiPartParser(request.headers,
                             limited_stream(request.stream(), limit, "file"),
                             max_files=1, max_fields=MAX_FORM_FIELDS,
                             max_part_size=MAX_FORM_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(f"malformed multipart body: {e.message}", 400, "file") from None
    try:
        up = form.get("file")
        if up is None or isinstance(up, str):
            raise ApiError("multipart upload without a 'file' field", 400, "file")
        data = await up.read()
        return clean_name(up.filename, "upload"), data
    finally:
        await form.close()


# ---- query strings and JSON bodies --------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Capacitance = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]
MAX_SWEEP_INDEX = 1_000_000


class TwinQuery(_Model):
    """Query of POST /twin: ``simulate`` (the voltage-clamp fit and AP), ``figure`` (PNG),
    ``temperature_K`` (K, the model's range), ``capacitance_pF`` (pF), ``sweep`` (index or
    ``mean``)."""

    simulate: bool = True
    figure: bool = False
    temperature_K: TemperatureK | None = None
    capacitance_pF: Capacitance | None = None
    sweep: int | str = 0

    @field_validator("sweep", mode="before")
    @classmethod
    def _sweep(cls, v: Any) -> int | str:
        if v == "mean":
            return v
        s = str(v).strip()
        if not s.isdigit() or int(s) > MAX_SWEEP_INDEX:
            raise ValueError(f"sweep: expected a sweep index (0, 1, ...) or 'mean', "
                             f"found {str(v)[:40]!r}")
        return int(s)


class ReconstructQuery(_Model):
    """Query of POST /reconstruct: ``figure``, ``windows``, ``max_beats``, ``sweep``."""

    figure: bool = False
    windows: bool = True
    max_beats: Annotated[int, Field(gt=0, le=100_000)] | None = None
    sweep: NonNegativeInt = 0


class JsonTrace(_Model):
    """A voltage-clamp trace as JSON: ``current`` (finite numbers), ``current_units``,
    ``capacitance_pF`` (pF; needed for pA and nA), ``command_mV`` (optional, as long as the
    current), ``sample_interval_ms`` (ms; default the protocol's)."""

    current: list[FiniteFloat] = Field(min_length=2)
    current_units: Literal["pA/pF", "pA", "nA"] = "pA/pF"
    capacitance_pF: Capacitance | None = None
    command_mV: list[FiniteFloat] | None = None
    sample_interval_ms: PositiveMs | None = None


def parse_query(model: type[_Model], params: Mapping[str, str] | Any) -> Any:
    """``model`` from a query string (repeated or unknown parameters: 400 naming them)."""
    multi = getattr(params, "multi_items", None)
    items = multi() if multi else list(dict(params).items())
    seen: dict[str, str] = {}
    for k, v in items:
        if k in seen:
            raise ApiError(f"query parameter {k!r} given more than once", 400, k)
        seen[k] = v
    try:
        return model(**seen)
    except ValidationError as e:
        raise as_api_error(e) from None


def parse_trace(doc: Any, max_samples: int) -> JsonTrace:
    """A :class:`JsonTrace` from a JSON document (at most ``max_samples`` samples)."""
    if not isinstance(doc, dict):
        raise ApiError("expected a JSON object with a 'current' array", 400, "body")
    for k in ("current", "command_mV"):
        v = doc.get(k)
        if isinstance(v, list) and len(v) > max_samples:
            raise ApiError(f"{k}: {len(v)} samples; this service reads at most {max_samples}",
                           422, k)
    try:
        tr = JsonTrace(**doc)
    except ValidationError as e:
        raise as_api_error(e, "body") from None
    if tr.command_mV is not None and len(tr.command_mV) != len(tr.current):
        raise ApiError(f"command_mV has {len(tr.command_mV)} samples, current "
                       f"{len(tr.current)}; expected the same", 400, "command_mV")
    return tr


# ---- screens ------------------------------------------------------------------------------

def screen_config(doc: Any, out_dir: Path, cfg) -> Any:
    """The :class:`~cardiotwin.drugs.ScreenConfig` of a POST /screens document, writing to
    ``out_dir``, within the service's limits (``cfg``: :class:`.config.ServiceConfig`):
    cells, recorded samples per cell, and cost = cells x concentrations x (prepace_ms +
    record_ms) against ``screen_budget_cell_ms``."""
    from ..drugs import ScreenConfig

    if not isinstance(doc, dict):
        raise ApiError("expected a JSON object of screen settings", 400, "body")
    for k, why in SERVER_ONLY_SCREEN_FIELDS.items():
        if k in doc:
            raise ApiError(f"{k}: not accepted by the service; {why}", 400, k)
    if "drug" not in doc:
        raise ApiError("drug: a catalog name or an inline definition is required", 400,
                       "drug")
    if not isinstance(doc["drug"], (str, dict)):
        raise ApiError("drug: expected a catalog name or a definition {'name', 'blocks'}",
                       400, "drug")
    try:
        sc = ScreenConfig.create(**doc, out_dir=out_dir, batch_cells=cfg.screen_batch_cells,
                                 overwrite=False, figures=False)
    except ArithmeticError:             # e.g. record_ms / record_interval_ms overflows
        raise ApiError("screen settings out of range (a ratio of them overflows)", 422,
                       "record_ms") from None
    except (ValueError, TypeError, ValidationError) as e:
        first = next(iter(doc), None)
        err = as_api_error(e)
        if err.field is None:
            err.field = _named_field(str(err), doc) or first
        raise err from None
    if sc.n_cells > cfg.screen_max_cells:
        raise ApiError(f"n_cells {sc.n_cells} exceeds this service's limit of "
                       f"{cfg.screen_max_cells}; submit a Ray job (jobs/drug_screen.py) "
                       "instead", 422, "n_cells")
    if sc.n_keep_traces > cfg.screen_max_kept_traces:
        raise ApiError(f"n_keep_traces {sc.n_keep_traces} exceeds this service's limit of "
                       f"{cfg.screen_max_kept_traces}", 422, "n_keep_traces")
    per_cell = max(sc.record_ms / sc.record_interval_ms, sc.record_ms / sc.trace_interval_ms)
    if per_cell > cfg.screen_max_samples_per_cell:
        raise ApiError(f"record_ms / record_interval_ms gives {per_cell:.6g} samples per cell; "
                       f"this service records at most {cfg.screen_max_samples_per_cell}", 422,
                       "record_interval_ms")
    cost = screen_cost(sc)
    if cost > cfg.screen_budget_cell_ms:
        raise ApiError(f"the screen costs {cost:.3g} cell-ms (cells x concentrations x "
                       f"(prepace_ms + record_ms)); this service's budget is "
                       f"{cfg.screen_budget_cell_ms:.3g}", 422, "cost")
    return sc


def screen_cost(sc) -> float:
    """Cells x concentrations x simulated ms of a ScreenConfig."""
    return float(sc.n_cells) * len(sc.concentrations_nM) * (sc.prepace_ms + sc.record_ms)


def _named_field(message: str, doc: dict[str, Any]) -> str | None:
    for k in doc:
        if isinstance(k, str) and message.startswith(k):
            return k
    return None


__all__ = ["JSON", "MULTIPART", "JsonTrace", "ReconstructQuery", "TwinQuery",
           "check_declared_length", "clean_name", "limited_stream", "media_type", "parse_json",
           "parse_query", "parse_trace", "read_body", "read_upload", "require_media_type",
           "screen_config", "screen_cost"]
