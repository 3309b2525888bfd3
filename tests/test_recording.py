"""Tests of recording ingestion (cardiotwin.twin.recording) and the example recording."""

import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pyabf
import pyabf.abfWriter
import pytest

from cardiotwin.model.parameters import INFERRED_NAMES, inputs_from_multipliers
from cardiotwin.protocols import Protocol, Segment, builtin_protocol
from cardiotwin.simulate.api import simulate_current_clamp, simulate_voltage_clamp
from cardiotwin.twin import (
    ProtocolMismatchError,
    RecordingError,
    check_protocol,
    convert_current,
    convert_voltage,
    read_abf,
    read_ap_abf,
    read_ap_csv,
    read_trace_csv,
    recording_from_arrays,
    resample_signal,
    subtract_leak,
)
from cardiotwin.twin import protocol_match as pm
from cardiotwin.twin.abf_header import ABF1_FIELDS, ABF2_FIELDS, ABF2_SECTIONS, AbfHeader
from cardiotwin.twin.example import (
    example_multipliers,
    read_example_truth,
    write_abf1,
    write_example_recording,
)

DATA = Path(__file__).parent / "data"
SHARED_ABF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "abf-samples"
SMALL_ABF = sorted(DATA.glob("abf_*.abf"))
SEED = 3
CM = 50.0


@pytest.fixture(scope="module")
def pa() -> Protocol:
    return builtin_protocol("protocol_a")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("example")
    return write_example_recording(out, seed=SEED, capacitance_pF=CM, noise_pA_per_pF=0.5,
                                   ap_duration_ms=3000.0, ap_prepace_ms=2000.0)


@pytest.fixture(scope="module")
def truth(example):
    return read_example_truth(example.truth_json)


@pytest.fixture(scope="module")
def clean_itotal(pa, truth):
    m = np.array([truth["multipliers"][n] for n in INFERRED_NAMES])
    return simulate_voltage_clamp(pa, inputs_from_multipliers(m)).i_total[0].astype(float)


# ----------------------------------------------------------------------------- example round trip


def test_example_abf_round_trip(example, pa, truth, clean_itotal):
    hdr = pyabf.ABF(str(example.voltage_clamp_abf))
    assert hdr.abfVersion["major"] == 1 and hdr.dataRate == 10000 and hdr.sweepCount == 1
    assert [u.strip() for u in hdr.adcUnits] == ["pA", "mV"]
    rec = read_abf(example.voltage_clamp_abf)
    assert rec.sample_interval_ms == pytest.approx(0.1)
    assert rec.units == {"current": "pA", "command": "mV"}
    assert rec.capacitance_pF == pytest.approx(CM) and rec.capacitance_source == "header"
    assert rec.command_source == "channel 1" and rec.n_sweeps == 1 and rec.current_channel == 0
    assert rec.n_samples == pa.n_samples and rec.protocol_hash is None
    np.testing.assert_allclose(rec.t_ms, pa.times_ms())
    # the command channel holds protocol_a to the 16-bit storage step (< 0.05 mV)
    assert np.max(np.abs(rec.command_mV - pa.command_voltage())) < 0.05
    # current = clean I_total + N(0, 0.5) pA/pF (16-bit storage adds < 0.1 pA/pF)
    resid = rec.current_pA_per_pF - clean_itotal
    assert abs(resid.mean()) < 0.05 and 0.45 < resid.std() < 0.55
    assert np.max(np.abs(rec.current_pA - rec.current_pA_per_pF * CM)) < 1e-9
    json.dumps(rec.metadata())  # JSON-able


def test_example_truth_sidecar(example, truth, pa):
    assert example.truth_json == example.voltage_clamp_abf.parent / "example_cell.json"
    assert list(truth["multipliers"]) == list(INFERRED_NAMES)
    np.testing.assert_array_equal(list(truth["multipliers"].values()),
                                  example_multipliers(SEED, 0.4))
    assert truth["capacitance_pF"] == CM and truth["seed"] == SEED
    assert truth["protocol_hash"] == pa.protocol_hash
    assert Protocol.from_dict(truth["protocol"]) == pa
    assert truth["voltage_clamp"]["file"] == example.voltage_clamp_abf.name
    assert truth["current_clamp"]["file"] == example.current_clamp_abf.name


def test_example_bytes_and_filelike_read_the_same(example, pa):
    raw = example.voltage_clamp_abf.read_bytes()
    a = read_abf(example.voltage_clamp_abf, protocol=pa)
    b = read_abf(raw, protocol=pa, name="upload.abf")
    c = read_abf(io.BytesIO(raw), protocol=pa)
    np.testing.assert_array_equal(a.current_pA_per_pF, b.current_pA_per_pF)
    np.testing.assert_array_equal(a.current_pA_per_pF, c.current_pA_per_pF)
    assert b.source == "upload.abf" and c.source == "<uploaded bytes>"


