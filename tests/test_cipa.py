"""Tests of the CiPA table, the late-sodium model variant, the risk metrics, the leave-one-out
classifier and ``cardiotwin cipa`` (cardiotwin.drugs.cipa_table, cardiotwin.model.late_sodium,
cardiotwin.cipa).

The CiPA table is the package's copy of ../shared/data/cipa/cipa_28_drugs.csv (FDA CiPA
newCiPA.csv); tests/data/cipa_* hold the small files made from it. The end-to-end run is 4 drugs
x 3 doses on 6 cells for 1.5 s each, in this process (no Ray).
"""

import csv
import json

import numpy as np
import pytest

from cardiotwin.cipa import classify as C
from cardiotwin.cipa import metrics as M
from cardiotwin.drugs.cipa_table import CHANNELS, cipa28, cipa_drugs, read_cipa_table
from cardiotwin.model import late_sodium as L
from cardiotwin.model.parameters import BASELINE

HEADER = ["drug", *[f"{c}{s}" for c in CHANNELS for s in ("h", "IC50")], "freedrugStrauss",
          "freedrug", "CiPA", "wendyhERGIC50", "wendyhERGh", "therapeutic"]


def _table(tmp_path, rows, header=HEADER):
    path = tmp_path / "table.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---- the CiPA table ------------------------------------------------------------------------

def test_the_28_drugs_with_categories_cmax_and_zero_pairs_as_no_block():
    rows = cipa28()
    assert len(rows) == 28 and {r.set for r in rows} == {"training", "validation"}
    assert sum(r.set == "training" for r in rows) == 12
    counts = [sum(r.category == k for r in rows) for k in range(3)]
    assert counts == [9, 11, 8]                             # low, intermediate, high
    t = cipa_drugs()
    assert t["flecainide"].set == "extra" and t["flecainide"].cmax_free_nM == 753.0
    # free Cmax in nM (the table's freedrug column is in uM for these)
    assert t["sotalol"].cmax_free_nM == 14690 and t["dofetilide"].cmax_free_nM == 2
    assert t["ibutilide"].cmax_free_nM == 100
    # 0, 0 pairs are no block; the others are the table's numbers
    assert "IKs" not in t["dofetilide"].drug.currents
    assert "ICaL" not in t["ranolazine"].drug.currents
    assert t["ranolazine"].block("INaL") == (7884.47, 0.94)
    assert t["quinidine"].block("IKr") == (343.3833442, 1.025055937)
    for r in rows:
        assert all(b.source.startswith("FDA CiPA drug table") for b in r.drug.blocks)


def test_serves_post_screens_accepts_every_cipa_name(tmp_path):
    from types import SimpleNamespace

    from cardiotwin.service.errors import ApiError
    from cardiotwin.service.parsing import screen_config

    limits = SimpleNamespace(screen_batch_cells=50, screen_max_cells=200,
                             screen_max_kept_traces=8, screen_max_samples_per_cell=1e6,
                             screen_budget_cell_ms=1e12)
    for row in cipa_drugs().values():
        doc = {"drug": row.name.upper(), "n_cells": 4, "late_sodium": True}
        assert screen_config(doc, tmp_path, limits).resolve_drug().name == row.name
    with pytest.raises(ApiError, match="blocks only INaL") as e:
        screen_config({"drug": {"name": "x", "blocks": [{"current": "INaL", "ic50_nM": 1}]}},
                      tmp_path, limits)
    assert e.value.status == 400


def test_table_errors_name_the_file_line_and_column(tmp_path):
    good = ["x", *["0"] * 14, "1", "1", "0", "0", "0", "5"]
    assert read_cipa_table(_table(tmp_path, [good]))["x"].drug.blocks == ()
    half = list(good)
    half[3] = "1"                                   # hERG Hill 1, IC50 0
    with pytest.raises(ValueError, match=r"line 2 \(x\): hERG has IC50 0 and Hill 1"):
        read_cipa_table(_table(tmp_path, [half]))
    bad = list(good)
    bad[17] = "3"
    with pytest.raises(ValueError, match="CiPA must be 0, 1 or 2, found '3'"):
        read_cipa_table(_table(tmp_path, [bad]))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['drug'\] of the CiPA"):
        read_cipa_table(_table(tmp_path, [good[1:]], HEADER[1:]))


