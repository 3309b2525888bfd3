"""The fan-out loop (runtime.fanout) on a local Ray cluster: ordered results, lost and hung
workers retried, work errors reported by item, actor pools."""

from __future__ import annotations

import os
import time

import pytest

from cardiotwin.runtime.fanout import FanOut, FanOutError, run_tasks


def _square(x, marker=None, mode=None):
    """x**2; with a marker file, fails once: ``exit`` kills the worker process, ``hang``
    sleeps far past any timeout."""
    if marker is not None:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            if mode == "exit":
                os._exit(1)
            if mode == "hang":
                time.sleep(600)
    if x < 0:
        raise ValueError(f"negative input {x}")
    if x == 99:
        raise KeyError("a bug")
    return x * x


@pytest.fixture(scope="module", autouse=True)
def _ship_this_module(ray_session):
    """The workers cannot import the tests: send this module's functions by value."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def square(ray_session):
    return ray_session.remote(num_cpus=1, max_retries=0)(_square)


def test_results_in_order(square):
    assert run_tasks(square, [(i,) for i in range(7)], max_in_flight=2, echo=None) == \
        [i * i for i in range(7)]


def test_lost_worker_retried(square, tmp_path):
    marker = str(tmp_path / "died")
    args = [(i, marker if i == 3 else None, "exit") for i in range(5)]
    out = run_tasks(square, args, max_in_flight=2, echo=None)
    assert out == [i * i for i in range(5)] and os.path.exists(marker)


def test_hung_worker_cancelled_and_retried(square, tmp_path):
    marker = str(tmp_path / "hung")
    fan = FanOut(lambda _, i: square.remote(i, marker if i == 1 else None, "hang"),
                 n_workers=2, timeout_s=3.0, echo=None)
    t0 = time.monotonic()
    got = dict(fan.run(range(4)))
    assert got == {i: i * i for i in range(4)}
    assert fan.timeouts == 1 and fan.failures == 1
    assert time.monotonic() - t0 < 60


def test_work_errors_name_the_item(square):
    with pytest.raises(ValueError, match=r"cell block 2: negative input -1"):
        run_tasks(square, [(1,), (2,), (-1,)], max_in_flight=2, echo=None,
                  describe=lambda i: f"cell block {i}")
    with pytest.raises(FanOutError, match="item 0 failed"):
        run_tasks(square, [(99,)], max_in_flight=1, echo=None, describe=lambda i: f"item {i}")


def test_gives_up_after_max_attempts(square, tmp_path):
    def submit(_, i):
        return square.remote(i, str(tmp_path / f"m{time.monotonic_ns()}"), "exit")

    with pytest.raises(FanOutError, match="failed 2 times"):
        list(FanOut(submit, n_workers=1, max_attempts=2, echo=None).run([5]))


class _Doubler:
    def __init__(self, marker=None):
        self.marker = marker

    def ready(self):
        return os.getpid()

    def work(self, x):
        if self.marker and x == 2:
            _square(0, self.marker, "exit")
        return 2 * x


def test_actor_pool_replaces_a_dead_actor(ray_session, tmp_path):
    ray = ray_session
    cls = ray.remote(num_cpus=1, max_restarts=0)(_Doubler)
    marker = str(tmp_path / "actor-died")
    started = []

    def new_worker():
        a = cls.remote(marker)
        started.append(a)
        return a, a.ready.remote()

    fan = FanOut(lambda a, x: a.work.remote(x), new_worker=new_worker, n_workers=2, echo=None)
    assert dict(fan.run(range(5))) == {x: 2 * x for x in range(5)}
    assert len(started) == 3 and fan.failures == 1


def test_bad_options_refused():
    with pytest.raises(ValueError, match="n_workers"):
        FanOut(lambda w, i: None, n_workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        FanOut(lambda w, i: None, n_workers=1, timeout_s=0)
