"""Robust integration: the batched kernels against an independent stiff integration of the same
equations (scipy solve_ivp, BDF at rtol 1e-8), on the cells a real lab's +60 mV steps used to
flag as 'unstable', and on random cells and random step/ramp protocols over -120..+60 mV."""

from pathlib import Path

import numpy as np
import pytest
from conftest import rel_rms

from cardiotwin.model import inputs_from_multipliers
from cardiotwin.model.equations import CAI, K_IM, K_OM, _ryr_backward_euler, cell_constants
from cardiotwin.model.parameters import BASELINE, INITIAL_STATE, N_STATES
from cardiotwin.population.sampling import sample_multipliers
from cardiotwin.protocols import Protocol, Segment, load_protocol
from cardiotwin.simulate import Pacing, simulate_current_clamp, simulate_voltage_clamp
from cardiotwin.simulate.stiff import (
    derivatives,
    simulate_current_clamp_stiff,
    simulate_voltage_clamp_stiff,
)

DATA = Path(__file__).parent / "data"
STEP_PROTOCOL = DATA / "real_vc_steps_5_031221_2_protocol.csv"
# cells of `cardiotwin generate --n-cells 400 --range 0.4 --seed 4242 --protocol STEP_PROTOCOL`
# whose I_total turned NaN during the +60 mV step with forward Euler for the RyR
ONCE_UNSTABLE = (60, 129, 197)
MATCH_TOL = 0.01  # relative RMS of I_total against the stiff reference


# ---- fast checks of the pieces -----------------------------------------------------------------

def test_ryr_backward_euler_solves_the_linear_step():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rr, ro, ri = rng.dirichlet([1, 1, 1, 1])[:3]
        a, b, h = rng.uniform(0, 50), rng.uniform(0, 10), rng.uniform(0.01, 0.5)
        m = np.array([[-(K_IM + b + a), K_OM - K_IM, -K_IM],
                      [a, -(K_OM + b), K_IM],
                      [-a, b - a, -(K_IM + K_OM + a)]])
        expected = np.linalg.solve(np.eye(3) - h * m, np.array([rr, ro, ri]) + h * np.array(
            [K_IM, 0.0, a]))
        np.testing.assert_allclose(_ryr_backward_euler(rr, ro, ri, a, b, h), expected,
                                   rtol=1e-12, atol=1e-15)


def test_ryr_backward_euler_keeps_a_probability_vector_at_huge_rates():
    y = np.array(_ryr_backward_euler(0.3, 0.3, 0.3, 1e6, 1e3, 0.1))
    assert np.all(y >= -1e-12) and y.sum() <= 1.0 + 1e-12


def test_derivatives_are_the_limit_of_one_kernel_step():
    """One step of h by the voltage-clamp kernel agrees with y + h f(y) to O(h^2)."""
    y = INITIAL_STATE.copy()
    cp = cell_constants(BASELINE[None, :], 1.0)[0]
    f = np.empty_like(y)
    derivatives(y, cp, -20.0, True, 0.0, f)
    for h in (1e-3, 1e-4):
        one_step = Protocol(segments=(Segment(h, -20.0, -20.0),), sample_interval_ms=h)
        step = simulate_voltage_clamp(one_step).final_state[0] - y
        step[0] = 0.0  # V: the kernel stores the command, the start state has -75.6 mV
        scale = np.abs(h * f) + 1e-14 * np.abs(y) + 1e-300
        assert np.max(np.abs(step - h * f) / scale) < 50 * h


def test_derivatives_finite_at_extreme_calcium():
    """fCa_inf's one-division form overflowed to inf/inf from Cai ~ 50 uM."""
    cp = cell_constants(BASELINE[None, :], 1.0)[0]
    f = np.empty(N_STATES)
    for cai in (0.06, 1.0, 10.0):
        y = INITIAL_STATE.copy()
        y[CAI] = cai
        assert np.isfinite(derivatives(y, cp, 40.0, True, 0.0, f)) and np.all(np.isfinite(f))


