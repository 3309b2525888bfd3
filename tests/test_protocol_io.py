"""Protocols to and from the rig (cardiotwin.protocol_io): the exported ATF read back by pyabf
is the protocol's waveform; a recorded command (ABF written by cardiotwin's example writer,
CSV command column, real ABF2 DAC waveforms) imports back to the protocol (hash-equal for
protocol_a); steps and ramps merge by the sampling convention; the command line."""

import json
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.protocol_io import (
    describe_protocol,
    import_command,
    import_recording,
    read_atf_waveform,
    segments_from_samples,
    write_atf,
)
from cardiotwin.protocols import Protocol, Segment, builtin_protocol, load_protocol

DATA = Path(__file__).resolve().parent / "data"

# steps, a ramp leaving a step at its level, a ramp ending at the next step's level, a
# falling ramp between jumps, two adjacent ramps, a short step
MIXED = Protocol((Segment(100, -80, -80), Segment(50, -80, 20), Segment(30, 20, 20),
                  Segment(40, 10, -90), Segment(20, -60, -60), Segment(25, -60, 0),
                  Segment(25, 0, -30), Segment(0.5, 35, 35), Segment(60, -80, -80)))


@pytest.mark.parametrize("protocol", [builtin_protocol("protocol_a"), MIXED,
                                      MIXED.with_temperature(298.0)])
def test_exported_atf_read_back_by_pyabf_equals_the_protocol(protocol, tmp_path):
    import pyabf

    path = write_atf(protocol, tmp_path / "p.atf")
    atf = pyabf.ATF(str(path))
    assert (atf.sweepCount, atf.channelCount) == (1, 1)
    atf.setSweep(0)
    v = np.asarray(atf.sweepY, float)
    assert v.shape == (protocol.n_samples,)
    assert np.max(np.abs(v - protocol.command_voltage())) < 0.1            # mV
    assert np.max(np.abs(atf.sweepX * 1000 - protocol.times_ms())) < 0.01 * \
        protocol.sample_interval_ms                                          # float32 time
    t, v2 = read_atf_waveform(path)
    assert np.array_equal(v2, v) and t.shape == v.shape
    assert protocol.protocol_hash in path.read_text().splitlines()[3]       # the comment
    # and the waveform imports back to the protocol
    back = import_command(v2, protocol.sample_interval_ms,
                          temperature_K=protocol.temperature_K)
    assert back.protocol_hash == protocol.protocol_hash


def test_protocol_a_written_as_an_abf_imports_hash_equal(tmp_path):
    from cardiotwin.twin import write_example_recording

    paths = write_example_recording(tmp_path, seed=4, ap=False)
    p, src = import_recording(paths.voltage_clamp_abf)
    assert src.startswith("channel 1")                       # the recorded command channel
    assert p.protocol_hash == builtin_protocol("protocol_a").protocol_hash
    assert main(["protocol", "import", str(paths.voltage_clamp_abf), "--out",
                 str(tmp_path / "back.json")]) == 0
    assert load_protocol(tmp_path / "back.json").protocol_hash == p.protocol_hash
    assert (tmp_path / "back.json").read_text().strip() == p.to_json()       # canonical


def test_merging_follows_the_sampling_convention():
    """A ramp's end is never sampled and a corner sample starts the later segment, so every
    segment comes back as written (quantized to 16 bits as an ADC would, levels too)."""
    v = MIXED.command_voltage()
    assert segments_from_samples(v, 0.1) == list(MIXED.segments)
    q = 200.0 / 32768                                       # a +-200 mV 16-bit channel
    noisy = np.trunc(v / q) * q
    assert segments_from_samples(noisy, 0.1) == list(MIXED.segments)
    # a step split in two at one level is one step; unrounded levels stay as sampled
    assert segments_from_samples(np.full(30, -80.0), 0.1) == [Segment(3.0, -80, -80)]
    odd = segments_from_samples(np.full(10, -80.0123), 0.1, resolution_mV=0)
    assert odd == [Segment(1.0, -80.0123, -80.0123)]
    with pytest.raises(ValueError, match="non-finite"):
        segments_from_samples([0.0, np.nan], 0.1)


