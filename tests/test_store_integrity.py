"""The population store detects damage and refuses a second writer (issue 16).

Damaged shard bytes, torn sidecars, a second concurrent writer, stale locks, resuming with other
code, hung workers, and ``cardiotwin store verify``. A local Ray cluster of 2 CPUs for the
module; 60 cells in shards of 20 on a 300 ms protocol with a 1 s AP run keep each run to
seconds (mostly actor start-up).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import assert_same_rows, sorted_table

from cardiotwin.cli import main
from cardiotwin.population import (
    GenerationConfig,
    generate_population,
    open_store,
    verify_store,
)
from cardiotwin.population.actor import TEST_HANG_MARKER, TEST_HANG_ON_SHARD
from cardiotwin.runtime.versions import code_version
from cardiotwin.storage.lock import LOCK_NAME, DirectoryLock, LockHeldError

N, SHARD, SEED, AP_MS = 60, 20, 5, 1000.0
def settings(short_protocol_path, out, **kw) -> dict:
    base = dict(n_cells=N, seed=SEED, protocol=str(short_protocol_path), ap_duration_ms=AP_MS,
                shard_size=SHARD, n_workers=2, keep_rejected=True, out_dir=str(out))
    base.update(kw)
    return base


def run(short_protocol_path, out, lines=None, actor_env=None, **kw):
    echo = None if lines is None else lines.append
    return generate_population(GenerationConfig(**settings(short_protocol_path, out, **kw)),
                               progress=False, echo=echo, actor_env=actor_env)


@pytest.fixture(scope="module")
def reference(ray_session, short_protocol_path, tmp_path_factory):
    """An undisturbed run: 60 cells in 3 shards of 20, every cell kept."""
    return run(short_protocol_path, tmp_path_factory.mktemp("pop") / "reference")


def copy_of(store, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(store.path, out)
    return out


def assert_same_store(store, reference):
    """Same rows, values compared column by column, and the same totals."""
    a, b = sorted_table(store), sorted_table(reference)
    assert a.num_rows == N
    assert_same_rows(a, b)
    strip = ("actor_seconds_by_stage",)
    assert ({k: v for k, v in store.manifest["totals"].items() if k not in strip}
            == {k: v for k, v in reference.manifest["totals"].items() if k not in strip})
    assert [s["sha256"] for s in store.manifest["shards"]] == \
        [s["sha256"] for s in reference.manifest["shards"]]          # byte-identical shards
    assert verify_store(store.path).ok


def flip_middle_bytes(path: Path, n: int = 16) -> None:
    """Invert n bytes in the middle of the file: same size, footer intact."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


# ---- damage: found, named, re-simulated -----------------------------------------------------

