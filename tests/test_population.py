"""Tests of population generation on Ray and the Parquet store (cardiotwin.population).

A local Ray cluster of 2 CPUs for the module; a 300 ms protocol and a 1 s AP run keep every run
to a few seconds (mostly actor start-up).
"""

import json
import shutil
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_same_rows, sorted_table

from cardiotwin.decimation import decimate
from cardiotwin.features import BATCH_KEYS
from cardiotwin.model import INFERRED_NAMES
from cardiotwin.population import (
    GenerationConfig,
    generate_population,
    list_to_numpy,
    open_store,
    sample_multipliers,
    sample_population,
)
from cardiotwin.population.actor import TEST_EXIT_MARKER, TEST_EXIT_ON_SHARD
from cardiotwin.population.batch import simulate_batch
from cardiotwin.population.manifest import PopulationManifest
from cardiotwin.protocols import load_protocol
from cardiotwin.storage.identity import canonical_json, sha256_file

N = 160
SEED = 3
AP_MS = 1000.0
def make_config(short_protocol_path, out, **kw) -> GenerationConfig:
    base = dict(n_cells=N, seed=SEED, protocol=str(short_protocol_path), ap_duration_ms=AP_MS,
                shard_size=50, n_workers=2, keep_rejected=True, out_dir=out)
    base.update(kw)
    return GenerationConfig(**base)


def run(short_protocol_path, out, actor_env=None, max_attempts=3, **kw):
    return generate_population(make_config(short_protocol_path, out, **kw), progress=False,
                               echo=None, actor_env=actor_env, max_attempts=max_attempts)


@pytest.fixture(scope="module")
def reference(ray_session, short_protocol_path, tmp_path_factory):
    """An uninterrupted run: 160 cells in shards of 50 (50, 50, 50, 10) on 2 actors, every cell
    kept."""
    return run(short_protocol_path, tmp_path_factory.mktemp("pop") / "reference")




# ---- a complete run -------------------------------------------------------------------------

def test_run_stores_every_cell_once_and_manifest_matches(reference, short_protocol_path):
    store = reference
    m = store.manifest
    t = sorted_table(store)
    ids = t.column("cell_id").to_numpy()
    np.testing.assert_array_equal(ids, np.arange(N))        # each cell exactly once
    statuses = t.column("status").to_numpy(zero_copy_only=False)
    counts = Counter(statuses.tolist())
    assert sum(counts.values()) == N
    assert set(counts) <= {"ok", "quiescent", "non_repolarizing", "unstable"}
    assert counts["ok"] > 0 and counts["ok"] < N             # the filter has work to do
    assert m["status"] == "complete"
    assert m["totals"]["n_cells"] == N and m["totals"]["rows"] == N == store.n_rows
    assert {k: v for k, v in m["totals"]["status_counts"].items() if v} == dict(counts)
    assert m["totals"]["filter"]["rejected_by_reason"] == {
        s: counts.get(s, 0) for s in ("quiescent", "non_repolarizing", "unstable",
                                      "off_target")}
    assert [s["n_cells"] for s in m["shards"]] == [50, 50, 50, 10]
    # valid Parquet, one file per shard, row counts and status counts as in the manifest
    for s in m["shards"]:
        f = store.path / s["file"]
        shard = pq.read_table(f)
        assert shard.num_rows == s["rows_kept"] == pq.read_metadata(f).num_rows
        sid = shard.column("cell_id").to_numpy()
        assert sid.min() >= s["first_cell_id"] and sid.max() < s["first_cell_id"] + s["n_cells"]
        sc = Counter(shard.column("status").to_numpy(zero_copy_only=False).tolist())
        assert {k: v for k, v in s["status_counts"].items() if v} == dict(sc)
    assert not list(store.path.glob("*.tmp"))
    # protocol, parameters, config hash
    proto = load_protocol(short_protocol_path)
    assert m["protocol_hash"] == proto.protocol_hash == store.protocol.protocol_hash
    assert m["parameter_names"] == list(INFERRED_NAMES)
    cfg = make_config(short_protocol_path, store.path)
    assert m["config"] == cfg.identity(proto.protocol_hash)
    assert m["config_hash"] == cfg.config_hash(proto.protocol_hash)
    assert json.loads(canonical_json(m["config"])) == m["config"]
    assert m["sampling"]["range"] == [0.6, 1.4] and m["sampling"]["seed"] == SEED
    assert m["i_total"]["n_samples"] == proto.n_samples == 3000
    assert m["code_version"] and m["runs"][-1]["cells_simulated"] == N
    assert m["cells_per_s"] > 0
    # the typed manifest, the sidecars' checksums and code version
    meta = PopulationManifest.from_dict(m)
    assert meta.i_total.n_samples == 3000 and meta.sampling.range == [0.6, 1.4]
    assert meta.code_versions == [m["code_version"]] == [meta.runs[-1].code_version]
    for s in meta.shards:
        side = json.loads((store.path / s.file.replace(".parquet", ".json")).read_text())
        assert side["sha256"] == s.sha256 == sha256_file(store.path / s.file)
        assert side["file_bytes"] == (store.path / s.file).stat().st_size
        assert side["code_version"] == m["code_version"]
        assert pq.ParquetFile(store.path / s.file).metadata.row_group(0).num_rows > 0
    # schema
    sch = store.schema
    assert str(sch.field("multipliers").type) == "fixed_size_list<element: float>[52]"
    assert str(sch.field("I_total").type) == "fixed_size_list<element: float>[3000]"
    assert str(sch.field("cell_id").type) == "int64" and str(sch.field("beating").type) == "bool"
    assert all(k in sch.names for k in BATCH_KEYS)


