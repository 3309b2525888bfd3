"""Tests of the drug catalog, Hill block, EAD detection and the population drug screen
(cardiotwin.drugs).

The screen runs on a local Ray cluster of 2 CPUs: 200 cells around the baseline at 310 K,
E-4031 at 0, 10, 50 and 100 nM, 5 s free-running towards steady state then 5 s recorded
(800 simulations, ~15-30 s on 2 cores).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.drugs import (
    ChannelBlock,
    ScreenConfig,
    builtin_catalog,
    drug_from_dict,
    drug_inputs,
    fraction_remaining,
    get_drug,
    read_drugs,
)
from cardiotwin.drugs.analysis import analyze_cell
from cardiotwin.drugs.catalog import drug_key, make_drug
from cardiotwin.drugs.summary import wilson_ci
from cardiotwin.features import analyze_trace
from cardiotwin.model import BASELINE, inputs_from_named
from cardiotwin.model.late_sodium import G_NAL, LateSodium
from cardiotwin.model.parameters import CONDUCTANCE_SCALE, PARAMETER_INDEX
from cardiotwin.simulate import simulate_current_clamp

REQUIRED = ("E-4031", "cisapride", "verapamil", "quinidine", "quinine", "dofetilide",
            "nifedipine", "flecainide", "lidocaine")
CIPA_28 = ("quinidine", "bepridil", "dofetilide", "sotalol", "ibutilide", "azimilide",
           "disopyramide", "vandetanib", "chlorpromazine", "cisapride", "terfenadine",
           "ondansetron", "risperidone", "domperidone", "clarithromycin", "astemizole",
           "droperidol", "pimozide", "clozapine", "diltiazem", "mexiletine", "ranolazine",
           "verapamil", "metoprolol", "tamoxifen", "loratadine", "nifedipine", "nitrendipine")
DATA = Path(__file__).parent / "data"
CATALOG_ENTRIES = [(d.name, b) for d in builtin_catalog().values() for b in d.blocks]


# ---- catalog and Hill block -----------------------------------------------------------------

def test_catalog_has_the_required_drugs_each_value_with_a_source():
    names = {d.name for d in builtin_catalog().values()}
    assert set(REQUIRED) <= names
    assert set(CIPA_28) <= names
    keys = [drug_key(n) for n in names]
    assert len(keys) == len(set(keys)) == len(builtin_catalog())      # one entry per drug
    for name, b in CATALOG_ENTRIES:
        assert b.current in CONDUCTANCE_SCALE or b.current == "INaL", (name, b.current)
        assert len(b.source) > 20 and any(ch.isdigit() for ch in b.source), (name, b.current)
    e4031 = get_drug("e4031")                       # names ignore case and punctuation
    assert e4031.name == "E-4031"
    assert [(b.current, b.ic50_nM, b.hill) for b in e4031.blocks] == [("IKr", 7.0, 1.0)]


@pytest.mark.parametrize("name,block", CATALOG_ENTRIES,
                         ids=[f"{n}-{b.current}" for n, b in CATALOG_ENTRIES])
def test_hill_block_is_exactly_half_at_ic50_on_the_model_inputs(name, block):
    if block.current == "INaL":          # not a model input: the late-sodium variant's scale
        drug = make_drug(name, [block])
        assert drug.late_sodium_remaining(block.ic50_nM) == 0.5
        np.testing.assert_array_equal(drug.apply(BASELINE, block.ic50_nM)[0], BASELINE)
        g = LateSodium(scale=drug.late_sodium_remaining(block.ic50_nM)).per_cell(3)
        np.testing.assert_array_equal(g, np.full(3, 0.5 * G_NAL))
        assert get_drug(name).fraction_remaining(block.ic50_nM)["INaL"] == 0.5
        return
    scale = PARAMETER_INDEX[CONDUCTANCE_SCALE[block.current]]
    inputs = drug_inputs(BASELINE, [block], block.ic50_nM)
    assert inputs.shape == (1, BASELINE.size)
    assert inputs[0, scale] == 0.5 * BASELINE[scale]
    others = np.arange(BASELINE.size) != scale
    np.testing.assert_array_equal(inputs[0, others], BASELINE[others])
    assert get_drug(name).fraction_remaining(block.ic50_nM)[block.current] == 0.5


def test_hill_formula_and_drug_application():
    assert fraction_remaining(0.0, 7.0, 1.0) == 1.0
    assert fraction_remaining(21.0, 7.0, 2.0) == pytest.approx(0.1, abs=1e-15)
    assert fraction_remaining(7.0, 7.0, 0.3) == 0.5
    verapamil = get_drug("verapamil")
    two = np.vstack([BASELINE, inputs_from_named({"ICaL.p_CaL": 2.0})])
    out = verapamil.apply(two, 500.0)
    assert "INaL" in verapamil.currents                 # applied by the variant only
    for b in verapamil.model_blocks():
        k = PARAMETER_INDEX[CONDUCTANCE_SCALE[b.current]]
        expected = 1.0 / (1.0 + (500.0 / b.ic50_nM) ** b.hill)
        np.testing.assert_allclose(out[:, k], expected, rtol=1e-14)
    np.testing.assert_array_equal(out[1, PARAMETER_INDEX["ICaL.p_CaL"]],
                                  2.0 * BASELINE[PARAMETER_INDEX["ICaL.p_CaL"]])


# ---- bad input ------------------------------------------------------------------------------

def test_unknown_drug_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown drug 'aspirin'") as e:
        get_drug("aspirin")
    assert all(n in str(e.value) for n in REQUIRED)
    with pytest.raises(ValueError, match="unknown drug 'aspirin'"):
        ScreenConfig(drug="aspirin")


def test_negative_concentration_is_refused():
    with pytest.raises(ValueError, match=r"concentration must be a finite number of nM >= 0"):
        fraction_remaining(-1.0, 7.0, 1.0)
    with pytest.raises(ValueError, match=r"concentration must be a finite number of nM >= 0"):
        get_drug("E-4031").apply(BASELINE, -10.0)
    with pytest.raises(ValueError, match=r"concentrations must be finite and >= 0 nM, found -5"):
        ScreenConfig(drug="E-4031", concentrations_nM=[0, -5])
    with pytest.raises(ValueError, match="distinct"):
        ScreenConfig(drug="E-4031", concentrations_nM=[10, 10])


@pytest.mark.parametrize("ic50", [0, -7, float("nan"), "seven"])
def test_ic50_must_be_positive(ic50):
    with pytest.raises(ValueError, match=r"blocks\.0\.ic50_nM: Input should be (greater than 0|"
                                         r"a finite number|a valid number)"):
        drug_from_dict({"name": "x", "blocks": [{"current": "IKr", "ic50_nM": ic50}]})
    with pytest.raises(ValueError, match="IC50 must be a finite number of nM > 0"):
        fraction_remaining(1.0, float(ic50) if ic50 != "seven" else -1.0, 1.0)


def test_hill_and_current_errors_name_the_field():
    with pytest.raises(ValueError, match=r"drug 'x'\.blocks\.0\.hill: Input should be greater "
                                         r"than 0, found 0"):
        drug_from_dict({"name": "x", "blocks": [{"current": "IKr", "ic50_nM": 7, "hill": 0}]})
    with pytest.raises(ValueError, match=r"unknown current 'IKq'; expected one of IK1, IKr"):
        drug_from_dict({"name": "x", "currents": {"IKq": {"ic50_nM": 7}}})
    assert ChannelBlock(current="INaL", ic50_nM=100).current == "INaL"   # the variant's
    with pytest.raises(ValueError, match="blocks only INaL, which the default model lacks"):
        ScreenConfig(drug={"name": "x", "blocks": [{"current": "INaL", "ic50_nM": 1}]})
    assert ScreenConfig(drug={"name": "x", "blocks": [{"current": "INaL", "ic50_nM": 1}]},
                        late_sodium=True).late_sodium
    with pytest.raises(ValueError, match="given more than once"):
        drug_from_dict({"name": "x", "blocks": [{"current": "IKr", "ic50_nM": 7},
                                                {"current": "hERG", "ic50_nM": 8}]})


def test_user_defined_drugs_from_csv_json_and_dict(tmp_path):
    csv_file = tmp_path / "drugs.csv"
    csv_file.write_text("drug,current,ic50_nM,hill,source\n"
                        "Compound A,hERG,50,1.2,lab assay 2024\n"
                        "Compound A,ICaL,800,1,lab assay 2024\n")
    a = read_drugs(csv_file)["compounda"]
    assert a.currents == ("IKr", "ICaL") and a.blocks[0].source == "lab assay 2024"
    cfg = ScreenConfig(drug="compound-a", drug_file=csv_file)
    assert cfg.resolve_drug() == a
    assert "drug_file" not in cfg.identity() and cfg.identity()["drug"]["name"] == "Compound A"
    js = tmp_path / "drugs.json"
    js.write_text(json.dumps({"drugs": [{"name": "B", "currents": {"INa": {"ic50_nM": 3e3}}}]}))
    b = get_drug("b", js)
    assert b.blocks[0].hill == 1.0 and b.blocks[0].source == "user-defined"
    assert ScreenConfig(drug={"name": "C", "blocks": [{"current": "IKs", "ic50_nM": 9}]}
                        ).resolve_drug().currents == ("IKs",)
    bad = tmp_path / "bad.csv"
    bad.write_text("drug,current,ic50_nM,hill\nD,IKr,-3,1\n")
    with pytest.raises(ValueError,
                       match=r"bad\.csv, line 2 \(D\)\.ic50_nM: .* greater than 0, found '-3'"):
        read_drugs(bad)
    with pytest.raises(ValueError, match="must be .csv or .json"):
        (tmp_path / "d.txt").write_text("x")
        read_drugs(tmp_path / "d.txt")


def test_paced_screen_does_not_count_stimuli_as_eads():
    from cardiotwin.drugs import run_screen

    # paced at 1 Hz, many cells fire on their own in between: stimuli land in phase 3
    cfg = ScreenConfig(drug="E-4031", concentrations_nM=[0], n_cells=32, prepace_ms=3000,
                       record_ms=4000, pacing_period_ms=1000, pacing_amplitude=6,
                       n_keep_traces=0)
    seen = []
    row = run_screen(cfg, progress=False, use_ray=False, echo=None,
                     on_progress=lambda done, total: seen.append((done, total))
                     ).per_concentration[0]
    assert seen[-1] == (32, 32)
    assert row["n_ead"] == 0
    assert row["fraction_beating"] > 0.9                 # quiescent cells are paced too


def test_out_dir_with_foreign_files_is_refused_before_any_work(tmp_path):
    from cardiotwin.drugs import run_screen

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no summary.json"):
        run_screen(ScreenConfig(drug="E-4031", n_cells=2, out_dir=tmp_path), progress=False,
                   use_ray=False, echo=None)


# ---- configuration and the screen directory (in this process, no Ray) -----------------------

def test_config_hash_of_an_existing_config_is_unchanged():
    # recorded with the previous code (hashlib over its own canonical JSON): screens written
    # then are still recognized as the same settings
    assert ScreenConfig(drug="E-4031").config_hash() == \
        "cb600e97e1cf031b92e669a44378f602550df65846e91660120ee32b2d832a7d"
    # verapamil's catalog values are the CiPA table's now: its rows from before, as a drug file
    # (tests/data/cipa_verapamil_before.csv, the previous drugs/data/catalog.csv rows)
    assert ScreenConfig(drug="verapamil", concentrations_nM=[0, 5], n_cells=7, prepace_ms=100,
                        record_ms=200, record_interval_ms=1, pacing_period_ms=1000,
                        twin_multipliers={"IKr.g_Kr": 1.1},
                        drug_file=DATA / "cipa_verapamil_before.csv").config_hash() == \
        "842301c07257578a2cc0d0efb8c272bac041a33d0b8fdf485c7aa5dd0273a857"
    assert ScreenConfig(drug="E-4031", seed=1).config_hash() != \
        ScreenConfig(drug="E-4031").config_hash()


@pytest.mark.parametrize("field, value, match", [
    ("n_cells", 0, r"^n_cells: Input should be greater than 0, found 0$"),
    ("batch_cells", -1, r"^batch_cells: .*greater than 0"),
    ("seed", -1, r"^seed: .*greater than or equal to 0"),
    ("spread", 1.0, r"^spread: .*less than 1"),
    ("temperature_K", 400, r"^temperature_K: .*less than or equal to 330"),
    ("record_ms", float("nan"), r"^record_ms: .*finite"),
    ("prepace_ms", -5, r"^prepace_ms: .*greater than or equal to 0"),
    ("pacing_period_ms", 0, r"^pacing_period_ms: .*greater than 0"),
    ("ead_min_repolarization", 0.95, r"^ead_min_repolarization: .*less than 0.9"),
    ("n_keep_traces", -2, r"^n_keep_traces: "),
])
def test_bad_screen_settings_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        ScreenConfig.create(drug="E-4031", **{field: value})


def test_cross_field_checks_remain():
    with pytest.raises(ValueError, match=r"record_ms \(10.0\) must be a whole number"):
        ScreenConfig.create(drug="E-4031", record_ms=10, record_interval_ms=3)
    with pytest.raises(ValueError, match="pacing_width_ms .* shorter than pacing_period_ms"):
        ScreenConfig.create(drug="E-4031", pacing_period_ms=4, pacing_width_ms=5)


def test_screen_subcommand_registers_and_parses(tmp_path):
    import argparse

    from cardiotwin.drugs.cli_args import config_from_args, register, run

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["screen", "--drug", "E-4031", "--concentrations-nm", "0,30",
                      "--n-cells", "12", "--out", str(tmp_path / "s")])
    assert a.func is run
    cfg = config_from_args(a)
    assert (cfg.n_cells, cfg.concentrations_nM, cfg.out_dir) == (12, (0.0, 30.0),
                                                                 tmp_path / "s")
    a = p.parse_args(["screen", "--drug", "E-4031", "--n-cells", "0", "--out", "x"])
    with pytest.raises(ValueError, match="n_cells: Input should be greater than 0"):
        config_from_args(a)


TINY_SCREEN = dict(drug="E-4031", concentrations_nM=[0, 50], n_cells=3, prepace_ms=200,
                   record_ms=600, n_keep_traces=1, figures=False)


def _tiny(out, **kw):
    from cardiotwin.drugs import run_screen

    return run_screen(ScreenConfig(**TINY_SCREEN, out_dir=out, **kw), progress=False,
                      use_ray=False, echo=None)


def test_screen_files_are_checksummed_and_damage_is_reported_by_name(tmp_path):
    from cardiotwin.drugs import load_screen
    from cardiotwin.runtime import code_version
    from cardiotwin.storage import sha256_file

    out = tmp_path / "s"
    r = _tiny(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["code_version"] == code_version()
    for name in ("results.parquet", "cells.parquet", "traces.parquet"):
        assert summary["sha256"][name] == sha256_file(out / name)
    assert sorted(p.name for p in out.iterdir()) == ["cells.parquet", "results.parquet",
                                                     "summary.json", "traces.parquet"]
    assert _tiny(out).summary["finished_utc"] == summary["finished_utc"]     # reused
    good = r.column("apd90_ms")
    # one byte of the results changed: refused by name, never read back
    original = (out / "results.parquet").read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    (out / "results.parquet").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"results\.parquet is damaged: SHA-256"):
        load_screen(out)
    with pytest.raises(ValueError, match=r"results\.parquet is damaged"):
        _tiny(out)                                       # reusing it is refused too
    (out / "results.parquet").write_bytes(original)
    (out / "cells.parquet").unlink()
    with pytest.raises(ValueError, match=r"cells\.parquet: missing"):
        load_screen(out)
    again = _tiny(out, overwrite=True)                   # recomputed: the same numbers
    np.testing.assert_array_equal(again.column("apd90_ms"), good)
    np.testing.assert_array_equal(load_screen(out).column("apd90_ms"), good)


def test_screen_of_another_code_version_is_refused_unless_overwritten(tmp_path):
    out = tmp_path / "s"
    first = _tiny(out)
    s = json.loads((out / "summary.json").read_text())
    s["code_version"] = "0.0.1"
    (out / "summary.json").write_text(json.dumps(s))
    with pytest.raises(ValueError, match=r"written by cardiotwin 0\.0\.1, not by this code"):
        _tiny(out)
    again = _tiny(out, overwrite=True)
    assert again.summary["code_version"] != "0.0.1"
    assert again.summary["finished_utc"] >= first.summary["finished_utc"]
    assert json.loads((out / "summary.json").read_text())["code_version"] != "0.0.1"


def test_second_writer_is_refused_with_one_line(tmp_path):
    from cardiotwin.storage import DirectoryLock, LockHeldError

    out = tmp_path / "s"
    with DirectoryLock(out):                             # another run writes there
        with pytest.raises(LockHeldError, match=r"being written by another run \(pid") as e:
            _tiny(out)
        assert "\n" not in str(e.value)
        assert not (out / "summary.json").exists()
    assert _tiny(out).summary["status"] == "complete"    # once it is gone
    assert not (out / ".cardiotwin.lock").exists()


def test_wilson_interval():
    lo, hi = wilson_ci(3, 100)
    assert lo == pytest.approx(0.010255, abs=1e-6) and hi == pytest.approx(0.084519, abs=1e-6)
    assert wilson_ci(0, 0) == (None, None)
    assert wilson_ci(0, 50)[0] == 0.0


# ---- EAD detection --------------------------------------------------------------------------

# A cell that keeps a -75 mV resting potential under strong IKr block: in the Kernik model the
# baseline under > ~60% IKr block depolarizes to a quiescent ~-23 mV state (no AP, no EAD), so
# repolarization reserve is added elsewhere (IK1 x1.2, IKs x2.5, If x1.5, INa m6 x0.8, which
# lowers the INa window current). With ICaL x1.75 and E-4031 80 nM (92% IKr block), every beat
# has a phase-3 EAD (ICaL reactivation); without either change it has none.
FORCED = {"INa.m6": 0.8, "IK1.g_K1": 1.2, "IKs.g_Ks": 2.5, "If.g_f": 1.5}


# Cell 1748 of the +-20% population of seed 0 fires spike-and-dome APs at control: the
# phase-1 notch (a ~10 mV dip after the spike, then the dome) passes the feature EAD criterion,
# which searches from the peak; the screen's criterion starts at the APD30 level.
NOTCH_CELL = 1748


def _cells():
    from cardiotwin.model.parameters import INFERRED_INDEX
    from cardiotwin.population import sample_population

    e4031 = get_drug("E-4031")
    forced_cal = inputs_from_named(dict(FORCED, **{"ICaL.p_CaL": 1.75}))
    forced = inputs_from_named(FORCED)
    notch = BASELINE.copy()
    notch[INFERRED_INDEX] *= sample_population("uniform", 4000, 0.2, 0, NOTCH_CELL, 1)[0]
    rows = {"baseline": BASELINE[None, :],
            "forced: IKr block + ICaL up": e4031.apply(forced_cal, 80.0),
            "forced, no IKr block": forced_cal[None, :],
            "forced, no ICaL increase": e4031.apply(forced, 80.0),
            "spike-and-dome control cell": notch[None, :]}
    res = simulate_current_clamp(5000.0, np.vstack(list(rows.values())), prepace_ms=5000.0,
                                 record_interval_ms=0.5)
    out = {k: analyze_cell(res.t_ms, res.v_mV[i], segments=True) for i, k in enumerate(rows)}
    out["notch features"] = analyze_trace(res.t_ms, res.v_mV[-1])
    return out


@pytest.fixture(scope="module")
def cells():
    return _cells()


def test_ead_detector_finds_forced_eads(cells):
    c = cells["forced: IKr block + ICaL up"]
    assert c["outcome"] == "ead" and c["ead"]
    assert c["n_eads"] >= 1 and c["n_eads"] == c["n_complete"]
    assert c["ead_max_mV"] > 10.0                      # a large re-depolarization, not noise
    assert len(c["ead_segments"]) == c["n_eads"]
    assert all(e > s for s, e in c["ead_segments"])


def test_no_eads_without_the_forcing_or_in_the_unblocked_baseline(cells):
    base = cells["baseline"]
    assert base["outcome"] == "beating" and base["n_eads"] == 0 and base["n_beats"] >= 4
    assert 380.0 < base["apd90_ms"] < 450.0             # Kernik baseline at 310 K: ~414 ms
    for k in ("forced, no IKr block", "forced, no ICaL increase"):
        assert cells[k]["status"] == "ok" and cells[k]["n_eads"] == 0, (k, cells[k])


def test_phase1_notch_is_not_an_ead(cells):
    assert cells["notch features"].n_eads >= 1          # the feature criterion flags it
    c = cells["spike-and-dome control cell"]
    assert c["outcome"] == "beating" and c["n_eads"] == 0 and c["n_complete"] >= 1


# ---- the screen on Ray ----------------------------------------------------------------------

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def screen(ray_session, tmp_path_factory):
    from cardiotwin.drugs import run_screen

    cfg = ScreenConfig(drug="E-4031", concentrations_nM=[0, 10, 50, 100], n_cells=200,
                       spread=0.2, seed=0, temperature_K=310.0, batch_cells=100,
                       out_dir=tmp_path_factory.mktemp("screen") / "e4031")
    return cfg, run_screen(cfg, progress=False, echo=None)


def test_e4031_screen_runs_end_to_end(screen):
    cfg, r = screen
    assert r.results.num_rows == 800 and r.cells.num_rows == 200
    for name in ("results.parquet", "cells.parquet", "traces.parquet", "summary.json",
                 "dose_response.png", "apd90_violins.png", "ap_traces.png"):
        assert (cfg.out_dir / name).stat().st_size > 0, name
    assert not list(cfg.out_dir.glob("*.tmp*"))
    rows = r.per_concentration
    assert [row["concentration_nM"] for row in rows] == [0, 10, 50, 100]
    assert rows[1]["block"]["IKr"] == pytest.approx(10 / 17, abs=1e-6)
    for row in rows:
        assert sum(row["outcome_counts"].values()) == 200
        lo, hi = row["ead_ci"]
        assert 0.0 <= lo <= row["ead_incidence"] <= hi <= 1.0
    assert rows[0]["fraction_arrested"] == 0.0
    assert rows[-1]["fraction_arrested"] > rows[1]["fraction_arrested"] > 0.2
    assert r.summary["timing"]["n_simulations"] == 800
    assert {t["concentration_nM"] for t in r.traces} == {0, 10, 50, 100}


def test_apd90_prolongs_monotonically_with_e4031(screen):
    _, r = screen
    rows = r.per_concentration
    paired = [row["apd90_paired_ms"]["mean"] for row in rows]
    assert rows[0]["apd90_paired_ms"]["n"] >= 3
    assert all(b > a + 10.0 for a, b in zip(paired, paired[1:], strict=False)), paired
    # every cell with a full AP at a concentration, too: longer than control at each one
    # (this unpaired mean is not monotonic at 100 nM: the few cells still beating there are
    # the least IKr-dependent ones)
    means = [row["apd90_ms"]["mean"] for row in rows]
    assert all(m > means[0] + 100.0 for m in means[1:]), means
    assert 330.0 < means[0] < 450.0


def test_finished_screen_is_reused_and_reloaded(screen):
    from cardiotwin.drugs import load_screen, run_screen

    cfg, r = screen
    again = run_screen(cfg, progress=False, echo=None)      # same settings: no simulation
    assert again.summary["finished_utc"] == r.summary["finished_utc"]
    loaded = load_screen(cfg.out_dir)
    np.testing.assert_array_equal(loaded.column("apd90_ms"), r.column("apd90_ms"))
    with pytest.raises(ValueError, match=r"holds another drug screen .*seed: 0 there, 1 here"):
        run_screen(ScreenConfig.create(**{**cfg.model_dump(), "seed": 1}), progress=False,
                   echo=None)


def test_screen_around_a_twin_json(tmp_path):
    """`cardiotwin screen --twin-multipliers twin.json` takes the twin as the twin command and
    the /twin endpoint write it; a file that is not a twin is refused, naming it."""
    import json as _json

    import numpy as np

    from cardiotwin.cli import build_parser
    from cardiotwin.drugs.cli_args import config_from_args
    from cardiotwin.model.parameters import INFERRED_NAMES
    from cardiotwin.twin.inference import Twin

    m = np.linspace(0.85, 1.15, len(INFERRED_NAMES))
    twin = Twin(list(INFERRED_NAMES), m, m, np.zeros_like(m), "h" * 64, 310.0)
    path = tmp_path / "cell7.json"
    path.write_text(_json.dumps(twin.to_json()))
    args = build_parser().parse_args(["screen", "--drug", "E-4031", "--twin-multipliers",
                                      str(path), "--out", str(tmp_path / "s")])
    cfg = config_from_args(args)
    assert cfg.twin_name == "cell7"
    assert dict(cfg.twin_multipliers) == pytest.approx(dict(zip(INFERRED_NAMES, m, strict=True)))
    bad = tmp_path / "bad.json"
    bad.write_text('{"fit": {}}')
    args = build_parser().parse_args(["screen", "--drug", "E-4031", "--twin-multipliers",
                                      str(bad), "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="bad.json: expected a twin JSON"):
        config_from_args(args)
