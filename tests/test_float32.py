"""The float32 voltage-clamp kernel (simulate.precision): true float32 arithmetic, the authors'
reference cells within the float64 tolerances, float64 within 0.1%, batch = single cell.

The twin compiles on first use (~1 min per variant, cached on disk after), so the simulations
are shared through module fixtures.
"""

import re
from pathlib import Path

import numba
import numpy as np
import pytest
from conftest import read_columns, rel_rms

from cardiotwin.features import analyze_trace, classify_batch, load_trace_csv
from cardiotwin.model import (
    BASELINE,
    inputs_from_multipliers,
    inputs_from_named,
    read_multipliers_csv,
)
from cardiotwin.model.artefacts import VoltageClampArtefacts
from cardiotwin.protocols import Protocol, builtin_protocol
from cardiotwin.simulate import simulate_current_clamp, simulate_voltage_clamp
from cardiotwin.simulate.precision import float32_module

DATA = Path(__file__).parent / "data"
CELLS = ("baseline", "set1", "set2")
ITOTAL_TOL = 0.01  # as for float64 (tests/test_simulator.py)
# steps, a ramp and the +60 mV step of real protocols (the stiff RyR branch), 900 ms
SHORT = Protocol([(200, -80, -80), (100, -120, -120), (100, 60, 60), (100, -20, -20),
                  (200, -80, 37), (200, -40, -40)])


def _ref_inputs() -> np.ndarray:
    return np.stack([BASELINE] + [inputs_from_named(read_multipliers_csv(
        DATA / f"{c}_multipliers.csv")) for c in CELLS[1:]])


@pytest.fixture(scope="module")
def ref_a():
    """The three reference cells on protocol_a in float32, with currents."""
    return simulate_voltage_clamp(builtin_protocol("protocol_a"), _ref_inputs(),
                                  record_currents=True, precision="float32")


@pytest.fixture(scope="module")
def population():
    m = np.random.default_rng(22).uniform(0.6, 1.4, (40, 52))
    m[7] = np.random.default_rng(23).uniform(0.2, 5.0, 52)  # a far cell too
    return inputs_from_multipliers(m)


@pytest.fixture(scope="module")
def both(population):
    return (simulate_voltage_clamp(SHORT, population, precision="float32"),
            simulate_voltage_clamp(SHORT, population))


def test_reference_cells_within_the_float64_tolerance(ref_a):
    for k, cell in enumerate(CELLS):
        ref = read_columns(DATA / f"sim_{cell}_vc_protocol_a.csv.gz")
        err = rel_rms(ref_a.i_total[k], ref["I_total"])
        assert err <= ITOTAL_TOL, f"{cell}: I_total relative RMS {err:.3%}"
        # the currents sum to I_total in float32 as well
        total = sum(c[k].astype(float) for c in ref_a.currents.values())
        assert rel_rms(total, ref_a.i_total[k]) < 1e-4


def test_float32_agrees_with_float64(both):
    r32, r64 = both
    assert not r64.unstable.any()
    np.testing.assert_array_equal(r32.unstable, r64.unstable)
    errs = [rel_rms(a, b) for a, b in zip(r32.i_total, r64.i_total, strict=True)]
    assert max(errs) < 1e-3, max(errs)
    assert max(errs) > 0  # really another arithmetic
    np.testing.assert_allclose(r32.final_state, r64.final_state, rtol=2e-3, atol=1e-6)
    assert r32.i_total.dtype == np.float32 and r32.final_state.dtype == np.float64
    np.testing.assert_array_equal(r32.t_ms, r64.t_ms)


def test_float32_batch_equals_single_cell(population, both):
    for i in (0, 7, 39):
        one = simulate_voltage_clamp(SHORT, population[i:i + 1], precision="float32")
        np.testing.assert_array_equal(one.i_total[0], both[0].i_total[i])
        np.testing.assert_array_equal(one.final_state[0], both[0].final_state[i])


ARTEFACTS = VoltageClampArtefacts(cm_pF=100.0, rs_MOhm=30.0, compensation=0.8,
                                  prediction=0.8, tau_sum_ms=0.02, g_leak_nS_per_pF=0.03,
                                  v_offset_mV=2.0)


@pytest.fixture(scope="module")
def artefact_both(population):
    return [simulate_voltage_clamp(SHORT, population[:20], artefacts=ARTEFACTS,
                                   record_membrane=True, precision=p)
            for p in ("float32", "float64")]


def test_float32_artefact_clamp_agrees_with_float64(artefact_both):
    r32, r64 = artefact_both
    np.testing.assert_array_equal(r32.unstable, r64.unstable)
    errs = [rel_rms(a, b) for a, b in zip(r32.i_total, r64.i_total, strict=True)]
    assert 0 < max(errs) < 1e-3, max(errs)
    assert np.max(np.abs(r32.v_membrane - r64.v_membrane)) < 0.2  # mV


