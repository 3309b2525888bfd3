"""The compiled batch classifier (cardiotwin.features_compiled) against the Python path:
identical statuses and biomarkers on simulated populations covering every status."""

import math

import numpy as np
import pytest

from cardiotwin import features_compiled as fc
from cardiotwin.features import (
    BATCH_KEYS,
    DEFAULT_CONFIG,
    STATUSES,
    analyze_trace,
    classify_batch,
    noise_sd,
)
from cardiotwin.model.parameters import N_INFERRED, PARAMETER_INDEX, inputs_from_multipliers
from cardiotwin.simulate import simulate_current_clamp

RTOL = 1e-9


def assert_same(got, want):
    """Two classify_batch results: same statuses, dtypes, counts; floats within RTOL, NaN where
    NaN."""
    (s1, b1), (s2, b2) = got, want
    assert s1.dtype == s2.dtype
    np.testing.assert_array_equal(s1, s2)
    assert list(b1) == list(b2)
    for k in BATCH_KEYS:
        assert b1[k].dtype == b2[k].dtype, k
        if b2[k].dtype.kind == "f":
            np.testing.assert_allclose(b1[k], b2[k], rtol=RTOL, atol=0, equal_nan=True,
                                       err_msg=k)
        else:
            np.testing.assert_array_equal(b1[k], b2[k], err_msg=k)


def both(t, V):
    return classify_batch(t, V), classify_batch(t, V, compiled=False)


def population_inputs(n, seed):
    """n cells with multipliers uniform 0.4..1.6, then IKr blocks (E-4031-like, scale_g_Kr
    0.5 ... 0.05) of the baseline cell and of 8 random cells, and two IK1 knockdowns."""
    rng = np.random.default_rng(seed)
    inputs = inputs_from_multipliers(rng.uniform(0.4, 1.6, (n, N_INFERRED)))
    blocked = inputs_from_multipliers(np.vstack([np.ones((6, N_INFERRED)),
                                                 rng.uniform(0.6, 1.4, (8, N_INFERRED))]))
    blocked[:, PARAMETER_INDEX["scale_g_Kr"]] = np.r_[0.5, 0.3, 0.2, 0.15, 0.1, 0.05,
                                                      rng.uniform(0.05, 0.4, 8)]
    ik1 = inputs_from_multipliers(np.ones((2, N_INFERRED)))
    ik1[:, PARAMETER_INDEX["scale_g_K1"]] = (0.3, 0.1)
    return np.vstack([inputs, blocked, ik1])