def test_damaged_shard_is_found_and_resimulated(reference, short_protocol_path, tmp_path, capsys):
    import pyarrow.parquet as pq

    out = copy_of(reference, tmp_path)
    shard = out / "shard-000001.parquet"
    size = shard.stat().st_size
    flip_middle_bytes(shard)
    assert shard.stat().st_size == size
    assert pq.read_metadata(shard).num_rows == SHARD             # the footer is intact
    # found by verify_store, open_store(verify=True), the page checksums and the command line
    report = verify_store(out)
    assert not report.ok
    assert [c.line() for c in report.problems] == ["shard 1: damaged (checksum mismatch)"]
    with pytest.raises(ValueError, match=r"damaged store: shard 1: damaged \(checksum "
                                         r"mismatch\)"):
        open_store(out, verify=True)
    with pytest.raises((OSError, pa.ArrowException)):
        open_store(out).read_table()                              # CRC of the damaged page
    assert main(["store", "verify", str(out)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "shard 1: damaged (checksum mismatch)"
    assert "DAMAGED: 3 shards (2 ok, 1 damaged, 0 missing)" in printed[-1]
    # the rerun names it, re-simulates only it, and ends with the undisturbed store
    lines: list[str] = []
    store = run(short_protocol_path, out, lines)
    assert "shard 1: checksum mismatch, re-simulating" in lines
    last = store.manifest["runs"][-1]
    assert last["shards_redone"] == [1] and last["cells_simulated"] == SHARD
    assert_same_store(store, reference)
    assert main(["store", "verify", str(out)]) == 0
    assert "intact: 3 shards (3 ok, 0 damaged, 0 missing); run complete" in capsys.readouterr().out


def test_torn_sidecar_is_redone(reference, short_protocol_path, tmp_path):
    out = copy_of(reference, tmp_path)
    side = out / "shard-000002.json"
    text = side.read_text()
    side.write_text(text[: len(text) // 2])                        # half-written JSON
    assert [c.line() for c in verify_store(out).problems] == [
        "shard 2: damaged (sidecar unreadable (torn or not JSON))"]
    lines: list[str] = []
    store = run(short_protocol_path, out, lines)
    assert "shard 2: sidecar unreadable (torn or not JSON), re-simulating" in lines
    assert store.manifest["runs"][-1]["shards_redone"] == [2]
    assert json.loads(side.read_text())["sha256"] == reference.manifest["shards"][2]["sha256"]
    assert_same_store(store, reference)


def test_store_verify_exit_codes_and_missing_shards(reference, tmp_path, capsys):
    assert main(["store", "verify", str(reference.path)]) == 0
    assert "intact" in capsys.readouterr().out
    assert open_store(reference.path, verify=True).n_rows == N
    out = copy_of(reference, tmp_path)
    (out / "shard-000000.parquet").unlink()
    assert main(["store", "verify", str(out)]) == 1
    assert "shard 0: missing (shard file missing)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"shard 0: missing"):
        open_store(out, verify=True)
    # user errors: exit 2 with one line
    (tmp_path / "empty").mkdir()
    assert main(["store", "verify", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "is not a population store: no manifest.json" in err and len(err.splitlines()) == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format": "cardiotwin.population/1", ')
    assert main(["store", "verify", str(tmp_path / "bad")]) == 2
    assert "cannot read population manifest" in capsys.readouterr().err


# ---- one writer per directory ---------------------------------------------------------------

WRITER = textwrap.dedent("""
    import json, sys
    import ray
    from cardiotwin.population import GenerationConfig, generate_population
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    generate_population(GenerationConfig(**json.loads(sys.argv[1])), progress=False)
""")


def test_second_writer_is_refused_while_the_first_completes(reference, short_protocol_path,
                                                            tmp_path, capsys):
    out = tmp_path / "pop"
    env = dict(os.environ, CARDIOTWIN_TEST_SLOW_SHARD_S="2")
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen(
        [sys.executable, "-c", WRITER, json.dumps(settings(short_protocol_path, out, n_workers=1))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / LOCK_NAME).exists() and (out / "manifest.json").exists()):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid
        # a second run, by the API and by the command line: one line naming the holder
        with pytest.raises(LockHeldError, match=rf"is being written by another run \(pid "
                                                rf"{first.pid} on {socket.gethostname()}"):
            run(short_protocol_path, out)
        argv = ["generate", "--n-cells", str(N), "--seed", str(SEED), "--protocol",
                str(short_protocol_path), "--ap-duration-ms", str(AP_MS),
                "--shard-size", str(SHARD), "--keep-rejected", "--out", str(out),
                "--no-progress"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"pid {first.pid}" in err and len(err.strip().splitlines()) == 1
        assert first.poll() is None                              # the first run goes on
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, output
    assert not (out / LOCK_NAME).exists()                        # released at the end
    store = open_store(out, verify=True)
    assert store.manifest["status"] == "complete" and len(store.manifest["runs"]) == 1
    assert_same_store(store, reference)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("holder", ["dead pid on this host", "old heartbeat elsewhere"])
def test_stale_lock_is_taken_over(reference, short_protocol_path, tmp_path, holder):
    out = copy_of(reference, tmp_path)
    (out / "shard-000001.parquet").unlink()                      # some work to do
    now = time.time()
    if holder == "dead pid on this host":
        rec = {"pid": _dead_pid(), "host": socket.gethostname(), "heartbeat_unix": now}
    else:
        rec = {"pid": 1, "host": "elsewhere.invalid", "heartbeat_unix": now - 3600}
    (out / LOCK_NAME).write_text(json.dumps(rec))
    assert DirectoryLock(out).is_stale(rec)
    lines: list[str] = []
    store = run(short_protocol_path, out, lines)
    took = [x for x in lines if x.startswith("took over the stale lock")]
    assert len(took) == 1 and f"pid {rec['pid']} on {rec['host']}" in took[0]
    assert not (out / LOCK_NAME).exists()
    assert store.manifest["runs"][-1]["cells_simulated"] == SHARD
    assert_same_store(store, reference)


def test_a_live_lock_is_not_taken_over(reference, short_protocol_path, tmp_path):
    out = copy_of(reference, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with DirectoryLock(out):
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
            run(short_protocol_path, out)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME} == before


# ---- code version ---------------------------------------------------------------------------

def _age_store(out: Path, old: str) -> None:
    """Make the store look written by cardiotwin ``old`` (manifest, runs and sidecars)."""
    m = json.loads((out / "manifest.json").read_text())
    m["code_version"] = old
    for r in m["runs"]:
        r["code_version"] = old
    (out / "manifest.json").write_text(json.dumps(m))
    for side in out.glob("shard-*.json"):
        s = json.loads(side.read_text())
        s["code_version"] = old
        side.write_text(json.dumps(s))


def test_resume_with_other_code_is_refused_unless_allowed(reference, short_protocol_path, tmp_path,
                                                          capsys):
    out = copy_of(reference, tmp_path)
    _age_store(out, "0.0.1-old")
    (out / "shard-000002.parquet").unlink()
    (out / "shard-000002.json").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["generate", "--n-cells", str(N), "--seed", str(SEED), "--protocol",
            str(short_protocol_path), "--ap-duration-ms", str(AP_MS), "--shard-size", str(SHARD),
            "--keep-rejected", "--workers", "2", "--out", str(out), "--no-progress"]
    with pytest.raises(ValueError, match=rf"written by cardiotwin 0\.0\.1-old and this is "
                                         rf"cardiotwin {code_version()}.*--allow-code-change"):
        run(short_protocol_path, out)
    assert main(argv) == 2
    assert "0.0.1-old" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # nothing touched
    assert main(argv + ["--allow-code-change"]) == 0
    store = open_store(out, verify=True)
    m = store.manifest
    assert [r["code_version"] for r in m["runs"]] == ["0.0.1-old", code_version()]
    assert m["code_version"] == code_version()
    assert m["code_versions"] == sorted(["0.0.1-old", code_version()])
    assert [s["code_version"] for s in m["shards"]] == ["0.0.1-old", "0.0.1-old",
                                                        code_version()]
    assert m["runs"][-1]["cells_simulated"] == SHARD
    assert_same_store(store, reference)
    # the store now belongs to this code: a plain resume is accepted
    assert run(short_protocol_path, out).manifest["runs"][-1]["cells_simulated"] == 0


# ---- hung workers ---------------------------------------------------------------------------

def test_hung_worker_is_killed_and_its_shard_retried(reference, short_protocol_path, tmp_path):
    marker = tmp_path / "hung"
    env = {TEST_HANG_ON_SHARD: "1", TEST_HANG_MARKER: str(marker)}
    lines: list[str] = []
    t0 = time.monotonic()
    store = run(short_protocol_path, tmp_path / "pop", lines, actor_env=env, shard_timeout_s=12.0)
    assert marker.exists()                                       # the actor did hang
    assert time.monotonic() - t0 < 300                           # and was not waited for
    last = store.manifest["runs"][-1]
    assert last["shard_timeouts"] >= 1 and last["actor_failures"] >= 1
    assert any(x.startswith("shard 1 (cells from 20): worker lost (WorkTimeoutError: no "
                            "result after") for x in lines)
    assert not list(store.path.glob("*.tmp"))                    # the hung writer's temporary
    assert_same_store(store, reference)


def test_default_shard_timeout_is_adaptive(ray_session, short_protocol_path, tmp_path, monkeypatch):
    """None: 10 x the longest shard so far, at least 120 s; a given value is used as is."""
    import cardiotwin.population.generate as gen

    seen = []

    class Stop(Exception):
        pass

    class Spy:
        def __init__(self, submit, **kw):
            seen.append(kw)
            raise Stop  # before any actor starts

    monkeypatch.setattr(gen, "FanOut", Spy)
    for timeout in (None, 7.5):
        with pytest.raises(Stop):
            run(short_protocol_path, tmp_path / f"pop{timeout}", shard_timeout_s=timeout)
        assert not (tmp_path / f"pop{timeout}" / LOCK_NAME).exists()   # released on errors
    assert (seen[0]["timeout_s"], seen[0]["timeout_factor"], seen[0]["min_timeout_s"]) == \
        (None, 10.0, 120.0)
    assert (seen[1]["timeout_s"], seen[1]["timeout_factor"]) == (7.5, None)