@pytest.mark.parametrize("kind", ["ideal", "artefacts"])
def test_float32_kernel_has_no_float64_arithmetic(both, artefact_both, kind):
    """After the twin's rewriting no float64 operation is left in the compiled kernel (a
    float64 literal or constant anywhere in the equations would show up here as fpext)."""
    k32 = float32_module("cardiotwin.simulate.kernels")
    cached = (k32.voltage_clamp_kernel if kind == "ideal" else k32.artefact_clamp_kernel)[False]
    (sig,) = cached.signatures
    # numba cannot inspect code loaded from its cache: compile the same function afresh
    # (serially: the arithmetic is the same, the compile quicker)
    fresh = numba.njit(**{**k32._JIT, "cache": False, "parallel": False})(cached.py_func)
    fresh.compile(sig)
    ir = fresh.inspect_llvm(sig)
    f32_ops = re.findall(r"= f(?:add|sub|mul|div) [^\n]*float", ir)
    f64_ops = re.findall(r"= f(?:add|sub|mul|div|cmp \w+) [^\n]*double|fpext", ir)
    assert len(f32_ops) > 1000 and f64_ops == [], f64_ops[:5]


def test_unstable_cell_flagged_in_float32():
    bad = BASELINE.copy()[None, :].repeat(2, 0)
    bad[1] = inputs_from_named({"scale_Vmax_up": 1e4})
    r = simulate_voltage_clamp(SHORT, bad, precision="float32")
    assert r.unstable.tolist() == [False, True]
    assert np.isfinite(r.i_total[0]).all() and np.isnan(r.i_total[1, -1])


def test_bad_precision_refused():
    with pytest.raises(ValueError, match="precision must be one of float64, float32"):
        simulate_voltage_clamp(SHORT, None, precision="half")
    with pytest.raises(ValueError, match="no float32 twin"):
        float32_module("cardiotwin.features")


# ----------------------------------------------------------------------------- current clamp

@pytest.fixture(scope="module")
def spont32():
    """The reference cells beating freely for 6 s in float32."""
    return simulate_current_clamp(6000.0, _ref_inputs(), precision="float32")


def test_float32_beating_matches_the_reference(spont32):
    """The float64 checks of tests/test_simulator.py: cycle length and upstroke times within
    1%, APD90 within 2% of the authors' trace; set1 does not repolarize."""
    t_ref, v_ref = load_trace_csv(DATA / "sim_baseline_spontaneous_6s.csv.gz")
    sim, ref = analyze_trace(spont32.t_ms, spont32.v_mV[0]), analyze_trace(t_ref, v_ref)
    assert sim.status == ref.status == "ok" and sim.n_beats == ref.n_beats
    assert abs(sim.cycle_length_ms / ref.cycle_length_ms - 1) <= 0.01
    assert abs(sim.apd90_ms / ref.apd90_ms - 1) <= 0.02
    for a, b in zip(sim.beats, ref.beats, strict=True):
        assert abs(a.upstroke_time_ms / b.upstroke_time_ms - 1) <= 0.01
    assert analyze_trace(spont32.t_ms, spont32.v_mV[1]).status == "non_repolarizing"
    assert analyze_trace(spont32.t_ms, spont32.v_mV[2]).status == "ok"


def test_float32_current_clamp_batch_equals_single(spont32):
    one = simulate_current_clamp(6000.0, _ref_inputs()[2:3], precision="float32")
    np.testing.assert_array_equal(one.v_mV[0], spont32.v_mV[2])
    np.testing.assert_array_equal(one.final_state[0], spont32.final_state[2])


def test_float32_population_statuses_and_biomarkers(population):
    a = simulate_current_clamp(2000.0, population, precision="float32")
    b = simulate_current_clamp(2000.0, population)
    sa, ma = classify_batch(a.t_ms, a.v_mV)
    sb, mb = classify_batch(b.t_ms, b.v_mV)
    assert np.mean(sa == sb) >= 0.95, list(zip(sa, sb, strict=True))
    ok = (sa == "ok") & (sb == "ok")
    assert ok.sum() >= 10
    for key, tol in (("cycle_length_ms", 0.01), ("apd90_ms", 0.02)):
        rel = np.abs(ma[key][ok] / mb[key][ok] - 1)
        assert np.nanmax(rel) <= tol, (key, np.nanmax(rel))
    assert not np.array_equal(a.v_mV, b.v_mV)


# ----------------------------------------------------------------------------- populations