def test_example_current_clamp(example, truth):
    ap = read_ap_abf(example.current_clamp_abf)
    assert ap.units == {"voltage": "mV"} and ap.sample_interval_ms == pytest.approx(0.1)
    assert ap.n_samples == 30000
    m = np.array([truth["multipliers"][n] for n in INFERRED_NAMES])
    sim = simulate_current_clamp(3000.0, inputs_from_multipliers(m), prepace_ms=2000.0)
    resid = ap.v_mV - sim.v_mV[0, :-1]
    assert abs(resid.mean()) < 0.02 and 0.15 < resid.std() < 0.25


def test_example_at_20_kHz_is_resampled(tmp_path, pa, clean_itotal):
    paths = write_example_recording(tmp_path, seed=SEED, sample_rate_Hz=20000.0, ap=False)
    assert paths.current_clamp_abf is None
    assert pyabf.ABF(str(paths.voltage_clamp_abf)).dataRate == 20000
    rec = read_abf(paths.voltage_clamp_abf, protocol=pa)
    assert rec.source_sample_interval_ms == pytest.approx(0.05)
    assert rec.sample_interval_ms == pytest.approx(0.1) and rec.n_samples == pa.n_samples
    assert any("resampled" in n for n in rec.notes)
    # white noise of 0.5 pA/pF at 20 kHz, low-passed to 5 kHz: SD ~ 0.5 / sqrt(2)
    quiet = np.abs(np.diff(clean_itotal, prepend=clean_itotal[0])) < 0.05
    resid = (rec.current_pA_per_pF - clean_itotal)[quiet]
    assert abs(resid.mean()) < 0.05 and 0.3 < resid.std() < 0.42


# ----------------------------------------------------------------------------- protocol check


def test_protocol_check_passes(example, pa):
    rec = read_abf(example.voltage_clamp_abf, protocol=pa)
    assert rec.protocol_hash == pa.protocol_hash
    assert rec.n_samples == pa.n_samples
    again = check_protocol(read_abf(example.voltage_clamp_abf), pa)
    np.testing.assert_array_equal(again.current_pA_per_pF, rec.current_pA_per_pF)


def test_modified_protocol_refused_at_first_difference(example, pa):
    segs = list(pa.segments)
    segs[7] = Segment(250, 15, 15)  # protocol_a has +5 mV there
    modified = dataclasses.replace(pa, segments=tuple(segs))
    with pytest.raises(ProtocolMismatchError) as ei:
        read_abf(example.voltage_clamp_abf, protocol=modified)
    e = ei.value
    assert e.segment == 7 and e.time_ms == pytest.approx(2500.0)
    assert e.expected_mV == 15 and e.found_mV == pytest.approx(5, abs=0.05)
    assert e.field == "command_mV" and e.protocol_hash == modified.protocol_hash
    msg = str(e)
    assert str(example.voltage_clamp_abf) in msg
    assert "t = 2500 ms" in msg and "segment 7" in msg and "expected 15.00 mV" in msg


def test_longer_protocol_refused_as_length(example, pa):
    longer = pa.extended([Segment(100, -80, -80)])
    with pytest.raises(ProtocolMismatchError) as ei:
        read_abf(example.voltage_clamp_abf, protocol=longer)
    assert ei.value.field == "length" and ei.value.segment == len(longer.segments) - 1
    assert "49500 samples" in str(ei.value) and "needs 50500" in str(ei.value)


def _with_presweep(pa, lead_mV, n_lead, n_trail, trail_mV=-80.0, dt_div=1):
    p = np.repeat(pa.command_voltage(), dt_div)
    cmd = np.concatenate([np.full(n_lead, lead_mV), p, np.full(n_trail, trail_mV)])
    current = np.arange(len(cmd), dtype=float)  # the sample index: shows where trimming cut
    return cmd, current


@pytest.mark.parametrize("lead_mV", [-80.0, -70.0])
def test_presweep_holding_is_detected_and_trimmed(pa, lead_mV):
    n = pa.n_samples // 64  # the ABF pre-sweep is 1/64 of the sweep
    cmd, cur = _with_presweep(pa, lead_mV, n, n)
    rec = recording_from_arrays(cur, command_mV=cmd, sample_interval_ms=0.1, protocol=pa,
                                source="presweep.abf")
    assert rec.n_samples == pa.n_samples and rec.protocol_hash == pa.protocol_hash
    assert rec.current_pA_per_pF[0] == n  # starts exactly at the protocol's first sample
    assert any("trimmed 77.3 ms" in note for note in rec.notes)


def test_presweep_at_20_kHz(pa):
    n = 2 * pa.n_samples // 64
    cmd, _ = _with_presweep(pa, -80.0, n, 40, dt_div=2)
    t = np.arange(len(cmd)) * 0.05
    rec = recording_from_arrays(np.sin(t / 50), command_mV=cmd, t_ms=t, protocol=pa)
    assert rec.n_samples == pa.n_samples
    np.testing.assert_allclose(rec.current_pA_per_pF, np.sin((pa.times_ms() + n * 0.05) / 50),
                               atol=1e-3)


