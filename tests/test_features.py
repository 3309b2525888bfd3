"""Tests of AP biomarkers, EAD detection and cell status (cardiotwin.features)."""

import csv
import gzip
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import find_peaks

from cardiotwin.features import (
    BATCH_KEYS,
    TraceFeatures,
    analyze_trace,
    classify,
    classify_batch,
    load_trace_csv,
)
from cardiotwin.trace_csv import TraceCsvError, read_csv_trace

DATA = Path(__file__).parent / "data"
SHARED_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-ipsc-ap"
PACED = DATA / "real_042721_4_quinine__pre-drug_paced.csv.gz"
PUBLISHED = DATA / "published_ap_features_clark2022_042721_4_quinine.csv"


def synthetic_ap(n_beats=6, cl=800.0, dt=0.1, mdp=-75.0, amp=110.0, tau=0.5, s_p=10.0,
                 t1=150.0, t2=120.0, first=300.0, hump=None, noise=0.0, seed=0):
    """Beats with exactly known biomarkers.

    Each beat (time s from its upstroke t0): logistic upstroke mdp + amp/(1+exp(-s/tau)) up to
    s_p (max dV/dt amp/(4 tau) at s=0; peak mdp + amp at s_p), then a piecewise-linear decay of
    the amplitude fraction: 1 -> 0.8 over t1 (plateau), 0.8 -> 0 over t2. So APDx (from t0) is
    s_p + t1*x/0.2 for x <= 0.2, else s_p + t1 + t2*(x-0.2)/0.8. hump = (mV, centre ms, sd ms)
    adds a Gaussian re-depolarization to every beat.
    """
    t = np.arange(0.0, first + n_beats * cl, dt)
    v = np.full(t.size, mdp)
    for k in range(n_beats):
        s = t - (first + k * cl)
        up = 1.0 / (1.0 + np.exp(-np.clip(s, -50.0, 50.0) / tau))
        rep = np.interp(s, [s_p, s_p + t1, s_p + t1 + t2], [1.0, 0.8, 0.0])
        v += amp * np.where(s <= s_p, up, rep)
        if hump is not None:
            a, c, w = hump
            v += a * np.exp(-0.5 * ((s - c) / w) ** 2)
    if noise:
        v += np.random.default_rng(seed).normal(0.0, noise, t.size)
    apd = {x: s_p + t1 + t2 * (x / 100 - 0.2) / 0.8 for x in (30, 50, 90)}
    expected = dict(cl=cl, mdp=mdp, peak=mdp + amp, amp=amp, dvdt=amp / (4 * tau),
                    apd30=apd[30], apd50=apd[50], apd90=apd[90])
    return t, v, expected


# ----------------------------------------------------------------------------- loading


def test_load_both_column_conventions(tmp_path):
    (tmp_path / "a.csv").write_text("t_ms,v_mV\n0.0,-80\n0.1,-79.5\n0.2,-79\n")
    with gzip.open(tmp_path / "b.csv.gz", "wt") as fh:
        fh.write("time_s,voltage_mV,injected_current_pA_per_pF\n0.0,-80,0\n0.0001,-79.5,1.5\n")
    t, v = load_trace_csv(tmp_path / "a.csv")
    np.testing.assert_allclose(t, [0.0, 0.1, 0.2])
    np.testing.assert_allclose(v, [-80, -79.5, -79])
    t, v, i = load_trace_csv(tmp_path / "b.csv.gz", with_current=True)
    np.testing.assert_allclose(t, [0.0, 0.1])          # seconds -> ms
    np.testing.assert_allclose(i, [0.0, 1.5])
    assert load_trace_csv(tmp_path / "a.csv", with_current=True)[2] is None


def test_load_errors_name_file_and_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,volts\n0,1\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*\['time', 'volts'\]"):
        load_trace_csv(bad)
    back = tmp_path / "back.csv"
    back.write_text("t_ms,v_mV\n0,-80\n0.2,-80\n0.1,-80\n")
    with pytest.raises(ValueError, match="back.csv.*not strictly increasing"):
        load_trace_csv(back)


