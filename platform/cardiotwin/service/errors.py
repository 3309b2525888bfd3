"""Errors as HTTP responses: every refused request gets a 4xx JSON ``{"error": ..., "field":
...}`` naming the problem, every internal failure a 500 ``{"error": "internal error",
"request_id": ...}`` with the details in the server log only.

Messages never carry server paths (absolute paths in a message are replaced by ``<path>``),
and responses are strict JSON: NaN and inf become null (:func:`cardiotwin.storage.atomic.
jsonable`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..storage.atomic import jsonable
from ..validation import plain_errors

log = logging.getLogger("ray.serve.cardiotwin")

MAX_MESSAGE_CHARS = 600
_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:\\|/)(?:[\w.\-~]+[/\\])+[\w.\-~]*")


class ApiError(Exception):
    """A refused request: HTTP ``status`` (4xx), the ``field`` at fault, extra ``headers``."""

    def __init__(self, message: str, status: int = 400, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.field = field
        self.headers = headers or {}


class StrictJSONResponse(JSONResponse):
    """A JSON response with NaN and inf as null, never as the invalid tokens NaN/Infinity."""

    def render(self, content: Any) -> bytes:
        return json.dumps(jsonable(content), allow_nan=False, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")


def scrub(message: str) -> str:
    """``message`` without absolute paths, shortened to MAX_MESSAGE_CHARS."""
    m = _PATH.sub("<path>", str(message))
    return m if len(m) <= MAX_MESSAGE_CHARS else m[:MAX_MESSAGE_CHARS - 3] + "..."


def field_of_validation(e: ValidationError) -> str | None:
    """The field of a pydantic error's first problem (dotted location), if any."""
    errs = e.errors()
    if not errs:
        return None
    loc = [str(x) for x in errs[0]["loc"] if not isinstance(x, int)]
    return ".".join(loc) or None


def as_api_error(exc: BaseException, default_field: str | None = None) -> ApiError:
    """A client error of a parsing or validation stage as an ApiError: ApiError as is;
    pydantic errors (plain lines, the first field); RecordingError and other ValueErrors 400
    with their ``field`` (scrubbed messages)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValidationError):
        return ApiError(scrub(str(plain_errors(exc))), 400,
                        field_of_validation(exc) or default_field)
    if isinstance(exc, RecursionError):
        return ApiError("the document is nested too deeply", 400, default_field)
    if isinstance(exc, (ValueError, TypeError, OverflowError)):
        return ApiError(scrub(str(exc)) or type(exc).__name__, 400,
                        getattr(exc, "field", None) or default_field)
    raise TypeError(f"not a client error: {type(exc).__name__}")


def error_response(exc: ApiError, request_id: str | None = None) -> StrictJSONResponse:
    """The 4xx response of ``exc``."""
    body = {"error": scrub(str(exc)), "field": exc.field}
    headers = dict(exc.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return StrictJSONResponse(body, status_code=exc.status, headers=headers)


def internal_error(exc: BaseException, request_id: str, where: str = "") -> StrictJSONResponse:
    """Log ``exc`` with its traceback under ``request_id``; a 500 that names only the id."""
    log.error("request %s failed%s", request_id, f" in {where}" if where else "",
              exc_info=(type(exc), exc, exc.__traceback__))
    return StrictJSONResponse({"error": "internal error; quote the request id to the operator",
                               "field": None, "request_id": request_id}, status_code=500,
                              headers={"X-Request-ID": request_id})


HTTP_STATUS_FIELDS = {404: ("no such route", "path"), 405: ("method not allowed", "method")}


def framework_error(status: int, detail: Any) -> ApiError:
    """A Starlette/FastAPI HTTPException (404, 405, a multipart parse error...) as an
    ApiError."""
    msg, field = HTTP_STATUS_FIELDS.get(status, (None, None))
    if msg is None:
        msg = detail if isinstance(detail, str) and detail else f"HTTP {status}"
    return ApiError(scrub(msg), status if 400 <= status < 500 else 400, field)
