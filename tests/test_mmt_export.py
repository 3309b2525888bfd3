"""The twin as a Myokit model (cardiotwin.twin.mmt_export): checked without Myokit (every state
has an initial value, every one of the 87 inputs appears with the twin's value, the written
equations give the simulator's own right-hand side at states along a voltage-clamp run, at two
temperatures), with Myokit when it is installed (a voltage-clamp trace against cardiotwin's),
and through ``cardiotwin twin --export-mmt``."""

import re

import numpy as np
import pytest

from cardiotwin.model.equations import cell_constants
from cardiotwin.model.parameters import (
    INITIAL_STATE,
    PARAMETER_NAMES,
    STATE_NAMES,
    inputs_from_multipliers,
)
from cardiotwin.model.temperature import tau_factor
from cardiotwin.protocols import Protocol, Segment
from cardiotwin.simulate import simulate_voltage_clamp
from cardiotwin.simulate.stiff import derivatives
from cardiotwin.twin.mmt_export import (
    STATES,
    equations,
    evaluate,
    mmt_text,
    parameter_name,
    parse_mmt_constants,
    twin_inputs,
)

RNG = np.random.default_rng(23)
MULT = RNG.uniform(0.6, 1.4, 52)
INPUTS = twin_inputs(MULT)
STEPS = Protocol((Segment(300, -80, -80), Segment(200, -120, -120), Segment(150, -20, -20),
                  Segment(150, 0, 0), Segment(150, 30, 30), Segment(200, -60, -60)))


def _states_along_the_protocol():
    """(command mV, state) pairs: the initial state at several voltages and the simulator's
    states at the end of each step (one run per prefix: continuation is exact)."""
    out = [(v, np.array(INITIAL_STATE)) for v in (-80.0, -40.0, 0.0, 1e-7, 40.0)]
    segs = STEPS.segments
    for k in range(1, len(segs) + 1):
        r = simulate_voltage_clamp(Protocol(segs[:k]), INPUTS[None])
        y = r.final_state[0]
        out.append((segs[k - 1].v_end_mV, y))
    return out


def test_every_state_and_parameter_is_written_with_the_twins_values():
    text = mmt_text(INPUTS, temperature_K=298.0)
    consts = parse_mmt_constants(text)
    for s, v in zip(STATES, INITIAL_STATE, strict=True):
        assert consts[s] == float(v), s
    for n, v in zip(PARAMETER_NAMES, INPUTS, strict=True):
        assert consts[parameter_name(n)] == float(v), n
    assert consts["phys.T"] == 298.0
    # every state has its equation, no name is defined twice, every name used is defined
    defined, used = set(), set()
    comp = None
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            comp = m.group(1)
        elif comp and "=" in line and not line.startswith((" ", "#")):
            lhs, rhs = (s.strip() for s in line.split("=", 1))
            name = f"{comp}.{lhs[4:-1]}" if lhs.startswith("dot(") else f"{comp}.{lhs}"
            key = ("dot " if lhs.startswith("dot(") else "") + name
            assert key not in defined, key
            defined.add(key)
            used |= set(re.findall(r"\b[A-Za-z_]\w*\.[A-Za-z_]\w*\b", rhs))
    assert {f"dot {s}" for s in STATES} <= defined
    assert used <= defined | set(STATES) | {"engine.pace"}, used - defined
    assert len(STATE_NAMES) == len(STATES) == 23


@pytest.mark.parametrize("temperature_K", [310.0, 298.0])
def test_written_equations_give_the_simulators_derivatives(temperature_K):
    eqs = equations(INPUTS, temperature_K)
    cp = cell_constants(INPUTS[None], tau_factor(temperature_K))[0]
    out = np.empty(23)
    for v, y in _states_along_the_protocol():
        y = np.array(y, float)
        y[0] = v
        i_ion = derivatives(y, cp, v, True, 0.0, out)
        e = evaluate(eqs, y, clamp_mV=v)
        assert e["membrane.i_ion"] == pytest.approx(i_ion, rel=1e-9, abs=1e-12)
        mine = np.array([e[f"dot({s})"] for s in STATES[1:]])
        scale = np.abs(out[1:]) + 1e-9 * np.abs(y[1:]) + 1e-10       # per ms
        rel = np.abs(mine - out[1:]) / scale
        assert rel.max() < 1e-5, (v, temperature_K, STATES[1 + int(np.argmax(rel))],
                                  mine[np.argmax(rel)], out[1 + np.argmax(rel)])
    # current clamp: dV/dt = i_stim - i_ion with the pace as the stimulus
    y = np.array(INITIAL_STATE)
    e = evaluate(eqs, y, pace=1.0)
    assert e["dot(membrane.V)"] == pytest.approx(3.0 - e["membrane.i_ion"])


