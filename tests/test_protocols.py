"""Tests of the voltage-clamp protocol contract (cardiotwin.protocols)."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.protocols import FORMAT, Protocol, Segment, concatenate, load_protocol

DATA = Path(__file__).parent / "data"
PROTOCOL_A = DATA / "protocol_a.csv"
# Canonical form is a contract: datasets carry this hash. Change it only with a format bump.
PROTOCOL_A_HASH = "8921f7a65e9417ccc626af3ebff4dda097c4e71a9ce3eebe8c1a093f4fe4e147"


@pytest.fixture(scope="module")
def pa() -> Protocol:
    return load_protocol(PROTOCOL_A)


def small(**kw) -> Protocol:
    return Protocol((Segment(10, -80, -80), Segment(5, -80, 20)), **kw)


def write(tmp_path: Path, text: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- protocol_a ----------------------------------------------------------------------------


def test_protocol_a_shape(pa):
    assert len(pa.segments) == 16
    assert pa.duration_ms == 4950.0
    assert pa.n_samples == 49500
    assert [k for k, s in enumerate(pa.segments) if s.is_ramp] == [11]
    assert pa.segments[11] == Segment(200, -80, 37)
    assert (pa.sample_interval_ms, pa.temperature_K) == (0.1, 310.0)


def test_protocol_a_command_voltage(pa):
    t, v = pa.times_ms(), pa.command_voltage()
    assert t.dtype == v.dtype == np.float64 and t.shape == v.shape == (49500,)
    assert t[0] == 0.0 and t[-1] == pytest.approx(4949.9)
    assert v[0] == -80.0 and v[9999] == -80.0
    assert v[10000] == -100.0  # t = 1000 ms starts segment 1
    # the ramp runs from t = 3500 to 3700 ms, -80 -> 37 mV
    assert v[35000] == -80.0
    assert v[36000] == -21.5  # midpoint: -80 + 117 / 2
    assert v[36999] == pytest.approx(-80 + 117 * 1999 / 2000)
    assert v[37000] == -80.0
    assert v[-1] == -80.0
    for i in (0, 9999, 10000, 35000, 35001, 36000, 36999, 37000, 49499):
        assert pa.voltage_at(t[i]) == pytest.approx(v[i], abs=1e-9)
    assert pa.voltage_at(3650) == pytest.approx(-80 + 117 * 0.75)
    assert pa.voltage_at(4950) == -80.0


def test_protocol_a_hash_pinned(pa):
    assert pa.protocol_hash == PROTOCOL_A_HASH


def test_segment_steps(pa):
    steps, v0, v1 = pa.segment_steps()
    assert steps.dtype == np.int64 and v0.dtype == v1.dtype == np.float64
    assert steps.sum() == pa.n_samples
    assert steps[0] == 10000 and steps[11] == 2000
    assert (v0[11], v1[11]) == (-80.0, 37.0)


def test_voltage_at_out_of_range(pa):
    for t in (-0.1, 4950.1, float("nan")):
        with pytest.raises(ValueError, match="t_ms must be in"):
            pa.voltage_at(t)


# ---- canonical JSON and hash ---------------------------------------------------------------


def test_canonical_json_text():
    assert small().to_json() == (
        '{"format":"cardiotwin.protocol/1","sample_interval_ms":0.1,"segments":['
        '{"duration_ms":10.0,"v_end_mV":-80.0,"v_start_mV":-80.0},'
        '{"duration_ms":5.0,"v_end_mV":20.0,"v_start_mV":-80.0}],"temperature_K":310.0}')


def test_json_round_trip_exact(pa, tmp_path):
    p = Protocol((Segment(0.30000000000000004 * 1000, -80.123456789012345, 1 / 3),),
                 sample_interval_ms=0.1, temperature_K=298.15)
    for q in (p, pa):
        back = Protocol.from_json(q.to_json())
        assert back == q and back.to_json() == q.to_json()
        assert back.protocol_hash == q.protocol_hash
        path = write(tmp_path, q.to_json(), "q.json")
        assert load_protocol(path) == q
    assert json.loads(pa.to_json())["format"] == FORMAT


def test_hash_stable_and_normalized():
    assert small().protocol_hash == small().protocol_hash
    # ints and floats, -0.0 and 0.0, tuples and Segments give the same canonical form
    a = Protocol([(10, 0.0, 0.0)])
    b = Protocol((Segment(10.0, -0.0, -0.0),))
    assert a == b and a.protocol_hash == b.protocol_hash
    assert len(small().protocol_hash) == 64


@pytest.mark.parametrize("change", [
    lambda p: p.with_temperature(298.0),
    lambda p: dataclasses.replace(p, sample_interval_ms=0.05),
    lambda p: Protocol((Segment(10, -80, -80), Segment(5, -80, 21))),
    lambda p: Protocol((Segment(10, -80, -80), Segment(5, -81, 20))),
    lambda p: Protocol((Segment(10, -80, -80), Segment(5.1, -80, 20))),
    lambda p: Protocol((Segment(5, -80, 20), Segment(10, -80, -80))),
    lambda p: p.extended([Segment(1, -80, -80)]),
])
def test_hash_changes(change):
    p = small()
    assert change(p).protocol_hash != p.protocol_hash


def test_load_json_overrides(tmp_path):
    path = write(tmp_path, small().to_json(), "p.json")
    assert load_protocol(path, temperature_K=298.0) == small(temperature_K=298.0)


@pytest.mark.parametrize("text, match", [
    ('{"format":"other/2","segments":[]}', "unknown protocol format"),
    ('{"segments":[],"colour":1}', r"unknown protocol keys \['colour'\]"),
    ('{"sample_interval_ms":0.1}', "needs 'segments'"),
    ('{"segments":[{"duration_ms":1,"v_start_mV":0}]}', "segment 0: expected keys"),
    ('{"segments":[{"duration_ms":1,"v_start_mV":"0","v_end_mV":0}]}',
     "segment 0: v_start_mV must be a number"),
    ('{"segments":[]}', "no segments"),
    ('[1, 2]', "must be a JSON object"),
    ('{"segments": [', "Expecting"),
])
def test_from_json_errors(text, match):
    with pytest.raises(ValueError, match=match):
        Protocol.from_json(text)


def test_json_missing_format_key_is_accepted():
    d = small().to_dict()
    del d["format"]
    assert Protocol.from_dict(d) == small()


# ---- CSV -----------------------------------------------------------------------------------


def test_csv_round_trip(pa, tmp_path):
    path = tmp_path / "out.csv"
    pa.to_csv(path)
    assert Protocol.from_csv(path) == pa
    p = Protocol((Segment(0.2, 1 / 3, -2 / 3),), sample_interval_ms=0.1)
    p.to_csv(path)
    assert Protocol.from_csv(path, sample_interval_ms=0.1) == p


def test_csv_arguments_and_column_order(tmp_path):
    path = write(tmp_path, "v_end_mV, duration_ms ,v_start_mV\n\n20,5,-80\n")
    p = Protocol.from_csv(path, sample_interval_ms=0.5, temperature_K=298.0)
    assert p == Protocol((Segment(5, -80, 20),), sample_interval_ms=0.5, temperature_K=298.0)
    assert load_protocol(path, sample_interval_ms=0.5, temperature_K=298.0) == p


def test_breakpoint_csv(tmp_path):
    path = write(tmp_path, "time_ms,voltage_mV\n"
                           "0,-80\n10,-80\n"       # step at -80
                           "10,-40\n20,-40\n"      # vertical jump to -40, step
                           "25,10\n"               # ramp -40 -> 10
                           "25,-80\n30,-80\n")     # jump back, step
    p = load_protocol(path)
    assert p.segments == (Segment(10, -80, -80), Segment(10, -40, -40), Segment(5, -40, 10),
                          Segment(5, -80, -80))
    v = p.command_voltage()
    assert (v[99], v[100], v[199], v[200], v[250]) == (-80, -40, -40, -40, -80)
    assert v[225] == pytest.approx(-15.0)


def test_breakpoint_csv_equivalent_to_segments(pa, tmp_path):
    lines, t = ["time_ms,voltage_mV"], 0.0
    for s in pa.segments:
        lines += [f"{t},{s.v_start_mV}", f"{t + s.duration_ms},{s.v_end_mV}"]
        t += s.duration_ms
    p = load_protocol(write(tmp_path, "\n".join(lines) + "\n"))
    assert p.protocol_hash == pa.protocol_hash


def test_breakpoint_durations_rounded(tmp_path):
    # 0.3 - 0.1 is 0.19999999999999998 in floats; the segment stores 0.2
    path = write(tmp_path, "time_ms,voltage_mV\n0,0\n0.1,0\n0.3,0\n")
    p = load_protocol(path, sample_interval_ms=0.1)
    assert [s.duration_ms for s in p.segments] == [0.1, 0.2]


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    (dict(segments=()), "no segments"),
    (dict(segments=[(float("nan"), 0, 0)]), r"segment 0: duration_ms must be finite, found nan"),
    (dict(segments=[(1, 0, 0), (1, float("inf"), 0)]), r"segment 1: v_start_mV must be finite"),
    (dict(segments=[(1, 0, 0), (0, 0, 0)]), r"segment 1: duration_ms must be > 0, found 0\.0"),
    (dict(segments=[(-5, 0, 0)]), r"segment 0: duration_ms must be > 0, found -5\.0"),
    (dict(segments=[(1, 0, 0)], sample_interval_ms=0), "sample_interval_ms must be finite and > 0"),
    (dict(segments=[(1, 0, 0)], sample_interval_ms=-0.1), "sample_interval_ms must be"),
    (dict(segments=[(1, 0, 0)], sample_interval_ms=float("nan")), "sample_interval_ms must be"),
    (dict(segments=[(1, 0, 0), (0.25, 0, 0)]),
     r"segment 1: duration_ms 0\.25 is not an integer multiple of sample_interval_ms 0\.1"),
    (dict(segments=[(0.05, 0, 0)]), "not an integer multiple"),
    (dict(segments=[(1, 0, 0), (1, -80, 201)]),
     r"segment 1: v_end_mV must be in \[-200, 200\] mV, found 201\.0"),
    (dict(segments=[(1, -250, 0)]), r"segment 0: v_start_mV must be in \[-200, 200\] mV"),
    (dict(segments=[(1, 0, 0)], temperature_K=250), r"temperature_K must be in \(250, 330\) K"),
    (dict(segments=[(1, 0, 0)], temperature_K=330.0), r"found 330\.0"),
    (dict(segments=[(1, 0, 0)], temperature_K=float("nan")), "temperature_K must be in"),
])
def test_protocol_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        Protocol(**kw)


def test_multiple_tolerance():
    assert Protocol([(1000.0000000001, 0, 0)]).n_samples == 10000  # within 1e-9 relative
    assert Protocol([(0.3, 0, 0)]).n_samples == 3  # 0.3 / 0.1 == 2.9999999999999996
    with pytest.raises(ValueError, match="not an integer multiple"):
        Protocol([(1000.00001, 0, 0)])


def test_boundary_values_accepted():
    p = Protocol([(1, -200, 200)], temperature_K=250.001)
    assert p.segments[0].is_ramp and not Segment(1, 5, 5).is_ramp


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_protocol(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="protocol file not found"):
        load_protocol(tmp_path)  # a directory


def test_load_unknown_extension(tmp_path):
    path = write(tmp_path, "duration_ms,v_start_mV,v_end_mV\n1,0,0\n", "p.txt")
    with pytest.raises(ValueError, match=r"p\.txt.*unknown protocol file extension '\.txt'"):
        load_protocol(path)


@pytest.mark.parametrize("text, match", [
    ("", "file is empty"),
    ("\n \n", "file is empty"),
    ('{"segments": [', "Expecting"),
])
def test_load_bad_json(tmp_path, text, match):
    path = write(tmp_path, text, "bad.json")
    with pytest.raises(ValueError, match=rf"bad\.json: .*{match}"):
        load_protocol(path)


@pytest.mark.parametrize("text, match", [
    ("", "file is empty"),
    ("\n\n", "file is empty"),
    ("duration_ms,v_start_mV,v_end_mV\n", "no data rows"),
    ("duration_ms,v_start,v_end_mV\n1,0,0\n",
     "expected columns duration_ms,v_start_mV,v_end_mV or time_ms,voltage_mV, "
     "found duration_ms,v_start,v_end_mV"),
    ("duration_ms,v_start_mV,v_end_mV,extra\n1,0,0,0\n",
     "found duration_ms,v_start_mV,v_end_mV,extra"),
    ("time_ms\n0\n", "expected columns .* found time_ms"),
    ("duration_ms,v_start_mV,v_end_mV\n1,0,0\n1,abc,0\n",
     "line 3: cannot parse v_start_mV value 'abc' as a number"),
    ("duration_ms,v_start_mV,v_end_mV\n1,0,0\n\n1,0\n", "line 4: expected 3 fields, found 2"),
    ("duration_ms,v_start_mV,v_end_mV\n1,0,nan\n", "line 2: v_end_mV must be finite"),
    ("duration_ms,v_start_mV,v_end_mV\n1,0,0\n0.25,0,0\n",
     "segment 1: duration_ms 0.25 is not an integer multiple"),
    ("duration_ms,v_start_mV,v_end_mV\n1,0,300\n", "segment 0: v_end_mV must be in"),
    ("time_ms,voltage_mV\n5,0\n10,0\n", "line 2: time must start at 0 ms, found 5.0"),
    ("time_ms,voltage_mV\n0,0\n15,0\n12,0\n20,0\n",
     "non-monotonic time at line 4: 12.0 after 15.0"),
    ("time_ms,voltage_mV\n0,0\n", "no segments"),
    ("time_ms,voltage_mV\n0,0\nx,1\n", "line 3: cannot parse time_ms value 'x'"),
])
def test_load_bad_csv(tmp_path, text, match):
    path = write(tmp_path, text, "bad.csv")
    with pytest.raises(ValueError, match=r"bad\.csv: .*" + _escape(match)):
        load_protocol(path)


def _escape(s: str) -> str:
    """Escape regex metacharacters except '.*' wildcards written in the table above."""
    return ".*".join(re.escape(part) for part in s.split(".*"))


# ---- derived protocols ---------------------------------------------------------------------


def test_extended_and_concatenate():
    p = small()
    q = p.extended([Segment(2, 20, 20)])
    assert q.segments == p.segments + (Segment(2, 20, 20),) and p.n_samples == 150
    assert q.n_samples == 170 and q.temperature_K == p.temperature_K
    r = concatenate(p, Protocol((Segment(2, 20, 20),)))
    assert r == q
    assert concatenate(p) == p
    assert np.array_equal(concatenate(p, p).command_voltage(), np.tile(p.command_voltage(), 2))
    with pytest.raises(ValueError, match="protocol 1: temperature_K 300.0 differs"):
        concatenate(p, p.with_temperature(300))
    with pytest.raises(ValueError, match="sample_interval_ms"):
        concatenate(p, small(sample_interval_ms=0.5))
    with pytest.raises(ValueError, match="at least one"):
        concatenate()
    with pytest.raises(ValueError, match="segment 2: duration_ms must be > 0"):
        p.extended([Segment(0, 0, 0)])


def test_immutable():
    p = small()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature_K = 300.0  # type: ignore[misc]
    assert p.with_temperature(300.0).temperature_K == 300.0 and p.temperature_K == 310.0