def test_real_abf_dac_waveforms_import_to_their_samples():
    import pyabf

    for name, sweep in (("abf_18702001-step.abf", 0), ("abf_18702001-step.abf", 2),
                        ("abf_2018_12_09_pCLAMP11_0001.abf", 0)):
        abf = pyabf.ABF(str(DATA / name))
        abf.setSweep(sweep)
        p, src = import_recording(DATA / name, sweep=sweep)
        assert src == f"dac, sweep {sweep}"
        assert p.sample_interval_ms == pytest.approx(1000.0 / abf.dataRate)
        assert p.n_samples == len(abf.sweepC)
        assert np.max(np.abs(p.command_voltage() - abf.sweepC)) < 0.05, (name, sweep)
    ramps = import_recording(DATA / "abf_18702001-step.abf")[0]
    assert sum(s.is_ramp for s in ramps.segments) == 2          # its two ramps


def test_csv_command_column_round_trip_through_the_command_line(tmp_path, capsys):
    pa = builtin_protocol("protocol_a")
    assert main(["protocol", "export", "protocol_a", "--format", "csv", "--out",
                 str(tmp_path / "pa.csv")]) == 0
    header = (tmp_path / "pa.csv").read_text().splitlines()[0]
    assert header == "t_ms,command_mV"
    assert main(["protocol", "import", str(tmp_path / "pa.csv"), "--out",
                 str(tmp_path / "pa.json")]) == 0
    assert load_protocol(tmp_path / "pa.json").protocol_hash == pa.protocol_hash
    out = capsys.readouterr().out
    assert pa.protocol_hash in out and "16 segments (1 ramps)" in out
    # a recording's CSV with other columns: the command column is picked by name
    rows = np.column_stack([pa.times_ms(), pa.command_voltage(), np.zeros(pa.n_samples)])
    rec = tmp_path / "rec.csv"
    rec.write_text("t_ms,v_cmd,i_pA\n" + "\n".join(",".join(repr(float(x)) for x in r)
                                                  for r in rows) + "\n")
    p, src = import_recording(rec, column="v_cmd")
    assert p.protocol_hash == pa.protocol_hash and src == "column v_cmd"


def test_export_formats_and_the_description(tmp_path, capsys):
    src = tmp_path / "mixed.json"
    src.write_text(MIXED.to_json())
    for fmt in ("atf", "json", "csv"):
        out = tmp_path / f"out.{fmt}"
        assert main(["protocol", "export", str(src), "--format", fmt, "--out", str(out)]) == 0
        md = out.with_suffix(".md").read_text()
        assert MIXED.protocol_hash in md
    assert load_protocol(tmp_path / "out.json").protocol_hash == MIXED.protocol_hash
    md = describe_protocol(MIXED, name="mixed", waveform_file="out.atf")
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert len(rows) == len(MIXED.segments)
    assert "ramp -80 to 20" in rows[1] and rows[2].startswith("| 2 | 150 | 30 |")
    assert "0.1 ms (10 kHz)" in md and "out.atf" in md and "310 K" in md
    assert main(["protocol", "export", str(src), "--format", "json", "--out",
                 str(tmp_path / "x.json"), "--no-description"]) == 0
    assert not (tmp_path / "x.md").exists()
    assert json.loads((tmp_path / "x.json").read_text())["format"] == "cardiotwin.protocol/1"


@pytest.mark.parametrize("argv, message", [
    (["import", str(DATA / "abf_2020_06_16_0000.abf"), "--out", "{d}/p.json"],
     "holds no command voltage"),
    (["import", str(DATA / "abf_18702001-step.abf"), "--sweep", "9", "--out", "{d}/p.json"],
     "sweep"),
    (["import", str(DATA / "abf_18702001-step.abf"), "--out", "{d}/missing/p.json"],
     "output directory does not exist"),
    (["export", "no_such.json", "--format", "atf", "--out", "{d}/p.atf"], "not found"),
    (["export", "protocol_a", "--format", "json", "--out", "{d}/p.md"], "overwrite"),
])
def test_user_errors_are_one_line(argv, message, tmp_path, capsys):
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    assert main(["protocol", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cardiotwin: error: ") and message in err and err.count("\n") == 1
