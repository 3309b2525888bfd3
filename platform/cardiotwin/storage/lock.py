"""One writer per output directory: a lock file holding the writer's pid, host, start time and
a heartbeat.

A second writer is refused with one line naming the holder (:class:`LockHeldError`). A lock
left by a run that died is stale and taken over: on the same host when its pid no longer runs,
on any host when its heartbeat is older than ``stale_after_s``. The heartbeat is refreshed by a
daemon thread every ``heartbeat_s`` while the lock is held. Taking over is race-free: the stale
file is renamed away (only one contender's rename succeeds) before the new lock is created
with O_EXCL.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = ".cardiotwin.lock"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0


class LockHeldError(ValueError):
    """Another live process writes this directory."""


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class DirectoryLock:
    """The writer's lock on ``directory`` (a context manager). ``stale_after_s``: a heartbeat
    older than this marks the holder dead (s); ``heartbeat_s``: refresh period (s)."""

    def __init__(self, directory: str | os.PathLike, *, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S, name: str = LOCK_NAME):
        if not (0 < heartbeat_s < stale_after_s):
            raise ValueError(f"heartbeat_s ({heartbeat_s}) must be > 0 and below stale_after_s "
                             f"({stale_after_s})")
        self.directory = Path(directory)
        self.path = self.directory / name
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self.token = uuid.uuid4().hex
        self.took_over: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    # ---- inspection -------------------------------------------------------------------------

    def holder(self) -> dict[str, Any] | None:
        """The current lock record, or None when there is none (a torn one reads as {})."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def is_stale(self, rec: dict[str, Any], now: float | None = None) -> bool:
        """True when the holder of ``rec`` is dead (see the module docstring)."""
        now = time.time() if now is None else now
        beat = rec.get("heartbeat_unix")
        if not isinstance(beat, (int, float)):
            # torn or foreign: judge by the file's age
            try:
                beat = self.path.stat().st_mtime
            except OSError:
                return True
        if now - float(beat) > self.stale_after_s:
            return True
        if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int):
            return not _pid_alive(rec["pid"])
        return False

    @staticmethod
    def describe(rec: dict[str, Any]) -> str:
        return (f"pid {rec.get('pid', '?')} on {rec.get('host', '?')}, started "
                f"{rec.get('started_utc', '?')}, last heartbeat {rec.get('heartbeat_utc', '?')}")

    # ---- acquire / release ------------------------------------------------------------------

    def _record(self, started: float) -> dict[str, Any]:
        now = time.time()
        return {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                "started_utc": _utc(started), "started_unix": started,
                "heartbeat_utc": _utc(now), "heartbeat_unix": now,
                "command": " ".join(sys.argv)[:500]}

    def acquire(self) -> DirectoryLock:
        """Take the lock; LockHeldError when a live process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                rec = self.holder()
                if rec is None:
                    continue  # released meanwhile
                if not self.is_stale(rec):
                    raise LockHeldError(
                        f"{self.directory} is being written by another run ({self.describe(rec)}"
                        f"); wait for it to finish, or remove {self.path} if that run is gone"
                    ) from None
                aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue  # another contender took it over first
                os.unlink(aside)
                self.took_over = rec
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._record(self._started), fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name=f"lock-heartbeat {self.directory}")
            self._thread.start()
            return self
        raise LockHeldError(f"{self.directory}: could not take the lock {self.path} (contended)")

    def _owned(self) -> bool:
        rec = self.holder()
        return rec is not None and rec.get("token") == self.token

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._owned():
                return  # taken over (we were presumed dead): never write another's lock
            tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
            try:
                tmp.write_text(json.dumps(self._record(self._started)), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Drop the lock (only if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 1)
        if self._held and self._owned():
            with suppress(OSError):
                self.path.unlink()
        self._held = False

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