def test_population_precision_option(tmp_path):
    from cardiotwin.population import GenerationConfig
    from cardiotwin.population.batch import simulate_batch

    base = dict(n_cells=10, seed=1, protocol="protocol_a", out_dir=tmp_path)
    c64, c32 = GenerationConfig(**base), GenerationConfig(**base, precision="float32")
    assert "precision" not in c64.identity("h")  # stores written before keep their hash
    assert c32.identity("h")["precision"] == "float32"
    assert c64.config_hash("h") != c32.config_hash("h")
    with pytest.raises(ValueError, match="precision"):
        GenerationConfig(**base, precision="float16")
    m = np.random.default_rng(3).uniform(0.8, 1.2, (4, 52))
    s64, _, i64, _ = simulate_batch(SHORT, m, 500.0, 310.0)
    s32, _, i32, _ = simulate_batch(SHORT, m, 500.0, 310.0, precision="float32")
    np.testing.assert_array_equal(s32, s64)
    assert max(rel_rms(a, b) for a, b in zip(i32, i64, strict=True)) < 1e-3
    with pytest.raises(ValueError, match="CPU only"):
        simulate_batch(SHORT, m, 500.0, 310.0, device="gpu", precision="float32")
    # with the amplifier and seal drawn from the default prior
    from cardiotwin.population.artefact_prior import ArtefactPrior

    art = ArtefactPrior().draw(0, 0, 4)
    _, _, a32, _ = simulate_batch(SHORT, m, 500.0, 310.0, artefacts=art, precision="float32")
    _, _, a64, _ = simulate_batch(SHORT, m, 500.0, 310.0, artefacts=art)
    fin = np.isfinite(a64).all(axis=1)
    assert fin.sum() >= 2 and np.array_equal(fin, np.isfinite(a32).all(axis=1))
    assert 0 < max(rel_rms(a, b) for a, b in zip(a32[fin], a64[fin], strict=True)) < 1e-3


def test_generate_cli_precision(tmp_path):
    from cardiotwin.cli import build_parser
    from cardiotwin.population.cli_args import config_from_args

    a = build_parser().parse_args(["generate", "--n-cells", "4", "--out", str(tmp_path),
                                   "--precision", "float32"])
    assert config_from_args(a).precision == "float32"
    a = build_parser().parse_args(["generate", "--n-cells", "4", "--out", str(tmp_path)])
    assert config_from_args(a).precision == "float64"


def test_twin_source_has_no_float64_literal_in_jitted_code(tmp_path):
    """The rewriting itself, without compiling: in the generated twins no float literal, no
    np.nan / np.inf and no float() call is left inside an njit function; the header names the
    sources' digest, and an unchanged twin is not rewritten (numba's cache stays valid)."""
    import ast

    from cardiotwin.simulate import precision

    digest = precision._digest()
    for module in precision.TWINNED:
        src = precision._twin_source(module, digest)
        assert digest in src.splitlines()[0]
        tree = ast.parse(src)
        jitted = [f for f in ast.walk(tree)
                  if isinstance(f, ast.FunctionDef) and precision._is_jitted(f)]
        assert jitted, module
        for f in jitted:
            for node in (n for stmt in f.body for n in ast.walk(stmt)):
                assert not (isinstance(node, ast.Constant) and type(node.value) is float), \
                    (module, f.name, ast.unparse(node))
                assert not (isinstance(node, ast.Attribute) and node.attr in ("nan", "inf")), \
                    (module, f.name)
                assert not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                            and node.func.id == "float"), (module, f.name)
    path = tmp_path / "twin.py"
    precision._write_if_changed(path, "x = 1\n")
    stamp = path.stat().st_mtime_ns
    precision._write_if_changed(path, "x = 1\n")
    assert path.stat().st_mtime_ns == stamp
    precision._write_if_changed(path, "x = 2\n")
    assert path.read_text() == "x = 2\n"


def test_twins_use_only_twins():
    """No twin reaches a float64 original: every module or jitted function a twin holds that
    comes from a twinned module (or vecmath) is its float32 twin."""
    import types

    from cardiotwin.simulate import precision

    originals = set(precision.TWINNED) | set(precision.SUBSTITUTES)
    for module in precision.TWINNED:
        twin = float32_module(module)
        for name, value in vars(twin).items():
            if isinstance(value, types.ModuleType):
                assert value.__name__ not in originals, (module, name)
            py_func = getattr(value, "py_func", None)
            if py_func is not None:
                assert py_func.__module__ not in originals, (module, name, py_func.__module__)
    k32 = float32_module("cardiotwin.simulate.kernels")
    assert k32.late_sodium is float32_module("cardiotwin.model.late_sodium")