def test_a_drug_with_no_block_changes_nothing(tmp_path):
    from cardiotwin.drugs.task import ScreenTask, simulate_block

    none = read_cipa_table(_table(tmp_path, [["nothing", *["0"] * 14, "1", "1", "0", "0",
                                              "0", "5"]]))["nothing"].drug
    assert none.blocks == () and none.fraction_remaining(1e6) == {}
    inputs = np.repeat(BASELINE[None], 3, axis=0)
    np.testing.assert_array_equal(none.apply(inputs, 1e6), inputs)
    assert none.late_sodium_remaining(1e6) == 1.0
    control = read_cipa_table(_table(tmp_path, [["ctl", *["0"] * 14, "1", "1", "0", "0", "0",
                                                 "5"]]))["ctl"].drug
    base = dict(concentrations_nM=(0.0, 1e6), twin_inputs=BASELINE.copy(), temperature_K=310.0,
                prepace_ms=200.0, record_ms=1000.0, record_interval_ms=0.5,
                pacing_period_ms=500.0, pacing_amplitude=3.0, pacing_width_ms=5.0,
                depolarized_mdp_mV=-60.0, ead_min_repolarization=0.3, n_keep_traces=0,
                trace_interval_ms=1.0, single_thread=False, late_sodium=True,
                record_charge=True)
    mult = np.random.default_rng(0).uniform(0.8, 1.2, (3, 52)).astype(np.float32)
    ids = np.arange(3)
    at_dose = simulate_block(ScreenTask(drug=none, **base), ids, mult, 1)["columns"]
    at_zero = simulate_block(ScreenTask(drug=control, **base), ids, mult, 0)["columns"]
    for k, v in at_zero.items():
        np.testing.assert_array_equal(at_dose[k], v, err_msg=k)


# ---- the late sodium current ---------------------------------------------------------------

def test_late_sodium_has_the_published_steady_state_and_voltage_dependence():
    # ORd 2011: mL_inf half at -42.85 mV, slope 5.264 mV; hL_inf half at -87.61 mV, slope 7.488
    assert L.ml_inf(-42.85) == 0.5 and L.hl_inf(-87.61) == 0.5
    assert L.ml_inf(-42.85 + 5.264) == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-12)
    assert L.hl_inf(-87.61 + 7.488) == pytest.approx(1 / (1 + np.exp(1)), rel=1e-12)
    assert abs(L.G_NAL - 0.0075 * 2.661) < 1e-15
    # the kernels' functions: long clamps reach G mL_inf hL_inf (V - E_Na) at every V
    e_na = 70.0
    for v in (-100.0, -80.0, -60.0, -40.0, -20.0, 0.0, 20.0):
        i, m, h = L.clamp(v, e_na, L.G_NAL, 8000.0, 0.1, 1.0, 0.0, 1.0)
        assert m == pytest.approx(float(L.ml_inf(v)), rel=1e-9)
        assert h == pytest.approx(float(L.hl_inf(v)), rel=1e-6, abs=1e-12)
        assert i == pytest.approx(float(L.steady_state_current(v, e_na)), rel=1e-6, abs=1e-15)
        assert i <= 0.0                                      # inward below E_Na
    # window current peaks between the two half-points; reverses at E_Na
    v = np.linspace(-100, 60, 321)
    window = -L.steady_state_current(v, e_na)
    assert -87.61 < v[np.argmax(window)] < -42.85
    assert L.steady_state_current(e_na, e_na) == 0.0
    # time constants: hL 200 ms, mL ORd's tau_m; both x the temperature factor
    hinf = float(L.hl_inf(-20.0))
    _, _, h = L.clamp(-20.0, e_na, L.G_NAL, 200.0, 0.1, 1.0, 0.0, 1.0)
    assert h == pytest.approx(hinf + (1 - hinf) * np.exp(-1), rel=1e-9)
    _, _, h = L.clamp(-20.0, e_na, L.G_NAL, 400.0, 0.1, 2.0, 0.0, 1.0)
    assert h == pytest.approx(hinf + (1 - hinf) * np.exp(-1), rel=1e-9)
    tm = float(L.tau_ml(-20.0))
    _, m, _ = L.clamp(-20.0, e_na, L.G_NAL, 10 * tm, tm / 10, 1.0, 0.0, 1.0)
    assert m == pytest.approx(float(L.ml_inf(-20.0)) * (1 - np.exp(-10)), rel=1e-9)


def test_late_sodium_conductance_checks():
    np.testing.assert_array_equal(L.LateSodium(scale=[1.0, 0.5]).per_cell(2),
                                  [L.G_NAL, 0.5 * L.G_NAL])
    with pytest.raises(ValueError, match="expected one value or 3"):
        L.LateSodium(scale=[1.0, 0.5]).per_cell(3)
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        L.LateSodium(scale=-1.0).per_cell(1)


