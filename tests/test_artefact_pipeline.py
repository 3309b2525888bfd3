"""Voltage-clamp artefacts through the pipeline: the population prior, lab metadata, the store
column, and the twin's recording-quality fit (nuisance parameters recovered from synthetic
recordings with artefacts)."""

from pathlib import Path

import numpy as np
import pytest

from cardiotwin.model.artefacts import ARTEFACT_FIELDS, VoltageClampArtefacts
from cardiotwin.model.parameters import BASELINE
from cardiotwin.population.artefact_prior import ArtefactPrior
from cardiotwin.population.batch import simulate_batch
from cardiotwin.population.config import GenerationConfig
from cardiotwin.population.store import ARTEFACT_COLUMN, make_schema, make_table
from cardiotwin.protocols import Protocol, Segment
from cardiotwin.recording_metadata import artefact_ranges, read_cell_metadata
from cardiotwin.twin.recording_quality import fit_recording_artefacts

DATA = Path(__file__).parent / "data"
# a membrane test (-80 -> -70 mV) and a few ionic steps
PROTOCOL = Protocol((Segment(100, -80, -80), Segment(50, -70, -70), Segment(100, -80, -80),
                     Segment(50, -20, -20), Segment(50, -120, -120), Segment(50, 40, 40),
                     Segment(100, -80, 30), Segment(50, -80, -80)))


def test_prior_draws_are_a_function_of_seed_and_cell_and_stay_inside():
    prior = ArtefactPrior()
    a = prior.draw(7, 10, 5)
    np.testing.assert_array_equal(a[2:], prior.draw(7, 12, 3))
    assert not np.array_equal(a, prior.draw(8, 10, 5))
    assert prior.contains(a).all()
    VoltageClampArtefacts.from_columns(a).per_cell(5)  # every draw is a valid amplifier
    fixed = prior.narrowed(compensation=0.7, cm_pF=(40.0, 45.0))
    b = fixed.draw(7, 0, 50)
    col = {f: b[:, j] for j, f in enumerate(ARTEFACT_FIELDS)}
    assert np.all(col["compensation"] == 0.7)
    assert col["cm_pF"].min() >= 40.0 and col["cm_pF"].max() <= 45.0
    assert not fixed.contains(a).all()
    with pytest.raises(ValueError, match="unknown artefact prior field"):
        prior.narrowed(series=3)
    with pytest.raises(ValueError, match="compensation must be in"):
        ArtefactPrior(compensation=(0.0, 1.5))
    with pytest.raises(ValueError, match="low <= high"):
        ArtefactPrior(rs_MOhm=(30.0, 10.0))


def test_lab_metadata_narrows_cm_rs_and_leak(tmp_path):
    meta = read_cell_metadata(DATA / "lab_cell_metadata_031221_2_control.csv")
    assert meta == {"cm_pF": 73.6, "rs_MOhm": 22.9, "rm_MOhm": 1111.0}  # the VC trial's row
    r = artefact_ranges(meta)
    assert r["cm_pF"][0] < 73.6 < r["cm_pF"][1]
    assert r["rs_MOhm"][0] < 22.9 < r["rs_MOhm"][1]
    assert r["g_leak_nS_per_pF"][1] == pytest.approx(1.5 * 1e3 / (1111.0 * 73.6))
    ArtefactPrior().narrowed(**r)
    bad = tmp_path / "m.csv"
    bad.write_text("Cm,Ra\n40,20\n")
    with pytest.raises(ValueError, match="m.csv: expected a row with positive Cm"):
        read_cell_metadata(bad)
    j = tmp_path / "m.json"
    j.write_text('{"cm_pF": 40, "rs_MOhm": 12, "rm_MOhm": 900}')
    assert read_cell_metadata(j)["rs_MOhm"] == 12.0