def test_rows_are_the_direct_simulation_of_their_multipliers(reference, short_protocol_path):
    t = sorted_table(reference)
    m = list_to_numpy(t.column("multipliers"))
    np.testing.assert_array_equal(m, sample_multipliers(N, 0.4, SEED).astype(np.float32))
    assert m.min() >= 0.6 and m.max() <= 1.4
    pick = np.array([0, 7, 51, 159])
    st, bm, itot, _ = simulate_batch(load_protocol(short_protocol_path), m[pick], AP_MS, 310.0)
    np.testing.assert_array_equal(list_to_numpy(t.column("I_total"))[pick], itot)
    np.testing.assert_array_equal(t.column("status").to_numpy(zero_copy_only=False)[pick], st)
    np.testing.assert_array_equal(t.column("apd90_ms").to_numpy()[pick],
                                  bm["apd90_ms"].astype(np.float32))


def test_streaming_reads(reference):
    seen, n = set(), 0
    for batch in reference.iter_batches(columns=["cell_id", "status"], batch_size=16):
        assert batch.num_rows <= 16 and batch.schema.names == ["cell_id", "status"]
        seen.update(batch.column(0).to_pylist())
        n += batch.num_rows
    assert n == N and seen == set(range(N))
    import pyarrow.dataset as ds

    ok = reference.read_table(columns=["cell_id"], filter=ds.field("status") == "ok")
    assert ok.num_rows == reference.manifest["totals"]["status_counts"]["ok"]


def test_filter_and_decimation(ray_session, short_protocol_path, reference, tmp_path):
    """Rejected cells dropped and counted; I_total averaged over blocks of 10 samples; the
    kept rows are the reference's ok rows (cell i depends only on (seed, i))."""
    store = run(short_protocol_path, tmp_path / "dec", n_cells=64, shard_size=32,
                keep_rejected=False, decimate_to_hz=1000)
    m = store.manifest
    t = sorted_table(store)
    ref = sorted_table(reference)
    ref_st = ref.column("status").to_numpy(zero_copy_only=False)[:64]
    ok_ids = np.flatnonzero(ref_st == "ok")
    np.testing.assert_array_equal(t.column("cell_id").to_numpy(), ok_ids)
    assert set(t.column("status").to_pylist()) == {"ok"}
    assert m["totals"]["rows"] == len(ok_ids) and m["totals"]["n_cells"] == 64
    assert m["totals"]["filter"]["dropped"] == 64 - len(ok_ids)
    assert m["i_total"]["decimation_factor"] == 10 and m["i_total"]["decimation"] == "mean"
    assert m["i_total"]["n_samples"] == 300 and m["i_total"]["sample_interval_ms"] == 1.0
    full = list_to_numpy(ref.column("I_total"))[ok_ids]
    np.testing.assert_array_equal(list_to_numpy(t.column("I_total")), decimate(full, 10, "mean"))
    np.testing.assert_allclose(store.i_total_times_ms()[:2], [0.45, 1.45])


# ---- determinism ----------------------------------------------------------------------------