def test_extra_samples_must_be_holding(pa):
    cmd, cur = _with_presweep(pa, -80.0, 500, 300)
    cmd[-100:] = 0.0  # a step after the protocol: not a holding level
    with pytest.raises(ProtocolMismatchError, match="after the protocol are not at one holding"):
        recording_from_arrays(cur, command_mV=cmd, sample_interval_ms=0.1, protocol=pa)


def test_command_timing_slack_and_tolerance(pa):
    p = pa.command_voltage()
    late = np.concatenate([np.full(3, p[0]), p[:-3]])  # steps 0.3 ms late: within 0.5 ms
    recording_from_arrays(np.zeros_like(p), command_mV=late + 0.9, sample_interval_ms=0.1,
                          protocol=pa)
    with pytest.raises(ProtocolMismatchError) as ei:
        recording_from_arrays(np.zeros_like(p), command_mV=p + 1.5, sample_interval_ms=0.1,
                              protocol=pa)
    assert ei.value.time_ms == 0 and ei.value.segment == 0


# ----------------------------------------------------------------------------- real ABF files


def _check_against_pyabf_header(path: Path, pa: Protocol):
    """Read or refuse one real ABF file; never anything but RecordingError subclasses."""
    hdr = pyabf.ABF(str(path), loadData=False)
    try:
        rec = read_abf(path, capacitance_pF=CM)
    except RecordingError as e:
        # refused before the protocol check: only for files without a current channel,
        # which are then current-clamp traces that read_ap_abf reads
        assert e.field == "current_channel", str(e)
        assert str(path) in str(e)
        ap = read_ap_abf(path)
        assert ap.source_sample_interval_ms == pytest.approx(1000.0 / hdr.dataRate)
        assert ap.n_sweeps == hdr.sweepCount
        assert ap.units["voltage"] == hdr.adcUnits[ap.channel].strip()
        return "current clamp"
    assert rec.source_sample_interval_ms == pytest.approx(1000.0 / hdr.dataRate)
    assert rec.n_sweeps == hdr.sweepCount
    assert [c.units for c in rec.channels] == [u.strip() for u in hdr.adcUnits]
    assert rec.units["current"] == hdr.adcUnits[rec.current_channel].strip()
    assert rec.capacitance_pF == CM and rec.capacitance_source == "user"
    with pytest.raises(ProtocolMismatchError) as ei:
        check_protocol(rec, pa)
    assert str(path) in str(ei.value) and ei.value.segment is not None
    with pytest.raises(ProtocolMismatchError):
        read_abf(path, capacitance_pF=CM, protocol=pa)
    return "protocol mismatch"


@pytest.mark.parametrize("path", SMALL_ABF, ids=lambda p: p.name)
def test_small_real_abf_read_or_refused(path, pa):
    assert _check_against_pyabf_header(path, pa) == "protocol mismatch"


#: Every ABF in tests/data: sample rate (Hz), sweeps, samples of sweep 0, command source and
#: ABF version, as pyabf reports them (values checked by hand against pyabf 2.3).
REAL_ABF = {
    "abf_18702001-step.abf": (20000, 3, 20000, "dac", "2.6.0.0"),
    "abf_2018_12_09_pCLAMP11_0001.abf": (10000, 10, 2000, "dac", "2.9.0.0"),
    "abf_2020_06_16_0000.abf": (10000, 3, 3540, "none", "2.3.0.0"),
}


def _protocol_from_epochs(path: Path, sweep: int = 0) -> Protocol:
    """The protocol a file's DAC epoch table describes (pyabf sweepEpochs), without the
    pre-sweep (epoch 0)."""
    hdr = pyabf.ABF(str(path), loadData=False)
    hdr.setSweep(sweep)
    e, dt = hdr.sweepEpochs, 1000.0 / hdr.dataRate
    segs, prev = [], e.levels[0]
    for p1, p2, level, kind in list(zip(e.p1s, e.p2s, e.levels, e.types, strict=True))[1:]:
        segs.append(Segment((p2 - p1) * dt, prev if kind == "Ramp" else level, level))
        prev = level
    return Protocol(tuple(segs), dt, 310.0)


def test_every_test_abf_has_expectations():
    assert {p.name for p in SMALL_ABF} == set(REAL_ABF)


