"""Populations that can contain real cells: the prior (log-uniform conductances, nuisance
scales, the seal leak), population calibration, and the learning side's unit scale."""

from pathlib import Path

import numpy as np
import pytest

from cardiotwin.learn.dataset import OutputScaling
from cardiotwin.model import BASELINE, inputs_from_multipliers
from cardiotwin.model.parameters import CONDUCTANCE_SCALE, INFERRED_NAMES, PARAMETER_INDEX
from cardiotwin.population.calibration import (
    OFF_TARGET,
    Calibration,
    PhenotypeTarget,
    calibration_from_real,
)
from cardiotwin.population.config import GenerationConfig
from cardiotwin.population.prior import IS_CONDUCTANCE, NUISANCE_INPUTS, Prior, apply_nuisance
from cardiotwin.population.sampling import sample_multipliers, sample_population
from cardiotwin.simulate import SealLeak, simulate_current_clamp
from cardiotwin.simulate.stiff import simulate_current_clamp_stiff

DATA = Path(__file__).parent / "data"


# ---- the prior --------------------------------------------------------------------------------

def test_uniform_prior_is_the_source_studys_draw_bit_for_bit():
    m = sample_multipliers(5, 0.4, 3, start=7)
    for k in range(5):
        rng = np.random.default_rng(np.random.SeedSequence([3, 7 + k]))
        np.testing.assert_array_equal(m[k], rng.uniform(0.6, 1.4, 52))


def test_log_uniform_prior_support_and_distribution():
    prior = Prior(kind="log_uniform", spread=0.2, conductance_factor=4.0)
    m = sample_multipliers(4000, seed=1, prior=prior)
    low, high, log = prior.bounds()
    assert log.sum() == 6 and np.array_equal(log, IS_CONDUCTANCE)
    assert np.all(m >= low) and np.all(m <= high)
    g = np.log(m[:, IS_CONDUCTANCE]) / np.log(4.0)         # uniform on [-1, 1]
    assert abs(g.mean()) < 0.05 and abs(g.std() - 1 / np.sqrt(3)) < 0.02
    k = m[:, ~IS_CONDUCTANCE]
    assert k.min() >= 0.8 and k.max() <= 1.2 and abs(k.mean() - 1.0) < 0.01
    names = {INFERRED_NAMES[j] for j in np.flatnonzero(IS_CONDUCTANCE)}
    assert names == {"IK1.g_K1", "IKr.g_Kr", "IKs.g_Ks", "ICaL.p_CaL", "INa.g_Na", "If.g_f"}


