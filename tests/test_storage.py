"""The storage layer: atomic files and directories, identity hashes, claiming an output
directory, the single-writer lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardiotwin.storage import atomic
from cardiotwin.storage.atomic import (
    atomic_directory,
    atomic_path,
    recover_directory,
    replace_directory,
    write_json_atomic,
)
from cardiotwin.storage.identity import canonical_json, identity_hash, sha256_file
from cardiotwin.storage.lock import DirectoryLock, LockHeldError
from cardiotwin.storage.outdir import claim_output_dir

# ---- atomic files -------------------------------------------------------------------------

def test_atomic_path_replaces_only_on_success(tmp_path):
    p = tmp_path / "a.json"
    write_json_atomic(p, {"x": 1})
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("torn")
        raise RuntimeError("crash while writing")
    assert json.loads(p.read_text()) == {"x": 1}
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json"]  # temporary removed


def test_write_json_atomic_refuses_nan_and_keeps_old(tmp_path):
    p = tmp_path / "m.json"
    write_json_atomic(p, {"ok": True})
    with pytest.raises(ValueError):
        write_json_atomic(p, {"bad": float("nan")})
    assert json.loads(p.read_text()) == {"ok": True}


def test_kill_during_write_leaves_old_file(tmp_path):
    """A process killed while writing (before the rename) leaves the old content."""
    p = tmp_path / "data.bin"
    atomic.write_bytes_atomic(p, b"old")
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]);"
            "from cardiotwin.storage.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as t:\n"
            "    t.write_bytes(b'new-but-torn'); os._exit(9)\n")
    pkg_root = str(Path(atomic.__file__).resolve().parents[2])
    r = subprocess.run([sys.executable, "-c", code, str(p), pkg_root])
    assert r.returncode == 9
    assert p.read_bytes() == b"old"


# ---- atomic directories -------------------------------------------------------------------

def _make(d: Path, content: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.txt").write_text(content)
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "meta.json").write_text(json.dumps({"v": content}))


def _loadable(d: Path) -> str:
    recover_directory(d)
    assert json.loads((d / "sub" / "meta.json").read_text())["v"] == (d / "model.txt").read_text()
    return (d / "model.txt").read_text()


def test_atomic_directory_swaps_in_and_cleans_up(tmp_path):
    target = tmp_path / "model"
    _make(target, "old")
    with atomic_directory(target) as tmp:
        _make(tmp, "new")
        assert _loadable(target) == "old"      # readers still see the old one
    assert _loadable(target) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("fail_at", [1, 2])
def test_replace_directory_interrupted_at_each_rename(tmp_path, monkeypatch, fail_at):
    """A crash at either rename of the swap leaves a loadable directory (old or new)."""
    target, new = tmp_path / "model", tmp_path / ".model.new"
    _make(target, "old")
    _make(new, "new")
    real = os.replace
    calls = {"n": 0}

    def crashing(src, dst):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crashing)
    with pytest.raises(OSError):
        replace_directory(new, target)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert _loadable(target) in ("old", "new")


def test_crash_between_renames_is_recovered(tmp_path):
    """The state a power loss leaves after the first rename: NAME gone, .NAME.old complete."""
    target = tmp_path / "model"
    _make(tmp_path / ".model.old", "old")
    assert not target.exists()
    assert _loadable(target) == "old"
    assert not (tmp_path / ".model.old").exists()


def test_crash_before_old_removed_is_cleaned(tmp_path):
    target = tmp_path / "model"
    _make(target, "new")
    _make(tmp_path / ".model.old", "old")
    assert _loadable(target) == "new"
    assert not (tmp_path / ".model.old").exists()


# ---- identity -----------------------------------------------------------------------------

def test_canonical_json_is_order_independent_and_strict():
    assert canonical_json({"b": 1, "a": [1.5, None]}) == '{"a":[1.5,null],"b":1}'
    assert identity_hash({"a": 1, "b": 2}) == identity_hash({"b": 2, "a": 1})
    assert identity_hash({"a": 1}) != identity_hash({"a": 2})
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


def test_sha256_file_known_value(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    # FIPS 180-2 test vector
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ---- claiming an output directory -----------------------------------------------------------

def _claim(out, chash, **kw):
    return claim_output_dir(out, marker="manifest.json", fmt="t/1", config_hash=chash,
                            what="test store", **kw)


def test_claim_new_same_other_and_foreign(tmp_path):
    out = tmp_path / "run"
    assert _claim(out, "h1") is None and out.is_dir()
    write_json_atomic(out / "manifest.json", {"format": "t/1", "config_hash": "h1",
                                              "config": {"n": 1, "seed": 0}})
    assert _claim(out, "h1")["config_hash"] == "h1"
    with pytest.raises(ValueError, match=r"another test store.*n: 1 there, 2 here"):
        _claim(out, "h2", identity={"n": 2, "seed": 0})
    assert _claim(out, "h2", overwrite=True) is None
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*notes.txt"):
        _claim(other, "h1")
    assert _claim(other, "h1", own=lambda n: n == "notes.txt") is None


def test_claim_torn_or_foreign_marker(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "t/1", "conf')
    with pytest.raises(ValueError, match="cannot read test store manifest.json"):
        _claim(out, "h1")
    (out / "manifest.json").write_text('{"format": "other/1"}')
    with pytest.raises(ValueError, match="format 't/1' expected"):
        _claim(out, "h1")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        _claim(f, "h1")


# ---- the lock ------------------------------------------------------------------------------

def test_second_writer_refused_with_holder_named(tmp_path):
    with DirectoryLock(tmp_path, heartbeat_s=0.2, stale_after_s=5):
        with pytest.raises(LockHeldError) as e:
            DirectoryLock(tmp_path).acquire()
        msg = str(e.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in msg and "\n" not in msg
    assert not (tmp_path / ".cardiotwin.lock").exists()       # released
    DirectoryLock(tmp_path).acquire().release()              # free again


def test_stale_lock_of_dead_process_taken_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    rec = {"pid": p.pid, "host": socket.gethostname(), "heartbeat_unix": time.time(),
           "started_utc": "then", "token": "dead"}
    (tmp_path / ".cardiotwin.lock").write_text(json.dumps(rec))
    lock = DirectoryLock(tmp_path).acquire()
    try:
        assert lock.took_over["pid"] == p.pid
        assert json.loads((tmp_path / ".cardiotwin.lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_stale_heartbeat_from_other_host_taken_over(tmp_path):
    rec = {"pid": 1, "host": "elsewhere", "heartbeat_unix": time.time() - 3600}
    (tmp_path / ".cardiotwin.lock").write_text(json.dumps(rec))
    with DirectoryLock(tmp_path, stale_after_s=60) as lock:
        assert lock.took_over["host"] == "elsewhere"
    fresh = {"pid": 1, "host": "elsewhere", "heartbeat_unix": time.time()}
    (tmp_path / ".cardiotwin.lock").write_text(json.dumps(fresh))
    with pytest.raises(LockHeldError, match="elsewhere"):
        DirectoryLock(tmp_path, stale_after_s=60).acquire()


def test_heartbeat_keeps_a_long_run_alive(tmp_path):
    with DirectoryLock(tmp_path, heartbeat_s=0.1, stale_after_s=0.5):
        first = json.loads((tmp_path / ".cardiotwin.lock").read_text())["heartbeat_unix"]
        time.sleep(0.8)   # longer than stale_after_s: only the heartbeat keeps it live
        rec = json.loads((tmp_path / ".cardiotwin.lock").read_text())
        assert rec["heartbeat_unix"] > first
        with pytest.raises(LockHeldError):
            DirectoryLock(tmp_path, heartbeat_s=0.1, stale_after_s=0.5).acquire()