@pytest.mark.parametrize("name", sorted(REAL_ABF))
def test_real_abf_reads_and_matches_its_own_protocol(name):
    rate, n_sweeps, n0, command_source, version = REAL_ABF[name]
    path = DATA / name
    dt = 1000.0 / rate
    rec = read_abf(path, capacitance_pF=CM)
    assert rec.source_sample_interval_ms == pytest.approx(dt) and rec.n_sweeps == n_sweeps
    assert rec.n_samples == n0 and rec.command_source == command_source
    assert rec.abf_version == version
    if command_source == "none":  # variable-length sweeps: matched on length only
        flat = Protocol((Segment(n0 * dt, 0.0, 0.0),), dt, 310.0)
        rec = read_abf(path, capacitance_pF=CM, protocol=flat)
        assert rec.command_source == "protocol" and rec.protocol_hash == flat.protocol_hash
        with pytest.raises(ProtocolMismatchError) as ei:
            read_abf(path, capacitance_pF=CM, protocol=flat, sweep=1)
        assert ei.value.field == "length"
        return
    protocol = _protocol_from_epochs(path)
    hdr = pyabf.ABF(str(path))
    lead = hdr.sweepPointCount // 64  # the ABF pre-sweep
    for sweep in range(n_sweeps):
        m = read_abf(path, capacitance_pF=CM, sweep=sweep, protocol=protocol)
        assert m.protocol_hash == protocol.protocol_hash and m.n_samples == protocol.n_samples
        assert any(f"trimmed {lead * dt:g} ms of holding" in note for note in m.notes)
        hdr.setSweep(sweep)
        np.testing.assert_allclose(m.current_pA_per_pF,
                                   convert_current(hdr.sweepY[lead:], m.units["current"]) / CM,
                                   rtol=1e-6)


@pytest.mark.skipif(not SHARED_ABF.is_dir(), reason="../shared/data/abf-samples not present "
                    "(only on the development machines)")
def test_every_shared_abf_read_or_refused(pa):
    outcomes = {p.name: _check_against_pyabf_header(p, pa)
                for p in sorted(SHARED_ABF.glob("*.abf"))}
    assert outcomes and set(outcomes.values()) <= {"protocol mismatch", "current clamp"}


def test_real_abf_sweep_selection():
    path = DATA / "abf_18702001-step.abf"
    hdr = pyabf.ABF(str(path))
    hdr.setSweep(2)
    rec = read_abf(path, sweep=2, capacitance_pF=10.0)
    assert rec.command_source == "dac" and rec.sweep == 2
    np.testing.assert_allclose(rec.current_pA_per_pF, hdr.sweepY / 10.0, rtol=1e-6)
    np.testing.assert_allclose(rec.command_mV, hdr.sweepC, atol=1e-4)
    mean = read_abf(path, sweep="mean", capacitance_pF=10.0)
    stack = []
    for s in hdr.sweepList:
        hdr.setSweep(s)
        stack.append(hdr.sweepY / 10.0)
    np.testing.assert_allclose(mean.current_pA_per_pF, np.mean(stack, axis=0), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(RecordingError, match="sweep: expected an index in 0..2"):
        read_abf(path, sweep=3, capacitance_pF=10.0)
    # channel 1 is labelled 'A': amperes -> pA
    ch1 = read_abf(path, current_channel=1, capacitance_pF=10.0)
    hdr.setSweep(0, channel=1)
    np.testing.assert_allclose(ch1.current_pA_per_pF, hdr.sweepY * 1e12 / 10.0, rtol=1e-6)
    assert any("implausible" in n for n in ch1.notes)


def test_variable_length_sweeps_cannot_be_averaged():
    with pytest.raises(RecordingError) as ei:
        read_abf(DATA / "abf_2020_06_16_0000.abf", sweep="mean", capacitance_pF=CM)
    assert ei.value.field == "sweep" and "different lengths" in str(ei.value)


# ----------------------------------------------------------------------------- malformed input


@pytest.fixture(scope="module")
def example_bytes(example):
    return example.voltage_clamp_abf.read_bytes()


@pytest.mark.parametrize("case, field, text", [
    ("truncated data", "data", "truncated"),
    ("truncated header", "header", "truncated or corrupt"),
    ("random bytes", "signature", "not an ABF file"),
    ("ABF2 signature, random rest", "header", "truncated or corrupt"),
    ("empty", "file", "empty"),
])
def test_malformed_abf_bytes(example_bytes, case, field, text):
    rng = np.random.default_rng(0)
    data = {"truncated data": example_bytes[: len(example_bytes) // 2],
            "truncated header": example_bytes[:1000],
            "random bytes": rng.bytes(5000),
            "ABF2 signature, random rest": b"ABF2" + rng.bytes(3000),
            "empty": b""}[case]
    with pytest.raises(RecordingError) as ei:
        read_abf(data, name="bad.abf", capacitance_pF=CM)
    assert ei.value.field == field and ei.value.source == "bad.abf"
    assert text in str(ei.value) and str(ei.value).startswith("bad.abf: ")


@pytest.mark.parametrize("path", SMALL_ABF[:1], ids=lambda p: p.name)
def test_corrupted_headers_never_crash(path, pa):
    """Random byte changes in the header and cuts anywhere: a Recording or a RecordingError."""
    raw = path.read_bytes()
    rng = np.random.default_rng(7)
    cases = [raw[:k] for k in (4, 100, 512, 2048, 5000, 6144, len(raw) - 1)]
    for _ in range(40):
        b = bytearray(raw)
        for pos in rng.integers(0, 6144, rng.integers(1, 6)):
            b[pos] = int(rng.integers(0, 256))
        cases.append(bytes(b))
    for data in cases:
        try:
            read_abf(data, capacitance_pF=CM, protocol=pa, name="fuzz.abf")
        except RecordingError as e:
            assert str(e).startswith("fuzz.abf: ")


def test_malformed_abf_files(tmp_path):
    empty = tmp_path / "empty.abf"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match="empty.abf: file: the file is empty"):
        read_abf(empty)
    with pytest.raises(RecordingError, match="path: file not found"):
        read_abf(tmp_path / "missing.abf")
    with pytest.raises(RecordingError, match="path: file not found"):
        read_abf(tmp_path)


def test_missing_capacitance_and_wrong_channel(tmp_path, example):
    plain = tmp_path / "plain.abf"  # pyabf's own writer: one channel, no Cm, no command
    pyabf.abfWriter.writeABF1(np.full((1, 49500), -20.0), str(plain), 10000, units="pA")
    with pytest.raises(RecordingError) as ei:
        read_abf(plain)
    assert ei.value.field == "capacitance_pF" and "pass capacitance_pF" in str(ei.value)
    rec = read_abf(plain, capacitance_pF=40.0, protocol=builtin_protocol())
    assert rec.command_source == "protocol" and "not verified" in rec.notes[-1]
    np.testing.assert_allclose(rec.current_pA_per_pF, -0.5, atol=0.01)
    with pytest.raises(RecordingError, match="channel 1 .'V_cmd'. has units 'mV'; expected "
                       "current units"):
        read_abf(example.voltage_clamp_abf, current_channel=1)
    with pytest.raises(RecordingError, match="capacitance_pF: must be a positive number"):
        read_abf(example.voltage_clamp_abf, capacitance_pF=-3)


def _write_csv(path: Path, columns: dict[str, np.ndarray]):
    names = list(columns)
    rows = np.column_stack([columns[n] for n in names])
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(repr(float(x)) for x in r)
                                                       for r in rows) + "\n")
    return path


