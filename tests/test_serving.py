"""The live twin service over real HTTP: a Ray Serve app on 127.0.0.1 serving the posterior
flow, the example ABF in, the twin (with its posterior, AP prediction and OOD check) out;
malformed inputs get 4xx and the service keeps serving; a background screen. The offline CLI on
a point model (ridge)."""

import json
import socket
import time

import numpy as np
import pytest
import requests
from conftest import R20_STATUSES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AP_SAMPLES = 8  # posterior samples per served twin's AP prediction


@pytest.fixture(scope="module")
def noisy_model(r20_store, tmp_path_factory):
    """A point network (ridge) trained to read recordings with 0.5 pA/pF noise (as the
    example's)."""
    from cardiotwin.learn import preset
    from cardiotwin.learn.train import train_model

    cfg = preset("ridge_mlp", input_pool=5, epochs=30, patience=6, statuses=R20_STATUSES,
                 input_noise_pA_per_pF=0.5)
    out = tmp_path_factory.mktemp("models") / "noisy"
    train_model(r20_store.path, out, cfg, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from cardiotwin.twin import write_example_recording

    return write_example_recording(tmp_path_factory.mktemp("example"), seed=4, spread=0.2,
                                   ap_duration_ms=3000.0, ap_prepace_ms=1000.0)


@pytest.fixture(scope="module")
def service(ray_session, flow_model, tmp_path_factory):
    from ray import serve

    from cardiotwin.serving import TwinDeployment

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = TwinDeployment.options(ray_actor_options={"num_cpus": 0.5}).bind(
        model_dir=str(flow_model[1]), max_upload_mb=2.0, ap_duration_ms=3000.0,
        ap_samples=AP_SAMPLES, screen_dir=str(tmp_path_factory.mktemp("screens")),
        require_auth=False)           # loopback clients only, no tokens
    serve.run(app, name="cardiotwin", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_health_and_model_info(service):
    assert requests.get(f"{service}/health", timeout=30).json() == {"status": "ok"}
    info = requests.get(f"{service}/model", timeout=30).json()
    assert len(info["parameter_names"]) == 52
    from cardiotwin.protocols import builtin_protocol

    assert info["protocol_hash"] == builtin_protocol("protocol_a").protocol_hash


def test_example_abf_round_trip_recovers_the_cell(service, example, flow_model):
    from cardiotwin.learn import load_estimator
    from cardiotwin.twin.example import read_example_truth

    with open(example.voltage_clamp_abf, "rb") as f:
        r = requests.post(f"{service}/twin?figure=true",
                          files={"file": ("cell.abf", f, "application/octet-stream")},
                          timeout=120)
    assert r.status_code == 200, r.text
    twin = r.json()
    names = list(twin["parameters"])
    truth = read_example_truth(example.truth_json)["multipliers"]
    pred = np.array([twin["parameters"][n]["multiplier"] for n in names])
    true = np.array([truth[n] for n in names])
    meta = load_estimator(flow_model[1]).metadata
    # the trivial predictor: the training mean, ~1 for every multiplier
    trivial = np.abs(1.0 - true)
    assert np.median(np.abs(pred - true)) < np.median(trivial)
    assert twin["protocol_hash"] == meta["protocol_hash"]
    assert twin["fit"]["relative_rms"] < 0.6
    assert twin["status"] in ("ok", "quiescent", "non_repolarizing")
    assert twin["figure_png_base64"].startswith("iVBOR")        # a PNG
    assert set(twin["timings_s"]) >= {"parsing", "inference", "ap_simulation"}


def test_twin_posterior_over_http(service, example, flow_model):
    """The posterior twin's fields over HTTP: per-parameter posterior summaries (ordered
    quantiles), contraction and identifiability (contraction past the threshold), the AP
    prediction of AP_SAMPLES
    posterior samples, the OOD check; the truth mostly inside the 90% intervals."""
    from cardiotwin.twin.example import read_example_truth

    with open(example.voltage_clamp_abf, "rb") as f:
        r = requests.post(f"{service}/twin", files={"file": ("cell.abf", f)}, timeout=120)
    assert r.status_code == 200, r.text
    twin = r.json()
    from cardiotwin.learn.calibration import IDENTIFIABLE_CONTRACTION

    truth = read_example_truth(example.truth_json)["multipliers"]
    inside = []
    for name, p in twin["parameters"].items():
        post = p["posterior"]
        q = [post[k] for k in ("q05", "q25", "q50", "q75", "q95")]
        assert all(np.isfinite([post["mean"], post["sd"], *q])), name
        assert q == sorted(q) and post["sd"] >= 0, (name, post)
        assert p["multiplier"] == pytest.approx(post["mean"]) and p["contraction"] <= 1
        assert p["identifiable"] is (p["contraction"] >= IDENTIFIABLE_CONTRACTION), name
        inside.append(q[0] <= truth[name] <= q[-1])
    assert np.mean(inside) >= 0.6, np.mean(inside)
    pred = twin["ap_prediction"]
    assert pred["n_samples"] == AP_SAMPLES and 0.0 <= pred["p_beating"] <= 1.0
    assert set(pred) >= {"n_unstable", "cycle_length_ms", "apd90_ms", "mdp_mV"}
    ood = twin["out_of_distribution"]
    assert set(ood) >= {"flag", "score", "threshold", "t2_ratio", "q_ratio", "reason"}
    assert ood["flag"] is (ood["score"] > ood["threshold"]) and ood["score"] < 3, ood
    # a trace far from the training population (the example's current x 3) is flagged
    from cardiotwin.twin import read_abf

    rec = read_abf(example.voltage_clamp_abf)
    body = {"current": (3 * rec.current_pA_per_pF).tolist(),
            "command_mV": rec.command_mV.tolist()}
    r = requests.post(f"{service}/twin?simulate=false", json=body, timeout=60)
    assert r.status_code == 200, r.text
    far = r.json()["out_of_distribution"]
    assert far["flag"] is True and far["score"] > 3 and far["reason"], far


def test_concurrent_requests_get_the_answer_of_one_alone(service, example, flow_model):
    """Concurrent twins (simulated in batches of whatever has queued for the simulation
    thread: parsing and inference now run off the event loop, so a batch forms when the
    simulation is the bottleneck) get the same answer as one alone."""
    import concurrent.futures as cf

    from cardiotwin.learn import load_estimator
    from cardiotwin.twin import read_abf
    from cardiotwin.twin.inference import estimate_twin, simulate_twins

    data = example.voltage_clamp_abf.read_bytes()

    def post(_):
        r = requests.post(f"{service}/twin", files={"file": ("cell.abf", data)}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    with cf.ThreadPoolExecutor(6) as pool:
        twins = list(pool.map(post, range(6)))
    assert all(1 <= t["simulation_batch_size"] <= 6 for t in twins)
    est = load_estimator(flow_model[1])
    alone, rec = estimate_twin(est, read_abf(example.voltage_clamp_abf, protocol=est.protocol))
    simulate_twins(est.protocol, [alone], [rec], ap_duration_ms=3000.0, ap_samples=AP_SAMPLES)
    for t in twins:
        assert t["status"] == alone.status
        assert t["ap_prediction"]["p_beating"] == alone.ap_prediction["p_beating"]
        assert t["fit"]["relative_rms"] == pytest.approx(alone.fit["relative_rms"], rel=1e-4)
        for k in ("apd90_ms", "cycle_length_ms", "mdp_mV"):
            want = alone.biomarkers[k]
            assert (t["biomarkers"][k] is None and not np.isfinite(want)) or \
                t["biomarkers"][k] == pytest.approx(want, rel=1e-3, abs=0.5)


def test_reconstruct_route_without_a_model_is_a_clear_404(service):
    r = requests.post(f"{service}/reconstruct", files={"file": ("eap.csv", b"t_ms,eap\n")},
                      timeout=30)
    assert r.status_code == 404
    assert "reconstruct_model_dir" in r.json()["error"]
    assert requests.get(f"{service}/health", timeout=30).status_code == 200


def test_json_trace_and_parameters_only(service, example):
    from cardiotwin.twin import read_abf

    rec = read_abf(example.voltage_clamp_abf)
    body = {"current": rec.current_pA_per_pF.tolist(), "current_units": "pA/pF",
            "command_mV": rec.command_mV.tolist()}
    r = requests.post(f"{service}/twin?simulate=false", json=body, timeout=60)
    assert r.status_code == 200, r.text
    twin = r.json()
    assert twin["fit"] == {} and len(twin["parameters"]) == 52
    assert twin["ap_prediction"] is None and twin["out_of_distribution"] is not None
    assert all(p["posterior"] is not None for p in twin["parameters"].values())


@pytest.mark.parametrize("case", ["truncated", "random", "empty", "nan", "short", "oversized",
                                  "wrong_type", "bad_json"])
def test_malformed_inputs_get_4xx_and_service_keeps_serving(service, example, case):
    data = example.voltage_clamp_abf.read_bytes()
    rng = np.random.default_rng(0)
    url = f"{service}/twin"
    if case in ("truncated", "random", "empty", "oversized"):
        payload = {"truncated": data[: len(data) // 3], "random": rng.bytes(5000),
                   "empty": b"", "oversized": rng.bytes(3_000_000)}[case]
        r = requests.post(url, files={"file": ("x.abf", payload)}, timeout=60)
    elif case == "nan":
        cur = np.zeros(49500)
        cur[100] = np.nan
        r = requests.post(url, data=json.dumps({"current": [None if np.isnan(v) else v
                                                            for v in cur]}),
                          headers={"content-type": "application/json"}, timeout=60)
    elif case == "short":
        r = requests.post(url, json={"current": [0.0] * 1000}, timeout=60)
    elif case == "wrong_type":
        r = requests.post(url, data=b"hello", headers={"content-type": "text/plain"},
                          timeout=60)
    else:
        r = requests.post(url, data=b"{not json", headers={"content-type": "application/json"},
                          timeout=60)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert r.json()["error"]
    if case == "oversized":
        assert r.status_code == 413
    assert requests.get(f"{service}/health", timeout=30).status_code == 200
    with open(example.voltage_clamp_abf, "rb") as f:
        ok = requests.post(f"{url}?simulate=false", files={"file": ("cell.abf", f)},
                           timeout=60)
    assert ok.status_code == 200


def test_background_screen(service):
    r = requests.post(f"{service}/screens", json={
        "drug": "E-4031", "concentrations_nM": [0, 50], "n_cells": 16, "prepace_ms": 500,
        "record_ms": 1500}, timeout=30)
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    assert requests.get(f"{service}/health", timeout=10).status_code == 200   # responsive
    for _ in range(240):
        st = requests.get(f"{service}/screens/{job}", timeout=10).json()
        if st["status"] != "running":
            break
        time.sleep(0.5)
    assert st["status"] == "done", st
    res = requests.get(f"{service}/screens/{job}/results", timeout=10).json()
    assert [c["concentration_nM"] for c in res["summary"]["concentrations"]] == [0, 50]
    bad = requests.post(f"{service}/screens", json={"drug": "nope"}, timeout=10)
    assert bad.status_code == 400 and "nope" in bad.json()["error"]
    assert requests.get(f"{service}/screens/unknown", timeout=10).status_code == 404


def test_cli_twin_offline(noisy_model, example, tmp_path, capsys):
    """One recording with --out on a point model: no posterior fields (null)."""
    from cardiotwin.cli import main

    out = tmp_path / "twin.json"
    assert main(["twin", str(example.voltage_clamp_abf), "--model", str(noisy_model),
                 "--ap-recording", str(example.current_clamp_abf), "--ap-duration-ms", "3000",
                 "--out", str(out)]) == 0
    twin = json.loads(out.read_text())
    assert len(twin["parameters"]) == 52 and twin["comparison"] is not None
    assert twin["ap_prediction"] is None and twin["out_of_distribution"] is None
    assert all(p["posterior"] is None and p["identifiable"] is None
               for p in twin["parameters"].values())
    assert out.with_suffix(".png").is_file()
    assert f"twin: {example.voltage_clamp_abf} -> {out}" in capsys.readouterr().out
    bad = tmp_path / "bad.abf"
    bad.write_bytes(b"ABF2" + b"\0" * 100)
    assert main(["twin", str(bad), "--model", str(noisy_model)]) == 2
    assert "bad.abf" in capsys.readouterr().err


def test_cli_screen(ray_session, tmp_path, capsys):
    from cardiotwin.cli import main

    out = tmp_path / "screen"
    assert main(["screen", "--drug", "E-4031", "--concentrations-nm", "0", "30", "--n-cells",
                 "8", "--prepace-ms", "500", "--record-ms", "1500", "--out", str(out),
                 "--no-progress"]) == 0
    assert (out / "summary.json").is_file()
    assert main(["screen", "--drug", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err