@pytest.mark.parametrize("text, field, line, fragment", [
    ("t_ms,v_mV\n0,1\n0.1,abc\n", "v_mV", 3, "line 3, column 2: expected a number, found 'abc'"),
    ("t_ms,v_mV\n0,1\n0.1,\n", "v_mV", 3, "line 3, column 2: expected a number, found ''"),
    ("t_ms,v_mV\n0,1\n0.1\n", "rows", 3, "line 3: expected 2 fields"),
    ("v_mV,t_ms\n1,0\n1,inf\n1,nan\n", "t_ms", 3,
     "line 3, column 2: expected a finite number, found 'inf' (2 non-finite values in all)"),
    ("v_mV,t_ms\n1,0\n1,0.1\n1,0.2\n1,0.35\n1,0.45\n", "t_ms", 5,
     "not uniformly sampled: line 5 (t = 0.35 ms) comes 0.15 ms after the previous sample, "
     "expected 0.1 ms"),
    ("t_ms,v_mV\n0,1\n0.1,1\n0.1,1\n", "t_ms", 4, "line 4: time is not strictly increasing"),
    ("t_ms,v_mV\n0,1\n", "rows", None, "expected >= 2 samples, found 1"),
    ("t_ms,v_mV\n\n\n", "rows", None, "no data rows after the header"),
    ("t_ms,v_mV,t_ms\n0,1,0\n", "header", 1, "line 1, column 3: expected unique column names"),
    ("t_ms,volts\n0,1\n0.1,2\n", "columns", 1,
     "expected a time column (t_ms | time_ms | time_s) and a voltage column (v_mV | voltage_mV);"
     " found ['t_ms', 'volts'] in the header (line 1), without a voltage column"),
    ("time_s,voltage_mV\n0,1\n\n0.0001,2\n0.0002,x\n", "voltage_mV", 5,
     "line 5, column 2: expected a number, found 'x'"),  # blank line 3 skipped, counted
    ("", "header", 1, "the file is empty"),
])
def test_csv_reader_errors_name_file_line_and_column(tmp_path, text, field, line, fragment):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(TraceCsvError) as ei:
        load_trace_csv(path)
    e = ei.value
    assert isinstance(e, ValueError) and e.field == field and e.line == line
    assert str(e).startswith(f"{path}: {field}: ") and fragment in str(e)


def test_csv_reader_file_errors(tmp_path):
    with pytest.raises(TraceCsvError, match="missing.csv: path: file not found"):
        load_trace_csv(tmp_path / "missing.csv")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(TraceCsvError, match=r"bad\.csv\.gz: file: cannot read as text CSV"):
        load_trace_csv(tmp_path / "bad.csv.gz")


def test_csv_reader_is_the_twins_reader(tmp_path):
    """features.load_trace_csv and twin.read_ap_csv read one file the same way and fail alike."""
    from cardiotwin.twin import RecordingError, read_ap_csv

    path = tmp_path / "ap.csv"
    path.write_text("\ufefftime_s , voltage_mV,extra\n0.5,-80,a\n0.5001,-79.5,b\n0.5002,-79,c\n")
    t, v = load_trace_csv(path)  # BOM, spaces and a text column that is not used
    np.testing.assert_allclose(t, [500.0, 500.1, 500.2])
    ap = read_ap_csv(path)
    np.testing.assert_array_equal(ap.v_mV, v)
    assert ap.sample_interval_ms == pytest.approx(0.1) and ap.t_ms[0] == 0  # re-based
    path.write_text("t_ms,v_mV\n0,1\n0.1,x\n")
    with pytest.raises(TraceCsvError) as a:
        load_trace_csv(path)
    with pytest.raises(RecordingError) as b:
        read_ap_csv(path)
    assert str(a.value) == str(b.value) and b.value.field == "v_mV"


def test_every_csv_in_test_data_reads():
    """The stricter shared rules (uniform time, finite cells) accept every trace kept here."""
    for f in sorted(DATA.glob("*.csv.gz")):
        tr = read_csv_trace(f, {})
        assert tr.sample_interval_ms == pytest.approx(0.1), f.name
        assert len(tr.t_ms) >= 5000 and tr.lines[0] == 2, f.name
        if f.name.startswith("real_5_031521_4"):  # cut at 7 <= time_s < 10
            assert tr.t_ms[0] == pytest.approx(7000.0)


