"""Identity of configurations and content: canonical JSON, its SHA-256 (config and protocol
hashes), and content checksums of files and bytes."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

CHUNK_BYTES = 1 << 20


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj``: sorted keys, no whitespace, ASCII, strict (NaN and
    inf are refused with ValueError). Equal objects give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def identity_hash(obj: Any) -> str:
    """Hex SHA-256 of :func:`canonical_json` of ``obj``: the identity of a configuration."""
    return sha256_bytes(canonical_json(obj).encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()
