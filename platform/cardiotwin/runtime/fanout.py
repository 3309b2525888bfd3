"""The one fan-out loop: run items on Ray workers with a bounded number in flight, yielding
each result as it completes.

Workers are either Ray tasks (``submit(None, item)`` returns the task's ObjectRef; at most
``n_workers`` run at once) or a pool of actors (``new_worker()`` starts one and returns it with
a readiness ref; an actor receives work only once ready, so actors that cannot be placed never
hold an item). Failures:

- a lost worker (its process, node or objects gone: ``RayActorError``, ``WorkerCrashedError``,
  ``NodeDiedError``, ``ObjectLostError``, OOM kills ...) puts its item back at the head of the
  queue and replaces the worker, up to ``max_attempts`` tries per item;
- a hung worker: an item running longer than its timeout (``timeout_s``, or ``timeout_factor``
  times the longest item completed so far, at least ``min_timeout_s``) has its worker killed
  (an actor) or cancelled (a task) and is retried like a lost one;
- an exception raised by the work itself stops the run: ``ValueError`` (a user error) is
  re-raised as ValueError naming the item, anything else as :class:`FanOutError`.

Every worker still running when the loop ends (finished, failed or abandoned) is killed.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_RETRYABLE_NAMES = ("RayActorError", "ActorDiedError", "ActorUnavailableError",
                    "ObjectLostError", "OwnerDiedError", "NodeDiedError", "WorkerCrashedError",
                    "OutOfMemoryError", "LocalRayletDiedError", "TaskCancelledError")
POLL_S = 1.0


class FanOutError(RuntimeError):
    """An item failed for good (its work raised, or its workers were lost too often)."""


class WorkTimeoutError(RuntimeError):
    """An item ran longer than its timeout: its worker is presumed hung."""


def is_retryable(exc: BaseException) -> bool:
    """True for failures of the worker (lost process, node, objects; a timeout), False for an
    exception raised by the work itself."""
    import ray.exceptions as rex

    if isinstance(exc, WorkTimeoutError):
        return True
    if isinstance(exc, rex.RayTaskError):
        return False
    return isinstance(exc, tuple(getattr(rex, n) for n in _RETRYABLE_NAMES if hasattr(rex, n)))


def _kill(worker: Any) -> None:
    import ray

    with suppress(Exception):  # already dead or never started
        ray.kill(worker, no_restart=True)


def _cancel(ref: Any) -> None:
    import ray

    with suppress(Exception):  # finished or gone meanwhile
        ray.cancel(ref, force=True)


class FanOut(Generic[T]):
    """Runs items on Ray workers (module docstring); :meth:`run` yields ``(item, result)``.

    ``submit(worker, item)``: start ``item`` (``worker`` is the actor, or None for tasks) and
    return its ObjectRef. ``new_worker()``: ``(actor, ready_ref)`` for an actor pool; None for
    tasks. ``n_workers``: actors in the pool / tasks in flight. ``timeout_s``,
    ``timeout_factor``, ``min_timeout_s`` (s): the hung-worker timeout. ``describe(item)``:
    names an item in messages. ``progress``: a tqdm bar of ``total`` (``initial`` done before),
    advanced by ``weight(item)``. ``echo``: where retry messages go (None: silent).
    ``start_hint``: appended to the error when actors keep failing to start.
    """

    def __init__(self, submit: Callable[[Any, T], Any], *, n_workers: int,
                 new_worker: Callable[[], tuple[Any, Any]] | None = None,
                 max_attempts: int = 3, timeout_s: float | None = None,
                 timeout_factor: float | None = None, min_timeout_s: float = 60.0,
                 describe: Callable[[T], str] = str, progress: bool = False,
                 total: int | None = None, initial: int = 0,
                 weight: Callable[[T], int] = lambda item: 1, unit: str = "item",
                 desc: str | None = None, echo: Callable[[str], Any] | None = print,
                 start_hint: str = ""):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, found {n_workers}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, found {max_attempts}")
        for name, v in (("timeout_s", timeout_s), ("timeout_factor", timeout_factor)):
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, found {v}")
        self.submit, self.new_worker = submit, new_worker
        self.n_workers, self.max_attempts = int(n_workers), int(max_attempts)
        self.timeout_s, self.timeout_factor = timeout_s, timeout_factor
        self.min_timeout_s = float(min_timeout_s)
        self.describe, self.weight, self.echo = describe, weight, echo
        self.progress, self.total, self.initial = progress, total, initial
        self.unit, self.desc, self.start_hint = unit, desc, start_hint
        self.failures = 0          # lost or hung workers, and failed actor starts
        self.timeouts = 0
        self.bar: Any = None
        self._longest = 0.0

    # ---- the hung-worker timeout -------------------------------------------------------------

    def current_timeout(self) -> float | None:
        """The timeout (s) an item in flight gets now; None: no timeout yet."""
        if self.timeout_s is not None:
            return float(self.timeout_s)
        if self.timeout_factor is not None and self._longest > 0:
            return max(self.min_timeout_s, self.timeout_factor * self._longest)
        return None

    def _say(self, msg: str) -> None:
        if self.echo is None:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            self.echo(msg)

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, items: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """Yield ``(item, result)`` for every item, in completion order."""
        import ray
        from tqdm.auto import tqdm

        work = list(items)
        queue: deque[int] = deque(range(len(work)))
        attempts: Counter[int] = Counter()
        inflight: dict[Any, tuple[Any, int, float]] = {}   # ref -> (worker, position, start)
        starting: dict[Any, Any] = {}                      # ready ref -> actor
        idle: list[Any] = []
        actors: list[Any] = []
        start_failures = 0
        n = min(self.n_workers, max(1, len(work)))

        def add_worker() -> None:
            if self.new_worker is None:
                idle.append(None)
                return
            actor, ready = self.new_worker()
            actors.append(actor)
            starting[ready] = actor

        def retire(worker: Any) -> None:
            if worker is not None:
                _kill(worker)
            add_worker()

        def lost(ref: Any, worker: Any, pos: int, exc: BaseException) -> None:
            attempts[pos] += 1
            self.failures += 1
            what = self.describe(work[pos])
            if attempts[pos] >= self.max_attempts:
                raise FanOutError(f"{what} failed {attempts[pos]} times (its workers were lost"
                                  f" or hung); last error: {exc}") from exc
            self._say(f"{what}: worker lost ({type(exc).__name__}: {str(exc)[:200]}); "
                      f"retrying it (attempt {attempts[pos] + 1} of {self.max_attempts})")
            if worker is None:
                _cancel(ref)
            retire(worker)
            queue.appendleft(pos)

        if self.progress:
            self.bar = tqdm(total=self.total, initial=self.initial, unit=self.unit,
                            desc=self.desc, dynamic_ncols=True, smoothing=0.1)
        try:
            if work:
                for _ in range(n):
                    add_worker()
            while queue or inflight:
                while idle and queue:
                    worker, pos = idle.pop(), queue.popleft()
                    inflight[self.submit(worker, work[pos])] = (worker, pos, time.monotonic())
                timeout = self.current_timeout()
                wait_s = POLL_S if timeout is not None else None
                if timeout is not None and inflight:
                    first = min(s for _, _, s in inflight.values())
                    wait_s = max(0.0, min(POLL_S, first + timeout - time.monotonic()))
                ready, _ = ray.wait(list(inflight) + list(starting), num_returns=1,
                                    timeout=wait_s)
                for ref in ready:
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            ray.get(ref)
                        except Exception as exc:  # any start failure counts
                            start_failures += 1
                            self.failures += 1
                            if start_failures >= self.max_attempts * n:
                                raise FanOutError(
                                    f"workers fail to start ({start_failures} times); last "
                                    f"error: {exc}" + (f"\n{self.start_hint}"
                                                       if self.start_hint else "")) from exc
                            retire(actor)
                            continue
                        idle.append(actor)
                        continue
                    worker, pos, t_start = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # sorted below
                        if is_retryable(exc):
                            lost(ref, worker, pos, exc)
                            continue
                        cause = getattr(exc, "cause", None)
                        what = self.describe(work[pos])
                        if isinstance(cause, ValueError):
                            raise ValueError(f"{what}: {cause}") from exc
                        raise FanOutError(f"{what} failed: {exc}") from exc
                    self._longest = max(self._longest, time.monotonic() - t_start)
                    idle.append(worker)
                    if self.bar is not None:
                        self.bar.update(self.weight(work[pos]))
                    yield work[pos], result
                timeout = self.current_timeout()
                if timeout is not None:
                    now = time.monotonic()
                    for ref, (worker, pos, t_start) in list(inflight.items()):
                        if now - t_start > timeout:
                            del inflight[ref]
                            self.timeouts += 1
                            lost(ref, worker, pos, WorkTimeoutError(
                                f"no result after {now - t_start:.0f} s (timeout "
                                f"{timeout:.0f} s)"))
        finally:
            if self.bar is not None:
                self.bar.close()
            for ref, (worker, _, _) in inflight.items():
                if worker is None:
                    _cancel(ref)
            for a in actors:
                _kill(a)


def run_tasks(remote_fn: Any, arg_tuples: Sequence[tuple[Any, ...]], *, max_in_flight: int,
              **fan_out_kw: Any) -> list[Any]:
    """Run ``remote_fn.remote(*args)`` for each tuple of ``arg_tuples`` through
    :class:`FanOut` (tasks, at most ``max_in_flight`` at once); the results in the order of
    ``arg_tuples``. ``fan_out_kw``: the other :class:`FanOut` options (``describe`` receives
    the position)."""
    results: list[Any] = [None] * len(arg_tuples)
    fan: FanOut[int] = FanOut(lambda _, i: remote_fn.remote(*arg_tuples[i]),
                              n_workers=max(1, int(max_in_flight)), **fan_out_kw)
    for i, res in fan.run(range(len(arg_tuples))):
        results[i] = res
    return results