def test_the_variant_with_no_inal_is_the_default_model_to_rounding():
    from cardiotwin.simulate import Pacing, simulate_current_clamp

    cells = BASELINE * np.random.default_rng(1).uniform(0.8, 1.2, (20, BASELINE.size))
    cells[:, [i for i, n in enumerate(_names()) if n.startswith("flag.")]] = \
        BASELINE[[i for i, n in enumerate(_names()) if n.startswith("flag.")]]
    kw = dict(record_interval_ms=0.5, prepace_ms=500.0, pacing=Pacing(period_ms=700.0))
    ref = simulate_current_clamp(1500.0, cells, **kw)
    off = simulate_current_clamp(1500.0, cells, late_sodium=L.LateSodium(scale=0.0),
                                 record_charge=True, **kw)
    # the same arithmetic, compiled apart (FMA contraction may differ in the last bits)
    np.testing.assert_allclose(off.v_mV, ref.v_mV, rtol=0, atol=1e-4)
    np.testing.assert_allclose(off.final_state, ref.final_state, rtol=1e-11, atol=1e-14)
    assert ref.charge is None and set(off.charge) == {"IKr", "ICaL", "INaL", "IKs", "IK1",
                                                      "Ito"}
    np.testing.assert_array_equal(off.charge["INaL"], 0.0)
    assert np.all(off.charge["ICaL"] < 0) and np.all(off.charge["IKr"] > 0)
    on = simulate_current_clamp(1500.0, cells, late_sodium=L.LateSodium(), record_charge=True,
                                **kw)
    assert np.all(on.charge["INaL"] < 0)                     # inward charge
    assert not np.array_equal(on.v_mV, ref.v_mV)


def _names():
    from cardiotwin.model.parameters import PARAMETER_NAMES

    return PARAMETER_NAMES


# ---- metrics and the classifier ------------------------------------------------------------

class _Result:
    """A screen result's columns (what cipa.metrics reads)."""

    def __init__(self, cols):
        import pyarrow as pa

        self.results = pa.table(cols)

    def column(self, k):
        return self.results.column(k).to_numpy(zero_copy_only=False)


def test_metrics_are_paired_changes_and_fractions_with_bootstrap_intervals():
    conc = np.repeat([0.0, 10.0], 4)
    cell = np.tile(np.arange(4), 2)
    res = _Result({
        "cell_id": cell, "concentration_nM": conc,
        "outcome": ["beating", "beating", "beating", "quiescent",
                    "ead", "beating", "non_repolarizing", "quiescent"],
        "ead": [False, False, False, False, True, False, False, False],
        "arrested": [False] * 6 + [True, False],
        "apd90_ms": [400.0, 500.0, 300.0, np.nan, 600.0, 550.0, np.nan, np.nan],
        "apd50_ms": [300.0, 400.0, 200.0, np.nan, 330.0, 440.0, np.nan, np.nan],
        "apd30_ms": [200.0, 300.0, 100.0, np.nan, 210.0, 310.0, np.nan, np.nan],
        "qnet": [10.0, 20.0, 30.0, 40.0, 5.0, 15.0, 25.0, 45.0]})
    cells = M.per_cell(res)
    w = M.bootstrap_weights(4, 0)
    d = M.dose_metrics(cells, w)
    assert d["apd90"][0, 0] == pytest.approx((50.0 + 10.0) / 2)          # cells 0, 1
    assert d["apd50"][0, 0] == pytest.approx((10.0 + 10.0) / 2)
    assert d["triangulation"][0, 0] == pytest.approx(((390 - 200) + (240 - 200)) / 2)
    assert d["ead"][0, 0] == 0.25
    assert d["repolarization_failure"][0, 0] == 0.25
    assert d["arrest"][0, 0] == pytest.approx(1 / 3)          # of the 3 beating in control
    assert d["qnet"][0, 0] == pytest.approx((-5 - 5 - 5 + 5) / 4)
    wb = M.bootstrap_weights(4, 50, seed=3)
    assert wb.shape == (51, 4) and np.all(wb[1:].sum(axis=1) == 4)
    s = M.summarize(M.dose_metrics(cells, wb)["ead"])
    assert s["value"] == [0.25] and s["ci"][0][0] <= 0.25 <= s["ci"][1][0]


def test_leave_one_out_never_sees_the_held_out_drug():
    class Toy:
        """Predicts the majority class of what it was fitted on; records what that was."""

        seen: list = []

        def fit(self, x, y):
            self.rows = {tuple(r) for r in x}
            self.classes_ = np.unique(y)
            self.major = np.bincount(y).argmax()
            Toy.seen.append(self)
            return self

        def predict_proba(self, x):
            for r in x:
                assert tuple(r) not in self.rows              # the held-out drug: unseen
            p = np.zeros((len(x), len(self.classes_)))
            p[:, list(self.classes_).index(self.major)] = 1.0
            return p

    x = np.arange(24, dtype=float).reshape(12, 2)
    y = np.array([0] * 4 + [1] * 5 + [2] * 3)
    Toy.seen.clear()
    proba = C.leave_one_out(x, y, Toy)
    assert len(Toy.seen) == 12
    for i, model in enumerate(Toy.seen):
        assert len(model.rows) == 11 and tuple(x[i]) not in model.rows
    # leaving out an intermediate drug leaves 4 of them: the majority is then a tie (low, 4)
    assert proba[4].argmax() == 0 and proba[0].argmax() == 1
    with pytest.raises(ValueError, match=r"non-finite values for drug row\(s\) \[3\]"):
        C.leave_one_out(np.where(np.arange(12)[:, None] == 3, np.nan, x), y, Toy)


