"""The amortized posterior (issue 17): the multi-rate input, the flow's algebra, calibration
metrics on analytic cases (a conjugate Gaussian model whose exact posterior is known), the
marginal recalibration, the OOD distances; then, on a small store, the trained posterior's
coverage, SBC, accuracy and OOD rates, and full-resolution training in bounded memory."""

import numpy as np
import pytest

from cardiotwin.learn.calibration import (
    MarginalRecalibration,
    calibration_report,
    interval_coverage,
    marginal_cdf,
    marginal_quantile,
    sbc_ranks,
    sbc_statistics,
)
from cardiotwin.learn.multirate import bin_means, multirate_edges, protocol_edges
from cardiotwin.learn.ood import OODDetector

SBC_TOLERANCE = 0.25  # max relative deviation of the pooled 10-bin rank histogram


# ---- multi-rate input -------------------------------------------------------------------

def test_multirate_bins_are_fine_after_each_step_and_never_cross_a_segment():
    from cardiotwin.protocols import builtin_protocol

    p = builtin_protocol("protocol_a")
    edges = protocol_edges(p, 1, p.n_samples)
    widths = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == p.n_samples and np.all(widths >= 1)
    assert 2000 < len(widths) < 2700          # ~21x fewer inputs than 49,500 samples
    starts = np.cumsum([0] + [round(s.duration_ms / 0.1) for s in p.segments])[:-1]
    for s in starts:
        assert s in set(edges.tolist())       # a bin starts at every segment start
        i = int(np.searchsorted(edges, s))
        assert np.all(widths[i:i + 50] == 1)  # 5 ms at 0.1 ms resolution
    assert widths.max() == 50                 # 5 ms slow bins


def test_multirate_on_a_decimated_store_uses_the_stored_interval():
    edges = multirate_edges([100.0, 50.0], 1.0, 150)
    widths = np.diff(edges)
    assert edges[-1] == 150 and widths[0] == 1 and widths.max() == 5
    assert 100 in set(edges.tolist())


def test_bin_means_are_means_and_check_the_length():
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    out = bin_means(x, np.array([0, 1, 4, 10]))
    np.testing.assert_allclose(out, [[0, 2, 6.5], [10, 12, 16.5]])
    with pytest.raises(ValueError, match="expected 10 samples"):
        bin_means(x[:, :9], np.array([0, 1, 4, 10]))


# ---- calibration metrics on a conjugate Gaussian model -----------------------------------