def test_pacing_edges_and_is_on():
    p = Pacing(period_ms=1000.0, width_ms=5.0, start_ms=100.0)
    assert p.edges(2200.0) == [100.0, 105.0, 1100.0, 1105.0, 2100.0, 2105.0]
    assert p.is_on(100.0) and p.is_on(1104.9) and not p.is_on(1105.0) and not p.is_on(99.9)
    assert Pacing(start_ms=-500.0).edges(600.0) == [500.0, 505.0]


def test_stiff_reference_refuses_bad_input():
    proto = Protocol(segments=(Segment(10.0, -80.0, -80.0),))
    with pytest.raises(ValueError, match="method"):
        simulate_voltage_clamp_stiff(proto, method="RK45")
    with pytest.raises(ValueError, match="one cell"):
        simulate_voltage_clamp_stiff(proto, np.repeat(BASELINE[None, :], 2, axis=0))


def test_stiff_reference_current_clamp_matches_kernel_before_the_first_beat():
    """Free-running baseline cell, first 200 ms (diastolic depolarization, no upstroke)."""
    _, v_ref = simulate_current_clamp_stiff(200.0)
    v = simulate_current_clamp(200.0).v_mV[0]
    assert np.max(np.abs(v - v_ref)) < 0.05


def test_stiff_reference_paced_upstroke_times_match_kernel():
    pacing = Pacing(period_ms=500.0, amplitude=6.0, width_ms=5.0, start_ms=50.0)
    t, v_ref = simulate_current_clamp_stiff(1000.0, pacing=pacing)
    v = simulate_current_clamp(1000.0, pacing=pacing).v_mV[0]

    def upstrokes(x):
        return t[1:][(x[1:] >= 0.0) & (x[:-1] < 0.0)]

    np.testing.assert_allclose(upstrokes(v), upstrokes(v_ref), atol=0.5)


# ---- the kernels against the stiff reference ---------------------------------------------------

@pytest.fixture(scope="module")
def step_protocol():
    return load_protocol(STEP_PROTOCOL, temperature_K=310.0)


@pytest.mark.slow
def test_once_unstable_cells_integrate_and_match_stiff_reference(step_protocol):
    x = inputs_from_multipliers(sample_multipliers(400, 0.4, 4242)[list(ONCE_UNSTABLE)]
                                .astype(np.float32))
    res = simulate_voltage_clamp(step_protocol, x)
    assert not res.unstable.any()
    assert np.all(np.isfinite(res.i_total))
    for k, cell in enumerate(ONCE_UNSTABLE):
        _, i_ref = simulate_voltage_clamp_stiff(step_protocol, x[k])
        err = rel_rms(res.i_total[k], i_ref)
        assert err < MATCH_TOL, f"cell {cell}: I_total relative RMS {err:.3%} against BDF"


def random_protocol(rng: np.random.Generator) -> Protocol:
    """Holding -80 mV, then 4-9 steps (70%) or ramps (30%) of 5-1500 ms between -120 and
    +60 mV."""
    segs = [Segment(500.0, -80.0, -80.0)]
    for _ in range(int(rng.integers(4, 10))):
        d = float(np.round(rng.uniform(5.0, 1500.0), 1))
        v0, v1 = (float(v) for v in np.round(rng.uniform(-120.0, 60.0, 2), 1))
        segs.append(Segment(d, v0, v1 if rng.random() < 0.3 else v0))
    return Protocol(segments=tuple(segs), sample_interval_ms=0.1, temperature_K=310.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_cells_and_protocols_never_falsely_unstable(seed):
    """No cell flagged unstable (every one integrates under BDF, checked on 2 per protocol),
    and the checked ones match the stiff reference."""
    rng = np.random.default_rng(seed)
    proto = random_protocol(rng)
    x = inputs_from_multipliers(sample_multipliers(96, 0.5, 1000 + seed).astype(np.float32))
    res = simulate_voltage_clamp(proto, x)
    flagged = np.flatnonzero(res.unstable)
    assert flagged.size == 0, f"cells {flagged.tolist()} flagged unstable on {proto.segments}"
    for cell in rng.choice(len(x), 2, replace=False):
        _, i_ref = simulate_voltage_clamp_stiff(proto, x[cell])
        err = rel_rms(res.i_total[cell], i_ref)
        assert err < MATCH_TOL, f"cell {cell}: relative RMS {err:.3%} on {proto.segments}"
