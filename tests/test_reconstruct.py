"""Intracellular APs from extracellular recordings (cardiotwin.reconstruct): physics residual,
electrode model, windows and APD, pair generation on Ray, network and loss, artifact, use."""

import argparse
import json

import numpy as np
import pytest

from cardiotwin.reconstruct.electrode import (
    ElectrodeConfig,
    add_noise,
    extracellular,
    highpass,
    junction_current,
)
from cardiotwin.reconstruct.physics import PhysicsConfig, ap_residual, ap_rhs, physics_loss_numpy
from cardiotwin.reconstruct.windows import (
    APD_LEVELS,
    WindowConfig,
    apd,
    detect_spikes,
    normalize_eap,
    normalize_iap,
)

PHYS = PhysicsConfig()
A, K, X = 0.15, 8.0, 0.5


# ---- physics --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ap_solution():
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda t, y: ap_rhs(y[0], y[1], A, K, X, PHYS), (0.0, 100.0), [0.3, 0.0],
                    method="Radau", rtol=1e-11, atol=1e-13, dense_output=True)
    assert sol.success
    return sol


def test_residual_zero_on_exact_derivatives(ap_solution):
    t = np.linspace(0, 100, 20001)
    v, w = ap_solution.sol(t)
    assert v.max() > 0.9 and v[-1] < 0.05          # a full AP: upstroke and recovery
    dv, dw = ap_rhs(v, w, A, K, X, PHYS)
    fp = K * (3 * v * v - 2 * (1 + A) * v + A)
    d2v = -fp * dv - dv * w - v * dw                  # d/dt of (1)
    r = ap_residual(v, dv, d2v, A, K, X, PHYS)
    scale = np.abs(d2v * v).max()
    assert np.abs(r).max() < 1e-12 * max(scale, 1.0)


def test_residual_small_on_sampled_trajectory_large_on_distorted(ap_solution):
    h = 0.01                                           # AP time units
    t = np.arange(0, 100, h)
    v = ap_solution.sol(t)[0]
    dt_ms = h * PHYS.time_unit_ms
    ok = physics_loss_numpy(v, dt_ms, A, K, X, PHYS)
    assert ok < 1e-8
    distorted = [v * (1 + 0.05 * np.sin(t / 3)),        # amplitude ripple
                 ap_solution.sol(t * 0.8)[0],           # 20 % shorter AP
                 v + 0.02 * np.exp(-((t - 30) / 2) ** 2)]   # a bump on the plateau
    for d in distorted:
        assert physics_loss_numpy(d, dt_ms, A, K, X, PHYS) > 1e3 * ok
    # wrong parameters are penalized too
    assert physics_loss_numpy(v, dt_ms, A, 2 * K, X, PHYS) > 1e3 * ok


def test_keras_physics_term_matches_numpy(ap_solution):
    from cardiotwin.reconstruct.losses import make_loss

    h = 0.05
    v = ap_solution.sol(np.arange(0, 64, h))[0].astype(np.float32)
    unit = [(A - PHYS.a_range[0]) / np.ptp(PHYS.a_range), (K - PHYS.k_range[0]) /
            np.ptp(PHYS.k_range), (X - PHYS.x_range[0]) / np.ptp(PHYS.x_range)]
    yp = np.concatenate([v[None, :, None], np.broadcast_to(np.float32(unit), (1, len(v), 3))],
                        axis=-1)
    loss = make_loss((0.5,), 1.0, 1.0, h * PHYS.time_unit_ms, PHYS)
    got = float(np.asarray(loss.physics_term(yp))[0])
    want = float(physics_loss_numpy(v.astype(np.float64), h * PHYS.time_unit_ms, A, K, X, PHYS))
    assert got == pytest.approx(want, rel=2e-2, abs=1e-9)
    # loss = alpha * L1 + beta * log(L_phys); zero L1 against itself
    total = float(np.asarray(loss(v[None, :, None], yp))[0])
    assert total == pytest.approx(np.log(got + PHYS.log_floor), rel=1e-4)


# ---- electrode --------------------------------------------------------------------------------