def _gaussian_case(n=3000, p=6, s=400, sd_factor=1.0, seed=0):
    """theta ~ N(0.5, 0.1^2) per parameter, data y = theta + N(0, 0.05^2): the exact
    posterior is Gaussian; samples at ``sd_factor`` times its SD."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.5, 0.1, (n, p))
    y = theta + rng.normal(0, 0.05, (n, p))
    prec = 1 / 0.1 ** 2 + 1 / 0.05 ** 2
    mean = (0.5 / 0.1 ** 2 + y / 0.05 ** 2) / prec
    sd = np.sqrt(1 / prec) * sd_factor
    samples = mean[:, None, :] + sd * rng.standard_normal((n, s, p))
    return samples, theta


def test_exact_posterior_is_calibrated_and_a_halved_sd_is_not():
    samples, theta = _gaussian_case()
    rep = calibration_report(samples, theta, [f"p{j}" for j in range(6)], prior_sd=0.1)
    assert abs(rep["coverage"]["0.9"] - 0.9) < 0.015
    assert abs(rep["coverage"]["0.5"] - 0.5) < 0.02
    assert rep["sbc"]["max_rel_deviation"] < SBC_TOLERANCE
    # contraction of the exact posterior: 1 - sqrt(1/prec)/0.1 = 1 - 0.447
    assert abs(rep["median_contraction"] - (1 - np.sqrt(0.2))) < 0.02
    narrow, _ = _gaussian_case(sd_factor=0.5)
    bad = sbc_statistics(sbc_ranks(narrow, theta), narrow.shape[1])
    assert bad["max_rel_deviation"] > SBC_TOLERANCE
    assert np.mean(interval_coverage(narrow, theta, 0.9)) < 0.7


def test_marginal_cdf_and_quantile_are_inverse_with_tails_beyond_the_samples():
    rng = np.random.default_rng(1)
    s = rng.uniform(0.3, 0.7, (5, 99, 3))
    lv = rng.uniform(0.01, 0.99, (5, 7, 3))
    q = marginal_quantile(s, lv)
    back = np.stack([marginal_cdf(s, q[:, k]) for k in range(7)], axis=1)
    np.testing.assert_allclose(back, lv, atol=1e-9)
    outside = marginal_cdf(s, np.full((5, 3), 0.25))   # below every sample, inside the tail
    assert np.all((outside > 0) & (outside < 1 / 100))


def test_recalibration_fitted_on_validation_cells_fixes_an_overconfident_posterior():
    val, theta_val = _gaussian_case(sd_factor=0.5, seed=3)
    test, theta_test = _gaussian_case(sd_factor=0.5, seed=4)
    recal = MarginalRecalibration.fit(val[:, ::2], theta_val)  # 200 samples per cell
    fixed = recal.apply(test[:, ::2])
    for level in (0.5, 0.9):
        assert abs(np.mean(interval_coverage(fixed, theta_test, level)) - level) < 0.03
    sbc = sbc_statistics(sbc_ranks(fixed, theta_test), fixed.shape[1])
    assert sbc["max_rel_deviation"] < SBC_TOLERANCE
    # ranks (the joint dependence) are kept
    np.testing.assert_array_equal(np.argsort(fixed[0, :, 0]), np.argsort(test[0, ::2, 0]))
    ident = MarginalRecalibration.identity(6).apply(test[:, ::2])
    np.testing.assert_allclose(ident, test[:, ::2], atol=1e-9)
    round_trip = MarginalRecalibration.from_json(recal.to_json())
    np.testing.assert_allclose(round_trip.inverse, recal.inverse)


# ---- OOD distances ----------------------------------------------------------------------

def test_ood_flags_what_the_training_subspace_cannot_express():
    rng = np.random.default_rng(0)
    d, k = 40, 5
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0]
    sd = np.array([5.0, 4, 3, 2, 1])
    def draw(n):
        return (rng.standard_normal((n, k)) * sd) @ basis.T + 0.05 * rng.standard_normal((n, d))
    det = OODDetector.from_whitening(basis / sd, sd).calibrated(draw(2000))
    inside = [o["flag"] for o in det.score(draw(2000))]
    assert 0.0 < np.mean(inside) < 0.05
    off = draw(200) + 0.5 * rng.standard_normal((200, d))          # shape outside the span
    far = draw(200) * 4.0                                           # far along the span
    assert np.mean([o["flag"] for o in det.score(off)]) > 0.95
    scored = det.score(far)
    assert np.mean([o["flag"] for o in scored]) > 0.9
    assert all("far from the training population" in o["reason"] or o["q_ratio"] >= o["t2_ratio"]
               for o in scored if o["flag"])


# ---- flow algebra -------------------------------------------------------------------------

def test_coupling_and_base_layers_invert_and_their_log_det_is_the_jacobian():
    import keras

    from cardiotwin.learn.flow import AffineCoupling, ConditionalAffine, coupling_masks

    rng = np.random.default_rng(0)
    d, c = 4, 3
    x = rng.standard_normal((5, d)).astype(np.float32)
    ctx = rng.standard_normal((5, c)).astype(np.float32)
    anchor = rng.standard_normal((5, d)).astype(np.float32)
    coup = AffineCoupling(coupling_masks(d, 1, 0)[0].tolist(), 8)
    base = ConditionalAffine(d)
    coup.build([(None, d), (None, c)])
    base.build([(None, d), (None, c), (None, d)])
    for layer in (coup, base):   # non-trivial weights (the output layers start at zero)
        layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    z, ld = coup([x, ctx])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(coup.inverse(z, ctx)), x, atol=1e-5)
    z2, ld2 = base([x, ctx, anchor])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(base.inverse(z2, ctx, anchor)), x,
                               atol=1e-5)
    # log|det J| by finite differences for the first sample
    eps = 1e-3
    f = lambda v: keras.ops.convert_to_numpy(coup([v, ctx[:1]])[0])[0]  # noqa: E731
    jac = np.stack([(f(x[:1] + eps * e) - f(x[:1] - eps * e)) / (2 * eps)
                    for e in np.eye(d, dtype=np.float32)], axis=1)
    assert abs(np.log(abs(np.linalg.det(jac))) - float(keras.ops.convert_to_numpy(ld)[0])) < 1e-2


def test_projected_noise_has_the_covariance_of_the_input_noise():
    from cardiotwin.learn.batches import add_noise, projected_noise_factor

    rng = np.random.default_rng(0)
    w = rng.standard_normal((30, 4)).astype(np.float32)
    sd = rng.uniform(0.1, 1.0, 30).astype(np.float32)
    f = add_noise(np.zeros((40000, 4), np.float32), projected_noise_factor(w, sd), rng)
    np.testing.assert_allclose(np.cov(f.T), w.T @ np.diag(sd ** 2) @ w, rtol=0.05, atol=0.25)
    assert projected_noise_factor(w, None) is None


# ---- the trained posterior on a small store -----------------------------------------------

def _test_split(flow_model, r20_store, n=300):
    from cardiotwin.learn import load_estimator
    from cardiotwin.learn.dataset import split_of
    from cardiotwin.population.store import list_to_numpy

    cfg, out, _ = flow_model
    est = load_estimator(out)
    tab = r20_store.read_table(["cell_id", "multipliers", "I_total", "status"])
    ok = np.isin(np.asarray(tab.column("status").to_pylist()), cfg.statuses)
    test = (split_of(tab.column("cell_id").to_numpy()) == 2) & ok
    idx = np.flatnonzero(test)[:n]
    i_total = list_to_numpy(tab.column("I_total"))[idx]
    m = list_to_numpy(tab.column("multipliers"))[idx]
    return est, i_total, m


def _noisy_stored(est, i_total, seed, noise=0.5):
    """Stored (1 kHz, block means of 10 samples) traces with ``noise`` pA/pF per 0.1 ms
    sample."""
    k = est.transform.store_decimation[0]
    rng = np.random.default_rng(seed)
    return i_total + rng.standard_normal(i_total.shape).astype(np.float32) * noise / np.sqrt(k)


@pytest.mark.parametrize("which, margin", [("clean_flow_model", 0.6), ("flow_model", 0.9)])
def test_trained_posterior_is_calibrated_on_held_out_cells(which, margin, request, r20_store):
    """Noise-free and with 0.5 pA/pF recording noise (each model on the data it is for)."""
    model = request.getfixturevalue(which)
    est, i_total, m = _test_split(model, r20_store)
    noise = model[0].input_noise_pA_per_pF
    posts = est.posterior(_noisy_stored(est, i_total, 7, noise), est.protocol_hash,
                          at="stored", n_samples=200, seed=1)
    samples = np.stack([p.samples for p in posts])
    sc = est.scaling
    unit = (samples - sc.low) / (sc.high - sc.low)
    truth = (m - sc.low) / (sc.high - sc.low)
    rep = calibration_report(unit, truth, est.names)
    assert 0.85 <= rep["coverage"]["0.9"] <= 0.95
    assert 0.40 <= rep["coverage"]["0.5"] <= 0.60
    assert rep["sbc"]["max_rel_deviation"] < SBC_TOLERANCE
    mean = unit.mean(axis=1)
    mae = np.median(np.mean(np.abs(mean - truth), axis=0))
    trivial = np.median(np.mean(np.abs(0.5 - truth), axis=0))
    assert mae < margin * trivial
    # the same posterior with its SD halved about the mean fails the SBC tolerance
    halved = mean[:, None, :] + 0.5 * (unit - mean[:, None, :])
    bad = sbc_statistics(sbc_ranks(halved, truth), halved.shape[1])
    assert bad["max_rel_deviation"] > SBC_TOLERANCE
    # the artifact carries its own report and the identifiability table
    cal = est.metadata["posterior"]["calibration"]
    assert 0.8 <= cal["coverage"]["0.9"] <= 0.97
    assert len(est.metadata["posterior"]["contraction"]) == 52
    assert (model[1] / "evaluation" / "identifiability.csv").is_file()
    assert (model[1] / "evaluation" / "calibration.png").is_file()


def test_summaries_identifiability_and_point_prediction(flow_model, r20_store):
    est, i_total, _ = _test_split(flow_model, r20_store, n=4)
    x = _noisy_stored(est, i_total, 8)
    post = est.posterior(x, est.protocol_hash, at="stored", n_samples=500)[0]
    s = post.summaries()
    assert len(s) == 52
    for row in s:
        assert row["q05"] <= row["q25"] <= row["q50"] <= row["q75"] <= row["q95"]
        assert row["sd"] > 0 and row["contraction"] < 1
    assert post.samples.min() >= est.scaling.low.min() and post.samples.max() <= \
        est.scaling.high.max()
    assert post.identifiable.dtype == bool and 0 < post.identifiable.sum() < 52
    point = est.predict(x, est.protocol_hash, at="stored")
    assert point.shape == (4, 52)
    with pytest.raises(ValueError, match="n_samples"):
        est.posterior(x, est.protocol_hash, at="stored", n_samples=0)


def test_ood_flags_another_temperature_and_far_cells_not_held_out_ones(flow_model, r20_store):
    from cardiotwin.learn.dataset import pool
    from cardiotwin.model.parameters import inputs_from_multipliers
    from cardiotwin.simulate import simulate_voltage_clamp

    est, i_total, m = _test_split(flow_model, r20_store, n=200)
    k = est.transform.store_decimation[0]

    def flags(traces):
        return np.mean([p.ood["flag"] for p in est.posterior(
            _noisy_stored(est, traces, 9), est.protocol_hash, at="stored", n_samples=20)])

    assert flags(i_total) <= 0.1
    proto = est.protocol
    cold = simulate_voltage_clamp(proto.with_temperature(298.0), inputs_from_multipliers(m[:40]))
    assert flags(pool(cold.i_total, k)) >= 0.9
    rng = np.random.default_rng(5)
    far_m = np.where(rng.random((40, 52)) < 0.5, 0.3, 1.7)   # +-70% against +-20% training
    far = simulate_voltage_clamp(proto, inputs_from_multipliers(far_m))
    finite = np.all(np.isfinite(far.i_total), axis=1)
    assert flags(pool(far.i_total[finite], k)) >= 0.9


@pytest.mark.slow
def test_full_resolution_training_on_protocol_a_in_bounded_memory(ray_session, tmp_path):
    """10 kHz (49,500 samples per trace): the reader reduces every batch to the multi-rate
    bins as it reads, so the training data take n x 2,350 values, not n x 49,500."""
    import tracemalloc

    from cardiotwin.learn import preset
    from cardiotwin.learn.dataset import load_dataset
    from cardiotwin.learn.train import train_model
    from cardiotwin.population import GenerationConfig, generate_population

    store = generate_population(GenerationConfig(
        n_cells=160, spread=0.2, seed=3, ap_duration_ms=500.0, keep_rejected=True,
        shard_size=80, n_workers=2, out_dir=str(tmp_path / "pop10k")), progress=False,
        echo=None)
    assert store.meta.i_total.n_samples == 49_500
    cfg = preset("small_flow", epochs=2, statuses=("ok", "quiescent", "non_repolarizing"),
                 pca_components=16, posterior_samples=20)
    tracemalloc.start()
    data = load_dataset(store, statuses=cfg.statuses, multirate=cfg.multirate_widths(),
                        batch_size=16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = sum(data.sizes().values())
    raw_bytes = n * 49_500 * 4
    assert data.i_total["train"].shape[1] < 2700
    assert peak < 0.5 * raw_bytes + 64e6     # well under the raw traces (ours: n x 2,350)
    meta = train_model(store, tmp_path / "model", cfg, log=lambda s: None)
    assert meta["input"]["edges"] is not None and meta["posterior"]["calibration"]["n_cells"] > 0


def test_out_of_fold_ridge_matches_a_ridge_fitted_without_each_fold():
    from cardiotwin.learn.linear import Covariance, _ridge_path, out_of_fold_ridge

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 12))
    y = x[:, :3] @ rng.standard_normal((3, 2)) + 0.1 * rng.standard_normal((200, 2))
    got = out_of_fold_ridge(x, y, 0.05, folds=4, seed=1)
    fold = np.random.default_rng(1).permutation(200) % 4
    held = fold == 2
    _, w, b = next(_ridge_path(Covariance.fit(x[~held]), x[~held], y[~held], [0.05]))
    np.testing.assert_allclose(got[held], x[held] @ w + b, rtol=1e-4, atol=1e-5)


def test_stores_of_two_seeds_combine_and_the_same_store_twice_is_refused(r20_store, tmp_path):
    from conftest import generate_r20

    from cardiotwin.learn.dataset import load_dataset

    with pytest.raises(ValueError, match="share cells"):
        load_dataset([r20_store, r20_store.path])
    other = generate_r20(tmp_path / "seed12", n_cells=40, seed=12, shard_size=40)
    one, two = load_dataset(r20_store), load_dataset(other)
    both = load_dataset([r20_store, other])
    assert sum(both.sizes().values()) == sum(one.sizes().values()) + sum(two.sizes().values())


def test_numpy_sampler_equals_the_layers_inverse_pass():
    """The sampler's numpy inverse pass is the algebra of the Keras layers' ``inverse``."""
    import keras

    from cardiotwin.learn import preset
    from cardiotwin.learn.flow import FlowSampler
    from cardiotwin.learn.networks import build_flow_network

    rng = np.random.default_rng(0)
    cfg = preset("small_flow", flow_layers=3, pca_components=6)
    init = {"ridge": (rng.normal(0, 0.1, (20, 52)).astype(np.float32),
                      np.full(52, 0.5, np.float32)),
            "whiten": (rng.normal(0, 1, (20, 6)).astype(np.float32), np.zeros(6, np.float32))}
    trainer, _ = build_flow_network(cfg, 20, 52, init)
    for layer in trainer.layers:   # non-trivial weights everywhere
        if layer.get_weights():
            layer.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    sampler = FlowSampler(trainer, 3)
    cond = sampler.condition(rng.normal(0, 1, (4, 58)).astype(np.float32))
    got = sampler.sample(cond, 5, np.random.default_rng(1))
    z = np.random.default_rng(1).standard_normal((20, 52)).astype(np.float32)
    c, a = np.repeat(cond[:, :-52], 5, axis=0), np.repeat(cond[:, -52:], 5, axis=0)
    for layer in reversed(sampler.couplings):
        z = layer.inverse(z, c)
    want = keras.ops.convert_to_numpy(sampler.base.inverse(z, c, a))
    np.testing.assert_allclose(got.reshape(20, 52), want, rtol=1e-4, atol=1e-4)