# ----------------------------------------------------------------------------- simulated


@pytest.fixture(scope="module")
def baseline():
    return load_trace_csv(DATA / "sim_baseline_spontaneous_6s.csv.gz")


def test_baseline_and_set2_beat(baseline):
    tf = analyze_trace(*baseline)
    assert tf.status == "ok" and tf.beating and tf.n_beats == 6
    assert tf.cycle_length_ms == pytest.approx(982.5, abs=1.0)
    assert tf.n_eads == 0 and tf.ead_fraction == 0.0
    tf2 = analyze_trace(*load_trace_csv(DATA / "sim_set2_spontaneous_6s.csv.gz"))
    assert tf2.status == "ok" and tf2.beating
    assert 1200 < tf2.cycle_length_ms < 1350
    assert tf2.n_complete == tf2.n_beats - 1            # the last AP is cut by the end


def test_set1_is_non_repolarizing():
    t, v = load_trace_csv(DATA / "sim_set1_spontaneous_0-3s.csv.gz")
    status, reasons = classify(t, v)
    assert status == "non_repolarizing"
    assert any("stuck above -40 mV for the last" in r for r in reasons)
    tf = analyze_trace(t, v)
    assert tf.n_beats == 1 and tf.n_eads == 0 and tf.n_complete == 0   # not an EAD
    assert math.isnan(tf.apd90_ms)


def test_baseline_apd90_and_cycle_length_independent(baseline):
    """Plain method: peaks by find_peaks, upstroke at max np.gradient, nearest-sample APD90."""
    t, v = baseline
    peaks, _ = find_peaks(v, height=0.0, distance=3000)
    dvdt = np.gradient(v, t)
    apd90 = []
    for prev, p in itertools.pairwise(peaks):
        mdp = v[prev:p].min()
        up = prev + np.argmax(dvdt[prev:p])
        level = v[p] - 0.9 * (v[p] - mdp)
        cross = p + np.argmax(v[p:] <= level)
        apd90.append(t[cross] - t[up])
    tf = analyze_trace(t, v)
    assert tf.cycle_length_ms == pytest.approx(np.median(np.diff(t[peaks])), abs=0.2)
    assert tf.apd90_ms == pytest.approx(np.median(apd90), abs=0.3)
    assert tf.mdp_mV == pytest.approx(v.min(), abs=0.01)


def test_json_round_trip(baseline):
    d = analyze_trace(*baseline).to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["status"] == "ok" and len(back["beats"]) == 6
    assert back["beats"][0]["cycle_length_ms"] is None              # NaN -> None
    assert set(back) >= {"status", "reasons", "n_beats", "beating", "cycle_length_ms", "mdp_mV",
                         "peak_mV", "amplitude_mV", "dvdt_max_V_per_s", "apd30_ms", "apd50_ms",
                         "apd90_ms", "n_eads", "ead_fraction", "beats"}


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_exact():
    t, v, e = synthetic_ap()
    tf = analyze_trace(t, v)
    assert tf.status == "ok" and tf.n_beats == 6 and tf.n_complete == 6
    assert tf.cycle_length_ms == pytest.approx(e["cl"], abs=0.2)
    assert tf.mdp_mV == pytest.approx(e["mdp"], abs=1e-6)
    assert tf.peak_mV == pytest.approx(e["peak"], abs=1e-3)
    assert tf.amplitude_mV == pytest.approx(e["amp"], abs=1e-3)
    assert tf.dvdt_max_V_per_s == pytest.approx(e["dvdt"], rel=0.01)
    for x in (30, 50, 90):
        assert getattr(tf, f"apd{x}_ms") == pytest.approx(e[f"apd{x}"], abs=0.2)
    assert tf.n_eads == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_with_noise(seed):
    t, v, e = synthetic_ap(noise=0.5, seed=seed)
    tf = analyze_trace(t, v)
    assert tf.status == "ok" and tf.n_beats == 6 and tf.n_complete == 6
    assert tf.noise_mV == pytest.approx(0.5, rel=0.1)
    assert tf.cycle_length_ms == pytest.approx(e["cl"], abs=3.0)
    assert tf.mdp_mV == pytest.approx(e["mdp"], abs=1.0)
    assert tf.amplitude_mV == pytest.approx(e["amp"], abs=2.0)
    assert tf.dvdt_max_V_per_s == pytest.approx(e["dvdt"], rel=0.1)
    for x in (30, 50, 90):
        assert getattr(tf, f"apd{x}_ms") == pytest.approx(e[f"apd{x}"], abs=1.5)
    assert tf.n_eads == 0                               # noise alone is no EAD


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_ead_hump_is_flagged(noise):
    t, v, _ = synthetic_ap(hump=(8.0, 100.0, 8.0), noise=noise)     # plateau re-depolarization
    tf = analyze_trace(t, v)
    assert tf.n_beats == 6                              # the hump is not a new beat
    assert tf.n_eads == 6 and tf.ead_fraction == 1.0
    assert all(b.ead and b.ead_mV > 3.0 for b in tf.beats)
    assert any("EAD" in r for r in tf.reasons)
    t, v, _ = synthetic_ap(hump=(40.0, 220.0, 15.0), noise=noise)   # big phase-3 EAD
    tf = analyze_trace(t, v)
    assert tf.n_beats == 6 and tf.n_eads == 6


