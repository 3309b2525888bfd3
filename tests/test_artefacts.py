"""The voltage-clamp artefact model (model.artefacts, the artefact kernel): analytic RC cases,
the ideal-clamp limit, a stiff-solver reference, batch independence, noise and bad input."""

import numpy as np
import pytest

from cardiotwin.model.artefacts import (
    ARTEFACT_FIELDS,
    VoltageClampArtefacts,
    growing,
    propagators,
    recording_noise,
)
from cardiotwin.model.parameters import BASELINE, CONDUCTANCE_SCALE, PARAMETER_INDEX
from cardiotwin.protocols import Protocol, Segment
from cardiotwin.simulate.api import simulate_voltage_clamp
from cardiotwin.simulate.stiff import simulate_voltage_clamp_artefact_stiff

STEPS = Protocol((Segment(100, -80, -80), Segment(50, -20, -20), Segment(50, -120, -120),
                  Segment(50, 40, 40), Segment(100, -80, 30), Segment(50, -80, -80)))


def _rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def _passive_cell():
    """Model inputs with every membrane current knocked out: I_ion = 0 exactly."""
    x = BASELINE.copy()
    for name in CONDUCTANCE_SCALE.values():
        x[PARAMETER_INDEX[name]] = 0.0
    return x


def test_rc_cell_with_leak_relaxes_with_the_analytic_time_constant_and_steady_state():
    cm, rs, g, e_leak, v_off = 50.0, 20.0, 0.05, -10.0, 3.0
    art = VoltageClampArtefacts(cm_pF=cm, rs_MOhm=rs, rs_est_MOhm=12.0, g_leak_nS_per_pF=g,
                                e_leak_mV=e_leak, v_offset_mV=v_off, tau_sum_ms=0.0)
    p = Protocol((Segment(30, -80, -80), Segment(20, -60, -60)))
    r = simulate_voltage_clamp(p, _passive_cell(), artefacts=art, record_membrane=True)
    assert not r.unstable[0]
    tau_m = rs * cm * 1e-3  # ms
    tau = tau_m / (1.0 + g * tau_m)

    def v_ss(c):
        return (c + v_off + g * tau_m * e_leak) / (1.0 + g * tau_m)

    # sample k holds V_m at the end of the step from t_k (0.1 ms)
    t_end = r.t_ms + 0.1
    after = t_end > 30.0 + 1e-9
    expect = v_ss(-60.0) + (v_ss(-80.0) - v_ss(-60.0)) * np.exp(-(t_end - 30.0) / tau)
    np.testing.assert_allclose(r.v_membrane[0, after], expect[after], atol=2e-4)
    # the recorded current settles to the leak current, per pF of Cm* (= Cm here)
    assert r.i_total[0, -1] == pytest.approx(g * (v_ss(-60.0) - e_leak), rel=1e-4)
    # and before it the residual capacitive transient of a mis-set R_s*: the analytic
    # y = (V_cmd + V_off - V_m) / (R_s Cm*) - dV_est/dt, averaged over each sample's step
    tau_e = 12.0 * cm * 1e-3
    fine = np.linspace(0.0, 0.1, 401)
    t0 = r.t_ms[after][:40, None] + fine[None, :] - 30.0
    vm = v_ss(-60.0) + (v_ss(-80.0) - v_ss(-60.0)) * np.exp(-t0 / tau)
    vest_rate = 20.0 / tau_e * np.exp(-t0 / tau_e)
    y = (-60.0 + v_off - vm) / tau_m - vest_rate
    np.testing.assert_allclose(r.i_total[0, after][:40], np.trapezoid(y, fine, axis=1) / 0.1,
                               rtol=2e-3, atol=2e-3)


def test_full_compensation_without_lag_is_the_ideal_clamp():
    """alpha -> 1 with exact estimates, beta -> 1, no lag: V_m = command and the recorded
    current is the ideal clamp's I_ion averaged over each sample's step."""
    art = VoltageClampArtefacts(cm_pF=50, rs_MOhm=20, compensation=1 - 1e-6, prediction=0.999,
                                tau_sum_ms=0.0)
    r = simulate_voltage_clamp(STEPS, artefacts=art, record_membrane=True)
    # sample k holds V_m at the end of the step from t_k: the command just before t_k + dt,
    # on the ramp (1.1 mV/ms) the step's mid-step command, held over the step
    command_end = np.array([STEPS.voltage_at(t + 0.1 - 1e-6) for t in r.t_ms])
    ramp = (r.t_ms >= 250) & (r.t_ms < 350)
    err = np.abs(r.v_membrane[0] - command_end)
    assert err[~ramp].max() < 1e-3
    assert err[ramp].max() < 0.5 * 1.1 * 0.1 + 1e-3
    fine = Protocol(STEPS.segments, sample_interval_ms=0.0125)
    ideal_mean = simulate_voltage_clamp(fine).i_total[0].reshape(-1, 8).mean(axis=1)
    assert _rel_rms(r.i_total[0], ideal_mean) < 0.01


