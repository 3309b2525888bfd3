"""Mitchell-Schaeffer + residual-network hybrid (cardiotwin.hybrid): integrator against analytic
and scipy solutions, parameter recovery on Mitchell-Schaeffer data, the joint fit and its lambda
rule, data checks, read-out, CLI. Small shapes (short windows) keep XLA compiles short."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from cardiotwin.hybrid import mitchell_schaeffer as ms
from cardiotwin.hybrid.config import DataConfig, FitConfig, NetworkConfig, PhysicsConfig
from cardiotwin.hybrid.data import NotBeatingError, TraceError, beats_from_trace, read_trace
from cardiotwin.hybrid.integrate import integrate
from cardiotwin.hybrid.synthetic import ms_beats, solve_reference

DATA = Path(__file__).parent / "data"
TRUE = dict(tau_in_ms=0.25, tau_out_ms=5.0, tau_open_ms=120.0, tau_close_ms=40.0, v_gate=0.13)


def _p(values):
    return tf.constant([values[n] for n in ("tau_in_ms", "tau_out_ms", "tau_open_ms",
                                            "tau_close_ms", "v_gate")], tf.float64)


# ----------------------------------------------------------------------------- integrator

def test_rk4_matches_analytic_decay_and_recovery():
    """h fixed by huge gate constants: dv/dt = h v^2 (1 - v)/tau_in - v/tau_out with h = 0 is
    v0 exp(-t/tau_out); below v_gate h recovers as 1 - (1 - h0) exp(-t/tau_open)."""
    vals = dict(TRUE, tau_open_ms=30.0)
    p = _p(vals)
    x0 = tf.constant([[0.1, 0.0]], tf.float64)   # v below v_gate: h opens, v decays

    def f(t, x):  # h enters dv/dt; analytic case: drop it by zeroing the inward current
        d = ms.rhs_tf(t, x, p, 0.005, 0.0, 1.0)
        return tf.concat([-x[:, 0:1] / p[1], d[:, 1:2]], axis=1)

    run = tf.function(lambda x: integrate(f, x, 500, 1, 0.1), jit_compile=True)
    traj = run(x0).numpy()[::10, 0, :]                  # 50 ms, every 0.1 ms, compared every 1 ms
    t = np.arange(51.0)
    np.testing.assert_allclose(traj[:, 0], 0.1 * np.exp(-t / 5.0), rtol=1e-7, atol=1e-12)
    # gate: s(v) ~ 0 (v <= 0.1 < v_gate - 6 widths): dh/dt = (1 - s)(1 - h)/tau_open
    np.testing.assert_allclose(traj[:, 1], 1 - np.exp(-t / 30.0), atol=2e-3)


def test_rk4_matches_scipy_full_beat_and_is_fourth_order():
    """A whole MS beat (upstroke, plateau, repolarization; smooth gate) against Radau at
    rtol 1e-10; halving dt divides the error by ~16."""
    t_end = 100.0
    ref = solve_reference(TRUE, (0.2, 0.95), np.arange(0, t_end + 0.5, 1.0))
    p = _p(TRUE)

    def f(t, x):
        return ms.rhs_tf(t, x, p, 0.005, 0.0, 1.0)

    errs = []
    run = tf.function(lambda x0, n, dt: integrate(f, x0, n, 1, dt), jit_compile=True)
    for dt, n in ((0.1, 1000), (0.05, 2000)):
        traj = run(tf.constant([[0.2, 0.95]], tf.float64), n, dt)
        errs.append(np.max(np.abs(traj.numpy()[::n // 100, 0, :] - ref)))
    assert errs[0] < 2e-3, errs          # the fit's 0.1 ms step: < 0.2% of the AP amplitude
    assert 8 < errs[0] / errs[1] < 24, errs


def test_stimulus_fires_an_ap_from_rest():
    phys = PhysicsConfig(stim_amplitude=0.5, stim_duration_ms=1.0)
    ref = solve_reference(TRUE, (0.0, 1.0), np.arange(0, 30.0, 1.0), phys)
    no_stim = solve_reference(TRUE, (0.0, 1.0), np.arange(0, 30.0, 1.0))
    assert ref[:, 0].max() > 0.9 and np.abs(no_stim[:, 0]).max() < 1e-9


def test_bounds_reparameterization_round_trip_and_limits():
    cfg = PhysicsConfig()
    vals = np.array([0.4, 8.0, 100.0, 300.0, 0.15])
    np.testing.assert_allclose(ms.from_logits(cfg, ms.to_logits(cfg, vals)), vals, rtol=1e-9)
    lo = ms.from_logits(cfg, np.full(5, -50.0))
    hi = ms.from_logits(cfg, np.full(5, 50.0))
    np.testing.assert_allclose(lo, [b.lo for b in cfg.bounds()], rtol=1e-6)
    np.testing.assert_allclose(hi, [b.hi for b in cfg.bounds()], rtol=1e-6)
    with pytest.raises(ValueError, match="strictly inside"):
        PhysicsConfig(tau_in_ms={"init": 9.0, "lo": 0.05, "hi": 5.0})


# ----------------------------------------------------------------------------- fitting

def _small_data(**kw):
    base = dict(output_ms=0.5, window_ms=100.0, max_beats=2)
    base.update(kw)
    return DataConfig(**base)


@pytest.mark.training
def test_physics_only_fit_recovers_ms_parameters():
    """F_dl off, data from Mitchell-Schaeffer itself (scipy Radau), 4 beats of 100 ms observed
    at 10 kHz (as the real recordings): tau_in, tau_out, tau_close within 0.1% without noise and
    within 5% with the study's 5% noise (seeds 0-4 measured: all within 3.3%)."""
    from cardiotwin.hybrid.fit import fit_beats

    data = _small_data(output_ms=0.1, max_beats=4)
    cfg = FitConfig(data=data, use_dl=False, physics_steps=200)
    for noise, tol, seed in ((0.0, 1e-3, 0), (0.05, 0.05, 0), (0.05, 0.05, 1)):
        bs = ms_beats(TRUE, h0=1.0, n_beats=4, window_ms=100.0, noise_sd=noise, seed=seed,
                      data=data)
        fit = fit_beats(bs, cfg)
        assert fit.hybrid is None
        for k in ("tau_in_ms", "tau_out_ms", "tau_close_ms"):
            rel = fit.physics_only.physics[k] / TRUE[k] - 1
            assert abs(rel) < tol, (noise, k, fit.physics_only.physics)
        assert fit.physics_only.physics["tau_open_ms"] == pytest.approx(120.0)  # fixed
    # started above v_gate, h = h0 exp(-t/tau_close): only h0/tau_in is identifiable, so data
    # with h0 = 0.8 fitted with h0 fixed at 1 give tau_in / 0.8 and the other tau's (exactly
    # until v falls below v_gate at the very end of the window, where h starts to recover)
    bs = ms_beats(TRUE, h0=0.8, n_beats=1, window_ms=100.0, data=data)
    fit = fit_beats(bs, cfg)
    got = fit.physics_only.physics
    assert got["tau_in_ms"] == pytest.approx(TRUE["tau_in_ms"] / 0.8, rel=3e-3)
    assert got["tau_out_ms"] == pytest.approx(TRUE["tau_out_ms"], rel=3e-3)
    assert got["tau_close_ms"] == pytest.approx(TRUE["tau_close_ms"], rel=3e-3)
    assert fit.physics_only.h0 == pytest.approx(1.0)


