"""Atomic writes: a reader sees the old file (or directory) or the complete new one, never a
torn one, whatever point a crash or a kill interrupts the writer at.

Files: written to a temporary sibling (``.NAME.<pid>.<random>.tmp``), flushed and fsynced,
renamed over the final name (``os.replace``, atomic on POSIX), then the directory is fsynced so
the rename survives a power loss.

Directories (model artifacts): built complete at a temporary sibling, then swapped in by
:func:`replace_directory` in three renames: old -> ``.NAME.old``, new -> NAME, remove old. A
crash between the first two renames leaves NAME missing with ``.NAME.old`` complete:
:func:`recover_directory` (called by loaders and before every swap) puts it back, so the user
always has a complete directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory (makes renames and new names in it durable); no-op where the
    platform cannot open directories."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def is_temporary(name: str) -> bool:
    """True for names made by :func:`atomic_path` (and the legacy ``NAME.tmp``)."""
    return name.endswith(TMP_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to (by any library); on a clean exit it
    is fsynced and renamed over ``path``; on an exception it is removed and ``path`` is left
    as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX,
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON (strict: NaN and inf are refused, ValueError) atomically, with a
    final newline."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def _old_of(path: Path) -> Path:
    return path.with_name(f".{path.name}{OLD_SUFFIX}")


def recover_directory(path: str | os.PathLike) -> bool:
    """Finish or undo an interrupted :func:`replace_directory` at ``path``: when ``path`` is
    missing and its previous version ``.NAME.old`` exists, put that back; when both exist,
    remove the old one. True when something was repaired."""
    path = Path(path)
    old = _old_of(path)
    if not old.exists():
        return False
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, path)
        fsync_dir(path.parent)
    return True


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            _fsync_file(Path(dirpath) / f)
        fsync_dir(dirpath)


def replace_directory(new: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Swap the complete directory ``new`` (a sibling of ``path``, same filesystem) in at
    ``path``, replacing what is there; at every point of a crash ``path`` or its ``.old``
    backup is a complete directory (see the module docstring)."""
    new, path = Path(new), Path(path)
    recover_directory(path)
    _fsync_tree(new)
    old = _old_of(path)
    had_old = path.exists()
    if had_old:
        os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        if had_old and not path.exists():
            os.replace(old, path)
        raise
    fsync_dir(path.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    return path


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path`` to build in; on a clean exit it
    replaces ``path`` (:func:`replace_directory`); on an exception it is removed and ``path``
    is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def jsonable(obj: Any) -> Any:
    """``obj`` made fit for strict JSON: NaN and inf become None (not computable), NumPy scalars
    and arrays Python numbers and lists, tuples lists (for metrics and summaries)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