@pytest.mark.parametrize("settings", [
    dict(compensation=0.8, prediction=0.8),
    dict(compensation=0.7, cm_est_pF=45.0, g_leak_nS_per_pF=0.05, v_offset_mV=3.0),
    dict(compensation=0.5, prediction=0.5, tau_sum_ms=0.0, rs_est_MOhm=17.0),
])
def test_kernel_matches_a_stiff_solver_on_the_same_equations(settings):
    art = VoltageClampArtefacts(cm_pF=50, rs_MOhm=20, **settings)
    r = simulate_voltage_clamp(STEPS, artefacts=art)
    _, ref = simulate_voltage_clamp_artefact_stiff(STEPS, artefacts=art)
    assert _rel_rms(r.i_total[0], ref) < 0.01


def test_ideal_clamp_is_what_it_was_without_artefacts():
    a = simulate_voltage_clamp(STEPS)
    b = simulate_voltage_clamp(STEPS, artefacts=None)
    np.testing.assert_array_equal(a.i_total, b.i_total)
    assert b.v_membrane is None


def test_batch_equals_single_cell_and_an_over_compensated_cell_is_flagged_alone():
    rng = np.random.default_rng(3)
    n = 20
    x = BASELINE[None, :] * rng.uniform(0.7, 1.3, (n, BASELINE.size))
    cm = rng.uniform(20, 100, n)
    rs = rng.uniform(8, 30, n)
    alpha = rng.uniform(0, 0.8, n)
    rs_est = rs * rng.uniform(0.9, 1.1, n)
    rs_est[5] = rs[5] * 1.6  # alpha R_s* > R_s: this amplifier rings and grows
    alpha[5] = 0.9
    art = VoltageClampArtefacts(cm_pF=cm, rs_MOhm=rs, rs_est_MOhm=rs_est, compensation=alpha,
                                prediction=alpha, g_leak_nS_per_pF=rng.uniform(0, 0.1, n))
    assert growing(art.per_cell(n))[5]
    p = Protocol(STEPS.segments[:3])
    batch = simulate_voltage_clamp(p, x, artefacts=art)
    assert batch.unstable.tolist() == [i == 5 for i in range(n)]
    assert np.isnan(batch.i_total[5]).any()
    for i in (0, 7, 19):
        one = VoltageClampArtefacts(cm_pF=cm[i], rs_MOhm=rs[i], rs_est_MOhm=rs_est[i],
                                    compensation=alpha[i], prediction=alpha[i],
                                    g_leak_nS_per_pF=art.g_leak_nS_per_pF[i])
        single = simulate_voltage_clamp(p, x[i], artefacts=one)
        np.testing.assert_array_equal(single.i_total[0], batch.i_total[i])


def test_noise_is_seeded_with_the_stated_sd_and_hum_frequency():
    t = np.arange(20000) * 0.1
    a = recording_noise(t, 3, 0.5, 0.0, 50.0, seed=1)
    np.testing.assert_array_equal(a, recording_noise(t, 3, 0.5, 0.0, 50.0, seed=1))
    assert a.std() == pytest.approx(0.5, rel=0.02)
    assert recording_noise(t, 3, 0.0, 0.0, 50.0, seed=1) is None
    hum = recording_noise(t, 1, 0.0, 2.0, 60.0, seed=1)[0]
    spectrum = np.abs(np.fft.rfft(hum))
    assert np.fft.rfftfreq(t.size, 0.1e-3)[np.argmax(spectrum)] == pytest.approx(60.0, abs=0.5)
    assert np.abs(hum).max() == pytest.approx(2.0, rel=1e-3)
    art = VoltageClampArtefacts(noise_sd=0.5)
    r1 = simulate_voltage_clamp(Protocol(STEPS.segments[:1]), artefacts=art, noise_seed=4)
    r2 = simulate_voltage_clamp(Protocol(STEPS.segments[:1]), artefacts=art, noise_seed=4)
    np.testing.assert_array_equal(r1.i_total, r2.i_total)


@pytest.mark.parametrize("kw, match", [
    (dict(cm_pF=[50.0, 40.0, 30.0]), "cm_pF: expected one value or 2"),
    (dict(rs_MOhm=-1.0), "rs_MOhm must be in"),
    (dict(compensation=1.2), "compensation must be in"),
    (dict(prediction=1.0), "prediction must be in"),
    (dict(g_leak_nS_per_pF=np.nan), "g_leak_nS_per_pF must be in"),
    (dict(noise_sd=-1.0), "noise_sd"),
])
def test_bad_artefact_parameters_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        VoltageClampArtefacts(**kw).per_cell(2)


def test_no_lag_full_compensation_with_exact_rs_is_refused():
    table = VoltageClampArtefacts(compensation=1.0, tau_sum_ms=0.0).per_cell(1)
    with pytest.raises(ValueError, match="infinite loop gain"):
        propagators(table, 0.1)
    with pytest.raises(TypeError, match="VoltageClampArtefacts"):
        simulate_voltage_clamp(STEPS, artefacts={"cm_pF": 50})


def test_from_columns_round_trips_the_stored_table():
    art = VoltageClampArtefacts(cm_pF=[40.0, 60.0], rs_MOhm=[10.0, 25.0], compensation=0.7)
    table = art.per_cell(2)
    assert table.shape == (2, len(ARTEFACT_FIELDS))
    np.testing.assert_array_equal(VoltageClampArtefacts.from_columns(table).per_cell(2), table)
    with pytest.raises(ValueError, match="expected shape"):
        VoltageClampArtefacts.from_columns(table[:, :3])
