"""Tests of the Kernik-Clancy 2019 parameter registry (cardiotwin.model): names, baseline,
initial state, multipliers, the drug-block hook and the temperature factor. No simulation."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.model import (
    BASELINE,
    INFERRED_NAMES,
    INITIAL_STATE,
    N_INFERRED,
    N_INPUTS,
    N_STATES,
    PARAMETER_NAMES,
    STATE_NAMES,
    apply_block,
    inputs_from_multipliers,
    inputs_from_named,
    read_multipliers_csv,
    tau_factor,
)

DATA = Path(__file__).parent / "data"
SHARED_REF = Path(__file__).resolve().parents[2] / "shared" / "reference"
IDX = {n: i for i, n in enumerate(PARAMETER_NAMES)}
CURRENTS = ("IK1", "IKr", "IKs", "ICaL", "INa", "If")


# ----------------------------------------------------------------------------- registry


def test_registry_sizes_and_names():
    assert N_INPUTS == len(PARAMETER_NAMES) == BASELINE.size == 87
    assert N_INFERRED == len(INFERRED_NAMES) == 52
    assert N_STATES == len(STATE_NAMES) == INITIAL_STATE.size == 23
    assert len(set(PARAMETER_NAMES)) == 87 and len(set(INFERRED_NAMES)) == 52
    assert len(set(STATE_NAMES)) == 23
    assert STATE_NAMES[0] == "V" and INITIAL_STATE[0] == pytest.approx(-75.596602)
    assert BASELINE.dtype == INITIAL_STATE.dtype == np.float64
    assert np.isfinite(BASELINE).all() and np.isfinite(INITIAL_STATE).all()


def test_inferred_names_canonical_order():
    idx = [IDX[n] for n in INFERRED_NAMES]
    assert idx == sorted(idx)  # registry (file) order
    assert INFERRED_NAMES[0] == "IK1.g_K1" and INFERRED_NAMES[-1] == "If.tau_xF_const"
    assert {n.split(".")[0] for n in INFERRED_NAMES} == set(CURRENTS)
    for cur in CURRENTS:  # every inferred current's conductance is in the set
        assert any(n.startswith(cur + ".") and (".g_" in n or ".p_" in n) for n in INFERRED_NAMES)
    assert not any(n.startswith(("scale_", "flag.")) for n in INFERRED_NAMES)
    assert all(BASELINE[IDX[n]] != 0 for n in INFERRED_NAMES)


def test_baseline_and_initial_state_read_only():
    with pytest.raises(ValueError):
        BASELINE[0] = 2.0
    with pytest.raises(ValueError):
        INITIAL_STATE[0] = 0.0
    assert all(BASELINE[IDX[n]] == 1.0 for n in PARAMETER_NAMES if n.startswith("scale_"))


@pytest.mark.skipif(not SHARED_REF.is_dir(), reason="shared reference data not present")
def test_registry_matches_shared_reference():
    with (SHARED_REF / "kernik_parameters.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(r["name"] for r in rows) == PARAMETER_NAMES
    np.testing.assert_array_equal([float(r["baseline_value"]) for r in rows], BASELINE)
    assert tuple(r["name"] for r in rows if r["in_52_set"] == "1") == INFERRED_NAMES
    with (SHARED_REF / "kernik_initial_state.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(r["name"] for r in rows) == STATE_NAMES
    np.testing.assert_array_equal([float(r["value"]) for r in rows], INITIAL_STATE)


# ----------------------------------------------------------------------------- multipliers


def test_ones_give_baseline_and_shapes():
    one = inputs_from_multipliers(np.ones(52))
    assert one.shape == (1, 87) and one.dtype == np.float64
    np.testing.assert_array_equal(one[0], BASELINE)
    many = inputs_from_multipliers(np.ones((4, 52)))
    assert many.shape == (4, 87)
    assert inputs_from_multipliers(np.ones((0, 52))).shape == (0, 87)


def test_multipliers_scale_only_the_inferred_inputs():
    m = np.linspace(0.5, 1.5, 52)[None, :]
    x = inputs_from_multipliers(m)[0]
    inferred = np.array([IDX[n] for n in INFERRED_NAMES])
    np.testing.assert_array_equal(x[inferred], BASELINE[inferred] * m[0])
    rest = np.setdiff1d(np.arange(87), inferred)
    np.testing.assert_array_equal(x[rest], BASELINE[rest])


@pytest.mark.parametrize("cell", ["set1", "set2"])
def test_multipliers_csv_matches_array_form(cell):
    named = read_multipliers_csv(DATA / f"{cell}_multipliers.csv")
    assert tuple(named) == INFERRED_NAMES
    m = np.array([named[n] for n in INFERRED_NAMES])
    assert np.all((m > 0.5) & (m < 1.5)) and not np.all(m == 1)
    np.testing.assert_array_equal(inputs_from_named(named), inputs_from_multipliers(m)[0])


def test_inputs_from_named_any_parameter_and_base():
    x = inputs_from_named({"Ito.g_to": 2.0, "scale_g_Kr": 0.5})
    assert x.shape == (87,)
    assert x[IDX["Ito.g_to"]] == 2.0 * BASELINE[IDX["Ito.g_to"]]
    assert x[IDX["scale_g_Kr"]] == 0.5
    y = inputs_from_named({"scale_g_Kr": 0.5}, base=x)
    assert y[IDX["scale_g_Kr"]] == 0.25 and y[IDX["Ito.g_to"]] == x[IDX["Ito.g_to"]]


def test_inputs_from_named_empty_is_baseline():
    np.testing.assert_array_equal(inputs_from_named({}), BASELINE)


def test_zero_multiplier_only_for_conductances():
    m = np.ones(52)
    m[INFERRED_NAMES.index("IK1.g_K1")] = 0.0
    assert inputs_from_multipliers(m)[0, IDX["IK1.g_K1"]] == 0.0  # a knockout is allowed
    m = np.ones(52)
    m[INFERRED_NAMES.index("IK1.xK12")] = 0.0  # a slope factor cannot be zero
    with pytest.raises(ValueError, match=r"multiplier 0.0 for 'IK1.xK12' \(cell 0\) is not "
                                         r"allowed; expected > 0"):
        inputs_from_multipliers(m)


@pytest.mark.parametrize("shape", [(3, 51), (53,), (2, 3, 52), ()])
def test_multipliers_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"expected shape \(n_cells, 52\) in the order of "
                                         r"INFERRED_NAMES"):
        inputs_from_multipliers(np.ones(shape))


@pytest.mark.parametrize("bad, msg", [(np.nan, "non-finite multiplier nan"),
                                      (np.inf, "non-finite multiplier inf"),
                                      (-0.1, r"multiplier -0.1")])
def test_multipliers_bad_values(bad, msg):
    m = np.ones((2, 52))
    m[1, INFERRED_NAMES.index("IK1.xK12")] = bad
    with pytest.raises(ValueError, match=msg + r" for 'IK1.xK12' \(cell 1\)"):
        inputs_from_multipliers(m)


def test_inputs_from_named_errors():
    with pytest.raises(ValueError, match=r"unknown model parameter 'IKr.gKr'"):
        inputs_from_named({"IKr.gKr": 1.0})
    with pytest.raises(ValueError, match=r"'flag.stim' is a model flag"):
        inputs_from_named({"flag.stim": 1.0})
    with pytest.raises(ValueError, match=r"multiplier -1.0 for 'IKr.g_Kr'"):
        inputs_from_named({"IKr.g_Kr": -1.0})


def test_read_multipliers_csv_errors(tmp_path):
    def write(text):
        p = tmp_path / "m.csv"
        p.write_text(text)
        return p

    with pytest.raises(ValueError, match=r"line 3: unknown parameter 'nope'"):
        read_multipliers_csv(write("name,multiplier\nIK1.g_K1,1\nnope,1\n"))
    with pytest.raises(ValueError, match=r"line 3: parameter 'IK1.g_K1' given twice"):
        read_multipliers_csv(write("name,multiplier\nIK1.g_K1,1\nIK1.g_K1,2\n"))
    with pytest.raises(ValueError, match=r"line 2: multiplier 'x' for 'IK1.g_K1' is not a number"):
        read_multipliers_csv(write("name,multiplier\nIK1.g_K1,x\n"))
    with pytest.raises(ValueError, match="expected columns 'name,multiplier'"):
        read_multipliers_csv(write("parameter,value\nIK1.g_K1,1\n"))
    with pytest.raises(ValueError, match="no rows"):
        read_multipliers_csv(write("name,multiplier\n"))
    with pytest.raises(FileNotFoundError, match="multipliers file not found"):
        read_multipliers_csv(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------- drug block


def test_apply_block_scales_only_the_conductance_scale():
    full = apply_block(BASELINE, {"IKr": 1.0})
    assert full.shape == (1, 87)
    assert full[0, IDX["scale_g_Kr"]] == 0.0
    others = np.arange(87) != IDX["scale_g_Kr"]
    np.testing.assert_array_equal(full[0, others], BASELINE[others])
    half = apply_block(BASELINE, {"IKr": 0.5, "ICaL": 0.25})[0]
    assert half[IDX["scale_g_Kr"]] == 0.5 and half[IDX["scale_p_CaL"]] == 0.75
    assert half[IDX["IKr.g_Kr"]] == BASELINE[IDX["IKr.g_Kr"]]  # the inferred g is untouched
    np.testing.assert_array_equal(apply_block(BASELINE, {"IKr": 0.0})[0], BASELINE)


def test_apply_block_per_cell_composes_and_copies():
    x = inputs_from_multipliers(np.ones((3, 52)))
    before = x.copy()
    y = apply_block(x, {"INa": np.array([0.0, 0.5, 1.0])})
    np.testing.assert_array_equal(x, before)  # input not modified
    np.testing.assert_array_equal(y[:, IDX["scale_g_Na"]], [1.0, 0.5, 0.0])
    z = apply_block(apply_block(x, {"IKs": 0.5}), {"IKs": 0.5})
    np.testing.assert_array_equal(z[:, IDX["scale_g_Ks"]], 0.25)


def test_apply_block_errors():
    with pytest.raises(ValueError, match=r"unknown current 'hERG' in block; expected one of"):
        apply_block(BASELINE, {"hERG": 0.5})
    for frac in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"block fraction for IKr must be in \[0, 1\]"):
            apply_block(BASELINE, {"IKr": frac})


# ----------------------------------------------------------------------------- temperature


def test_tau_factor():
    assert tau_factor(310) == 1.0
    assert tau_factor(298) == 3 ** 1.2
    assert tau_factor(298.0) == pytest.approx(3.737, abs=1e-3)
    assert tau_factor(300) == pytest.approx(3.0)
    assert tau_factor(320) == pytest.approx(1 / 3)


@pytest.mark.parametrize("t", [25.0, 37.0, 250.0, 330.0, 400.0, math.nan])
def test_tau_factor_rejects_out_of_range(t):
    with pytest.raises(ValueError, match=r"outside the supported range \(250, 330\) K; note the "
                                         r"unit is kelvin"):
        tau_factor(t)
