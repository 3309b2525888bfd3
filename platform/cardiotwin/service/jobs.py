"""Background screen jobs, persisted in a directory that every replica reads.

Layout: ``<root>/<job_id>/job.json`` (the state, written atomically by
:func:`cardiotwin.storage.atomic.write_json_atomic`), ``<root>/<job_id>/screen/`` (the
screen's own output, ``summary.json`` once done), ``<root>/<job_id>/cancel`` (a cancellation
request, from any replica) and ``<root>/<job_id>/.job.lock`` (the running replica's
:class:`cardiotwin.storage.lock.DirectoryLock`, with its pid, host and heartbeat).

A job reads ``running`` only while its lock is live: a job whose replica died (restart, crash,
a lost node: pid gone on this host, or no heartbeat for ``stale_after_s``) reads, and is
rewritten, as ``interrupted`` with a reason. Admission (the cap on running screens across
replicas) holds an exclusive ``flock`` on ``<root>/.admission.lock``. Finished jobs beyond
``retention`` (count) or older than ``retention_h`` are removed.

States: running -> done | failed | cancelled | interrupted. Times are Unix seconds.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..storage.atomic import is_temporary, write_json_atomic
from ..storage.lock import DirectoryLock
from .errors import ApiError

log = logging.getLogger("ray.serve.cardiotwin")

STATE = "job.json"
CANCEL = "cancel"
JOB_LOCK = ".job.lock"
SCREEN = "screen"
ADMISSION_LOCK = ".admission.lock"
FINAL = frozenset({"done", "failed", "cancelled", "interrupted"})
_ID = re.compile(r"^[0-9a-f]{16}$")
INTERRUPTED_REASON = ("the replica running this screen stopped (restart, crash or lost node) "
                      "before it finished; submit it again")
PROGRESS_EVERY_S = 1.0


class JobCancelled(Exception):
    """Raised inside a running screen when its cancellation was requested."""


class JobStore:
    """The jobs under ``root`` (see the module docstring). ``max_running``: running screens
    allowed at once; ``retry_after_s``: the Retry-After of a refusal (s)."""

    def __init__(self, root: str | Path, *, max_running: int, retention: int,
                 retention_h: float, retry_after_s: int = 30, heartbeat_s: float = 5.0,
                 stale_after_s: float = 60.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_running = int(max_running)
        self.retention = int(retention)
        self.retention_s = float(retention_h) * 3600.0
        self.retry_after_s = int(retry_after_s)
        self.heartbeat_s = float(heartbeat_s)
        self.stale_after_s = float(stale_after_s)
        self._mutex = threading.Lock()

    # ---- paths and ids ----------------------------------------------------------------------

    @staticmethod
    def valid_id(job_id: str) -> bool:
        return bool(_ID.match(job_id or ""))

    def job_dir(self, job_id: str) -> Path:
        if not self.valid_id(job_id):
            raise ApiError("unknown job id", 404, "job_id")
        return self.root / job_id

    def screen_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / SCREEN

    def ids(self) -> list[str]:
        """Every job id under the root."""
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and self.valid_id(p.name) and not is_temporary(p.name))
        except FileNotFoundError:
            return []

    def _lock(self, job_id: str) -> DirectoryLock:
        return DirectoryLock(self.job_dir(job_id), name=JOB_LOCK, heartbeat_s=self.heartbeat_s,
                             stale_after_s=self.stale_after_s)

    # ---- state ------------------------------------------------------------------------------

    def _read_raw(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.job_dir(job_id) / STATE).read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError:          # never torn (atomic writes): a foreign file
            return None

    def _write(self, job_id: str, state: dict[str, Any]) -> None:
        write_json_atomic(self.job_dir(job_id) / STATE, state)

    def _alive(self, job_id: str) -> bool:
        lock = self._lock(job_id)
        rec = lock.holder()
        return rec is not None and not lock.is_stale(rec)

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's state (None when unknown); a running job whose replica is gone is marked
        interrupted first."""
        st = self._read_raw(job_id)
        if st is None or st.get("status") != "running" or self._alive(job_id):
            return st
        st = self._read_raw(job_id)       # it may have finished meanwhile (state before lock)
        if st is not None and st.get("status") == "running":
            st.update(status="interrupted", error=INTERRUPTED_REASON, finished=time.time())
            self._write(job_id, st)
            log.warning("screen job %s interrupted: its replica is gone", job_id)
        return st

    def get(self, job_id: str) -> dict[str, Any]:
        """The state of a known job (404 otherwise)."""
        st = self.read(job_id)
        if st is None:
            raise ApiError("unknown job id", 404, "job_id")
        return st

    def recover(self) -> int:
        """Mark every running job of a dead replica interrupted (at a replica's start); the
        number marked."""
        n = 0
        for j in self.ids():
            raw = self._read_raw(j)
            if raw and raw.get("status") == "running":
                st = self.read(j)
                n += bool(st and st["status"] == "interrupted")
        self.prune()
        return n

    def running(self) -> list[str]:
        """Ids of the jobs running now (on any replica)."""
        return [j for j in self.ids() if (self.read(j) or {}).get("status") == "running"]

    # ---- admission, progress, the end ----------------------------------------------------------

    @contextmanager
    def _admission(self) -> Iterator[None]:
        with self._mutex, open(self.root / ADMISSION_LOCK, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def new_id() -> str:
        """A fresh job id (16 hex digits)."""
        return uuid.uuid4().hex[:16]

    def admit(self, job_id: str, desc: dict[str, Any]) -> DirectoryLock:
        """Start job ``job_id`` (from :meth:`new_id`) as running with the description
        ``desc`` (cost, totals...), or 429 with Retry-After when ``max_running`` run now.
        Returns its held lock: the caller releases it when the job ends."""
        with self._admission():
            self.prune()
            if len(self.running()) >= self.max_running:
                raise ApiError(f"{self.max_running} screen(s) are running, this service's "
                               f"limit; retry in {self.retry_after_s} s", 429, "screens",
                               headers={"Retry-After": str(self.retry_after_s)})
            (self.root / job_id).mkdir()
            lock = self._lock(job_id).acquire()
            now = time.time()
            self._write(job_id, {"job_id": job_id, "status": "running", "done": 0,
                                 "total": None, "error": None, "created": now,
                                 "started": now, "finished": None, **desc})
            return lock

    def progress(self, job_id: str, done: int, total: int) -> None:
        """Record progress (simulations done of total) of a job run here."""
        st = self._read_raw(job_id)
        if st is not None and st.get("status") == "running":
            st.update(done=int(done), total=int(total))
            self._write(job_id, st)

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        """The end of a job run here (before its lock is released)."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status!r}")
        st = self._read_raw(job_id) or {"job_id": job_id}
        st.update(status=status, error=error, finished=time.time())
        self._write(job_id, st)

    # ---- cancel, delete, retention ---------------------------------------------------------

    def request_cancel(self, job_id: str) -> None:
        """Ask the replica running the job to stop it (at its next progress step)."""
        write_json_atomic(self.job_dir(job_id) / CANCEL, {"requested": time.time()})

    def cancel_requested(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / CANCEL).exists()

    def delete(self, job_id: str) -> None:
        """Remove a finished job and its results."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def prune(self, now: float | None = None) -> list[str]:
        """Remove finished jobs beyond the retention count or age; the ids removed."""
        now = time.time() if now is None else now
        finished = []
        for j in self.ids():
            st = self._read_raw(j)
            if st is not None and st.get("status") in FINAL:
                finished.append((float(st.get("finished") or st.get("created") or 0.0), j))
        finished.sort(reverse=True)                       # newest first
        gone = [j for k, (t, j) in enumerate(finished)
                if k >= self.retention or now - t > self.retention_s]
        for j in gone:
            self.delete(j)
        return gone

    def results(self, job_id: str) -> dict[str, Any]:
        """The summary of a finished screen (409 while it is not done)."""
        st = self.get(job_id)
        if st["status"] != "done":
            raise ApiError(f"the job is {st['status']}; results once done", 409, "job_id")
        try:
            return json.loads((self.screen_dir(job_id) / "summary.json").read_text("utf-8"))
        except (OSError, ValueError):
            raise ApiError("the job's results are gone (removed by retention?)", 410,
                           "job_id") from None


def public_state(st: dict[str, Any]) -> dict[str, Any]:
    """The fields of a job state a client sees."""
    keys = ("job_id", "status", "done", "total", "error", "created", "started", "finished",
            "cost_cell_ms", "n_simulations", "drug")
    return {k: st.get(k) for k in keys}


def run_job(store: JobStore, job_id: str, lock: DirectoryLock, config: Any,
            run: Callable[..., Any]) -> None:
    """Run ``run(config, on_progress=...)`` (the screen) as job ``job_id`` holding ``lock``:
    progress recorded at most every PROGRESS_EVERY_S, cancellation checked at every step; the
    final state written before the lock is released. A failure's details go to the log; the
    client sees an error id only."""
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        if store.cancel_requested(job_id):
            raise JobCancelled
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or done >= total:
            last[0] = now
            store.progress(job_id, done, total)

    try:
        if store.cancel_requested(job_id):
            raise JobCancelled
        run(config, on_progress=on_progress)
        if store.cancel_requested(job_id):
            raise JobCancelled
        store.finish(job_id, "done")
    except JobCancelled:
        store.finish(job_id, "cancelled", "cancelled by request")
    except Exception as exc:        # any failure: logged, an id to the client
        eid = uuid.uuid4().hex[:12]
        log.error("screen job %s failed (error id %s)", job_id, eid, exc_info=exc)
        store.finish(job_id, "failed", f"the screen failed (error id {eid}); the details are "
                                       "in the service log")
    finally:
        lock.release()
        try:
            store.prune()
        except OSError:
            log.warning("screen retention: could not prune %s", store.root)