def test_small_hump_is_not_an_ead():
    t, v, _ = synthetic_ap(hump=(2.0, 100.0, 8.0), noise=0.5)
    assert analyze_trace(t, v).n_eads == 0


def test_quiescent_flat_and_subthreshold():
    t = np.arange(0.0, 3000.0, 0.1)
    v = -60.0 + 10.0 * np.sin(2 * np.pi * t / 700.0)    # 20 mV oscillation: no AP
    status, reasons = classify(t, v)
    assert status == "quiescent"
    assert any("no upstroke > 30 mV" in r for r in reasons)
    status, reasons = classify(t, np.full(t.size, -35.0))
    assert status == "quiescent" and any("depolarized" in r for r in reasons)


def test_single_ap_then_rest_is_quiescent():
    t, v, _ = synthetic_ap(n_beats=1, first=300.0)
    t = np.arange(0.0, 4000.0, 0.1)
    v = np.concatenate([v, np.full(t.size - v.size, v[-1])])
    status, reasons = classify(t, v)
    assert status == "quiescent" and "only 1 AP" in reasons[0]


def test_unstable():
    t = np.arange(0.0, 100.0, 0.1)
    v = np.full(t.size, -70.0)
    v[500] = np.nan
    assert classify(t, v)[0] == "unstable"
    v[500] = 250.0
    status, reasons = classify(t, v)
    assert status == "unstable" and "250.0" in reasons[0]


def test_bad_time_axis_raises():
    with pytest.raises(ValueError):
        analyze_trace(np.array([0.0, 0.2, 0.1]), np.zeros(3))


def test_classify_batch_matches_single(baseline):
    t, v = baseline
    t, v = t[:30001], v[:30001]
    t1, v1 = load_trace_csv(DATA / "sim_set1_spontaneous_0-3s.csv.gz")
    assert np.array_equal(t1, t)
    V = np.stack([v, v1, np.full(t.size, -75.0), np.where(t > 1000, np.nan, v)])
    statuses, bio = classify_batch(t, V)
    assert list(statuses) == ["ok", "non_repolarizing", "quiescent", "unstable"]
    assert set(bio) == set(BATCH_KEYS) and all(a.shape == (4,) for a in bio.values())
    single = analyze_trace(t, v)
    assert bio["apd90_ms"][0] == single.apd90_ms and bio["n_beats"][0] == single.n_beats
    assert bio["beating"].tolist() == [True, False, False, False]
    assert np.isnan(bio["cycle_length_ms"][2])


# ----------------------------------------------------------------------------- real recordings