def test_ideal_populations_keep_their_identity_and_artefacts_change_it(tmp_path):
    base = dict(n_cells=10, out_dir=str(tmp_path))
    plain = GenerationConfig(**base)
    assert "vc_artefacts" not in plain.identity("h")
    with_art = GenerationConfig(**base, vc_artefacts=ArtefactPrior())
    assert with_art.config_hash("h") != plain.config_hash("h")
    narrowed = GenerationConfig(**base, vc_artefacts=ArtefactPrior().narrowed(compensation=0.7))
    assert narrowed.config_hash("h") != with_art.config_hash("h")


def test_batch_with_artefacts_stores_the_recorded_current_and_the_table():
    prior = ArtefactPrior()
    art = prior.draw(0, 0, 3)
    m = np.ones((3, 52))
    p = Protocol(PROTOCOL.segments[:4])
    st, bm, itot, _ = simulate_batch(p, m, 500.0, 310.0, artefacts=art)
    _, _, ideal, _ = simulate_batch(p, m, 500.0, 310.0)
    assert itot.shape == ideal.shape and not np.allclose(itot, ideal, atol=0.05)
    schema = make_schema(itot.shape[1], artefacts=True)
    table = make_table(schema, np.arange(3), m, st, bm, itot, art)
    stored = np.array(table.column(ARTEFACT_COLUMN).to_pylist())
    np.testing.assert_array_equal(stored, art)
    with pytest.raises(ValueError, match="vc_artefacts: expected"):
        make_table(schema, np.arange(3), m, st, bm, itot, art[:2])
    with pytest.raises(ValueError, match="CPU only"):
        simulate_batch(p, m, 500.0, 310.0, device="gpu", artefacts=art)


def test_recording_quality_recovers_leak_offset_and_access_of_a_synthetic_recording():
    truth = dict(cm_pF=55.0, rs_MOhm=25.0, cm_est_pF=52.0, rs_est_MOhm=23.0, compensation=0.7,
                 prediction=0.5, v_offset_mV=2.0, g_leak_nS_per_pF=0.03, e_leak_mV=-5.0)
    rec = simulate_voltage_clamp_with(truth, noise=0.3)
    prior = ArtefactPrior().narrowed(compensation=0.7, prediction=0.5, cm_pF=55.0)
    q = fit_recording_artefacts(PROTOCOL, BASELINE, rec, prior, trained_prior=ArtefactPrior())
    e = q["estimates"]
    assert e["g_leak_nS_per_pF"] == pytest.approx(0.03, rel=0.05)
    assert e["v_offset_mV"] == pytest.approx(2.0, abs=0.5)
    assert e["e_leak_mV"] == pytest.approx(-5.0, abs=2.0)
    assert e["rs_MOhm"] == pytest.approx(25.0, rel=0.1)
    assert e["rs_est_MOhm"] / e["rs_MOhm"] == pytest.approx(23.0 / 25.0, rel=0.05)
    assert q["relative_rms"] < 0.25 * q["relative_rms_ideal_clamp"]
    assert not q["flag"]
    # a recording the population's prior does not cover is flagged
    leaky = simulate_voltage_clamp_with({**truth, "g_leak_nS_per_pF": 0.6}, noise=0.3)
    q2 = fit_recording_artefacts(PROTOCOL, BASELINE, leaky,
                                 ArtefactPrior(g_leak_nS_per_pF=(0.002, 1.0)).narrowed(
                                     compensation=0.7, prediction=0.5, cm_pF=55.0),
                                 trained_prior=ArtefactPrior())
    assert q2["estimates"]["g_leak_nS_per_pF"] == pytest.approx(0.6, rel=0.1)
    assert q2["flag"] and q2["outside_trained_prior"]


def simulate_voltage_clamp_with(settings, noise):
    from cardiotwin.simulate import simulate_voltage_clamp

    art = VoltageClampArtefacts(**settings, noise_sd=noise)
    return simulate_voltage_clamp(PROTOCOL, BASELINE, artefacts=art, noise_seed=1).i_total[0]