@pytest.mark.training
def test_hybrid_fit_decreases_loss_and_lambda_follows_rule():
    """Tiny joint fit on data the physics cannot reproduce exactly (an extra slow outward
    drift): L_traj and the objective at fixed lambda fall, lambda_{j+1} = lambda_j + gamma *
    L_traj,j, and the forecast decomposes as dv/dt = F_p,v + F_dl,v."""
    from cardiotwin.hybrid.fit import fit_beats, forecast, forecast_mse

    data = _small_data(output_ms=0.1, window_ms=40.0, max_beats=1)
    bs = ms_beats(TRUE, h0=1.0, n_beats=1, window_ms=40.0, data=data)
    t = np.arange(bs.beats[0].v_obs.size) * data.output_ms
    bs.beats[0].v_obs = (bs.beats[0].v_obs - 0.004 * t * (t > 5)).astype(np.float32)
    cfg = FitConfig(data=data, physics_steps=30, hybrid_steps=60, gamma=1e4, lambda0=100.0,
                    lr_network=1e-2, warmup_steps=5, network=NetworkConfig(width=8, blocks=1))
    fit = fit_beats(bs, cfg)
    h = fit.history_hybrid
    assert len(h["lam"]) == len(h["l_traj"]) + 1 == 61
    lam = np.array(h["lam"])
    np.testing.assert_allclose(lam[1:], lam[:-1] + 1e4 * np.array(h["l_traj"]), rtol=1e-12)
    assert lam[0] == 100.0 and lam[-1] > lam[0]
    assert h["l_traj"][-1] < 0.9 * h["l_traj"][0]          # F_dl captures part of the drift
    per_lam = np.array(h["loss"]) / lam[:-1]                 # L_traj + ||F_dl|| / lambda
    assert per_lam[-1] < per_lam[0]
    assert fit.fdl_norm > 0
    # the stage returns its iterate with the lowest L_traj (loss spikes are undone)
    assert forecast_mse(fit.hybrid, cfg, bs, 40.0, clean=False) == pytest.approx(
        min(h["l_traj"]), rel=1e-3)
    fc = forecast(fit.hybrid, cfg, data.start_level, 40.0)
    dv = np.diff(fc.v[:, 0]) / data.output_ms
    mid = 0.5 * ((fc.fp_v + fc.fdl_v)[1:, 0] + (fc.fp_v + fc.fdl_v)[:-1, 0])
    assert np.max(np.abs(dv - mid)[100:]) < 1e-3             # after the upstroke
    assert np.max(np.abs(fc.fdl_v)) > 0
    from cardiotwin.hybrid.figures import plot_fit

    png = plot_fit(fit, bs, horizon_ms=40.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_model_apd90_matches_the_reference_beat():
    from cardiotwin.hybrid.fit import ModelState
    from cardiotwin.hybrid.readout import model_apd90_ms

    cfg = FitConfig(data=_small_data(output_ms=0.1))
    t = np.arange(0.0, 150.0, 0.01)
    v = solve_reference(TRUE, (cfg.data.start_level, 1.0), t)[:, 0]
    i = int(np.argmax(v))
    ref = t[i + int(np.flatnonzero(v[i:] < 0.1 * v[i])[0])]
    got = model_apd90_ms(ModelState(dict(TRUE), 1.0), cfg, 150.0)
    assert got == pytest.approx(ref, abs=0.1)
    assert math.isnan(model_apd90_ms(ModelState(dict(TRUE), 1.0), cfg, 50.0))


# ----------------------------------------------------------------------------- data

def _write(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    return path


def test_bad_inputs_name_the_problem(tmp_path):
    empty = _write(tmp_path / "empty.csv.gz", "time_s,voltage_mV,injected_current_pA_per_pF\n")
    with pytest.raises(TraceError, match=r"empty\.csv\.gz: rows: no data rows after the header"):
        read_trace(empty)
    wrong = _write(tmp_path / "wrong.csv.gz", "time,volts\n0,1\n0.0001,2\n")
    with pytest.raises(TraceError, match=r"wrong\.csv\.gz: columns: expected a time column .*"
                                         r"found \['time', 'volts'\] in the header \(line 1\), "
                                         r"without a time column or a voltage column"):
        read_trace(wrong)
    rows = "\n".join(f"{k * 1e-4:.4f},{-70.0 if k != 150 else float('nan')},0"
                     for k in range(300))
    nan = _write(tmp_path / "nan.csv.gz", "time_s,voltage_mV,injected_current_pA_per_pF\n" + rows)
    with pytest.raises(TraceError, match=r"nan\.csv\.gz: voltage_mV: line 152, column 2: "
                                         r"expected a finite number, found 'nan'"):
        read_trace(nan)
    with pytest.raises(TraceError, match="not found"):
        read_trace(tmp_path / "missing.csv.gz")
    quiet = DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s.csv.gz"
    t, v = read_trace(quiet)
    with pytest.raises(NotBeatingError, match=r"not beating \(quiescent\): no upstroke") as e:
        beats_from_trace(t, v, str(quiet))
    assert e.value.status == "quiescent" and str(quiet) in str(e.value)
    stuck = DATA / "real_5_031521_4_alex_verapamil__pre-drug_spont_7-10s.csv.gz"
    with pytest.raises(NotBeatingError, match="not beating"):
        beats_from_trace(*read_trace(stuck), str(stuck))


def test_real_beats_are_normalized_and_start_above_v_gate():
    path = DATA / "real_4_021921_1_alex_control__pre-drug_spont_0-3s.csv.gz"
    cfg = DataConfig(window_ms=300.0)
    t, v = read_trace(path)
    bs = beats_from_trace(t, v, str(path), cfg)
    assert len(bs.beats) >= 4                   # ~480 ms cycle over 3 s
    for b in bs.beats:
        assert b.v0 == 0.5 > PhysicsConfig().v_gate.init
        assert b.v_hi_mV - b.v_lo_mV > 60
        # normalized: the smoothed beat spans ~[0, 1]
        vs = np.convolve(b.v_obs, np.ones(3) / 3, "valid")
        assert 0.9 < vs.max() < 1.1 and -0.1 < vs.min() < 0.15
        assert b.v_obs.size * cfg.output_ms <= cfg.window_ms + cfg.output_ms
    arr = bs.arrays(300, 4)
    assert arr["y"].shape == (300, 4) and arr["mask"].sum() > 0 and arr["n_beats"] == 4


def test_simulated_kernik_beats_with_noise():
    from cardiotwin.hybrid.data import simulate_beats

    sets, skipped = simulate_beats(1, spread=0.0, duration_ms=2500.0, prepace_ms=1000.0,
                                   noise_sd=0.05, cfg=DataConfig(window_ms=450.0))
    assert not skipped and len(sets[0].beats) >= 2
    b = sets[0].beats[0]
    assert np.std(b.v_obs - b.v_clean) == pytest.approx(0.05, rel=0.15)
    assert abs(b.apd90_ms - 413) < 25           # Kernik baseline APD90 ~413 ms


# ----------------------------------------------------------------------------- read-out, CLI

def test_readout_pairs_pre_post_and_reports_skips():
    from cardiotwin.hybrid.readout import drug_table, parse_recording_name

    assert parse_recording_name("x/7_042721_4_alex_quinine__post-drug_spont.csv.gz") == \
        ("7_042721_4_alex_quinine", "quinine", "post-drug", "spont")
    rows = [
        {"file": "a_quinine__pre-drug_spont.csv.gz", "status": "fitted", "tau_close_ms": 100.0,
         "apd90_ms": 90.0},
        {"file": "a_quinine__post-drug_spont.csv.gz", "status": "fitted", "tau_close_ms": 120.0,
         "apd90_ms": 108.0},
        {"file": "b_verapamil__pre-drug_spont.csv.gz", "status": "fitted", "tau_close_ms": 80.0,
         "apd90_ms": 70.0},
        {"file": "b_verapamil__post-drug_spont.csv.gz", "status": "skipped",
         "reason": "not beating (quiescent)"},
    ]
    table = {r["drug"]: r for r in drug_table(rows)}
    q = table["quinine"]
    assert q["n_pairs"] == 1 and q["tau_close_change_pct"] == pytest.approx(20.0)
    assert q["apd90_change_pct"] == pytest.approx(20.0)
    assert table["verapamil"]["n_pairs"] == 0 and "quiescent" in table["verapamil"]["note"]


@pytest.mark.training
def test_cli_parser_and_fit_on_a_recording(tmp_path):
    import argparse

    from cardiotwin.hybrid.cli_args import add_hybrid_parser

    p = argparse.ArgumentParser(prog="cardiotwin")
    add_hybrid_parser(p.add_subparsers(dest="command", required=True))
    quiet = DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s.csv.gz"
    beating = DATA / "real_4_021921_1_alex_control__pre-drug_spont_0-3s.csv.gz"
    a = p.parse_args(["hybrid", "fit", str(beating), str(quiet), "--physics-only",
                      "--window-ms", "150", "--max-beats", "2",
                      "--physics-steps", "30", "--out", str(tmp_path), "--no-figure"])
    assert a.func(a) == 0                        # one fitted, one skipped with its reason
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {Path(r["file"]).name: r for r in summary["recordings"]}
    assert status[beating.name]["status"] == "fitted"
    assert status[beating.name]["tau_close_ms"] > 0
    assert status[quiet.name]["status"] == "skipped"
    assert "quiescent" in status[quiet.name]["reason"]
    a = p.parse_args(["hybrid", "fit", str(quiet), "--out", str(tmp_path / "q")])
    assert a.func(a) == 1                        # nothing fitted


@pytest.mark.slow
def test_ray_job_fits_in_parallel(ray_session, tmp_path):
    from cardiotwin.hybrid.parallel import fit_recordings

    beating = DATA / "real_4_021921_1_alex_control__pre-drug_spont_0-3s.csv.gz"
    cfg = FitConfig(data=DataConfig(window_ms=150.0, max_beats=2),
                    use_dl=False, physics_steps=20)
    rows = fit_recordings([beating, DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s"
                           ".csv.gz"], cfg, use_ray=True, out_dir=tmp_path, figure=False)
    assert [r["status"] for r in rows] == ["fitted", "skipped"]
    assert math.isfinite(rows[0]["tau_close_ms"])


def test_output_directory_claimed_and_summary_strict_json(tmp_path):
    import json

    from cardiotwin.hybrid.parallel import SUMMARY, fit_recordings

    quiet = DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s.csv.gz"   # skipped: fast
    cfg = FitConfig(use_dl=False, physics_steps=5)
    out = tmp_path / "fit"
    rows = fit_recordings([quiet], cfg, out_dir=out, log=None)
    assert rows[0]["status"] == "skipped"
    text = (out / SUMMARY).read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert summary["format"] == "cardiotwin.hybrid-fit/1" and summary["files"] == [quiet.name]
    assert fit_recordings([quiet], cfg, out_dir=out, log=None) == rows      # same run: reused
    with pytest.raises(ValueError, match="holds another hybrid fit.*config"):
        fit_recordings([quiet], FitConfig(use_dl=False, physics_steps=6), out_dir=out, log=None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*notes.txt"):
        fit_recordings([quiet], cfg, out_dir=tmp_path / "other", log=None)
