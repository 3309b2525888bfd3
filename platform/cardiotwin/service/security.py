"""Who may call the service: API tokens, loopback clients, the Host and Origin headers.

Tokens come from an environment variable (comma or whitespace separated) or a file (one a
line, ``#`` comments), never from the repository; only their SHA-256 digests are kept, and a
presented token is compared with every digest by :func:`hmac.compare_digest` (constant time).
The Host header must name an allowed host (DNS rebinding), and a browser's Origin header, when
present, too (cross-site requests); both are checked without the port.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

MIN_TOKEN_CHARS = 16
HEALTH_PATHS = frozenset({"/health"})


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_tokens(text: str, origin: str) -> list[str]:
    """Tokens of ``text`` (separated by commas, spaces or lines; ``#`` starts a comment);
    ValueError naming ``origin`` when one is shorter than MIN_TOKEN_CHARS."""
    out = []
    for line in text.splitlines():
        for tok in line.split("#", 1)[0].replace(",", " ").split():
            if len(tok) < MIN_TOKEN_CHARS:
                raise ValueError(f"{origin}: a token of {len(tok)} characters; use at least "
                                 f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; "
                                 "print(secrets.token_urlsafe(32))')")
            out.append(tok)
    return out


def load_token_digests(env_var: str | None, file: str | None,
                       environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Digests of the tokens in ``$env_var`` and ``file`` (either may be None; an unset
    variable or a missing file gives no tokens; a file is never echoed)."""
    environ = dict(os.environ) if environ is None else environ
    tokens: list[str] = []
    if env_var and environ.get(env_var):
        tokens += parse_tokens(environ[env_var], f"${env_var}")
    if file:
        p = Path(file)
        if p.is_file():
            tokens += parse_tokens(p.read_text(encoding="utf-8"), f"api_tokens_file {p.name}")
    return tuple(sorted({token_digest(t) for t in tokens}))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_ok(token: str | None, digests: Iterable[str]) -> bool:
    """Whether ``token`` is one of ``digests`` (compared with every one, constant time)."""
    if token is None:
        return False
    got = token_digest(token).encode("ascii")
    ok = False
    for d in digests:
        ok |= hmac.compare_digest(got, d.encode("ascii"))
    return ok


def host_name(value: str | None) -> str | None:
    """The host of a Host header (``name``, ``name:port``, ``[v6]:port``), lower case;
    None when absent or malformed."""
    if not value:
        return None
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        rest = v[end + 1:] if end > 0 else ""
        if end < 0 or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
        return v[:end + 1]
    name, sep, port = v.rpartition(":")
    if sep and _is_port(port):
        v = name
    elif sep:
        return None
    if not v or any(c in v for c in "/@ \\?#") or ":" in v:
        return None
    return v


def _is_port(s: str) -> bool:
    return s.isdigit() and 0 < int(s) < 65536


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    """Whether the Host header names an allowed host (``*`` allows any well-formed one; an
    entry ``.example.org`` allows its subdomains)."""
    name = host_name(host_header)
    if name is None:
        return False
    for a in allowed:
        a = a.strip().lower()
        if a == "*" or a == name or (a.startswith(".") and name.endswith(a)):
            return True
    return False


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Whether a browser's Origin header (``scheme://host[:port]``) is absent or names an
    allowed host; ``null`` (sandboxed or file pages) is refused."""
    if origin is None:
        return True
    scheme, sep, rest = origin.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return False
    return host_allowed(rest.split("/", 1)[0], allowed)


def is_loopback(address: str | None) -> bool:
    """Whether a client address is a loopback address (127.0.0.0/8, ::1)."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