def test_paced_matches_published_features():
    """Published (Clark 2022): mean over paced beats 3-5 of: max raw dV/dt after the stimulus,
    rmp = min V, apa = max V - rmp, APD90 from 3 ms after the stimulus. The file holds one paced
    AP; with its stimulus current we exclude the artifact from dV/dt max."""
    t, v, i_stim = load_trace_csv(PACED, with_current=True)
    with PUBLISHED.open() as fh:
        pub = {k: float(x) for k, x in next(csv.DictReader(fh)).items()
               if k in ("dvdt_max", "rmp", "apa", "apd90")}
    tf = analyze_trace(t, v, i_stim=i_stim, aggregate="mean")
    assert tf.n_complete == 1
    ours = {"dvdt_max": tf.dvdt_max_V_per_s, "rmp": tf.mdp_mV, "apa": tf.amplitude_mV,
            "apd90": tf.apd90_ms}
    for k, val in ours.items():
        assert val == pytest.approx(pub[k], rel=0.10), (k, val, pub[k])


def test_stimulus_is_excluded_from_upstroke():
    t, v, i_stim = load_trace_csv(PACED, with_current=True)
    b = analyze_trace(t, v, i_stim=i_stim).beats[0]
    stim_t = t[np.abs(i_stim) > 5.0]
    assert b.upstroke_time_ms > stim_t.max()            # after the 1 ms stimulus
    assert b.upstroke_time_ms - stim_t.max() < 5.0


def test_real_spont_copies():
    t, v = load_trace_csv(DATA / "real_4_021921_1_alex_control__pre-drug_spont_0-3s.csv.gz")
    tf = analyze_trace(t, v)
    peaks, _ = find_peaks(v, prominence=40, distance=2000)
    assert tf.status == "ok" and tf.beating and tf.n_beats == len(peaks)
    assert tf.cycle_length_ms == pytest.approx(np.median(np.diff(t[peaks])), abs=3.0)
    assert tf.noise_mV > 0.1 and tf.n_eads == 0
    status, reasons = classify(*load_trace_csv(
        DATA / "real_5_031121_3_alex_control__pre-drug_spont_0-2s.csv.gz"))
    assert status == "quiescent" and "no upstroke" in reasons[0]
    status, reasons = classify(*load_trace_csv(
        DATA / "real_5_031521_4_alex_verapamil__pre-drug_spont_7-10s.csv.gz"))
    assert status == "non_repolarizing" and "stuck above -40 mV" in reasons[0]


def test_all_shared_pre_drug_spont():
    if not SHARED_REAL.is_dir():
        pytest.skip(f"{SHARED_REAL} not available")
    files = sorted(SHARED_REAL.glob("*__pre-drug_spont.csv.gz"))
    if not files:
        pytest.skip(f"no pre-drug_spont files in {SHARED_REAL}")
    n_beating = 0
    for f in files:
        tf: TraceFeatures = analyze_trace(*load_trace_csv(f))
        json.dumps(tf.to_dict(), allow_nan=False)
        assert tf.reasons, f.name
        if tf.beating:
            n_beating += 1
            assert 100.0 < tf.cycle_length_ms < 10000.0, f.name
        elif tf.n_beats == 0:
            assert tf.status == "quiescent", f.name
        else:                                           # one AP
            assert tf.status in ("quiescent", "non_repolarizing", "ok"), f.name
    assert 0 < n_beating < len(files)


def test_unstable_simulated_trace_csv_reports_unstable(tmp_path):
    """`cardiotwin simulate ap` writes NaN after a run goes unstable: `features` reads it and
    answers 'unstable' (NaN voltage allowed), while a NaN time is still refused."""
    t = np.arange(2000) * 0.1
    v = np.where(t < 100.0, -70.0, np.nan)
    p = tmp_path / "unstable.csv"
    p.write_text("t_ms,v_mV\n" + "\n".join(f"{a:.1f},{b}" for a, b in zip(t, v, strict=True)))
    tt, vv = load_trace_csv(p)
    assert np.isnan(vv[-1]) and tt.size == 2000
    res = analyze_trace(tt, vv)
    assert res.status == "unstable" and "non-finite V from t = 100.0 ms" in res.reasons[0]
    p.write_text("t_ms,v_mV\n0.0,-70\nnan,-70\n0.2,-70\n")
    with pytest.raises(TraceCsvError, match="line 3"):
        load_trace_csv(p)
