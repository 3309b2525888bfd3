"""``cardiotwin coverage`` (issue 18): real AP phenotypes against a population store's.

The matching criterion on hand-made arrays (each tolerance, NaN, chunking); the real phenotypes
of the recordings in tests/data and refused input; the report, figure and command on a small
store written here without Ray (hand-chosen biomarkers, the store's own schema and writer);
one Ray test runs the command on a tiny generated store.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.coverage import (
    PHENOTYPE_KEYS,
    MatchCriterion,
    coverage_report,
    read_real_phenotypes,
    run_coverage,
    select_trace_files,
    store_phenotypes,
)
from cardiotwin.coverage.figures import coverage_figure
from cardiotwin.coverage.phenotypes import real_phenotype

DATA = Path(__file__).parent / "data"
BEATING = DATA / "real_4_021921_1_alex_control__pre-drug_spont_0-3s.csv.gz"
QUIESCENT = DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s.csv.gz"
ONE_AP = DATA / "real_5_031521_4_alex_verapamil__pre-drug_spont_7-10s.csv.gz"
PACED = DATA / "real_042721_4_quinine__pre-drug_paced.csv.gz"
NOT_A_TRACE = DATA / "set1_multipliers.csv"


def row(cl=500.0, apd=200.0, mdp=-60.0, amp=100.0, dvdt=20.0):
    return [cl, apd, mdp, amp, dvdt]


# ---- the criterion ------------------------------------------------------------------------

def test_each_tolerance_bounds_the_match():
    c = MatchCriterion()                  # 10%, 10%, 3 mV
    real = np.array([row()])
    inside = [row(cl=545), row(cl=455), row(apd=219), row(apd=181), row(mdp=-57.1),
              row(mdp=-62.9), row(cl=549, apd=219, mdp=-57.1, amp=10, dvdt=500)]
    outside = [row(cl=551), row(cl=449), row(apd=221), row(apd=179), row(mdp=-56.9),
               row(mdp=-63.1), row(cl=500, apd=200, mdp=-50)]
    for s in inside:
        matched, nearest = c.match(real, np.array([s]))
        assert matched.tolist() == [True] and nearest.tolist() == [0], s
    for s in outside:
        matched, nearest = c.match(real, np.array([s]))
        assert matched.tolist() == [False] and nearest.tolist() == [0], s
    # several synthetic cells: the nearest in the scaled (max-norm) distance wins
    synth = np.array(outside + [row(cl=530, apd=205)] + [row(cl=510, apd=218)])
    matched, nearest = c.match(real, synth)
    assert matched.tolist() == [True] and nearest.tolist() == [len(outside)]
    idx, dist = c.nearest(real, synth)
    assert idx.tolist() == [len(outside)] and dist[0] == pytest.approx(0.6)
    # wider tolerances match what 10% did not
    assert MatchCriterion(cl_rel=0.2).match(real, np.array([row(cl=590)]))[0].tolist() == [True]
    assert MatchCriterion(mdp_abs_mV=11).match(real, np.array([row(mdp=-50)]))[0].all()


def test_undefined_values_and_empty_inputs():
    c = MatchCriterion()
    real = np.array([row(), row(cl=np.nan), row(apd=np.nan)])
    synth = np.array([row(apd=np.nan), row(cl=np.inf), row(cl=510)])
    matched, nearest = c.match(real, synth)
    assert matched.tolist() == [True, False, False]
    assert nearest.tolist() == [2, -1, -1]
    # an undefined amplitude or dV/dt does not matter (not matched on)
    assert c.match(real[:1], np.array([row(amp=np.nan, dvdt=np.nan)]))[0].tolist() == [True]
    m, n = c.match(real, np.empty((0, 5)))
    assert m.tolist() == [False] * 3 and n.tolist() == [-1] * 3
    m, n = c.match(np.empty((0, 5)), synth)
    assert m.shape == (0,) and n.shape == (0,)
    only_nan = np.array([row(mdp=np.nan)] * 4)
    assert c.match(real[:1], only_nan)[1].tolist() == [-1]


def test_chunking_gives_the_same_answer():
    rng = np.random.default_rng(7)
    synth = np.column_stack([rng.uniform(250, 2500, 5000), rng.uniform(150, 550, 5000),
                             rng.uniform(-78, -40, 5000), rng.uniform(40, 120, 5000),
                             rng.uniform(5, 200, 5000)])
    synth[rng.choice(5000, 200, replace=False), 1] = np.nan
    real = np.column_stack([rng.uniform(200, 3500, 40), rng.uniform(50, 450, 40),
                            rng.uniform(-75, -38, 40), rng.uniform(40, 110, 40),
                            rng.uniform(1, 30, 40)])
    real[3, 0] = np.nan
    c = MatchCriterion()
    ref_idx, ref_d = c.nearest(real, synth)
    # brute force, one real cell at a time
    for i in range(real.shape[0]):
        r = real[i]
        d = np.max(np.abs(synth[:, :3] - r[:3]) / np.array([0.1 * r[0], 0.1 * r[1], 3.0]),
                   axis=1)
        d[np.isnan(d)] = np.inf
        if not np.isfinite(r[:3]).all():
            assert ref_idx[i] == -1
            continue
        assert ref_idx[i] == int(np.argmin(d)) and ref_d[i] == pytest.approx(d.min())
    for chunk in (1, 7, 333, 4999, 5000, 100000):
        idx, d = c.nearest(real, synth, chunk_size=chunk)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(d, ref_d)
    matched = c.match(real, synth)[0]
    assert 0 < matched.sum() < real.shape[0]        # the random case holds both outcomes


def test_criterion_is_validated_and_described():
    c = MatchCriterion(cl_rel=0.15, apd90_rel=0.1, mdp_abs_mV=3)
    assert c.describe() == ("a real cell is matched when some synthetic cell lies within 15% "
                            "of its cycle length, 10% of its APD90 and 3 mV of its MDP")
    assert "\n" not in c.describe()
    for bad in (dict(cl_rel=0), dict(apd90_rel=-0.1), dict(mdp_abs_mV=float("nan")),
                dict(cl_rel=float("inf"))):
        with pytest.raises(ValueError, match="match criterion"):
            MatchCriterion(**bad)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        c.match(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="chunk_size"):
        c.match(np.zeros((2, 5)), np.zeros((4, 5)), chunk_size=0)


# ---- real phenotypes -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_cells():
    return {c.name: c for c in read_real_phenotypes([BEATING, QUIESCENT, ONE_AP, PACED])}


def test_real_phenotypes_of_the_recordings(real_cells):
    beat = real_cells[BEATING.name.removesuffix(".csv.gz")]
    assert beat.status == "ok" and beat.beating and not beat.paced and beat.comparable
    v = beat.values
    assert set(v) == set(PHENOTYPE_KEYS)
    assert 400 < v["cycle_length_ms"] < 600 and 150 < v["apd90_ms"] < 210
    assert -72 < v["mdp_mV"] < -64 and 90 < v["amplitude_mV"] < 130 and v["dvdt_max_V_per_s"] > 5
    quiet = real_cells[QUIESCENT.name.removesuffix(".csv.gz")]
    assert quiet.status == "quiescent" and not quiet.beating and not quiet.comparable
    assert np.isnan(quiet.values["cycle_length_ms"])
    assert not real_cells[ONE_AP.name.removesuffix(".csv.gz")].beating
    paced = real_cells[PACED.name.removesuffix(".csv.gz")]
    assert paced.paced and not paced.comparable
    assert paced.to_dict()["values"]["cycle_length_ms"] is None      # JSON-ready


def test_directories_and_include(tmp_path):
    sel = select_trace_files(DATA, include="real_*spont*")
    assert [f.name for f in sel.files] == sorted(f.name for f in DATA.glob("real_*spont*.csv.gz"))
    assert len(sel.files) == 3
    # explicit files and a directory, duplicates once
    sel = select_trace_files([BEATING, DATA], include="real_4_*")
    assert [f.name for f in sel.files] == [BEATING.name]
    # a directory's non-trace CSVs are skipped, not refused
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a_trace.csv.gz").write_bytes(BEATING.read_bytes())
    (d / "metadata.csv").write_text("cell,drug,Cm_pF\nx,control,40\n")
    (d / "notes.txt").write_text("not a csv")
    cells = read_real_phenotypes(d)
    assert [c.name for c in cells] == ["a_trace"]


def test_bad_real_input_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.csv: no such file"):
        read_real_phenotypes([tmp_path / "missing.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: directory holds no .csv"):
        read_real_phenotypes(tmp_path / "empty")
    with pytest.raises(ValueError, match="set1_multipliers.csv.*time column"):
        read_real_phenotypes([NOT_A_TRACE])
    with pytest.raises(ValueError, match="no real recordings given"):
        read_real_phenotypes([])
    with pytest.raises(ValueError, match=r"matches --include '\*nothing\*'"):
        read_real_phenotypes(DATA, include="*nothing*")
    txt = tmp_path / "trace.txt"
    txt.write_text("t_ms,v_mV\n0,1\n")
    with pytest.raises(ValueError, match="trace.txt: not a trace file"):
        read_real_phenotypes([txt])
    bad = tmp_path / "bad.csv"
    bad.write_text("t_ms,v_mV\n0,-80\n0.1,oops\n0.2,-80\n")
    with pytest.raises(ValueError, match=r"bad.csv: v_mV: line 3.*'oops'"):
        read_real_phenotypes([bad])
    short = tmp_path / "short.csv"
    short.write_text("t_ms,v_mV\n0,-80\n0.1,-80\n")
    with pytest.raises(ValueError, match="short.csv: cannot analyse the trace"):
        real_phenotype(short)
    only_meta = tmp_path / "meta"
    only_meta.mkdir()
    (only_meta / "m.csv").write_text("cell,drug\nx,y\n")
    with pytest.raises(ValueError, match="no AP trace among the selected files.*m.csv"):
        read_real_phenotypes(only_meta)


# ---- a small store written here (no Ray) -----------------------------------------------------

def write_store(out: Path, values: np.ndarray, statuses: list[str], shard_size: int = 4) -> Path:
    """A complete population store of ``len(values)`` cells with these biomarkers (rows in
    PHENOTYPE_KEYS order) and statuses, written with the store's schema and shard writer."""
    from cardiotwin.features import BATCH_KEYS
    from cardiotwin.model.parameters import INFERRED_NAMES, N_INFERRED
    from cardiotwin.population.manifest import PopulationManifest
    from cardiotwin.population.store import ShardWriter, make_schema, make_table
    from cardiotwin.storage.atomic import write_json_atomic

    out.mkdir(parents=True)
    n, ns, chash = len(values), 4, "f" * 64
    schema = make_schema(ns)
    shards = []
    for index, lo in enumerate(range(0, n, shard_size)):
        hi = min(n, lo + shard_size)
        bm = {k: np.zeros(hi - lo) for k in BATCH_KEYS}
        for j, k in enumerate(PHENOTYPE_KEYS):
            bm[k] = values[lo:hi, j]
        w = ShardWriter(out, index, schema)
        w.write(make_table(schema, np.arange(lo, hi), np.ones((hi - lo, N_INFERRED)),
                           np.array(statuses[lo:hi]), bm, np.zeros((hi - lo, ns))))
        counts = {s: statuses[lo:hi].count(s) for s in set(statuses[lo:hi])}
        shards.append(w.commit({"index": index, "first_cell_id": lo, "n_cells": hi - lo,
                                "config_hash": chash, "status_counts": counts}))
    m = PopulationManifest(
        status="complete", config={"n_cells": n}, config_hash=chash, protocol="{}",
        protocol_hash="0" * 64, parameter_names=list(INFERRED_NAMES),
        sampling={"sampler": "uniform", "spread": 0.4, "range": [0.6, 1.4], "seed": 0},
        i_total={"n_samples": ns, "sample_interval_ms": 1.0, "source_sample_interval_ms": 1.0,
                 "source_n_samples": ns},
        n_shards=len(shards), shard_size=shard_size, shards=shards)
    write_json_atomic(out / "manifest.json", m.to_dict())
    return out


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, real_cells):
    """10 cells: cell 3 (ok) matches the beating recording (CL +5%, APD90 -5%, MDP +2 mV),
    cell 6 would too but is quiescent, the others are ok and not within the tolerances."""
    b = real_cells[BEATING.name.removesuffix(".csv.gz")].vector()
    vals = np.array([row(cl=2000, apd=400, mdp=-75, amp=110, dvdt=60) for _ in range(10)],
                    dtype=float)
    vals[:, 0] += np.arange(10) * 50
    vals[3, :3] = b[:3] * [1.05, 0.95, 1.0] + [0, 0, 2.0]
    vals[6, :3] = b[:3]
    vals[8, 1] = np.nan
    statuses = ["ok"] * 10
    statuses[6] = "quiescent"
    return write_store(tmp_path_factory.mktemp("cov") / "store", vals, statuses)