@pytest.mark.parametrize("shard_size,n_workers", [(50, 1), (32, 4)])
def test_same_rows_whatever_the_sharding_and_actors(ray_session, short_protocol_path, reference,
                                                    tmp_path, shard_size, n_workers):
    """The reference has shards of 50 on 2 actors. 4 actors on 2 CPUs: two never start, and
    the run must not wait for them."""
    store = run(short_protocol_path, tmp_path / "pop", shard_size=shard_size, n_workers=n_workers)
    assert store.manifest["n_shards"] == -(-N // shard_size)
    assert store.manifest["runs"][-1]["n_workers"] == n_workers
    assert_same_rows(sorted_table(store), sorted_table(reference))


def test_qmc_samplers_are_independent_of_slicing():
    for sampler in ("sobol", "lhs"):
        whole = sample_population(sampler, 200, 0.3, seed=5)
        assert whole.shape == (200, 52) and whole.dtype == np.float32
        assert whole.min() >= 0.7 and whole.max() <= 1.3
        np.testing.assert_array_equal(
            np.concatenate([sample_population(sampler, 200, 0.3, 5, start=a, n=b - a)
                            for a, b in [(0, 64), (64, 130), (130, 200)]]), whole)
        assert not np.array_equal(whole, sample_population(sampler, 200, 0.3, seed=6))
    # Latin hypercube: one point per stratum in every dimension
    u = (sample_population("lhs", 200, 0.3, seed=5).astype(np.float64) - 0.7) / 0.6
    strata = np.floor(u * 200).astype(int).clip(0, 199)
    assert all(len(set(strata[:, j])) >= 198 for j in range(52))  # float32 rounding at edges
    # Sobol: cell i does not depend on the population size
    np.testing.assert_array_equal(sample_population("sobol", 100, 0.3, 5),
                                  sample_population("sobol", 200, 0.3, 5)[:100])


@pytest.mark.parametrize("sampler", ["lhs", "sobol"])
def test_qmc_samplers_through_ray(ray_session, short_protocol_path, tmp_path, sampler):
    """The LHS design travels through the object store; Sobol points are computed per shard."""
    store = run(short_protocol_path, tmp_path / "pop", n_cells=48, shard_size=20, sampler=sampler,
                spread=0.2)
    t = sorted_table(store)
    np.testing.assert_array_equal(t.column("cell_id").to_numpy(), np.arange(48))
    np.testing.assert_array_equal(list_to_numpy(t.column("multipliers")),
                                  sample_population(sampler, 48, 0.2, SEED))
    assert store.manifest["sampling"]["sampler"] == sampler


# ---- faults and resumption ------------------------------------------------------------------

def test_interrupted_run_resumes_to_the_same_store(ray_session, short_protocol_path, reference,
                                                   tmp_path):
    out = tmp_path / "pop"
    env = {TEST_EXIT_ON_SHARD: "2", TEST_EXIT_MARKER: str(tmp_path / "crashed")}
    # a crash in the middle of writing shard 2, with no retries: the run stops
    with pytest.raises(RuntimeError, match="shard 2"):
        run(short_protocol_path, out, actor_env=env, max_attempts=1)
    assert (tmp_path / "crashed").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert not (out / "shard-000002.parquet").exists()
    with pytest.raises(ValueError, match="not finished"):
        open_store(out)
    partial = open_store(out, allow_incomplete=True)
    assert 1 <= len(partial.files) <= 3
    assert out / "shard-000002.parquet" not in partial.files
    # more damage: a complete shard lost, a corrupt leftover .tmp, a truncated final file
    (out / "shard-000000.parquet").unlink(missing_ok=True)
    (out / "shard-000001.parquet.tmp").write_bytes(b"PAR1 garbage")
    if (out / "shard-000003.parquet").exists():
        data = (out / "shard-000003.parquet").read_bytes()
        (out / "shard-000003.parquet").write_bytes(data[: len(data) // 2])
    store = run(short_protocol_path, out)
    assert store.manifest["status"] == "complete"
    assert not list(out.glob("*.tmp"))
    assert len(store.manifest["runs"]) == 2
    t = sorted_table(store)
    np.testing.assert_array_equal(t.column("cell_id").to_numpy(), np.arange(N))
    assert_same_rows(t, sorted_table(reference))
    assert store.manifest["totals"] == reference.manifest["totals"] | {
        "actor_seconds_by_stage": store.manifest["totals"]["actor_seconds_by_stage"]}
    # a re-run of a complete store does no work
    again = run(short_protocol_path, out)
    assert again.manifest["runs"][-1]["cells_simulated"] == 0


def test_a_dying_actor_does_not_fail_the_run(ray_session, short_protocol_path, reference, tmp_path):
    env = {TEST_EXIT_ON_SHARD: "1", TEST_EXIT_MARKER: str(tmp_path / "crashed")}
    store = run(short_protocol_path, tmp_path / "pop", actor_env=env)
    assert (tmp_path / "crashed").exists()                  # the actor did die
    assert store.manifest["runs"][-1]["actor_failures"] == 1
    assert_same_rows(sorted_table(store), sorted_table(reference))


def test_config_hashes_of_existing_settings_are_unchanged():
    """Hashes computed before the move onto settings.Settings and storage.identity (existing
    stores must resume): run-only fields, shard_timeout_s included, do not enter."""
    c = GenerationConfig(n_cells=160, seed=3, ap_duration_ms=1000.0, shard_size=50,
                         keep_rejected=True, out_dir="x", shard_timeout_s=30.0, n_workers=7)
    h = c.load_protocol().protocol_hash
    assert c.config_hash(h) == "51aaf5db232ebe2dd8ca05ed76a14ac0498e3a3e18855c49bed865e27adfaab0"
    c = GenerationConfig(n_cells=1000, spread=0.2, sampler="sobol", decimate_to_hz=1000,
                         temperature_K=298, out_dir="x", n_workers=3)
    h = c.load_protocol().protocol_hash
    assert c.config_hash(h) == "ffe1c07f69062223f4a79793d93f80c84225a460e15785b329f49037e8845d20"
    assert c.model_copy(update={"seed": 1}).config_hash(h) != c.config_hash(h)


# ---- bad input: clear errors before any work ------------------------------------------------

def test_invalid_settings_are_refused(short_protocol_path, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="n_cells"):
        make_config(short_protocol_path, out, n_cells=0)
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="spread"):
            make_config(short_protocol_path, out, spread=bad)
    with pytest.raises(ValueError, match="seed"):
        make_config(short_protocol_path, out, seed=-1)
    with pytest.raises(ValueError, match="sampler"):
        make_config(short_protocol_path, out, sampler="grid")
    with pytest.raises(ValueError, match="temperature_K"):
        make_config(short_protocol_path, out, temperature_K=400)
    with pytest.raises(ValueError, match="ap_duration_ms must be a multiple of 0.1 ms"):
        make_config(short_protocol_path, out, ap_duration_ms=1000.05)
    for field, bad in (("shard_size", 0), ("n_workers", 0), ("shard_timeout_s", -1.0),
                       ("decimate_to_hz", 0.0), ("protocol", "  ")):
        with pytest.raises(ValueError, match=field):
            make_config(short_protocol_path, out, **{field: bad})
    # one plain line per field, expected and found
    with pytest.raises(ValueError) as e:
        GenerationConfig.create(n_cells=-5, spread=2, out_dir=out)
    assert str(e.value) == ("n_cells: Input should be greater than 0, found -5; spread: Input "
                            "should be less than 1, found 2")
    assert not out.exists()


def _no_work(monkeypatch):
    import cardiotwin.population.generate as gen

    def fail(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(gen, "_run_pending", fail)


def test_bad_files_and_directories_are_refused_before_any_work(short_protocol_path, tmp_path,
                                                               monkeypatch):
    _no_work(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="protocol file not found: .*nope.csv"):
        run(tmp_path / "nope.csv", out)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected columns"):
        run(bad, out)
    with pytest.raises(ValueError, match="must divide the protocol's sampling rate"):
        run(short_protocol_path, out, decimate_to_hz=3000)
    assert not out.exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not writable"):
        run(short_protocol_path, blocker / "out")
    with pytest.raises(ValueError, match="not a directory"):
        run(short_protocol_path, blocker)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no manifest.json"):
        run(short_protocol_path, other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_another_config_on_an_existing_store_is_refused(reference, short_protocol_path, tmp_path,
                                                        monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(reference.path, out)
    (out / "shard-000001.parquet.tmp").write_bytes(b"leftover")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    _no_work(monkeypatch)
    with pytest.raises(ValueError, match=r"holds another population store \(config hash "
                                         r"[0-9a-f]{12}, this one [0-9a-f]{12}\): seed: 3 "
                                         r"there, 4 here; use a new --out"):
        run(short_protocol_path, out, seed=4)
    with pytest.raises(ValueError, match="holds another population store"):
        run(short_protocol_path, out, shard_size=32)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert after == before                                  # nothing touched


def test_command_line_errors(short_protocol_path, tmp_path, capsys):
    from cardiotwin.cli import main

    assert main(["generate", "--n-cells", "0", "--out", str(tmp_path / "o")]) == 2
    assert "n_cells: Input should be greater than 0, found 0" in capsys.readouterr().err
    assert main(["generate", "--n-cells", "5", "--range", "1.2", "--out",
                 str(tmp_path / "o")]) == 2
    assert "spread: Input should be less than 1, found 1.2" in capsys.readouterr().err
    assert main(["generate", "--n-cells", "5", "--protocol", str(tmp_path / "x.json"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "protocol file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