def test_pure_capacitive_junction_records_the_derivative():
    dt = 0.1
    t = np.arange(0, 500, dt)
    w = 2 * np.pi / 100.0                               # 10 Hz
    v = -40 + 30 * np.sin(w * t)
    e = extracellular(v, dt, {}, c_junction=0.7, densities=np.zeros(13), highpass_hz=0.0,
                      gain_uV=5.0)
    exact = 5.0 * 0.7 * 30 * w * np.cos(w * t)
    assert np.abs(e - exact).max() < 1e-3 * np.abs(exact).max()


def test_highpass_gain_is_first_order():
    dt = 0.1
    t = np.arange(0, 20000, dt)
    for f, fc in ((1.0, 5.0), (5.0, 5.0), (50.0, 2.0)):
        y = highpass(np.sin(2 * np.pi * f * t / 1000), dt, fc)
        tail = y[len(y) // 2:]
        gain = np.sqrt(2) * tail.std()
        assert gain == pytest.approx(f / np.hypot(f, fc), rel=2e-3)
    assert np.array_equal(highpass(t, dt, 0.0), t)


def test_ionic_junction_currents_and_noise():
    dt = 0.1
    v = np.linspace(-80, 20, 101)
    i_na = np.sin(np.arange(101) / 7.0)
    ij = junction_current(v, dt, {"I_Na": i_na, "I_Kr": np.ones(101)}, 0.0,
                          {"I_Na": 2.0, "I_Kr": 0.0})
    assert np.allclose(ij, 2.0 * i_na)
    rng = np.random.default_rng(0)
    e = np.zeros(200000)
    e[::1000] = 50.0
    noisy, sd = add_noise(e, snr=25.0, rng=rng)
    assert sd == pytest.approx(2.0)
    assert (noisy - e).std() == pytest.approx(2.0, rel=0.01)
    with pytest.raises(ValueError, match="snr_range"):
        ElectrodeConfig(snr_range=(0.0, 10.0))


# ---- windows ----------------------------------------------------------------------------------

def test_apd_on_analytic_trapezoid():
    cfg = WindowConfig(length=1000, pre_ms=100.0)
    v = np.full(1000, 0.1)
    v[101:300] = 1.0                                    # step up between samples 100 and 101
    v[300:501] = 1.0 - 0.9 * np.arange(201) / 200      # linear repolarization 300 -> 500 ms
    got = apd(v, 1.0, cfg)
    t_up = 100.5
    want = [300 + x / 100 * 200 - t_up for x in APD_LEVELS[:-1]] + [500 - t_up]
    assert np.allclose(got, want, atol=1e-9)
    # APD scales with the time step
    assert np.allclose(apd(v, 2.0, WindowConfig(length=1000, pre_ms=200.0,
                                                sample_interval_ms=2.0)), 2 * np.array(want))


def test_normalizations_and_spike_detection():
    cfg = WindowConfig(length=256, pre_ms=50.0)
    v = np.sin(np.linspace(0, 3, 256))[None] * 40 - 60
    n = normalize_iap(v, cfg)
    assert n.min() == pytest.approx(0.1) and n.max() == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    e = rng.normal(0, 2.0, 256) + 7.0
    e[60] -= 300
    x = normalize_eap(e, cfg)
    assert x[0] == 0.0
    assert x[60] == pytest.approx(-300 / (60 * 2.0), rel=0.2)   # spike height ~ S/N / 60
    rec = rng.normal(0, 1.0, 5000)
    spikes = np.arange(300, 5000, 700)
    rec[spikes] -= 80
    assert np.array_equal(detect_spikes(rec, WindowConfig()), spikes)


# ---- pair generation on Ray ----------------------------------------------------------------

def _small_pairs_config(**kw):
    from cardiotwin.reconstruct.pairs import PairConfig

    base = dict(n_cells=4, shard_size=2, seed=3, prepace_ms=1000.0, duration_ms=1500.0,
                drugs=("e4031",), drug_fraction=0.5,
                window=WindowConfig(length=512, pre_ms=100.0))
    base.update(kw)
    return PairConfig(**base)


def test_pair_generator_on_ray(ray_session, tmp_path):
    from cardiotwin.reconstruct.pairs import generate_pairs, load_pairs, simulate_cells

    cfg = _small_pairs_config()
    m = generate_pairs(cfg, tmp_path / "pairs", n_workers=2, log=None)
    assert m["status"] == "complete" and len(m["shards"]) == 2
    # the workers wrote exactly what the same cells give here
    rows = sum((simulate_cells(cfg, *cfg.shard_bounds(i))[0]["cell_id"] for i in range(2)), [])
    assert m["totals"]["windows"] == len(rows) > 0
    assert sum(m["totals"]["status_counts"].values()) == 4
    data = load_pairs(tmp_path / "pairs")
    assert data["eap_uV"].shape == (len(rows), 512) and data["iap_mV"].shape == (len(rows), 512)
    assert sorted(data["cell_id"].tolist()) == sorted(rows)
    assert np.all(np.isfinite(data["eap_uV"]))
    # the iAP upstroke is right after the eAP spike (window anchor at 100 ms)
    up = np.argmax(np.diff(data["iap_mV"], axis=1), axis=1)
    assert np.all(np.abs(up - 100) <= 10)
    # in use, the spike detector finds the same anchor the generator used
    for e in data["eap_uV"]:
        assert np.min(np.abs(detect_spikes(e, cfg.window) - 100)) == 0
    # a re-run finds every shard complete and simulates nothing
    m2 = generate_pairs(cfg, tmp_path / "pairs", n_workers=2, log=None)
    assert [s["wall_s"] for s in m2["shards"]] == [s["wall_s"] for s in m["shards"]]
    # the training entry point reads the store and writes an artifact
    from cardiotwin.reconstruct.infer import load_reconstructor
    from cardiotwin.reconstruct.train import main as train_main

    assert train_main([str(tmp_path / "pairs"), "--out", str(tmp_path / "m"), "--epochs", "1",
                       "--filters", "4", "--depth", "2", "--kernel-size", "3"]) == 0
    assert load_reconstructor(tmp_path / "m").window == cfg.window
    with pytest.raises(ValueError, match="another pair store"):
        generate_pairs(_small_pairs_config(seed=4), tmp_path / "pairs", log=None)
    with pytest.raises(ValueError, match="nodrug"):
        _small_pairs_config(drugs=("nodrug",))


# ---- network, loss, training, artifact ---------------------------------------------------------

WIN = WindowConfig(length=128, pre_ms=40.0, sample_interval_ms=4.0, refractory_ms=200.0)


def _synthetic_windows(n, seed=0):
    """Analytic APs (APD 150-350 ms) and eAPs: a spike at the upstroke plus a repolarization
    wave, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(WIN.length) * WIN.sample_interval_ms
    dur = rng.uniform(150, 350, n)[:, None]
    up = 40.0
    v = -75 + 95 * (t > up) / (1 + np.exp((t - up - dur) / 20.0))
    dv = np.gradient(v, WIN.sample_interval_ms, axis=1)
    e = -dv + rng.normal(0, 0.2, v.shape)
    return e, v


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from cardiotwin.reconstruct.train import (
        PairData,
        ReconTrainConfig,
        calibrate,
        fit,
        normalize_pairs,
        save_artifact,
    )
    from cardiotwin.reconstruct.unet import NetConfig

    e, v = _synthetic_windows(128)
    x, y = normalize_pairs(e, v, WIN)
    data = PairData({"train": x[:80], "val": x[80:96]}, {"train": y[:80], "val": y[80:96]},
                    {}, {}, WIN, {})
    cfg = ReconTrainConfig(epochs=6, batch_size=16, learning_rate=5e-3, beta=0.01,
                           net=NetConfig(filters=4, depth=2, kernel_size=5, head_units=4))
    model, hist, _ = fit(cfg, data)
    conformal = calibrate(model, cfg, WIN, x[96:], y[96:])    # 32 calibration windows
    out = tmp_path_factory.mktemp("recon") / "model"
    save_artifact(out, model, cfg, WIN, history=hist, conformal=conformal)
    return model, hist, out, x, cfg, conformal


def test_tiny_training_decreases_loss(tiny_model):
    hist = tiny_model[1]
    assert hist["loss"][-1] < 0.7 * hist["loss"][0]
    assert hist["median_mae"][-1] < hist["median_mae"][0]


def test_quantile_loss_puts_each_level_on_its_channel():
    """The data term's minimizer for each output channel is that channel's quantile of the
    targets (the network only orders its channels by construction; which level each one
    estimates comes from the loss)."""
    from cardiotwin.reconstruct.losses import make_loss

    rng = np.random.default_rng(3)
    target = rng.gamma(2.0, 0.1, size=(1, 400, 1)).astype(np.float32)    # skewed
    q = (0.05, 0.5, 0.95)
    loss = make_loss(q, 1.0, 0.0, 1.0, PHYS)
    grid = np.linspace(0.0, 1.0, 401, dtype=np.float32)
    targets = np.repeat(target, len(grid), axis=0)
    best = []
    for ch in range(3):                                   # one batch row per candidate value
        yp = np.zeros((len(grid), 400, 6), np.float32)
        yp[..., :3] = np.quantile(target, q)              # the other channels at their optimum
        yp[..., ch] = grid[:, None]
        best.append(grid[int(np.argmin(np.asarray(loss.data_term(targets, yp))))])
    assert np.allclose(best, np.quantile(target, q), atol=0.01), (best, np.quantile(target, q))


def test_trained_quantiles_are_calibrated_on_held_out_windows(tiny_model):
    """On windows the network never saw: about half the targets lie below the median and the
    5-95 % band holds most of them (loose bounds: the fixture trains 6 epochs)."""
    from cardiotwin.reconstruct.train import normalize_pairs, predict

    model = tiny_model[0]
    e, v = _synthetic_windows(64, seed=9)
    x, y = normalize_pairs(e, v, WIN)
    p = predict(model, x, 5)
    t = y[..., 0]
    assert 0.35 <= np.mean(t < p[..., 2]) <= 0.65
    assert np.mean((t >= p[..., 0]) & (t <= p[..., 4])) >= 0.8
    assert np.all(np.diff(p, axis=-1) >= 0)              # the five quantiles never cross


def test_artifact_round_trip(tiny_model, tmp_path):
    from cardiotwin.reconstruct.infer import load_reconstructor
    from cardiotwin.reconstruct.train import predict, save_artifact

    model, _, out, x, cfg, conformal = tiny_model
    est = load_reconstructor(out)
    assert est.window == WIN and est.quantiles == (0.05, 0.25, 0.5, 0.75, 0.95)
    raw, params = est.predict_windows(x[:8, :, 0], calibrated=False)
    assert np.allclose(raw, predict(model, x[:8], 5), atol=1e-5)
    # the conformal offsets round-trip with the artifact and are applied in use
    assert est.calibrated and est.conformal.offsets == conformal.offsets
    assert est.conformal.pooled == conformal.pooled
    from cardiotwin.storage.atomic import jsonable

    assert est.conformal.to_json() == jsonable(conformal.to_json())   # NaN stored as null
    got, _ = est.predict_windows(x[:8, :, 0])
    assert np.allclose(got, conformal.apply(raw, WIN), atol=1e-6)
    assert not np.allclose(got, raw, atol=1e-4)              # the offsets do something
    assert np.all(np.diff(got, axis=-1) >= 0)
    assert np.all((params[:, 1] >= PHYS.k_range[0]) & (params[:, 1] <= PHYS.k_range[1]))
    with pytest.raises(ValueError, match="exists"):
        save_artifact(out, model, cfg, WIN)
    with pytest.raises(ValueError, match="not a reconstruction model"):
        load_reconstructor(tmp_path)


# ---- use: recordings, errors, CLI, Serve entry point ----------------------------------------

def _recording_csv(path, n_beats=5, period_ms=700.0, dt=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(0, n_beats * period_ms + 300, dt)
    e = rng.normal(0, 1.0, t.size)
    for b in range(n_beats):
        i = int((150 + b * period_ms) / dt)
        e[i:i + 3] -= [60, 80, 30]
    rows = (f"{a:.3f},{b:.4f}" for a, b in zip(t, e, strict=True))
    path.write_text("t_ms,eap_uV\n" + "\n".join(rows))
    return path


def _errors(est, tmp_path):
    from cardiotwin.reconstruct.infer import read_eap_csv, reconstruct_recording

    cases = {"empty": ("", "empty"), "wrong_cols": ("time,voltage\n0,1\n1,2\n",
                                            "without a time column or an eAP column"),
             "nan": ("t_ms,eap_uV\n" + "\n".join(f"{i},{'nan' if i == 7 else 0.5}"
                                                for i in range(2000)), "non-finite"),
             "short": ("t_ms,eap_uV\n" + "\n".join(f"{i},{i % 3}" for i in range(50)),
                       "too short")}
    for name, (text, msg) in cases.items():
        p = tmp_path / f"{name}.csv"
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            t, e, _ = read_eap_csv(p)
            reconstruct_recording(est, t, e, source=p.name)


def test_bad_recordings_give_clear_errors(tiny_model, tmp_path):
    from cardiotwin.reconstruct.infer import (
        EAPRecordingError,
        load_reconstructor,
        reconstruct_from_bytes,
    )

    est = load_reconstructor(tiny_model[2])
    _errors(est, tmp_path)
    with pytest.raises(EAPRecordingError, match="unknown file type"):
        reconstruct_from_bytes(est, b"1,2", "rec.xlsx")
    with pytest.raises(EAPRecordingError, match="empty"):
        reconstruct_from_bytes(est, b"", "rec.csv")
    flat = "t_ms,eap_uV\n" + "\n".join(f"{i},0" for i in range(3000))
    with pytest.raises(EAPRecordingError, match="no complete beat window"):
        reconstruct_from_bytes(est, flat.encode(), "flat.csv")
    with pytest.raises(ValueError, match="not an ABF file"):
        reconstruct_from_bytes(est, b"garbage bytes", "rec.abf")


def test_abf_recording_matches_csv(tiny_model, tmp_path):
    import pyabf.abfWriter

    from cardiotwin.reconstruct.infer import load_reconstructor, reconstruct_from_bytes

    rec = _recording_csv(tmp_path / "rec.csv", n_beats=3)
    t, e = np.loadtxt(rec, delimiter=",", skiprows=1).T
    pyabf.abfWriter.writeABF1(e[None, :], str(tmp_path / "rec.abf"), 1000.0, units="uV")
    est = load_reconstructor(tiny_model[2])
    from_abf = reconstruct_from_bytes(est, (tmp_path / "rec.abf").read_bytes(), "rec.abf")
    from_csv = reconstruct_from_bytes(est, rec.read_bytes(), "rec.csv")
    assert from_abf["n_beats"] == from_csv["n_beats"] == 3
    assert "ABF channel 0" in from_abf["source"]
    for wa, wc in zip(from_abf["windows"], from_csv["windows"], strict=True):
        assert wa["anchor_ms"] == wc["anchor_ms"]
        assert np.allclose(wa["q50"], wc["q50"], atol=0.02)   # int16 ABF quantization
    with pytest.raises(ValueError, match="channel 3 does not exist"):
        reconstruct_from_bytes(est, (tmp_path / "rec.abf").read_bytes(), "rec.abf", channel=3)


def test_pairs_job_arguments():
    from cardiotwin.reconstruct.cli_args import add_pairs_arguments, pairs_config_from_args

    p = argparse.ArgumentParser()
    add_pairs_arguments(p)
    cfg = pairs_config_from_args(p.parse_args(["--out", "x", "--n-cells", "7", "--drugs",
                                               "quinidine", "--snr", "10", "30"]))
    assert (cfg.n_cells, cfg.drugs, cfg.electrode.snr_range) == (7, ("quinidine",), (10, 30))
    cfg = pairs_config_from_args(p.parse_args(["--out", "x", "--drugs", ""]))
    assert cfg.drugs == ()


def test_cli_and_serve_entry_point(tiny_model, tmp_path):
    from cardiotwin.reconstruct.cli_args import add_reconstruct_parser
    from cardiotwin.reconstruct.infer import load_reconstructor, reconstruct_from_bytes

    rec = _recording_csv(tmp_path / "rec.csv")
    p = argparse.ArgumentParser(prog="cardiotwin")
    add_reconstruct_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["reconstruct", str(rec), "--model", str(tiny_model[2]), "--out-dir",
                      str(tmp_path / "out")])
    assert a.func(a) == 0
    with pytest.raises(SystemExit) as exc:          # help text formats (no stray '%')
        p.parse_args(["reconstruct", "--help"])
    assert exc.value.code == 0
    out = json.loads((tmp_path / "out" / "reconstruction.json").read_text())
    assert out["n_beats"] == 5 and len(out["apd"]) == 5
    assert np.allclose([r["time_s"] for r in out["apd"]],
                       [(150 + 1 + 700 * b) / 1000 for b in range(5)], atol=0.005)
    windows = np.loadtxt(tmp_path / "out" / "windows.csv", delimiter=",", skiprows=1)
    assert windows.shape == (5 * WIN.length, 3 + 5)
    assert np.all(np.diff(windows[:, 3:], axis=1) >= 0)
    assert out["calibrated"] is True
    assert (tmp_path / "out" / "reconstruction.png").stat().st_size > 1000
    assert "APD90_ms" in (tmp_path / "out" / "apd.csv").read_text().splitlines()[0]
    d = reconstruct_from_bytes(load_reconstructor(tiny_model[2]), rec.read_bytes(), "rec.csv",
                               max_beats=2, figure=True)
    json.dumps(d, allow_nan=False)
    assert d["n_beats"] == 2 and len(d["windows"][0]["q50"]) == WIN.length
    assert len(d["figure_png_base64"]) > 1000


@pytest.mark.slow
def test_tune_small_search(ray_session, tmp_path):
    from ray import tune

    from cardiotwin.reconstruct.infer import load_reconstructor
    from cardiotwin.reconstruct.train import PairData, ReconTrainConfig, normalize_pairs
    from cardiotwin.reconstruct.tuning import tune_reconstruction
    from cardiotwin.reconstruct.unet import NetConfig

    e, v = _synthetic_windows(60, seed=2)
    x, y = normalize_pairs(e, v, WIN)
    data = PairData({"train": x[:40], "val": x[40:50], "test": x[50:]},
                    {"train": y[:40], "val": y[40:50], "test": y[50:]}, {}, {}, WIN, {})
    base = ReconTrainConfig(batch_size=16, net=NetConfig(filters=4, depth=2, kernel_size=5,
                                                         head_units=4))
    space = {"beta": tune.grid_search([0.0, 0.01]), "filters": tune.choice([4]),
             "alpha": 1.0}
    s = tune_reconstruction(data, tmp_path / "tune", base=base, search_space=space,
                            num_samples=1, max_epochs=2, grace_period=2, log=None)
    assert s["n_trials"] == 2 and s["n_finished"] == 2
    # the reported best is the trial with the lowest validation MAE in the trials' own results
    import csv

    with open(tmp_path / "tune" / "trials.csv") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == 2
    scores = [float(t["val_median_mae"]) for t in trials]
    assert scores[0] != scores[1]                   # two distinct trials: the choice matters
    winner = trials[int(np.argmin(scores))]
    assert s["val_median_mae"] == pytest.approx(min(scores))
    assert s["best_config"]["beta"] == pytest.approx(float(winner["config/beta"]))
    best = json.loads((tmp_path / "tune" / "best_config.json").read_text())
    assert best["sampled"]["beta"] == s["best_config"]["beta"]
    assert np.isfinite(s["test_metrics"]["mae"])
    assert load_reconstructor(s["artifact"]).quantiles == (0.05, 0.25, 0.5, 0.75, 0.95)


# ---- conformal calibration, compiled prediction ------------------------------------------------

def _overconfident_bands(n, seed, scale):
    """Normalized synthetic iAPs y, and "network" quantiles around a noisy median whose error
    SD (larger on the upstroke and repolarization) the bands misjudge by ``scale``."""
    from scipy.stats import norm

    from cardiotwin.reconstruct.train import normalize_pairs

    rng = np.random.default_rng(seed)
    e, v = _synthetic_windows(n, seed=seed)
    _, y = normalize_pairs(e, v, WIN)
    y = y[..., 0].astype(np.float64)
    slope = np.abs(np.gradient(y, axis=1))
    sd = 0.01 + 0.5 * slope / slope.max(axis=1, keepdims=True)
    med = y + rng.normal(size=y.shape) * sd
    q = (0.05, 0.25, 0.5, 0.75, 0.95)
    pred = np.stack([med + norm.ppf(p) * scale * sd for p in q], axis=-1)
    return y, pred, q


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_conformal_calibration_reaches_nominal_coverage(scale):
    """Bands too narrow (scale 0.5) or too wide (2.0) miss the nominal 90 % and 50 % coverage
    on new windows; CQR offsets from a calibration set bring both within 0.02, in every
    phase of the beat within 0.04."""
    from cardiotwin.reconstruct.conformal import PHASES, Conformal, coverage_by_phase, phase_of

    y_cal, p_cal, q = _overconfident_bands(300, 1, scale)
    y, p, _ = _overconfident_bands(300, 2, scale)
    c = Conformal.fit(y_cal, p_cal, q, WIN, min_samples=500)
    ph = phase_of(p[..., 2], WIN)
    before = coverage_by_phase(y, p, q, ph)
    after = coverage_by_phase(y, c.apply(p, WIN), q, ph)
    for band, nominal in (("0.9", 0.9), ("0.5", 0.5)):
        assert abs(before[band]["all"] - nominal) > 0.08, before    # uncalibrated: far off
        assert abs(after[band]["all"] - nominal) <= 0.02, after
        for name in PHASES:
            if (ph == PHASES.index(name)).sum() >= 2000:
                assert abs(after[band][name] - nominal) <= 0.04, (name, after)
    assert all(np.sign(v) == (1 if scale < 1 else -1) for v in c.pooled.values())
    assert np.all(np.diff(c.apply(p, WIN), axis=-1) >= 0)
    assert c.calibration["coverage_after"]["0.9"]["all"] == pytest.approx(0.9, abs=0.01)


def test_conformal_offsets_json_round_trip_and_errors():
    from cardiotwin.reconstruct.conformal import Conformal, bands_of

    assert bands_of((0.05, 0.25, 0.5, 0.75, 0.95)) == [(0.9, 0, 4), (0.5, 1, 3)]
    assert bands_of((0.5,)) == []
    y, p, q = _overconfident_bands(40, 3, 0.5)
    c = Conformal.fit(y, p, q, WIN)
    d = json.loads(json.dumps(c.to_json()))
    back = Conformal.from_json(d)
    assert back.offsets == c.offsets and back.quantiles == c.quantiles
    assert np.array_equal(back.apply(p, WIN), c.apply(p, WIN))
    with pytest.raises(ValueError, match="where: format"):
        Conformal.from_json({"format": "x"}, "where")
    bad = json.loads(json.dumps(d))
    del bad["offsets"]["0.5"]["late"]
    with pytest.raises(ValueError, match=r"offsets\.0\.5: expected one offset per phase"):
        Conformal.from_json(bad)
    with pytest.raises(ValueError, match="no windows"):
        Conformal.fit(y[:0], p[:0], q, WIN)
    with pytest.raises(ValueError, match="do not match"):
        Conformal.fit(y, p[..., :3], q, WIN)


def test_coverage_report_by_phase_and_apd_level():
    from cardiotwin.reconstruct.conformal import PHASES, coverage_report

    y, p, q = _overconfident_bands(60, 4, 2.0)
    r = coverage_report(y, p, q, WIN)
    assert set(r["by_phase"]["0.9"]) == {"all", *PHASES}
    assert set(r["by_apd_level_samples"]["0.5"]) == {f"APD{x}" for x in APD_LEVELS}
    assert r["by_phase"]["0.9"]["all"] > 0.99            # bands twice too wide
    # a band that is the truth itself covers every sample and every APD
    exact = np.repeat(y[..., None], 5, axis=-1)
    r = coverage_report(y, exact, q, WIN)
    assert r["by_phase"]["0.9"]["all"] == 1.0
    assert all(v == 1.0 for v in r["apd_interval"]["0.9"].values() if np.isfinite(v))


def test_compiled_predictor_matches_model_predict():
    from cardiotwin.reconstruct.fast import compiled_predictor
    from cardiotwin.reconstruct.unet import NetConfig, build_unet

    model = build_unet(NetConfig(filters=4, depth=2, kernel_size=5, head_units=4), WIN.length)
    x = np.random.default_rng(0).normal(size=(37, WIN.length, 1)).astype(np.float32)
    want = np.asarray(model.predict(x, verbose=0))
    for bs in (1, 8, 256):
        got = compiled_predictor(model, WIN.length, batch_size=bs)(x)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected shape \(n, 128, 1\)"):
        compiled_predictor(model, WIN.length)(x[:, :64])