def test_csv_round_trip_and_errors(tmp_path, example, pa):
    ref = read_abf(example.voltage_clamp_abf, protocol=pa)
    cols = {"t_ms": pa.times_ms(), "command_mV": ref.command_mV, "i_pA": ref.current_pA}
    rec = read_trace_csv(_write_csv(tmp_path / "ok.csv", cols), capacitance_pF=CM, protocol=pa)
    np.testing.assert_allclose(rec.current_pA_per_pF, ref.current_pA_per_pF, atol=1e-9)
    assert rec.command_source == "csv" and rec.units == {"current": "pA", "command": "mV"}
    # normalized current without command: the protocol supplies it, flagged
    rec2 = read_trace_csv(_write_csv(tmp_path / "norm.csv", {
        "t_ms": pa.times_ms(), "I_total": ref.current_pA_per_pF}), protocol=pa)
    assert rec2.command_source == "protocol" and rec2.capacitance_pF is None
    # NaN current
    bad = dict(cols, i_pA=ref.current_pA.copy())
    bad["i_pA"][1234] = np.nan
    with pytest.raises(RecordingError) as ei:
        read_trace_csv(_write_csv(tmp_path / "nan.csv", bad), capacitance_pF=CM)
    assert ei.value.field == "i_pA" and "line 1236" in str(ei.value)
    # wrong length: one segment short
    short = {k: v[:-2500] for k, v in cols.items()}
    with pytest.raises(ProtocolMismatchError) as ei:
        read_trace_csv(_write_csv(tmp_path / "short.csv", short), capacitance_pF=CM,
                       protocol=pa)
    assert ei.value.field == "length" and ei.value.segment == 15
    assert "47000 samples" in str(ei.value) and "needs 49500" in str(ei.value)
    # missing capacitance, missing columns, non-uniform time, empty file
    with pytest.raises(RecordingError, match="capacitance_pF"):
        read_trace_csv(tmp_path / "ok.csv")
    with pytest.raises(RecordingError, match="columns: expected a time column"):
        read_trace_csv(_write_csv(tmp_path / "cols.csv", {"t_ms": pa.times_ms(),
                                                          "x": ref.current_pA}))
    jitter = dict(cols, t_ms=pa.times_ms().copy())
    jitter["t_ms"][100] += 0.05
    with pytest.raises(RecordingError, match="t_ms: not uniformly sampled"):
        read_trace_csv(_write_csv(tmp_path / "jit.csv", jitter), capacitance_pF=CM)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RecordingError, match="empty.csv: header: the file is empty"):
        read_trace_csv(tmp_path / "empty.csv")


