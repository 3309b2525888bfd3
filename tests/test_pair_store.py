"""The reconstruction pair store's guarantees (cardiotwin.reconstruct.pairs): the config hash of
existing stores is unchanged, a second writer and other stores are refused, a damaged shard is
detected and regenerated, and a run resumes after a crash with identical rows."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from cardiotwin.reconstruct.pairs import (
    FORMAT,
    PairConfig,
    generate_pairs,
    load_pairs,
    read_pair_manifest,
)
from cardiotwin.reconstruct.windows import WindowConfig
from cardiotwin.storage.lock import LOCK_NAME, DirectoryLock, LockHeldError


def _cfg(**kw) -> PairConfig:
    base = {"n_cells": 3, "shard_size": 1, "seed": 3, "prepace_ms": 500.0,
            "duration_ms": 1200.0, "drugs": ("e4031",), "drug_fraction": 0.5,
            "window": WindowConfig(length=512, pre_ms=100.0)}
    base.update(kw)
    return PairConfig(**base)


def _rows(path) -> dict[str, np.ndarray]:
    d = load_pairs(path)
    return {k: v for k, v in d.items() if k not in ("manifest", "split")}


def _assert_same_rows(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "store"
    m = generate_pairs(_cfg(), out, n_workers=2, log=None)
    assert m["status"] == "complete" and m["n_shards"] == 3
    return out


def _copy(store, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(store, dst)
    return dst


def _stamps(out):
    """shard index -> (inode, mtime in ns) of its file: a shard written again (an atomic
    rename of a new file) changes both; one left alone keeps them."""
    return {int(p.name[6:12]): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(out.glob("shard-*.parquet"))}


# ---- without Ray ------------------------------------------------------------------------------

def test_config_hash_of_existing_stores_unchanged():
    # values computed by the previous implementation (hashlib + json.dumps, sorted, compact)
    assert PairConfig().config_hash() == (
        "ebc6bcd92971f8cb8bdbf2685ddeab0dcd32c74eded1f4df5390989ec4ef18f2")
    assert PairConfig(n_cells=4, shard_size=2, seed=3, prepace_ms=1000.0, duration_ms=1500.0,
                      drugs=("e4031",), drug_fraction=0.5,
                      window=WindowConfig(length=512, pre_ms=100.0)).config_hash() == (
        "add026402f4274683139d23887731021dafb09a176369aec5b5ed3ca39aee479")
    assert _cfg(seed=4).config_hash() != _cfg().config_hash()


def test_config_errors_name_the_field():
    for field, value in (("n_cells", 0), ("spread", 1.0), ("drug_fraction", 1.5),
                         ("duration_ms", 0.0), ("temperature_K", 400.0), ("shard_size", 0)):
        with pytest.raises(ValueError, match=f"^{field}: .*found {value}"):
            PairConfig.create(**{field: value})


def test_refusals_before_any_work(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_pairs(_cfg(), f, log=None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty .*notes\.txt"):
        generate_pairs(_cfg(), foreign, log=None)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing written
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "cardiotwin.population/1"}))
    with pytest.raises(ValueError, match="not a pair store"):
        generate_pairs(_cfg(), other, log=None)
    with pytest.raises(ValueError, match="no such pair store manifest"):
        load_pairs(foreign)


def test_second_writer_refused(tmp_path):
    out = tmp_path / "locked"
    # a live writer (this process) holds the directory
    with DirectoryLock(out), pytest.raises(LockHeldError, match=f"pid {os.getpid()} on "):
        generate_pairs(_cfg(), out, log=None)
    assert not (out / "manifest.json").exists()


# ---- with Ray ---------------------------------------------------------------------------------

def test_store_refuses_another_config_and_other_code(store, tmp_path):
    with pytest.raises(ValueError, match=r"another pair store .*seed: 3 there, 4 here"):
        generate_pairs(_cfg(seed=4), store, log=None)
    out = _copy(store, tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["code_version"]
    (out / "manifest.json").write_text(json.dumps(dict(m, code_version="0.0.0-other")))
    with pytest.raises(ValueError, match="written by cardiotwin 0.0.0-other.*allow_code_change"):
        generate_pairs(_cfg(), out, log=None)
    stamps = _stamps(out)
    m2 = generate_pairs(_cfg(), out, allow_code_change=True, log=None)  # nothing to simulate
    assert m2["code_version"] == m["code_version"] and _stamps(out) == stamps


def test_damaged_shard_detected_and_regenerated(store, tmp_path):
    out = _copy(store, tmp_path)
    before = read_pair_manifest(out)
    assert before["shards"][1]["rows_kept"] > 0
    shard = out / before["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2  # inside the column data: the footer (row count) stays intact
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shard-000001\.parquet: .*damaged"):
        load_pairs(out)
    w0 = _stamps(out)
    generate_pairs(_cfg(), out, n_workers=2, log=None)
    w1 = _stamps(out)
    assert w1[0] == w0[0] and w1[2] == w0[2]  # intact shards kept
    assert w1[1] != w0[1]                      # the damaged one simulated again
    _assert_same_rows(_rows(out), _rows(store))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_resume_after_a_simulated_crash(store, tmp_path):
    out = _copy(store, tmp_path)
    before = read_pair_manifest(out)
    # the state a kill leaves: manifest still running, shard 2 torn mid-write (only its
    # temporary), shard 1 written but its sidecar never, and the dead run's lock
    m = dict(before, status="running", shards=before["shards"][:1])
    (out / "manifest.json").write_text(json.dumps(m))
    s2 = out / "shard-000002.parquet"
    torn = s2.read_bytes()[:100]
    (out / "shard-000002.parquet.tmp").write_bytes(torn)  # the previous writer's name
    (out / ".shard-000002.parquet.4242.x1y2.tmp").write_bytes(torn)  # storage.atomic's
    s2.unlink()
    (out / "shard-000002.json").unlink()
    (out / "shard-000001.json").unlink()
    now = time.time()
    (out / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                             "token": "dead", "heartbeat_unix": now,
                                             "started_unix": now}))
    with pytest.raises(ValueError, match="not finished"):
        load_pairs(out)
    w0 = _stamps(out)
    assert 2 not in w0                         # shard 2 exists only as a torn temporary
    after = generate_pairs(_cfg(), out, n_workers=2, log=None)
    assert after["status"] == "complete"
    w1 = _stamps(out)
    assert w1[0] == w0[0] and w1[1] != w0[1] and 2 in w1
    _assert_same_rows(_rows(out), _rows(store))
    left = sorted(p.name for p in out.iterdir() if not p.name.startswith("shard-"))
    assert left == ["manifest.json"]  # no temporaries, the lock released
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
