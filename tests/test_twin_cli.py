"""``cardiotwin twin`` on several recordings (ABF and CSV) with the posterior flow: one
simulation batch, one JSON + figure per recording with the posterior fields, failures reported
per file (exit 2) while the others are written; inconsistent options refused before any
work."""

import json
from pathlib import Path

import numpy as np
import pytest

from cardiotwin.cli import main
from cardiotwin.learn.calibration import IDENTIFIABLE_CONTRACTION

POSTERIOR_KEYS = ("mean", "sd", "q05", "q25", "q50", "q75", "q95")
OOD_KEYS = {"flag", "score", "threshold", "reason"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """{stem: path}: two example ABFs and one CSV (t_ms, command_mV, i_pA_per_pF) of a third
    example cell."""
    from cardiotwin.protocols import builtin_protocol
    from cardiotwin.twin import read_abf, write_example_recording

    d = tmp_path_factory.mktemp("recordings")
    out = {}
    for seed, name in ((1, "cell_a"), (2, "cell_b"), (3, "cell_c")):
        out[f"{name}_vc"] = write_example_recording(d, seed=seed, spread=0.2, ap=False,
                                                    name=name).voltage_clamp_abf
    pa = builtin_protocol("protocol_a")
    rec = read_abf(out.pop("cell_c_vc"), protocol=pa)
    rows = np.column_stack([pa.times_ms(), rec.command_mV, rec.current_pA_per_pF])
    csv = d / "cell_c.csv"
    csv.write_text("t_ms,command_mV,i_pA_per_pF\n" + "\n".join(
        ",".join(repr(float(x)) for x in r) for r in rows) + "\n")
    out["cell_c"] = csv
    return out


def _check_posterior_twin(tw: dict, ap_samples: int) -> None:
    assert len(tw["parameters"]) == 52
    for name, p in tw["parameters"].items():
        post = p["posterior"]
        vals = np.array([post[k] for k in POSTERIOR_KEYS], float)
        assert np.isfinite(vals).all(), name
        q = vals[2:]
        assert (np.diff(q) >= 0).all(), (name, post)
        assert post["sd"] >= 0 and q[0] <= post["mean"] <= q[-1], (name, post)
        assert p["identifiable"] is (p["contraction"] >= IDENTIFIABLE_CONTRACTION), name
        assert p["multiplier"] == pytest.approx(post["mean"])
    ood = tw["out_of_distribution"]
    assert set(ood) >= OOD_KEYS and isinstance(ood["flag"], bool)
    assert np.isfinite(ood["score"]) and np.isfinite(ood["threshold"])
    if ap_samples:
        pred = tw["ap_prediction"]
        assert pred["n_samples"] == ap_samples
        assert 0.0 <= pred["p_beating"] <= 1.0
        assert 0 <= pred["n_unstable"] <= ap_samples
    else:
        assert tw["ap_prediction"] is None


def test_several_recordings_one_batch(flow_model, recordings, tmp_path, capsys):
    from cardiotwin.learn import load_estimator
    from cardiotwin.twin import read_abf, read_trace_csv
    from cardiotwin.twin.inference import estimate_twin

    _, model_dir, _ = flow_model
    out = tmp_path / "twins"  # created by the command
    files = [str(p) for p in recordings.values()]
    assert main(["twin", *files, "--model", str(model_dir), "--out-dir", str(out),
                 "--ap-duration-ms", "2000", "--ap-samples", "8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("fit relative RMS" in ln and "out of distribution" in ln
                                   for ln in lines), lines
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}.{ext}" for s in recordings for ext in ("json", "png"))
    est = load_estimator(model_dir)
    for stem, path in recordings.items():
        tw = json.loads((out / f"{stem}.json").read_text())
        _check_posterior_twin(tw, 8)
        assert tw["simulation_batch_size"] == 3
        assert tw["fit"]["relative_rms"] < 0.6 and tw["status"] is not None
        assert (out / f"{stem}.png").read_bytes().startswith(PNG)
        # each file's twin is its own recording's (the batch keeps the order)
        rec = (read_trace_csv if path.suffix == ".csv" else read_abf)(path,
                                                                      protocol=est.protocol)
        alone, _ = estimate_twin(est, rec)
        got = np.array([p["multiplier"] for p in tw["parameters"].values()])
        np.testing.assert_allclose(got, alone.multipliers, rtol=1e-5, atol=1e-6)


def test_a_failing_file_among_good_ones(flow_model, recordings, tmp_path, capsys):
    _, model_dir, _ = flow_model
    bad = tmp_path / "broken.abf"
    bad.write_bytes(b"ABF2" + b"\0" * 100)
    short = tmp_path / "short.csv"
    short.write_text("t_ms,i_pA_per_pF\n" + "".join(f"{0.1 * k},0.0\n" for k in range(500)))
    missing = tmp_path / "missing.abf"
    good = recordings["cell_a_vc"]
    out = tmp_path / "twins"
    rc = main(["twin", str(bad), str(good), str(missing), str(short), "--model",
               str(model_dir), "--out-dir", str(out), "--ap-duration-ms", "2000",
               "--ap-samples", "0"])
    cap = capsys.readouterr()
    assert rc == 2
    errors = cap.err.strip().splitlines()
    assert len(errors) == 4 and errors[-1] == "twin: 3 of 4 recordings failed", errors
    for f, line in zip((bad, missing, short), errors, strict=False):
        assert line.startswith(f"{f}: ") and len(line) > len(str(f)) + 5, line
    assert sorted(p.name for p in out.iterdir()) == ["cell_a_vc.json", "cell_a_vc.png"]
    tw = json.loads((out / "cell_a_vc.json").read_text())
    _check_posterior_twin(tw, 0)
    assert tw["simulation_batch_size"] == 1 and "cell_a_vc" in cap.out


def test_one_recording_printed_parameters_only(flow_model, recordings, capsys):
    _, model_dir, _ = flow_model
    assert main(["twin", str(recordings["cell_c"]), "--model", str(model_dir),
                 "--no-simulate"]) == 0
    tw = json.loads(capsys.readouterr().out)
    _check_posterior_twin(tw, 0)
    assert tw["fit"] == {} and tw["status"] is None


@pytest.mark.parametrize("case", ["same_stem", "several_without_out_dir", "out_and_out_dir",
                                  "ap_recording_with_several", "negative_samples",
                                  "out_dir_parent_missing", "seal_without_ap",
                                  "seal_without_cm"])
def test_inconsistent_options_refused_before_any_work(case, tmp_path, capsys):
    """Refused in one line, before the (here missing) model is loaded or anything written."""
    a, b = tmp_path / "x" / "cell.abf", tmp_path / "y" / "cell.csv.gz"
    out = tmp_path / "out"
    args = {
        "same_stem": [str(a), str(b), "--out-dir", str(out)],
        "several_without_out_dir": [str(a), "other.abf"],
        "out_and_out_dir": [str(a), "--out", str(tmp_path / "t.json"), "--out-dir", str(out)],
        "ap_recording_with_several": [str(a), "other.abf", "--out-dir", str(out),
                                      "--ap-recording", "ap.abf"],
        "negative_samples": [str(a), "--ap-samples", "-1"],
        "out_dir_parent_missing": [str(a), "--out-dir", str(tmp_path / "no" / "out")],
        "seal_without_ap": [str(a), "--ap-seal-resistance-mohm", "1000", "--ap-cm-pf", "50"],
        "seal_without_cm": [str(a), "--ap-recording", "ap.csv", "--ap-seal-resistance-mohm",
                            "1000"],
    }[case]
    want = {"same_stem": f"{a} and {b} have the same name 'cell'",
            "several_without_out_dir": "2 recordings need --out-dir",
            "out_and_out_dir": "--out and --out-dir together",
            "ap_recording_with_several": "--ap-recording is for one recording",
            "negative_samples": "--ap-samples: expected 0 or more, found -1",
            "out_dir_parent_missing": "parent directory does not exist",
            "seal_without_ap": "give the AP recording too",
            "seal_without_cm": "give both --ap-seal-resistance-mohm and --ap-cm-pf"}[case]
    assert main(["twin", *args, "--model", str(tmp_path / "no_model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cardiotwin: error: ") and err.count("\n") == 1, err
    assert want in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_stem_strips_gz_and_format():
    from cardiotwin.twin.cli_args import _stem

    assert [_stem(p) for p in ("d/A.abf", "B.csv", "C.CSV.GZ", str(Path("e") / "D.x.abf"))] \
        == ["A", "B", "C", "D.x"]


def test_ap_recording_with_its_seal_is_simulated_with_it(flow_model, recordings, tmp_path):
    """The twin's AP of a recording with a known seal (1 GOhm, 50 pF: 0.02 nS/pF) runs with
    that leak: the JSON says so, and the same parameters give another AP."""
    _, model_dir, _ = flow_model
    ap = Path(__file__).parent / "data" / "real_4_021921_1_alex_control__pre-drug_spont_0-3s.csv.gz"
    twins = {}
    for name, extra in (("plain", []), ("sealed", ["--ap-seal-resistance-mohm", "1000",
                                                   "--ap-cm-pf", "50"])):
        out = tmp_path / f"{name}.json"
        assert main(["twin", str(recordings["cell_a_vc"]), "--model", str(model_dir),
                     "--ap-recording", str(ap), "--ap-duration-ms", "3000", "--ap-samples",
                     "0", "--out", str(out), *extra]) == 0
        twins[name] = json.loads(out.read_text())
    assert twins["plain"]["ap_seal"] is None
    seal = twins["sealed"]["ap_seal"]
    assert seal["conductance_nS_per_pF"] == pytest.approx(0.02)
    assert seal["resistance_MOhm"] == 1000 and seal["cm_pF"] == 50 and seal["reversal_mV"] == 0
    assert twins["sealed"]["biomarkers"] != twins["plain"]["biomarkers"]   # another AP
    assert twins["sealed"]["parameters"] == twins["plain"]["parameters"]   # the same cell
    assert twins["sealed"]["comparison"] is not None


def test_recording_quality_is_estimated_and_a_recording_outside_the_priors_refused(
        flow_model, recordings, tmp_path, capsys):
    _, model_dir, _ = flow_model
    rec = str(recordings["cell_a_vc"])
    out = tmp_path / "q.json"
    # the example recording is an ideal clamp (no amplifier at all): the fit can only come near
    code = main(["twin", rec, "--model", str(model_dir), "--no-simulate", "--out", str(out),
                 "--vc-artefact", "compensation=0", "--vc-artefact", "prediction=0"])
    assert code == 0, capsys.readouterr().err
    q = json.loads(out.read_text())["recording_quality"]
    assert set(q["estimates"]) >= {"rs_MOhm", "cm_pF", "g_leak_nS_per_pF", "v_offset_mV"}
    assert np.isfinite(q["relative_rms"]) and np.isfinite(q["relative_rms_ideal_clamp"])
    assert q["free"] and "compensation" not in q["free"]  # a given setting is not fitted
    assert "recording quality: leak" in capsys.readouterr().out
    # a leak range the recording cannot reach: the estimate sits at its bound -> refused
    code = main(["twin", rec, "--model", str(model_dir), "--no-simulate",
                 "--out", str(tmp_path / "r.json"), "--vc-artefact", "g_leak_nS_per_pF=0.5:0.6",
                 "--refuse-out-of-prior"])
    assert code == 2
    assert "refused (--refuse-out-of-prior)" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