@pytest.mark.parametrize("sampler", ["uniform", "sobol"])
def test_prior_draws_do_not_depend_on_sharding(sampler):
    prior = Prior(kind="log_uniform", nuisance_factor=2.0, seal_g_nS_per_pF=(0.01, 0.1),
                  seal_e_mV=(-5.0, 5.0))
    whole = sample_population(sampler, 64, 0.4, 5, prior=prior)
    parts = [sample_population(sampler, 64, 0.4, 5, start=a, n=16, prior=prior)
             for a in range(0, 64, 16)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    n_whole = prior.nuisance(5, 0, 64)
    n_parts = [prior.nuisance(5, a, 16) for a in range(0, 64, 16)]
    for j in range(3):
        np.testing.assert_array_equal(n_whole[j], np.concatenate([p[j] for p in n_parts]))


def test_nuisance_and_seal_draws():
    prior = Prior(nuisance_factor=3.0, seal_g_nS_per_pF=(0.005, 0.08), seal_e_mV=(-4.0, 2.0))
    scales, g, e = prior.nuisance(0, 0, 3000)
    assert scales.shape == (3000, len(NUISANCE_INPUTS))
    ls = np.log(scales) / np.log(3.0)
    assert ls.min() >= -1 and ls.max() <= 1 and abs(ls.std() - 1 / np.sqrt(3)) < 0.02
    assert g.min() >= 0.005 and g.max() <= 0.08 and e.min() >= -4.0 and e.max() <= 2.0
    lg = np.log(g)
    assert abs(np.median(lg) - np.log(np.sqrt(0.005 * 0.08))) < 0.1   # log-uniform
    none = Prior().nuisance(0, 0, 4)
    assert np.all(none[0] == 1.0) and np.all(none[1] == 0.0)
    x = apply_nuisance(np.repeat(BASELINE[None, :], 3000, 0), scales)
    j = PARAMETER_INDEX["scale_g_to"]
    np.testing.assert_allclose(x[:, j], BASELINE[j] * scales[:, 0])
    assert set(NUISANCE_INPUTS) <= set(CONDUCTANCE_SCALE.values())


def test_prior_settings_are_checked():
    with pytest.raises(ValueError, match="seal_g_nS_per_pF"):
        Prior(seal_g_nS_per_pF=(0.0, 0.1))
    with pytest.raises(ValueError, match="conductance_factor"):
        Prior(kind="log_uniform", conductance_factor=0.5)
    with pytest.raises(ValueError, match="seal_g_nS_per_pF"):
        GenerationConfig(n_cells=4, out_dir="x", seal_g_nS_per_pF=(0.2, 0.1))


def test_default_config_keeps_its_identity():
    """Stores written before priors existed keep their config hash; a non-default prior
    enters the identity."""
    base = GenerationConfig(n_cells=10, out_dir="x")
    ident = base.identity("h")
    assert not {"prior", "conductance_factor", "nuisance_factor", "seal_g_nS_per_pF",
                "seal_e_mV", "calibration"} & set(ident)
    assert base.config_hash("h") == (
        "592bf3a4add67385e14f337765215a911390a582a1d8485d6ed1e31b7cd462c3")  # before priors
    log = GenerationConfig(n_cells=10, out_dir="x", prior="log_uniform")
    assert log.identity("h")["conductance_factor"] == 3.0
    sealed = GenerationConfig(n_cells=10, out_dir="x", seal_g_nS_per_pF=(0.01, 0.1))
    assert sealed.identity("h")["seal_e_mV"] == [0.0, 0.0]
    assert len({c.config_hash("h") for c in (base, log, sealed)}) == 3


# ---- the learning side ------------------------------------------------------------------------

def test_output_scaling_follows_a_log_uniform_prior():
    prior = Prior(kind="log_uniform", conductance_factor=5.0)
    low, high, log = prior.bounds()
    sc = OutputScaling(low, high, log)
    m = sample_multipliers(3000, seed=2, prior=prior)
    u = sc.to_unit(m)
    assert u.min() >= 0 and u.max() <= 1
    np.testing.assert_allclose(u.std(axis=0), 1 / np.sqrt(12), atol=0.015)  # uniform in unit
    np.testing.assert_allclose(sc.from_unit(u), m, rtol=1e-6)
    back = OutputScaling.from_json(sc.to_json())
    np.testing.assert_array_equal(back.log, log)
    np.testing.assert_allclose(sc.prior_sd(), m.std(axis=0), rtol=0.05)
    old = OutputScaling.from_json({"low": [0.6] * 52, "high": [1.4] * 52})
    assert old.log is None and np.allclose(old.prior_sd(), 0.8 / np.sqrt(12))


# ---- calibration ------------------------------------------------------------------------------

def test_calibration_keeps_only_cells_near_a_target():
    cal = Calibration(targets=[PhenotypeTarget(cycle_length_ms=1000, apd90_ms=100, mdp_mV=-50),
                               PhenotypeTarget(cycle_length_ms=400, apd90_ms=200, mdp_mV=-70)],
                      cl_rel=0.1, apd90_rel=0.1, mdp_abs_mV=3.0)
    bm = {"cycle_length_ms": np.array([1050, 1150, 410, 400, np.nan, 1000]),
          "apd90_ms": np.array([95, 100, 210, 200, 100, 100]),
          "mdp_mV": np.array([-52, -50, -68, -80, -50, -50])}
    st = np.array(["ok", "ok", "ok", "ok", "ok", "quiescent"])
    out = cal.apply(st, bm)
    assert out.tolist() == ["ok", OFF_TARGET, "ok", OFF_TARGET, OFF_TARGET, "quiescent"]


def test_calibration_from_real_recordings():
    cal = calibration_from_real([DATA], include="*spont*")
    names = [t.name for t in cal.targets]
    assert any("4_021921_1" in n for n in names)            # beating
    assert not any("5_031121_3" in n for n in names)        # quiescent
    assert "real recordings" in cal.source
    with pytest.raises(ValueError, match="beats"):
        calibration_from_real([DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s.csv.gz"])


# ---- the seal leak ----------------------------------------------------------------------------

def _passive_cell() -> np.ndarray:
    """Every membrane current, pump and flux knocked out: only the seal leak moves V."""
    x = inputs_from_multipliers(np.ones((1, 52)))
    for name in CONDUCTANCE_SCALE.values():
        x[0, PARAMETER_INDEX[name]] = 0.0
    return x


def test_seal_leak_relaxes_a_passive_cell_to_its_analytic_steady_state():
    """dV/dt = -g (V - E): V(t) = E + (V0 - E) exp(-g t), steady state E."""
    g, e = 0.02, -3.0
    res = simulate_current_clamp(400.0, _passive_cell(), seal=SealLeak(g, e))
    v0 = res.v_mV[0, 0]
    expected = e + (v0 - e) * np.exp(-g * res.t_ms)
    np.testing.assert_allclose(res.v_mV[0], expected, atol=0.05)
    assert abs(res.v_mV[0, -1] - e) < 0.05 * abs(v0 - e)


def test_seal_from_resistance_and_per_cell_values():
    s = SealLeak.from_resistance(1000.0, 50.0)            # 1 GOhm, 50 pF
    assert s.conductance_nS_per_pF == pytest.approx(0.02)
    g, e = SealLeak([0.01, 0.02], 1.0).per_cell(2)
    assert g.tolist() == [0.01, 0.02] and e.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="one per cell"):
        SealLeak([0.01, 0.02, 0.03]).per_cell(2)
    with pytest.raises(ValueError, match=">= 0"):
        SealLeak(-0.01).per_cell(1)
    with pytest.raises(ValueError, match="positive"):
        SealLeak.from_resistance(0.0, 50.0)


def test_seal_leak_off_is_bitwise_no_leak():
    x = inputs_from_multipliers(sample_multipliers(3, seed=4))
    a = simulate_current_clamp(500.0, x)
    b = simulate_current_clamp(500.0, x, seal=SealLeak(0.0, 7.0))
    np.testing.assert_array_equal(a.v_mV, b.v_mV)


def test_seal_leak_depolarizes_and_matches_the_stiff_reference():
    """Baseline cell, first 300 ms: the seal depolarizes it into an AP that the cell without a
    leak has not fired yet; the kernel and BDF agree on the same equations."""
    seal = SealLeak(0.03, 0.0)
    t, v_ref = simulate_current_clamp_stiff(300.0, seal=seal)
    v = simulate_current_clamp(300.0, seal=seal).v_mV[0]
    cross = [t[np.argmax(x > -30.0)] for x in (v, v_ref)]    # the upstroke the leak brings
    assert abs(cross[0] - cross[1]) < 0.5
    plateau = t > cross[1] + 20.0
    assert np.max(np.abs(v[plateau] - v_ref[plateau])) < 0.2
    no_seal = simulate_current_clamp(300.0).v_mV[0]
    assert no_seal.max() < -30.0 < v.max()                   # without the leak: no AP yet


# ---- a generated population: its prior is what the manifest says -------------------------------

@pytest.fixture(scope="module")
def calibrated_store(ray_session, short_protocol_path, tmp_path_factory):
    from cardiotwin.population import generate_population

    cal = Calibration(targets=[PhenotypeTarget(name="a", cycle_length_ms=1700, apd90_ms=420,
                                               mdp_mV=-75)],
                      cl_rel=0.5, apd90_rel=0.5, mdp_abs_mV=10.0, source="test")
    cfg = GenerationConfig(n_cells=48, shard_size=24, n_workers=2, seed=3, keep_rejected=True,
                           protocol=str(short_protocol_path), ap_duration_ms=4000.0,
                           prior="log_uniform", conductance_factor=2.0, spread=0.2,
                           nuisance_factor=1.5, seal_g_nS_per_pF=(0.002, 0.01),
                           seal_e_mV=(-2.0, 2.0), calibration=cal,
                           out_dir=str(tmp_path_factory.mktemp("pop") / "prior"))
    return cfg, generate_population(cfg, progress=False, echo=None)


def test_calibrated_population_is_what_its_manifest_says(calibrated_store):
    from cardiotwin.learn.dataset import load_dataset, prior_bounds
    from cardiotwin.population import list_to_numpy

    cfg, store = calibrated_store
    sampling = store.manifest["sampling"]
    prior = sampling["prior"]
    assert prior["kind"] == "log_uniform" and prior["conductance_factor"] == 2.0
    assert prior["seal_g_nS_per_pF"] == [0.002, 0.01] and prior["nuisance_factor"] == 1.5
    assert sampling["calibration"]["targets"][0]["apd90_ms"] == 420
    assert store.manifest["config"]["calibration"]["source"] == "test"
    t = store.read_table()
    ids = t.column("cell_id").to_numpy()
    m = list_to_numpy(t.column("multipliers"))
    low, high, log = (np.asarray(prior["multipliers"][k]) for k in ("low", "high", "log"))
    assert np.all(m >= low - 1e-6) and np.all(m <= high + 1e-6)
    order = np.argsort(ids)
    expected = sample_population("uniform", 48, 0.2, 3, prior=cfg.prior_spec())
    np.testing.assert_array_equal(m[order], expected[ids[order]])
    # the stored statuses are the calibration's verdict on the stored biomarkers
    st = np.array(t.column("status").to_pylist())
    bm = {k: t.column(k).to_numpy(zero_copy_only=False).astype(float)
          for k in ("cycle_length_ms", "apd90_ms", "mdp_mV")}
    beating_ok = np.isin(st, ["ok", OFF_TARGET])
    near = cfg.calibration.near_target(bm["cycle_length_ms"], bm["apd90_ms"], bm["mdp_mV"])
    assert np.array_equal(st[beating_ok] == "ok", near[beating_ok])
    counts = store.manifest["totals"]["status_counts"]
    assert sum(counts.values()) == 48 and counts["ok"] > 0 and counts[OFF_TARGET] > 0, counts
    # training follows the prior: the dataset's unit scale is the manifest's
    data = load_dataset(store.path, statuses=("ok", OFF_TARGET, "quiescent",
                                              "non_repolarizing"))
    assert data.info["prior_bounds"] == prior_bounds(store.meta)
    sc = OutputScaling.from_bounds(data.info["prior_bounds"])
    np.testing.assert_array_equal(sc.log, log)
    u = sc.to_unit(data.multipliers["train"])
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6


def test_per_parameter_ranges_and_the_shipped_preset():
    from cardiotwin.population.prior import prior_preset

    prior = Prior(kind="log_uniform", multiplier_ranges={"IKr.g_Kr": (2.0, 10.0),
                                                         "ICaL.d2": (0.5, 1.0)},
                  nuisance_ranges={"scale_g_to": (0.1, 1.0)})
    m = sample_multipliers(2000, seed=9, prior=prior)
    j, k = INFERRED_NAMES.index("IKr.g_Kr"), INFERRED_NAMES.index("ICaL.d2")
    assert m[:, j].min() >= 2.0 and m[:, j].max() <= 10.0
    assert abs(np.median(np.log(m[:, j])) - np.log(np.sqrt(20.0))) < 0.05   # log-uniform
    assert m[:, k].min() >= 0.5 and m[:, k].max() <= 1.0
    assert abs(np.median(m[:, k]) - 0.75) < 0.02                             # uniform
    scales, _, _ = prior.nuisance(1, 0, 500)
    assert scales[:, 0].min() >= 0.1 and scales[:, 0].max() <= 1.0
    assert np.all(scales[:, 1:] == 1.0) and prior.varies_nuisance
    assert prior.describe()["nuisance_inputs"] == ["scale_g_to"]
    with pytest.raises(ValueError, match="unknown parameters"):
        Prior(multiplier_ranges={"IKr.gKr": (1.0, 2.0)})
    with pytest.raises(ValueError, match="unknown inputs"):
        Prior(nuisance_ranges={"scale_g_Kr": (1.0, 2.0)})
    preset = prior_preset("real_ipsc")
    cfg = GenerationConfig(n_cells=10, out_dir="x", **preset)
    p = cfg.prior_spec()
    low, high, log = p.bounds()
    assert cfg.ap_ms == 8000.0 and log.sum() == 6 and p.seal_g_nS_per_pF == (0.003, 0.05)
    assert high[j] == 10.0 and low[j] == 2.0
    with pytest.raises(ValueError, match="unknown prior preset"):
        prior_preset("nope")