def test_fca_holds_where_it_would_rise_above_minus_60_mV():
    eqs = equations(INPUTS)
    y = np.array(INITIAL_STATE)
    y[8] = 0.01                                     # fCa far below fCa_inf
    assert evaluate(eqs, y, clamp_mV=-20.0)["dot(ical.fCa)"] == 0.0
    assert evaluate(eqs, y, clamp_mV=-80.0)["dot(ical.fCa)"] > 0.0


def test_myokit_loads_the_model_and_reproduces_a_voltage_clamp_trace(tmp_path):
    myokit = pytest.importorskip("myokit")
    path = tmp_path / "twin.mmt"
    path.write_text(mmt_text(INPUTS))
    model = myokit.load_model(str(path))
    model.get("engine.pace").set_binding(None)
    v = model.get("membrane.V")
    v.demote()
    v.set_rhs(0)
    v.set_binding("pace")
    proto = myokit.Protocol()
    t = 0.0
    for s in STEPS.segments:
        proto.schedule(s.v_start_mV, t, s.duration_ms)
        t += s.duration_ms
    sim = myokit.Simulation(model, proto)
    sim.set_tolerance(1e-8, 1e-8)
    d = sim.run(STEPS.duration_ms, log=["engine.time", "membrane.i_ion"], log_interval=0.1)
    mine = np.asarray(d["membrane.i_ion"])[:STEPS.n_samples]
    ours = simulate_voltage_clamp(STEPS, INPUTS[None]).i_total[0].astype(float)
    edges = np.cumsum([0] + [round(s.duration_ms / 0.1) for s in STEPS.segments])
    keep = np.ones(STEPS.n_samples, bool)
    for e in edges[:-1]:
        keep[e:e + 20] = False                       # 2 ms after each step: the fast INa
    err = np.sqrt(np.mean((mine[keep] - ours[keep]) ** 2)) / np.sqrt(np.mean(ours[keep] ** 2))
    assert err < 0.05


def test_twin_command_line_exports_the_twins_model(flow_model, tmp_path, capsys):
    """``cardiotwin twin REC --export-mmt FILE``: the file holds the twin's parameter values."""
    import json

    from cardiotwin.cli import main
    from cardiotwin.twin import write_example_recording

    rec = write_example_recording(tmp_path, seed=5, spread=0.2, ap=False).voltage_clamp_abf
    _, model_dir, _ = flow_model
    out = tmp_path / "twin.json"
    mmt = tmp_path / "twin.mmt"
    assert main(["twin", str(rec), "--model", str(model_dir), "--out", str(out),
                 "--no-simulate", "--export-mmt", str(mmt)]) == 0
    tw = json.loads(out.read_text())
    consts = parse_mmt_constants(mmt.read_text())
    m = np.array([tw["parameters"][n]["multiplier"] for n in tw["parameters"]])
    expected = inputs_from_multipliers(m)[0]
    for n, x in zip(PARAMETER_NAMES, expected, strict=True):
        assert consts[parameter_name(n)] == pytest.approx(x, rel=1e-12), n
    for n, p in tw["parameters"].items():
        assert consts[parameter_name(n)] == pytest.approx(p["value"], rel=1e-6), n
    assert "Myokit model" in capsys.readouterr().out
    other = tmp_path / "other_vc.abf"
    other.write_bytes(rec.read_bytes())
    assert main(["twin", str(rec), str(other), "--model", str(model_dir), "--out-dir",
                 str(tmp_path / "d"), "--export-mmt", str(mmt)]) == 2
    assert "--export-mmt is for one recording" in capsys.readouterr().err
