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


# ---- couplings per cell, the fast AP clamp, splits (without Ray) -----------------------------

def test_more_couplings_per_cell_extend_the_first():
    """junctions_per_cell K: the first coupling's rows are those of K = 1 (same draws, same
    order), the others record the same iAP through another junction and noise; the hash of
    K = 1 is that of a store written before the field existed."""
    from cardiotwin.reconstruct.pairs import NEW_FIELDS, simulate_cells

    one, _ = simulate_cells(_cfg(), 0, 3)
    two, counts = simulate_cells(_cfg(junctions_per_cell=2), 0, 3)
    assert len(one["cell_id"]) > 0 and counts["ok"] >= 1
    j = np.asarray(two["junction"])
    assert set(j.tolist()) == {0, 1} and set(one["junction"]) == {0}
    for k in one:
        a = np.asarray(one[k])
        b = np.asarray(two[k])[j == 0]
        assert np.array_equal(a, b), k
    iap = np.asarray(two["iap_mV"])
    eap = np.asarray(two["eap_uV"])
    first = {(c, b): i for i, (c, b, jj) in enumerate(zip(two["cell_id"], two["beat"], j,
                                                           strict=True)) if jj == 0}
    pairs = [(first[(c, b)], i) for i, (c, b, jj) in enumerate(zip(two["cell_id"], two["beat"],
             j, strict=True)) if jj == 1 and (c, b) in first]
    assert pairs
    anchor = np.asarray(two["anchor_ms"])
    for i0, i1 in pairs:   # the anchor is the eAP spike's peak: within 10 ms of the upstroke
        assert abs(anchor[i0] - anchor[i1]) <= 10.0 and not np.allclose(eap[i0], eap[i1])
        d = int(round(anchor[i1] - anchor[i0]))             # samples of 1 ms: the same AP
        a, b = (iap[i0][d:], iap[i1][:len(iap[i1]) - d]) if d >= 0 else \
            (iap[i0][:d], iap[i1][-d:])
        assert np.array_equal(a, b)
    assert NEW_FIELDS == {"junctions_per_cell": 1}
    assert _cfg(junctions_per_cell=1).config_hash() == _cfg().config_hash()
    assert _cfg(junctions_per_cell=2).config_hash() != _cfg().config_hash()


def test_ap_clamp_kernel_call_equals_the_protocol_path():
    import itertools

    from cardiotwin.protocols import Protocol, Segment
    from cardiotwin.reconstruct.pairs import FINE_DT_MS, ap_clamp_currents
    from cardiotwin.simulate import simulate_current_clamp, simulate_voltage_clamp

    cc = simulate_current_clamp(300.0, None, record_interval_ms=FINE_DT_MS, prepace_ms=1000.0)
    y0 = simulate_current_clamp(1000.0, None, record_interval_ms=1000.0).final_state[0]
    v = cc.v_mV[0].astype(np.float64)
    got = ap_clamp_currents(v, cc_inputs(), y0, 310.0)
    segs = tuple(Segment(FINE_DT_MS, a, b) for a, b in itertools.pairwise(v))
    ref = simulate_voltage_clamp(Protocol(segs, FINE_DT_MS, 310.0), cc_inputs()[None, :],
                                 record_currents=True, initial_state=y0[None, :]).currents
    assert set(got) == set(ref) and len(got["I_Na"]) == len(v) - 1
    for k in got:
        assert np.array_equal(got[k], ref[k][0].astype(np.float64)), k
    with pytest.raises(ValueError, match="v_mV: expected a finite 1-D trace"):
        ap_clamp_currents(v[:1], cc_inputs(), y0, 310.0)


def cc_inputs():
    from cardiotwin.model.parameters import BASELINE

    return BASELINE.copy()


def test_calibration_split():
    from cardiotwin.reconstruct.pairs import split_of

    ids = np.arange(20)
    assert split_of(ids).tolist().count("train") == 16
    s = split_of(ids, calibration=True)
    assert s[7] == s[17] == "cal" and s[8] == "val" and s[9] == "test"
    assert s.tolist().count("train") == 14


# ---- streaming (with Ray: the module's store) -------------------------------------------------

def test_stream_reads_each_window_once_per_epoch_in_bounded_groups(store):
    from cardiotwin.reconstruct.stream import PairStream
    from cardiotwin.reconstruct.train import load_pair_data

    ref = load_pair_data(store, ("train", "cal", "val", "test"), calibration=True)
    s = PairStream(store, shards_in_memory=1)
    n = len(ref.x["train"])
    assert s.count("train") == n > 0 and s.info["shards"] == 3
    key = lambda a: np.sort(np.round(a.reshape(len(a), -1).sum(axis=1), 3))  # noqa: E731
    epochs = []
    for e in range(2):
        bs = list(s.batches("train", 2, seed=1, epoch=e))
        assert all(len(x) == 2 for x, _ in bs[:-1]) and len(bs) == s.steps("train", 2)
        x = np.concatenate([b[0] for b in bs])
        y = np.concatenate([b[1] for b in bs])
        assert np.array_equal(key(x), key(ref.x["train"]))
        assert np.array_equal(key(y), key(ref.y["train"]))
        epochs.append(x)
    assert not np.array_equal(epochs[0], epochs[1])          # a new order each epoch
    # at most shards_in_memory shards are read per group
    reads = []
    orig = s._read
    s._read = lambda shards, split, **kw: reads.append(len(shards)) or orig(shards, split, **kw)
    list(s.batches("train", 4))
    assert max(reads) == 1 and len(reads) == 3
    # the held-out splits as arrays; the tf.data pipeline yields the same windows
    t = s.load("test")
    assert t["x"].shape == (len(ref.x["test"]), 512, 1)
    import tensorflow as tf

    ds = PairStream(store, shards_in_memory=2).dataset("train", 3)
    got = np.concatenate([x.numpy() for x, _ in ds])
    assert isinstance(ds, tf.data.Dataset) and np.array_equal(key(got), key(ref.x["train"]))
    with pytest.raises(ValueError, match="shards_in_memory must be >= 1"):
        PairStream(store, shards_in_memory=0)