def test_non_finite_arrays_and_unknown_units(pa):
    x = np.zeros(pa.n_samples)
    x[10] = np.inf
    with pytest.raises(RecordingError, match="current: 1 non-finite values .first: inf at "
                       "sample 10, t = 1 ms"):
        recording_from_arrays(x, protocol=pa, source="trace.json")
    with pytest.raises(RecordingError, match="unknown current unit 'dB'"):
        recording_from_arrays(np.zeros(10), current_units="dB", sample_interval_ms=0.1,
                              capacitance_pF=CM)
    with pytest.raises(ProtocolMismatchError, match="needs 49500"):
        recording_from_arrays(np.zeros(100), protocol=pa)


# ----------------------------------------------------------------------------- units


def test_unit_conversions_analytic(tmp_path):
    assert convert_current([2e-12, -1.5], "A")[0] == pytest.approx(2.0)
    np.testing.assert_allclose(convert_current([1.0, -0.25], "nA"), [1000.0, -250.0])
    np.testing.assert_allclose(convert_current([3.0], "pA"), [3.0])
    np.testing.assert_allclose(convert_voltage([-0.08, 0.04], "V"), [-80.0, 40.0])
    np.testing.assert_allclose(convert_voltage([-80.0], " mV  "), [-80.0])
    with pytest.raises(RecordingError, match="unknown voltage unit 'mmHg'"):
        convert_voltage([1.0], "mmHg")
    # an ABF with current in nA and command in V reads as pA/pF and mV
    t = np.arange(2000) * 0.1
    i_nA = 0.5 * np.sin(t / 20)            # 500 pA peak
    v_V = np.where(t < 100, -0.08, -0.02)  # -80 mV then -20 mV
    path = write_abf1(tmp_path / "units.abf", [(i_nA, "nA", "I"), (v_V, "V", "V")], 10000.0,
                      capacitance_pF=25.0)
    rec = read_abf(path)
    assert rec.units == {"current": "nA", "command": "V"} and rec.capacitance_pF == 25.0
    np.testing.assert_allclose(rec.current_pA_per_pF, i_nA * 1000 / 25.0, atol=0.01)
    np.testing.assert_allclose(rec.command_mV, v_V * 1000, atol=0.01)
    ap = read_ap_abf(write_abf1(tmp_path / "ap.abf", [(v_V, "V", "Vm")], 10000.0))
    np.testing.assert_allclose(ap.v_mV, v_V * 1000, atol=0.031)  # one channel: 1/32768 V steps


# ----------------------------------------------------------------------------- resampling


def test_resampling_20_to_10_kHz_keeps_signal_and_removes_alias():
    t20 = np.arange(40000) * 0.05  # 2 s at 20 kHz (ms)
    slow = np.sin(2 * np.pi * 0.05 * t20) + 0.3 * np.cos(2 * np.pi * 0.4 * t20)  # 50, 400 Hz
    fast = 0.5 * np.sin(2 * np.pi * 7.0 * t20)  # 7 kHz: above the new Nyquist (5 kHz)
    out = resample_signal(slow + fast, 0.05, 0.1)
    t10 = np.arange(20000) * 0.1
    expect = np.sin(2 * np.pi * 0.05 * t10) + 0.3 * np.cos(2 * np.pi * 0.4 * t10)
    assert out.shape == (20000,)
    inner = slice(100, -100)
    assert np.max(np.abs(out - expect)[inner]) < 5e-3  # 7 kHz removed, not aliased to 3 kHz
    assert np.max(np.abs(out - expect)) < 0.15         # edges: filter transient only
    np.testing.assert_array_equal(resample_signal(slow, 0.1, 0.1), slow)
    with pytest.raises(RecordingError, match="not a simple fraction"):
        resample_signal(slow, 0.1, np.pi / 10)