def test_store_phenotypes(small_store):
    from cardiotwin.population import open_store

    ids, vals = store_phenotypes(small_store)
    assert ids.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9] and vals.shape == (9, 5)
    assert vals.dtype == np.float64 and np.isnan(vals[ids.tolist().index(8), 1])
    ids2, vals2 = store_phenotypes(open_store(small_store), statuses=("ok", "quiescent"))
    assert ids2.tolist() == list(range(10))
    assert store_phenotypes(small_store, statuses=("unstable",))[0].size == 0
    with pytest.raises(ValueError, match="statuses must be among"):
        store_phenotypes(small_store, statuses=("fine",))


def test_report_fields_and_figure(small_store, tmp_path):
    reals = [BEATING, QUIESCENT, PACED]
    rep = coverage_report(small_store, reals, MatchCriterion())
    t = rep["totals"]
    assert t == {"real_cells": 3, "counted": 1, "matched": 1, "fraction_matched": 1.0,
                 "not_beating": 2, "paced": 0}
    by = {c["name"]: c for c in rep["cells"]}
    b = by[BEATING.name.removesuffix(".csv.gz")]
    assert b["matched"] is True and b["counted"] and b["nearest"]["cell_id"] == 3
    assert b["scaled_distance"] == pytest.approx(2 / 3)
    assert set(b["nearest"]["values"]) == set(PHENOTYPE_KEYS)
    q = by[QUIESCENT.name.removesuffix(".csv.gz")]
    assert q["counted"] is False and q["matched"] is None and q["status"] == "quiescent"
    assert rep["criterion"]["text"] == MatchCriterion().describe()
    assert "not counted" in rep["note"] and rep["unmatched"] == []
    syn = rep["percentiles"]["synthetic"]
    assert set(syn) == set(PHENOTYPE_KEYS) and syn["apd90_ms"]["n"] == 8
    assert syn["cycle_length_ms"]["p1"] <= syn["cycle_length_ms"]["p50"] \
        <= syn["cycle_length_ms"]["p99"]
    assert rep["percentiles"]["real_counted"]["mdp_mV"]["n"] == 1
    assert rep["store"]["n_synthetic"] == 9 and rep["store"]["statuses"] == ["ok"]
    assert rep["summary"].startswith("matched 1 of 1 beating real cells (100%)")
    json.dumps(rep, allow_nan=False)
    # tighter: the cell 3 is 5% off in CL and APD90, 2 mV in MDP
    tight = coverage_report(small_store, reals, MatchCriterion(cl_rel=0.04))
    assert tight["totals"]["matched"] == 0 and tight["unmatched"] == [b["name"]]
    # the quiescent cell 6 is an exact match once quiescent cells count
    allq = coverage_report(small_store, reals, MatchCriterion(cl_rel=0.04),
                           statuses=("ok", "quiescent"))
    assert allq["cells"][0]["nearest"]["cell_id"] == 6 and allq["totals"]["matched"] == 1
    png = coverage_figure(tight, store_phenotypes(small_store)[1], tmp_path / "f.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "f.png").read_bytes() == png


def test_run_coverage_writes_and_claims_the_directory(small_store, tmp_path):
    out = tmp_path / "cov"
    rep = run_coverage(small_store, [BEATING, QUIESCENT], out)
    assert sorted(p.name for p in out.iterdir()) == ["coverage.json", "coverage.png"]
    on_disk = json.loads((out / "coverage.json").read_text())
    assert on_disk["format"] == "cardiotwin.coverage/1" and on_disk["totals"] == rep["totals"]
    assert on_disk["figure"] == "coverage.png"
    run_coverage(small_store, [BEATING, QUIESCENT], out)            # same inputs: rewritten
    with pytest.raises(ValueError, match="holds another coverage report.*criterion"):
        run_coverage(small_store, [BEATING, QUIESCENT], out, MatchCriterion(cl_rel=0.2))
    run_coverage(small_store, [BEATING], out, MatchCriterion(cl_rel=0.2), overwrite=True)
    assert json.loads((out / "coverage.json").read_text())["criterion"]["cl_rel"] == 0.2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        run_coverage(small_store, [BEATING], foreign)


def test_command_line(small_store, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["coverage", str(small_store), "--real", str(DATA), "--include", "real_*",
               "--out", str(out), "--cl-tol", "0.04"])
    text = capsys.readouterr().out
    assert rc == 0
    assert text.startswith("matched 0 of 1 beating real cells (0%) by 9 synthetic ok cells "
                           "(within 4% CL, 10% APD90, 3 mV MDP); 3 not beating")
    assert "not matched: real_4_021921_1" in text and "nearest synthetic cell 3" in text
    assert "skipped (not AP traces): real_vc_steps_5_031221_2_protocol.csv" in text
    assert (out / "coverage.json").is_file() and (out / "coverage.png").is_file()
    # no --out: printed only
    assert main(["coverage", str(small_store), "--real", str(BEATING)]) == 0
    assert capsys.readouterr().out.startswith("matched 1 of 1 beating real cells (100%)")
    for argv, msg in [
        ([str(tmp_path / "nostore"), "--real", str(BEATING)], "is not a population store"),
        ([str(small_store), "--real", str(tmp_path / "none.csv")], "none.csv: no such file"),
        ([str(small_store), "--real", str(NOT_A_TRACE)], "set1_multipliers.csv"),
        ([str(small_store), "--real", str(DATA), "--include", "*zzz*"], "matches --include"),
        ([str(small_store), "--real", str(BEATING), "--mdp-tol-mv", "0"], "mdp_abs_mV"),
        ([str(small_store), "--real", str(BEATING), "--out", str(out)],
         "holds another coverage report"),
    ]:
        assert main(["coverage", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("cardiotwin: error: ") and msg in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:        # --real is required (argparse: exit 2)
        main(["coverage", str(small_store)])
    assert e.value.code == 2


# ---- a generated store (Ray) -----------------------------------------------------------------

@pytest.mark.ray
def test_command_on_a_generated_store(ray_session, short_protocol_path, tmp_path, capsys):
    from cardiotwin.population import GenerationConfig, generate_population

    store = generate_population(GenerationConfig(
        n_cells=12, seed=2, protocol=str(short_protocol_path), ap_duration_ms=3000.0,
        shard_size=6, n_workers=2, keep_rejected=True, out_dir=str(tmp_path / "pop")),
        progress=False, echo=None)
    n_ok = store.meta.totals.status_counts.get("ok", 0)
    assert n_ok > 0
    out = tmp_path / "cov"
    assert main(["coverage", str(store.path), "--real", str(BEATING), str(QUIESCENT),
                 "--out", str(out)]) == 0
    assert f"by {n_ok} synthetic ok cells" in capsys.readouterr().out
    rep = json.loads((out / "coverage.json").read_text())
    ids, vals = store_phenotypes(store)
    assert rep["store"]["n_synthetic"] == n_ok == ids.size
    status = store.read_table(columns=["cell_id", "status", "apd90_ms"]).to_pydict()
    ok = {i: a for i, s, a in zip(status["cell_id"], status["status"], status["apd90_ms"],
                                  strict=True) if s == "ok"}
    assert sorted(ok) == ids.tolist()
    np.testing.assert_allclose(vals[:, 1], [ok[i] for i in ids.tolist()], rtol=1e-6)
    assert (out / "coverage.png").stat().st_size > 10000