def test_separable_features_are_classified_and_scored():
    y = np.array([0] * 6 + [1] * 6 + [2] * 6)
    x = (y + np.linspace(-0.2, 0.2, 18))[:, None]
    proba = C.leave_one_out(x, y, lambda: C.make_classifier(100.0))
    s = C.evaluate(y, proba)
    assert s["accuracy"] == 1.0 and s["auc_high_vs_rest"] == 1.0 and s["auc_low_vs_rest"] == 1.0
    assert s["confusion_matrix"] == [[6, 0, 0], [0, 6, 0], [0, 0, 6]]
    r = C.risk_score(proba)
    assert np.all(np.diff([r[y == k].mean() for k in range(3)]) > 0)
    margin = C.herg_margin(np.array([10.0, 0.0, 1000.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(margin, [1.0, 4.0, 3.0])


# ---- the command ---------------------------------------------------------------------------

def test_cipa_command_parses_and_refuses_unknown_drugs(tmp_path):
    from cardiotwin.cipa.cli_args import config_from_args
    from cardiotwin.cli import build_parser

    a = build_parser().parse_args(["cipa", "--out", str(tmp_path), "--cells", "50",
                                   "--pacing-hz", "0", "--drugs", "Dofetilide", "verapamil"])
    cfg = config_from_args(a)
    assert cfg.drugs == ("dofetilide", "verapamil") and cfg.pacing_period_ms is None
    sc = cfg.screen_config(cfg.selected()[0])
    assert sc.concentrations_nM == (0.0, 2.0, 4.0, 10.0, 20.0, 40.0, 50.0)
    assert sc.late_sodium and sc.net_charge and sc.pacing_period_ms is None
    a = build_parser().parse_args(["cipa", "--out", str(tmp_path), "--feature-multiples", "1",
                                   "2"])
    assert config_from_args(a).feature_dose_index() == [0, 1]
    a = build_parser().parse_args(["cipa", "--out", str(tmp_path), "--feature-multiples", "3"])
    with pytest.raises(ValueError, match=r"feature_multiples \[3.0\] must be some of"):
        config_from_args(a)
    a = build_parser().parse_args(["cipa", "--out", str(tmp_path), "--drugs", "aspirin"])
    with pytest.raises(ValueError, match="'aspirin' is not in the CiPA table"):
        config_from_args(a)


def test_cipa_run_writes_risk_summary_figures_and_page(tmp_path):
    from cardiotwin.cipa import CipaConfig, run_cipa

    drugs = ["dofetilide", "sotalol", "verapamil", "nifedipine", "cisapride", "flecainide"]
    cfg = CipaConfig(out_dir=tmp_path, drugs=drugs, n_cells=6, multiples=(1.0, 30.0),
                     prepace_ms=500.0, record_ms=1000.0, n_bootstrap=3)
    summary = run_cipa(cfg, progress=False, use_ray=False, echo=None)
    with open(tmp_path / "risk.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["drug"] for r in rows] == drugs
    assert list(rows[0])[:4] == ["drug", "cipa_category", "predicted_category", "risk_score"]
    assert all(0.0 <= float(r["risk_score"]) <= 2.0 for r in rows)
    assert {r["set"] for r in rows} == {"training", "validation", "extra"}
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["classifier"]["n_drugs"] == 5 and saved == json.loads(json.dumps(summary))
    assert set(saved["baselines"]) == {"herg_margin", "block_score"}
    dof = saved["drugs"][0]
    assert dof["concentrations_nM"] == [2.0, 60.0]
    assert set(dof["metrics"]) == set(M.METRICS)
    for k in ("dose_response.png", "risk_by_category.png", "index.html"):
        assert (tmp_path / k).stat().st_size > 1000
    assert "risk.csv" in (tmp_path / "index.html").read_text()
    # the screens are finished screens: a second run reuses every one
    again = run_cipa(cfg, progress=False, use_ray=False, echo=None)
    assert again["timing"]["screens_reused"] == len(drugs)
    assert again["classifier"]["accuracy"] == summary["classifier"]["accuracy"]