def test_ap_csv(tmp_path):
    ap = read_ap_csv(DATA / "real_042721_4_quinine__pre-drug_paced.csv.gz")
    assert ap.sample_interval_ms == pytest.approx(0.1) and ap.units == {"voltage": "mV"}
    assert -100 < ap.v_mV.min() < -40 and ap.v_mV.max() > 0
    coarse = read_ap_csv(DATA / "real_042721_4_quinine__pre-drug_paced.csv.gz",
                         sample_interval_ms=0.2)
    assert coarse.n_samples == (ap.n_samples + 1) // 2
    (tmp_path / "bad.csv").write_text("t_ms,v_mV\n0,1\n0.1,nan\n0.2,3\n")
    with pytest.raises(RecordingError, match=r"bad\.csv: v_mV: line 3, column 2: expected a "
                       "finite number, found 'nan'") as ei:
        read_ap_csv(tmp_path / "bad.csv")
    assert ei.value.field == "v_mV" and ei.value.source == str(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- leak


def _clean_with_quiet_windows(pa):
    """A current that is zero at -80 and -100 mV (the leak windows) and not elsewhere."""
    v = pa.command_voltage()
    t = pa.times_ms()
    clean = np.where((v == -80) | (v == -100), 0.0, 0.02 * v + np.sin(t / 30))
    return v, clean


def test_linear_leak_recovered(pa):
    v, clean = _clean_with_quiet_windows(pa)
    g, e = 0.04, -12.0  # nS/pF, mV
    rec = recording_from_arrays(clean + g * (v - e), command_mV=v, protocol=pa,
                                leak_subtraction=[(500, 1000), (1050, 1250)])
    assert rec.leak.method == "linear"
    assert rec.leak.g_leak_nS_per_pF == pytest.approx(g, rel=1e-9)
    assert rec.leak.e_leak_mV == pytest.approx(e, rel=1e-9)
    np.testing.assert_allclose(rec.current_pA_per_pF, clean, atol=1e-9)
    assert json.loads(json.dumps(rec.metadata()))["leak"]["method"] == "linear"


def test_offset_leak_from_holding(pa):
    v, clean = _clean_with_quiet_windows(pa)
    rec = recording_from_arrays(clean + 0.3, command_mV=v, protocol=pa)
    fixed = subtract_leak(rec, "holding")
    assert fixed.leak.method == "offset" and fixed.leak.windows_ms == ((500.0, 1000.0),)
    assert fixed.leak.i0_pA_per_pF == pytest.approx(0.3)
    np.testing.assert_allclose(fixed.current_pA_per_pF, clean, atol=1e-12)
    with pytest.raises(RecordingError, match="leak_subtraction: window .6000, 7000. ms holds 0"):
        subtract_leak(rec, [(6000, 7000)])


# ----------------------------------------------------------------------------- ABF header fields


def _pyabf_value(v):
    """pyabf's value of a header field as a tuple (strings as pyabf cleans them)."""
    vals = v if isinstance(v, list) else [v]
    return tuple(vals)


def _clean(values: tuple) -> tuple:
    return tuple(x.decode("ascii", errors="ignore").strip() if isinstance(x, bytes) else x
                 for x in values)


def test_abf1_field_table_does_not_overlap():
    fields = sorted(ABF1_FIELDS.values(), key=lambda f: f.offset)
    for a, b in itertools.pairwise(fields):
        assert a.offset + a.size <= b.offset, (a.name, b.name)
    assert fields[-1].offset + fields[-1].size <= 6144  # inside the full ABF1 header


def test_abf1_named_fields_equal_pyabfs(example, tmp_path):
    plain = tmp_path / "plain.abf"  # pyabf's writer: a short (2048-byte) header
    pyabf.abfWriter.writeABF1(np.full((1, 4000), -20.0), str(plain), 10000, units="pA")
    for path in (example.voltage_clamp_abf, example.current_clamp_abf, plain):
        abf = pyabf.ABF(str(path), loadData=False)
        hdr = AbfHeader(path, 1)
        for name in ABF1_FIELDS:
            mine = hdr.abf1(name, header_only=False)
            assert _clean(mine) == _pyabf_value(getattr(abf._headerV1, name)), (path.name, name)
        assert hdr.abf1_has("fTelegraphMembraneCap") == (path != plain)
        assert (hdr.abf1("fTelegraphMembraneCap") is None) == (path == plain)
    raw = AbfHeader(example.voltage_clamp_abf.read_bytes(), 1)  # bytes read the same
    assert raw.abf1("fTelegraphMembraneCap") == AbfHeader(example.voltage_clamp_abf, 1).abf1(
        "fTelegraphMembraneCap")
    assert raw.abf1("fTelegraphMembraneCap")[0] == pytest.approx(CM)


@pytest.mark.parametrize("path", SMALL_ABF, ids=lambda p: p.name)
def test_abf2_named_fields_equal_pyabfs(path):
    abf = pyabf.ABF(str(path), loadData=False)
    hdr = AbfHeader(path, 2)
    sections = {"ADCSection": abf._adcSection, "DACSection": abf._dacSection,
                "SynchArraySection": abf._synchArraySection}
    for section, fields in ABF2_FIELDS.items():
        for name in fields:
            assert hdr.abf2_entries(section, name) == list(getattr(sections[section], name)), \
                (section, name)
    assert hdr.abf1("fTelegraphMembraneCap") is None  # not an ABF1 file


def test_abf_header_outside_the_file_is_absent(example):
    cut = AbfHeader(example.voltage_clamp_abf.read_bytes()[:4000], 1)
    assert cut.abf1("fTelegraphMembraneCap", header_only=False) is None
    assert cut.abf1("lDataSectionPtr") == (12,)
    empty = bytearray(b"ABF2" + bytes(1020))
    assert AbfHeader(bytes(empty), 2).abf2_entries("ADCSection", "nADCNum") is None  # size 0
    ABF2_SECTIONS["ADCSection"].pack_into(empty, 1, 82, 0)  # block 1, 82-byte entries, none
    assert AbfHeader(bytes(empty), 2).abf2_entries("ADCSection", "nADCNum") == []
    ABF2_SECTIONS["ADCSection"].pack_into(empty, 1, 82, 7)  # 7 entries would end past EOF
    assert AbfHeader(bytes(empty), 2).abf2_entries("ADCSection", "nADCNum") is None


def test_header_field_pack_checks_the_element_range():
    buf = bytearray(6144)
    ABF1_FIELDS["nWaveformEnable"].pack_into(buf, 1, index=1)
    assert ABF1_FIELDS["nWaveformEnable"].unpack(buf) == (0, 1)
    with pytest.raises(ValueError, match="nWaveformEnable: 1 values from element 2; expected "
                       "whole elements of 1 within 0..1"):
        ABF1_FIELDS["nWaveformEnable"].pack_into(buf, 1, index=2)


# ----------------------------------------------------------------------------- matching steps


def _two_step(dt=0.1):
    """-80 mV for 1 ms, then 0 mV for 2 ms (10 + 20 samples at 0.1 ms)."""
    return Protocol((Segment(1.0, -80, -80), Segment(2.0, 0, 0)), dt, 310.0)


def test_segment_of_boundaries():
    p = _two_step()
    assert [pm.segment_of(p, k) for k in (0, 9, 10, 29, 30, 100)] == [0, 0, 1, 1, 1, 1]


def test_command_bounds_cover_edge_before_and_one_sample_after():
    p = np.array([0, 0, 0, 10, 10, 10], dtype=float)
    lo, hi = pm.command_bounds(p, 0.1, 1.0, 0.2)  # 2 samples before, 1 after
    np.testing.assert_array_equal(lo, np.array([0, 0, 0, 0, 0, 10]) - 1.0)
    np.testing.assert_array_equal(hi, np.array([0, 0, 10, 10, 10, 10]) + 1.0)


def test_lag_candidates_find_a_leading_holding():
    p = _two_step().command_voltage()
    c = np.concatenate([np.full(7, -80.0), p, np.full(4, 0.0)])
    cands = pm.lag_candidates(c, p, max_lag=11, tol=1.0)
    assert 7 in cands and all(0 <= k <= 11 for k in cands) and len(set(cands)) == len(cands)
    assert pm.describe_lead_trail(c, 7, len(p), 1.0) == (None, None)
    c[-2:] = 20.0
    before, after = pm.describe_lead_trail(c, 7, len(p), 1.0)
    assert before is None and "4 samples after the protocol" in after


def test_mismatch_reported_where_the_difference_begins():
    p = _two_step()
    c = p.command_voltage().copy()
    c[10:] = -10.0  # steps to -10 mV instead of 0 mV, on time
    lo, hi = pm.command_bounds(p.command_voltage(), 0.1, 1.0, 0.5)
    assert int(np.argmax(pm.violations(c, lo, hi))) == 15  # outside the 0.5 ms slack only
    with pytest.raises(ProtocolMismatchError) as ei:
        recording_from_arrays(np.zeros(30), command_mV=c, sample_interval_ms=0.1, protocol=p)
    e = ei.value
    assert e.time_ms == pytest.approx(1.0) and e.segment == 1  # stepped back to sample 10
    assert e.expected_mV == 0 and e.found_mV == -10 and "15 of 30 samples differ" in str(e)


def test_find_alignment_reports_the_longest_partial_match():
    p = _two_step()
    c = np.concatenate([np.full(12, -80.0), p.command_voltage()])  # 1.2 ms lead > 0.5 ms slack
    c[-3:] = 30.0
    rec = recording_from_arrays(np.zeros(len(c)), command_mV=c, sample_interval_ms=0.1)
    m = pm.Match(rec, p, p.command_voltage(), 1.0, 0.5, None)
    lo, hi = pm.command_bounds(m.p, 0.1, 1.0, 0.5)
    lag, best = pm.find_alignment(m, lo, hi)
    # lag 12 fails at protocol sample 27; lag 11 (one sample late, within the timing slack)
    # only at 28, with 2 bad samples: the longest partial match is reported
    assert lag is None and best == (28, 11, 2)
    c[-3:] = 0.0
    rec = rec.replace(command_mV=c)
    m = pm.Match(rec, p, p.command_voltage(), 1.0, 0.5, None)
    assert pm.find_alignment(m, lo, hi) == (12, None)
    out = pm.aligned(m, 12)
    assert out.n_samples == 30 and out.protocol_hash == p.protocol_hash
    np.testing.assert_array_equal(out.command_mV, p.command_voltage())
    assert "trimmed 1.2 ms of holding before the protocol (ABF pre-sweep) and 0 ms" \
        in out.notes[-1]
