"""The live service under hostile and broken input, over real HTTP (issue 20): one app started
through ``app_builder`` (API tokens from an environment variable) on 127.0.0.1, then requests
without or with wrong tokens, foreign Host and Origin headers, wrong content types, server
paths, a pathological ABF, a bad request among good batch-mates, broken values, oversized and
chunked bodies, costly screens, too many screens, cancellation and an interrupted job; every one
answered with its 4xx JSON ``{"error", "field"}`` (never NaN, never a server path), and the
service answering ``/health`` and good requests afterwards."""

import concurrent.futures as cf
import json
import os
import socket
import subprocess
import time

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.ray

TOKEN = "hostile-test-token-0123456789"
TOKEN_ENV = "CARDIOTWIN_TEST_API_TOKENS"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strict(text: str):
    """JSON that refuses NaN and Infinity tokens."""
    def no(c):
        raise AssertionError(f"non-finite JSON token {c}")
    return json.loads(text, parse_constant=no)


def assert_error(r, status, field=None):
    """A 4xx JSON error naming the problem (and the field when given)."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = _strict(r.text)
    assert set(body) >= {"error", "field"} and body["error"], body
    if field is not None:
        assert body["field"] == field, body
    assert "Traceback" not in r.text and "/tmp/" not in r.text and "/home/" not in r.text
    assert r.headers.get("X-Request-ID")
    return body


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    from cardiotwin.twin import write_example_recording

    return write_example_recording(tmp_path_factory.mktemp("hostile-example"), seed=4,
                                   spread=0.2, ap=False)


@pytest.fixture(scope="module")
def service(ray_session, flow_model, tmp_path_factory):
    from ray import serve

    from cardiotwin.serving import app_builder

    screens = tmp_path_factory.mktemp("hostile-screens")
    port = _free_port()
    os.environ[TOKEN_ENV] = f"{TOKEN}, second-token-0123456789"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = app_builder({"model_dir": str(flow_model[1]), "api_tokens_env": TOKEN_ENV,
                           "max_upload_mb": 2.0, "max_json_mb": 2.0, "max_screen_body_kb": 16,
                           "ap_duration_ms": 1000.0, "ap_samples": 2, "max_sweeps": 50,
                           "screen_dir": str(screens), "screen_max_cells": 200,
                           "screen_budget_cell_ms": 5e6, "max_concurrent_screens": 1,
                           "screen_batch_cells": 16, "screen_retry_after_s": 11})
    finally:
        os.environ.pop(TOKEN_ENV, None)
    serve.run(app, name="cardiotwin-hostile", route_prefix="/")
    yield f"http://127.0.0.1:{port}", screens
    serve.shutdown()


@pytest.fixture(scope="module")
def url(service):
    return service[0]


def _good_twin(url, example, query="simulate=false", **kw):
    with open(example.voltage_clamp_abf, "rb") as f:
        return requests.post(f"{url}/twin?{query}", files={"file": ("cell.abf", f)},
                             headers=AUTH, timeout=120, **kw)


def test_tokens_required_on_every_route_but_health(url):
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    assert requests.head(f"{url}/health", timeout=10).status_code == 200
    for method, path in (("get", "/model"), ("post", "/twin"), ("post", "/screens"),
                         ("get", "/screens/0123456789abcdef"), ("delete", "/screens/x"),
                         ("post", "/reconstruct"), ("get", "/openapi.json"), ("get", "/nope")):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            r = requests.request(method, f"{url}{path}", headers=headers, timeout=10)
            assert_error(r, 401, "authorization")
            assert r.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{url}/model", headers=AUTH, timeout=10).status_code == 200
    two = {"Authorization": "Bearer second-token-0123456789"}
    assert requests.get(f"{url}/model", headers=two, timeout=10).status_code == 200


def test_host_and_origin_checked(url):
    for host in ("evil.example.com", "evil.example.com:8000", "127.0.0.1.nip.io"):
        r = requests.get(f"{url}/model", headers={**AUTH, "Host": host}, timeout=10)
        assert_error(r, 400, "host")
    r = requests.get(f"{url}/health", headers={"Host": "rebound.attacker.org"}, timeout=10)
    assert_error(r, 400, "host")
    r = requests.post(f"{url}/screens", json={"drug": "E-4031"},
                      headers={**AUTH, "Origin": "https://evil.example.com"}, timeout=10)
    assert_error(r, 403, "origin")
    r = requests.get(f"{url}/model", headers={**AUTH, "Host": "localhost"}, timeout=10)
    assert r.status_code == 200


def test_content_types_enforced(url):
    cases = [("/twin", "text/plain", b'{"current": [1, 2]}'),
             ("/twin", "application/x-www-form-urlencoded", b"current=1"),
             ("/twin", None, b'{"current": [1, 2]}'),
             ("/screens", "text/plain", b'{"drug": "E-4031"}'),
             ("/screens", "multipart/form-data; boundary=x", b"--x--"),
             ("/reconstruct", "application/json", b"{}")]
    for path, ct, body in cases:
        headers = dict(AUTH, **({"Content-Type": ct} if ct else {}))
        r = requests.post(f"{url}{path}", data=body, headers=headers, timeout=10)
        if path == "/reconstruct":
            assert_error(r, 404, "reconstruct_model_dir")     # no model: said first
        else:
            assert_error(r, 415, "content-type")


def test_no_request_names_a_server_path(url, service, tmp_path):
    secret = tmp_path / "drugs.csv"
    secret.write_text("drug,current,ic50_nM,hill\nSECRETDRUG,IKr,5,1\n")
    answers = []
    for path in (str(secret), str(tmp_path / "missing.csv"), "/etc/passwd", "../../x.json"):
        r = requests.post(f"{url}/screens", json={"drug": "SECRETDRUG", "drug_file": path},
                          headers=AUTH, timeout=10)
        body = assert_error(r, 400, "drug_file")
        assert "SECRETDRUG" not in body["error"] and "drug,current" not in body["error"]
        answers.append(body["error"])
    assert len(set(answers)) == 1                 # existing and missing paths read the same
    r = requests.post(f"{url}/screens", json={"drug": "x", "out_dir": "/tmp/x"},
                      headers=AUTH, timeout=10)
    assert_error(r, 400, "out_dir")


def test_pathological_abf_refused_before_parsing(url, tmp_path):
    import pyabf.abfWriter

    sweeps = np.zeros((300_000, 2), dtype=np.float32)     # 1.2 MB of 2-sample sweeps
    sweeps[:, 1] = 1.0
    path = tmp_path / "many_sweeps.abf"
    pyabf.abfWriter.writeABF1(sweeps, str(path), sampleRateHz=10_000.0, units="pA")
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        r = requests.post(f"{url}/twin?sweep=mean", files={"file": ("many.abf", f)},
                          headers=AUTH, timeout=60)
    assert_error(r, 422, "sweep")
    assert time.perf_counter() - t0 < 10
    assert requests.get(f"{url}/health", timeout=5).status_code == 200


def test_a_bad_request_never_fails_its_batch_mates(url, example):
    """12 good twins (simulated together) and 3 bad ones at once: each bad one gets its own
    400, every good one its twin; /health answers quickly meanwhile."""
    data = example.voltage_clamp_abf.read_bytes()

    def post(query):
        return requests.post(f"{url}/twin?{query}", files={"file": ("cell.abf", data)},
                             headers=AUTH, timeout=300)

    queries = ["simulate=true"] * 12 + ["temperature_K=1000", "temperature_K=nan",
                                         "sweep=inf"]
    health = []
    with cf.ThreadPoolExecutor(len(queries)) as pool:
        futs = [pool.submit(post, q) for q in queries]
        while not all(f.done() for f in futs):
            t0 = time.perf_counter()
            assert requests.get(f"{url}/health", timeout=10).status_code == 200
            health.append(time.perf_counter() - t0)
            time.sleep(0.1)
        rs = [f.result() for f in futs]
    for r in rs[:12]:
        assert r.status_code == 200, r.text[:300]
        tw = _strict(r.text)
        assert len(tw["parameters"]) == 52 and tw["simulation_batch_size"] >= 1
    for r, field in zip(rs[12:], ("temperature_K", "temperature_K", "sweep"), strict=True):
        assert_error(r, 400, field)
    assert health and max(health) < 3.0, health


def test_broken_values_get_4xx(url, example):
    from cardiotwin.twin import read_abf

    rec = read_abf(example.voltage_clamp_abf)
    good = rec.current_pA_per_pF.tolist()
    n = len(good)
    cases = [
        ({"current": [0.0] * n}, 422, "current"),                        # flat
        ({"current": [1e39] * (n // 2) + [0.0] * (n - n // 2)}, 422, "current"),  # > float32
        ({"current": "abc"}, 400, "current"),
        ({"current": good, "capacitance_pF": "x"}, 400, "capacitance_pF"),
        ({"current": good, "current_units": 7}, 400, "current_units"),
        ({"current": {"a": 1}}, 400, "current"),
        ({"current": good, "sample_interval_ms": 1e-9}, 422, "sample_interval_ms"),
        ({"current": [0.0, 1.0] * 10}, 400, None),                       # wrong length
        ({"current": good[:1000] + [None] + good[1001:]}, 400, "current"),
        ([good], 400, "body"),
    ]
    for doc, status, field in cases:
        r = requests.post(f"{url}/twin?simulate=false", json=doc, headers=AUTH, timeout=60)
        assert_error(r, status, field)
    for body in (b"NaN", b'{"current": [NaN, 1]}', b'{"current": [Infinity]}', b"{not json",
                 b"[" * 50_000):
        r = requests.post(f"{url}/twin", data=body,
                          headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
        assert 400 <= r.status_code < 500
        assert_error(r, r.status_code)
    for query, field in (("temperature_K=nan", "temperature_K"),
                         ("temperature_K=1000&simulate=false", "temperature_K"),
                         ("sweep=inf", "sweep"), ("capacitance_pF=-3", "capacitance_pF"),
                         ("figure=perhaps", "figure"), ("simulate=false&simulate=true",
                                                         "simulate")):
        assert_error(_good_twin(url, example, query), 400, field)
    # framework-level errors in the same form
    r = requests.post(f"{url}/twin", files={"other": ("a.abf", b"ABF ")}, headers=AUTH,
                      timeout=10)
    assert_error(r, 400, "file")
    r = requests.post(f"{url}/twin", data=b"--nope\r\nbroken",
                      headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zz"},
                      timeout=10)
    assert 400 <= r.status_code < 500 and assert_error(r, r.status_code)
    assert_error(requests.get(f"{url}/nothing-here", headers=AUTH, timeout=10), 404, "path")
    assert_error(requests.put(f"{url}/twin", headers=AUTH, timeout=10), 405, "method")
    for payload in (b"", b"ABF2" + b"\0" * 100, b"ABF " + b"\xff" * 3000, os.urandom(4000)):
        r = requests.post(f"{url}/twin", files={"file": ("x.abf", payload)}, headers=AUTH,
                          timeout=30)
        assert_error(r, 400)


def test_bodies_bounded_while_they_stream(url):
    def chunks(n_mb, head=b""):
        yield head
        block = b"\0" * 65536
        for _ in range(int(n_mb * 1e6 / len(block)) + 1):
            yield block

    # chunked (no Content-Length): cut off at the 2 MB limit
    part = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.abf"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")
    r = requests.post(f"{url}/twin", data=chunks(6, part), timeout=60,
                      headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "file")
    r = requests.post(f"{url}/twin", data=chunks(6), timeout=60,
                      headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, 413, "body")
    r = requests.post(f"{url}/twin", files={"file": ("big.abf", os.urandom(3_000_000))},
                      headers=AUTH, timeout=60)
    assert_error(r, 413, "file")
    big = {"drug": "E-4031", "twin_name": "x" * 20_000}
    assert_error(requests.post(f"{url}/screens", json=big, headers=AUTH, timeout=10), 413,
                 "body")
    r = requests.post(f"{url}/screens", data=chunks(1), timeout=30,
                      headers={**AUTH, "Content-Type": "application/json"})
    assert_error(r, 413, "body")
    assert requests.get(f"{url}/health", timeout=5).status_code == 200


def test_screen_costs_bounded(url):
    for doc, status, field in (
            ({"drug": "E-4031", "n_cells": 8, "prepace_ms": 1e300}, 422, "cost"),
            ({"drug": "E-4031", "n_cells": 201}, 422, "n_cells"),
            ({"drug": "E-4031", "n_cells": 200, "concentrations_nM": [0, 1, 2, 3]}, 422,
             "cost"),
            ({"drug": "E-4031", "n_cells": 8, "record_interval_ms": 1e-5}, 422,
             "record_interval_ms"),
            ({"drug": "E-4031", "prepace_ms": "nan"}, 400, "prepace_ms"),
            ({"drug": "E-4031", "n_cells": 4, "record_ms": 1e308}, 422, "record_ms"),
            ({"drug": "E-4031", "n_cells": 8, "n_keep_traces": 10**6}, 422, "n_keep_traces"),
            ({"drug": "E-4031", "figures": True}, 400, "figures"),
            ({"drug": "nope"}, 400, None),
            ({"drug": {"name": "x", "blocks": [{"current": "INaL", "ic50_nM": 1}]}}, 400,
             None),
            ("E-4031", 400, "body")):
        assert_error(requests.post(f"{url}/screens", json=doc, headers=AUTH, timeout=10),
                     status, field)


def test_screens_capped_cancelled_persisted(url, service):
    from cardiotwin.service.jobs import JobStore

    screens = service[1]
    doc = {"drug": {"name": "my blocker", "blocks": [{"current": "IKr", "ic50_nM": 20}]},
           "n_cells": 96, "concentrations_nM": [0, 10, 30], "prepace_ms": 5000,
           "record_ms": 2000}
    r = requests.post(f"{url}/screens", json=doc, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    # visible to another replica: the state is on disk
    assert JobStore(screens, max_running=1, retention=10, retention_h=1).get(job)["status"] \
        == "running"
    r = requests.post(f"{url}/screens", json={**doc, "n_cells": 16}, headers=AUTH, timeout=30)
    assert_error(r, 429, "screens")
    assert r.headers["Retry-After"] == "11"
    r = requests.delete(f"{url}/screens/{job}", headers=AUTH, timeout=10)
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    for _ in range(240):
        st = requests.get(f"{url}/screens/{job}", headers=AUTH, timeout=10).json()
        if st["status"] != "running":
            break
        time.sleep(0.5)
    assert st["status"] == "cancelled", st
    assert_error(requests.get(f"{url}/screens/{job}/results", headers=AUTH, timeout=10), 409,
                 "job_id")
    assert requests.delete(f"{url}/screens/{job}", headers=AUTH, timeout=10).json()[
        "status"] == "deleted"
    assert_error(requests.get(f"{url}/screens/{job}", headers=AUTH, timeout=10), 404, "job_id")
    assert_error(requests.get(f"{url}/screens/..%2F..%2Fetc", headers=AUTH, timeout=10), 404)


def test_a_job_of_a_dead_replica_reads_interrupted(url, service):
    """A running job whose replica died (its lock's pid gone on this host) reads interrupted,
    with a reason, on every replica."""
    screens = service[1]
    job = "feedfacecafe0001"
    (screens / job).mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    now = time.time()
    (screens / job / ".job.lock").write_text(json.dumps({
        "pid": gone.pid, "host": socket.gethostname(), "token": "x", "heartbeat_unix": now,
        "started_unix": now}))
    (screens / job / "job.json").write_text(json.dumps({
        "job_id": job, "status": "running", "done": 3, "total": 10, "error": None,
        "created": now, "started": now, "finished": None}))
    st = requests.get(f"{url}/screens/{job}", headers=AUTH, timeout=10).json()
    assert st["status"] == "interrupted" and "stopped" in st["error"], st


def test_still_serving_afterwards(url, example):
    assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
    r = _good_twin(url, example)
    assert r.status_code == 200, r.text[:300]
    assert len(_strict(r.text)["parameters"]) == 52