def crafted(t, template):
    """Traces on axis t that the simulator rarely gives: non-finite, |V| > 200 mV, flat
    (resting and depolarized), a single AP then rest, an AP stuck depolarized."""
    n = t.size
    rows = []
    for bad in (np.nan, np.inf, -np.inf, 250.0, -201.0):
        v = template.astype(float).copy()
        v[n // 2] = bad
        rows.append(v)
    rows += [np.full(n, -75.0), np.full(n, -20.0), np.full(n, -40.0)]
    s = np.clip(t - 50.0, 0.0, None)
    one = -75.0 + 105.0 * np.clip(s / 2.0, 0, 1) * np.exp(-np.clip(s - 2.0, 0, None) / 120.0)
    rows.append(one)                                   # one AP then rest
    rows.append(np.where(t < 52.0, one, -10.0 - 0.002 * (t - 52.0)))   # stuck depolarized
    # piecewise linear (exact ties, zero noise): a first upstroke 5 ms after the start from a
    # flat minimum (no MDP before it), and a last one peaking a sample before the end; of two
    # beats followed by another, one does not fall below -40 mV (half, not most); a flat
    # stretch then a 4 mV bump rising for 1.5 ms (too short for an EAD when timed from the
    # last sample of the flat minimum, long enough from the first); the same bump rising for
    # 3 ms (an EAD)
    rows.append(np.interp(t, [0, 5, 7, 300, 400, 800, 802, 1200, 1300, 2990, t[-2], t[-1]],
                          [-75, -75, 30, 0, -70, -68, 30, 0, -75, -75, 30, 29]))
    rows.append(np.interp(t, [0, 100, 102, 400, 500, 800, 802, 1100, 1200, 1600, 1602, 1900,
                              2000], [-60, -60, 40, 10, -35, -35, 40, 10, -75, -72, 30, 0, -75]))
    for rise_ms in (1.5, 3.0):
        knots = [0, 100, 102, 250, 255, 255 + rise_ms, 255.5 + rise_ms, 400, 500, 800, 802,
                 1100, 1200]
        rows.append(np.interp(t, knots, [-75, -75, 30, -10, -10, -6, -10.5, -30, -75, -72, 30,
                                         -60, -75]))
    return np.array(rows)


@pytest.fixture(scope="module")
def pop2s():
    """~420 simulated cells of 2 s at 10 kHz (float32, as the population actor has them)."""
    cc = simulate_current_clamp(2000.0, population_inputs(400, seed=3))
    return cc.t_ms, cc.v_mV


def test_population_matches_python_path(pop2s):
    t, V = pop2s
    got, want = both(t, V)
    assert_same(got, want)
    counts = {s: int((want[0] == s).sum()) for s in STATUSES}
    assert counts["ok"] > 50 and counts["quiescent"] > 20 and counts["non_repolarizing"] > 50
    assert (want[1]["n_eads"] > 0).sum() >= 3          # EADs are exercised
    assert (want[1]["n_beats"] >= 2).sum() > 50


def test_crafted_traces_match(pop2s):
    t, V = pop2s
    t3 = np.arange(30001) * 0.1                        # 3 s: a single AP, then 2 s at rest
    C = crafted(t3, np.pad(V[0], (0, 10000), mode="edge"))
    got, want = both(t3, C)
    assert_same(got, want)
    assert list(want[0][:5]) == ["unstable"] * 5
    assert list(want[0][5:]) == ["quiescent", "quiescent", "quiescent", "quiescent",
                                 "non_repolarizing", "ok", "ok", "ok", "ok"]
    b = want[1]
    assert b["n_beats"][8] == 1 and np.isfinite(b["apd90_ms"][8])
    assert b["n_beats"][10:12].tolist() == [2, 3] and b["n_eads"][12:].tolist() == [0, 1]
    assert b["mdp_mV"][10] == -70.0


@pytest.mark.parametrize("n_samples", [3, 250, 500, 501, 800, 1200, 3001, 7777])
def test_short_traces_match(pop2s, n_samples):
    """Shorter than half the upstroke window (the Python path's), around it, a few hundred ms."""
    t, V = pop2s
    sel = V[::7, :n_samples]
    assert_same(*both(t[:n_samples], sel))


def test_short_trace_edge_case_is_the_python_paths(pop2s):
    """Between half the upstroke window and the window (25-50 ms at 10 kHz): the compiled path
    hands such a batch to analyze_trace (whose trailing filter once raised there)."""
    t, V = pop2s
    for n in (251, 400, 499):
        assert_same(*both(t[:n], V[:3, :n]))


def test_float64_input_and_single_trace(pop2s):
    t, V = pop2s
    V64 = V[:60].astype(np.float64)
    assert_same(classify_batch(t, V64), classify_batch(t, V[:60]))
    s1, b1 = classify_batch(t, V[5])
    s2, b2 = classify_batch(t, V[5:6], compiled=False)
    assert_same((s1, b1), (s2, b2))


def test_noisy_cells_fall_back_and_match(pop2s):
    t, V = pop2s
    rng = np.random.default_rng(0)
    W = V[:40].astype(np.float64)
    W[::4] += rng.normal(0.0, 0.5, W[::4].shape)      # a recording's 0.5 mV noise
    noisy = np.array([noise_sd(w) > DEFAULT_CONFIG.noise_threshold_mV for w in W])
    assert noisy.sum() == 10
    t64 = t.astype(float)
    codes, _, _ = fc._classify_cells(t64, W, *fc.kernel_arguments(t64))
    np.testing.assert_array_equal(codes == fc.FALLBACK, noisy)
    got, want = both(t, W)
    assert_same(got, want)
    assert (want[1]["n_beats"][::4] > 0).any()


@pytest.mark.parametrize("n", [200, 201])
def test_noise_decision_is_exact(n):
    """The count-based noise test is noise_sd > threshold, near the threshold too, for even and
    odd numbers of second differences (and the cut is the last value below it)."""
    thr = DEFAULT_CONFIG.noise_threshold_mV
    cut = fc._noise_cut(thr)
    div = 0.6745 * math.sqrt(6.0)
    assert cut / div <= thr < np.nextafter(cut, np.inf) / div
    rng = np.random.default_rng(n)
    cfg = fc._kernel_thresholds()
    seen = set()
    for scale in np.linspace(0.8, 1.2, 300):
        v = np.sin(np.arange(n) / 50.0) + rng.normal(0.0, thr * scale, n)
        want = noise_sd(v) > thr
        seen.add(want)
        assert fc._noisy(v, n, cfg[fc._NOISE_CUT], cfg[fc._NOISE_DIV], thr) == want
    if n % 2 == 0:
        assert seen == {True, False}
    # half the |second differences| at most the cut, half above: for an even count the two
    # middle values straddle it and decide
    seen = set()
    for lo, hi in ((0.5, 1.5), (0.25, 1.5)):
        d2 = np.where(np.arange(n - 2) % 2 == 0, cut * lo, cut * hi)
        v = np.zeros(n)
        v[2:] = np.cumsum(np.cumsum(np.r_[0.0, d2]))[1:]   # second differences ~ d2
        want = noise_sd(v) > thr
        seen.add(want)
        assert fc._noisy(v, n, cfg[fc._NOISE_CUT], cfg[fc._NOISE_DIV], thr) == want
    if n % 2 == 0:
        assert seen == {True, False}


def test_options_take_the_python_path(pop2s):
    t, V = pop2s
    sel = V[:30]
    statuses, bio = classify_batch(t, sel, refractory_ms=300.0, aggregate="mean")
    for i in range(sel.shape[0]):
        tf = analyze_trace(t, sel[i], refractory_ms=300.0, aggregate="mean")
        assert statuses[i] == tf.status
        for k in BATCH_KEYS:
            np.testing.assert_equal(bio[k][i], getattr(tf, k))


def test_bad_axis_and_empty_batch(pop2s):
    t, V = pop2s
    with pytest.raises(ValueError, match="strictly increasing"):
        classify_batch(t[::-1], V[:2])
    with pytest.raises(ValueError, match="equal length"):
        classify_batch(t[:-1], V[:2])
    s, b = classify_batch(t, V[:0])
    s2, b2 = classify_batch(t, V[:0], compiled=False)
    assert s.shape == (0,) and all(b[k].shape == (0,) for k in BATCH_KEYS)
    assert_same((s, b), (s2, b2))


@pytest.mark.slow
def test_large_population_6s_matches():
    """2,400 cells of 6 s (the cold population's AP run) at 10 kHz."""
    cc = simulate_current_clamp(6000.0, population_inputs(2400, seed=11))
    got, want = both(cc.t_ms, cc.v_mV)
    assert_same(got, want)
    assert {"ok", "quiescent", "non_repolarizing"} <= set(want[0])
    assert (want[1]["n_eads"] > 0).sum() >= 5
