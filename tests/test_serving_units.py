"""The service's pure pieces, without Ray: tokens and their constant-time check, Host/Origin
allow-lists, loopback clients, error mapping (no server paths, strict JSON), query and JSON
trace validation, ABF header limits, screen settings (no server paths, cost budget) and the
persisted screen job store (shared by replicas, interrupted jobs, cancel, retention, cap)."""

import json
import os
import struct
import time

import numpy as np
import pytest

from cardiotwin.service import parsing as P
from cardiotwin.service.abf_limits import abf_shape, check_abf_work
from cardiotwin.service.config import ServiceConfig
from cardiotwin.service.errors import (
    ApiError,
    StrictJSONResponse,
    as_api_error,
    framework_error,
    scrub,
)
from cardiotwin.service.jobs import JobStore, public_state, run_job
from cardiotwin.service.security import (
    bearer_token,
    host_allowed,
    host_name,
    is_loopback,
    load_token_digests,
    origin_allowed,
    token_digest,
    token_ok,
)

TOKEN = "test-token-0123456789abcdef"


# ---- security -------------------------------------------------------------------------------

def test_tokens_from_env_and_file_as_digests(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# lab tokens\nfile-token-0123456789abcdef  # Alice\n\n")
    d = load_token_digests("CT_TOK", str(f), environ={"CT_TOK": f"{TOKEN}, other-0123456789abcdef"})
    assert len(d) == 3 and token_digest(TOKEN) in d
    assert TOKEN not in "".join(d)                       # digests, never the tokens
    assert load_token_digests("CT_TOK", str(tmp_path / "missing"), environ={}) == ()
    assert load_token_digests(None, None, environ={}) == ()
    with pytest.raises(ValueError, match="at least 16") as e:
        load_token_digests("CT_TOK", None, environ={"CT_TOK": "short"})
    assert "short" not in str(e.value)                   # a token is never echoed


def test_token_check_and_bearer_header():
    d = (token_digest(TOKEN), token_digest("another-token-0123456789"))
    assert token_ok(TOKEN, d) and token_ok("another-token-0123456789", d)
    assert not token_ok(TOKEN + "x", d) and not token_ok("", d) and not token_ok(None, d)
    assert not token_ok(TOKEN, ())
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"bearer   {TOKEN} ") == TOKEN
    assert bearer_token(f"Basic {TOKEN}") is None
    assert bearer_token("Bearer") is None and bearer_token(None) is None


@pytest.mark.parametrize("header,name", [
    ("localhost", "localhost"), ("LocalHost:8000", "localhost"), ("127.0.0.1:80", "127.0.0.1"),
    ("[::1]:8000", "[::1]"), ("[::1]", "[::1]"), ("rig.lab:8000", "rig.lab"),
    ("", None), (None, None), ("a:b:c", None), ("evil.com:99999", None), ("[::1]x", None),
    ("user@host", None), ("host/path", None), (":8000", None)])
def test_host_header_names(header, name):
    assert host_name(header) == name


def test_host_and_origin_allow_lists():
    allowed = ("localhost", "127.0.0.1", "[::1]", ".lab.example.org")
    assert host_allowed("127.0.0.1:8000", allowed) and host_allowed("rig.lab.example.org", allowed)
    assert not host_allowed("evil.example.com", allowed)          # DNS rebinding
    assert not host_allowed("lab.example.org.evil.com", allowed)
    assert not host_allowed(None, allowed) and not host_allowed("bad host", allowed)
    assert host_allowed("anything.at.all:1", ("*",)) and not host_allowed("a b", ("*",))
    assert origin_allowed(None, allowed)                          # not a browser
    assert origin_allowed("http://localhost:8000", allowed)
    assert not origin_allowed("https://evil.example.com", allowed)
    assert not origin_allowed("null", allowed) and not origin_allowed("file://x", allowed)


def test_loopback_clients():
    assert is_loopback("127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1")
    assert not is_loopback("192.168.1.20") and not is_loopback("10.0.0.1")
    assert not is_loopback(None) and not is_loopback("") and not is_loopback("localhost")


# ---- errors ---------------------------------------------------------------------------------

def test_messages_never_carry_server_paths():
    m = scrub("cannot read /home/lab/secret/drugs.csv: no; nor C:\\Users\\x\\a.abf")
    assert "/home" not in m and "secret" not in m and "Users" not in m and m.count("<path>") == 2
    assert scrub("ratio 1/2 and pA/pF stay") == "ratio 1/2 and pA/pF stay"
    assert len(scrub("x" * 5000)) <= 600


def test_error_mapping():
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        temperature_K: float

    with pytest.raises(ValidationError) as e:
        M(temperature_K="hot")
    err = as_api_error(e.value)
    assert (err.status, err.field) == (400, "temperature_K") and "temperature_K" in str(err)
    from cardiotwin.twin import RecordingError

    err = as_api_error(RecordingError("bad sweep", source="x.abf", field="sweep"))
    assert (err.status, err.field) == (400, "sweep")
    assert as_api_error(RecursionError()).status == 400
    with pytest.raises(TypeError):
        as_api_error(KeyError("internal"))
    assert (framework_error(404, "Not Found").field, framework_error(405, "x").status) == \
        ("path", 405)
    body = StrictJSONResponse({"a": float("nan"), "b": [np.float32(np.inf), 1.5]}).body
    assert json.loads(body) == {"a": None, "b": [None, 1.5]}


# ---- parsing --------------------------------------------------------------------------------

@pytest.mark.parametrize("params,field", [
    ({"temperature_K": "nan"}, "temperature_K"), ({"temperature_K": "1000"}, "temperature_K"),
    ({"temperature_K": "inf"}, "temperature_K"), ({"sweep": "inf"}, "sweep"),
    ({"sweep": "-1"}, "sweep"), ({"sweep": "1e9"}, "sweep"), ({"simulate": "maybe"}, "simulate"),
    ({"capacitance_pF": "0"}, "capacitance_pF"), ({"capacitance_pF": "nan"}, "capacitance_pF"),
    ({"bogus": "1"}, "bogus")])
def test_twin_query_refusals(params, field):
    with pytest.raises(ApiError) as e:
        P.parse_query(P.TwinQuery, params)
    assert e.value.status == 400 and e.value.field == field, str(e.value)


def test_twin_query_values_and_repeats():
    from starlette.datastructures import QueryParams

    q = P.parse_query(P.TwinQuery, QueryParams("simulate=false&sweep=mean&temperature_K=300"))
    assert (q.simulate, q.sweep, q.temperature_K, q.figure) == (False, "mean", 300.0, False)
    assert P.parse_query(P.TwinQuery, QueryParams("sweep=2")).sweep == 2
    with pytest.raises(ApiError, match="more than once"):
        P.parse_query(P.TwinQuery, QueryParams("sweep=1&sweep=2"))


@pytest.mark.parametrize("doc,field", [
    ({"current": "abc"}, "current"), ({"current": [1, "x", 3]}, "current"),
    ({"current": [0.0, float("nan")]}, "current"), ({"current": [1.0]}, "current"),
    ({"current": [0, 1], "current_units": "amps"}, "current_units"),
    ({"current": [0, 1], "sample_interval_ms": 0}, "sample_interval_ms"),
    ({"current": [0, 1], "sample_interval_ms": "inf"}, "sample_interval_ms"),
    ({"current": [0, 1], "extra": 1}, "extra"), ([1, 2], "body"), ("x", "body"),
    ({"current": [0, 1], "command_mV": [0]}, "command_mV")])
def test_json_trace_refusals(doc, field):
    with pytest.raises(ApiError) as e:
        P.parse_trace(doc, 1000)
    assert 400 <= e.value.status < 500 and e.value.field == field, str(e.value)


def test_json_trace_sample_limit_and_documents():
    with pytest.raises(ApiError) as e:
        P.parse_trace({"current": [0.0] * 11}, 10)
    assert (e.value.status, e.value.field) == (422, "current")
    assert P.parse_trace({"current": [0, 1.5]}, 10).current == [0.0, 1.5]
    with pytest.raises(ApiError, match="nested too deeply"):
        P.parse_json(b"[" * 100_000 + b"]" * 100_000)
    for bad in (b"{not json", b"\xff\xfe", b"NaN-ish"):
        with pytest.raises(ApiError, match="not valid JSON"):
            P.parse_json(bad)


def test_media_types_and_declared_length():
    assert P.require_media_type("Application/JSON; charset=utf-8", P.JSON) == P.JSON
    for ct in ("text/plain", None, "application/x-www-form-urlencoded", "application/jsonx"):
        with pytest.raises(ApiError) as e:
            P.require_media_type(ct, P.JSON, P.MULTIPART)
        assert e.value.status == 415
    with pytest.raises(ApiError) as e:
        P.check_declared_length("1001", 1000, "file")
    assert e.value.status == 413
    with pytest.raises(ApiError) as e:
        P.check_declared_length("-5", 1000, "file")
    assert e.value.status == 400
    P.check_declared_length(None, 1000, "file")
    assert P.clean_name("../../etc/passwd", "x") == "passwd"
    assert P.clean_name("a\x00b\nc.abf", "x") == "abc.abf" and P.clean_name("", "x") == "x"


def test_streamed_body_is_cut_at_the_limit():
    import asyncio

    async def chunks():
        for _ in range(100):
            yield b"x" * 1000

    async def consume(limit):
        return b"".join([c async for c in P.limited_stream(chunks(), limit, "file")])

    assert len(asyncio.run(consume(100_000))) == 100_000
    with pytest.raises(ApiError) as e:
        asyncio.run(consume(5500))
    assert e.value.status == 413


# ---- ABF header limits ----------------------------------------------------------------------

def _abf1_header(points, episodes, channels=1, interval_us=100.0, mode=5, size=6144):
    b = bytearray(size)
    b[:4] = b"ABF "
    struct.pack_into("<h", b, 8, mode)
    struct.pack_into("<i", b, 10, points)
    struct.pack_into("<i", b, 16, episodes)
    struct.pack_into("<h", b, 120, channels)
    struct.pack_into("<f", b, 122, interval_us)
    return bytes(b)


def test_abf_header_shape_and_limits(tmp_path):
    import pyabf.abfWriter

    sweeps = np.zeros((300, 4), dtype=np.float32)
    sweeps[:, 1] = 1.0
    path = tmp_path / "many.abf"
    pyabf.abfWriter.writeABF1(sweeps, str(path), sampleRateHz=10_000.0, units="pA")
    shape = abf_shape(path.read_bytes())
    assert (shape.major, shape.sweeps, shape.channels) == (1, 300, 1)
    assert shape.data_points == 1200 and shape.sample_interval_ms == pytest.approx(0.1)
    with pytest.raises(ApiError) as e:
        check_abf_work(shape, max_sweeps=200, max_samples=10**7, target_interval_ms=0.1,
                       max_resample_factor=100)
    assert (e.value.status, e.value.field) == (422, "sweep")
    check_abf_work(shape, max_sweeps=300, max_samples=10**7, target_interval_ms=0.1,
                   max_resample_factor=100)
    with pytest.raises(ApiError, match="samples"):
        check_abf_work(shape, max_sweeps=300, max_samples=1000, target_interval_ms=0.1,
                       max_resample_factor=100)
    with pytest.raises(ApiError, match="resampling") as e:
        check_abf_work(abf_shape(_abf1_header(1000, 1, interval_us=1e6)), max_sweeps=10,
                       max_samples=10**7, target_interval_ms=0.1, max_resample_factor=100)
    assert e.value.field == "sample_interval_ms"
    gap_free = abf_shape(_abf1_header(1000, 10**6, mode=3))
    assert gap_free.sweeps == 1
    for bad in (_abf1_header(1000, 1, interval_us=0.0), _abf1_header(1000, 1, interval_us=-1),
                _abf1_header(0, 1), _abf1_header(10, 1, channels=0)):
        with pytest.raises(ApiError) as e:
            check_abf_work(abf_shape(bad), max_sweeps=10, max_samples=10**7,
                           target_interval_ms=0.1, max_resample_factor=100)
        assert e.value.status == 400
    for bad in (b"", b"ABF", b"ABF2" + b"\0" * 40, b"RIFF" + b"\0" * 9000):
        with pytest.raises(ApiError) as e:
            abf_shape(bad)
        assert e.value.status == 400


def test_abf2_sections_beyond_the_file_are_refused():
    b = bytearray(4096)
    b[:4] = b"ABF2"
    struct.pack_into("<IIq", b, 76, 1, 100, 1)          # protocol section in block 1
    struct.pack_into("<hf", b, 512, 0, 100.0)      # mode, interval (us)
    struct.pack_into("<IIq", b, 236, 2, 2, 10**9)       # a data section of 10^9 samples
    with pytest.raises(ApiError, match="beyond the file"):
        abf_shape(bytes(b))
    struct.pack_into("<IIq", b, 236, 2, 2, 100)
    struct.pack_into("<IIq", b, 92, 3, 10, 1)
    struct.pack_into("<I", b, 12, 7)
    shape = abf_shape(bytes(b))
    assert (shape.major, shape.sweeps, shape.channels, shape.data_points) == (2, 7, 1, 100)
    assert shape.sample_interval_ms == pytest.approx(0.1)


# ---- screens: settings --------------------------------------------------------------------

@pytest.fixture()
def svc_cfg(tmp_path):
    return ServiceConfig.create(model_dir="m", screen_max_cells=100, screen_budget_cell_ms=1e7,
                                screen_max_samples_per_cell=20_000, require_auth=False)


@pytest.mark.parametrize("doc,status,field", [
    ({"drug": "E-4031", "drug_file": "/etc/passwd"}, 400, "drug_file"),
    ({"drug": "E-4031", "out_dir": "/tmp/x"}, 400, "out_dir"),
    ({"drug": "E-4031", "batch_cells": 1}, 400, "batch_cells"),
    ({"drug": "E-4031", "figures": True}, 400, "figures"),
    ({"drug": "E-4031", "n_cells": 5, "n_keep_traces": 17}, 422, "n_keep_traces"),
    ({"drug": "nope"}, 400, None),
    ({"drug": ["a"]}, 400, "drug"),
    ({}, 400, "drug"),
    ({"drug": "E-4031", "n_cells": 101}, 422, "n_cells"),
    ({"drug": "E-4031", "n_cells": 10, "prepace_ms": 1e300}, 422, "cost"),
    ({"drug": "E-4031", "n_cells": 10, "prepace_ms": "nan"}, 400, "prepace_ms"),
    ({"drug": "E-4031", "n_cells": 1, "record_interval_ms": 0.001, "prepace_ms": 0,
      "record_ms": 1000}, 422, "record_interval_ms"),
    ({"drug": "E-4031", "n_cells": "many"}, 400, "n_cells"),
    ({"drug": "E-4031", "n_cells": 4, "record_ms": 1e308}, 422, "record_ms"),
    ({"drug": "E-4031", "n_cells": 4, "record_interval_ms": 1e-320}, 422, "record_ms"),
    ({"drug": "E-4031", "surprise": 1}, 400, "surprise"),
    ("E-4031", 400, "body")])
def test_screen_request_refusals(svc_cfg, tmp_path, doc, status, field):
    with pytest.raises(ApiError) as e:
        P.screen_config(doc, tmp_path / "job", svc_cfg)
    assert e.value.status == status, str(e.value)
    if field:
        assert e.value.field == field, str(e.value)
    assert "/etc" not in str(e.value) and str(tmp_path) not in str(e.value)


def test_screen_request_inline_drug_and_cost(svc_cfg, tmp_path):
    drug = {"name": "my blocker", "blocks": [{"current": "IKr", "ic50_nM": 10, "hill": 1}]}
    sc = P.screen_config({"drug": drug, "n_cells": 16, "concentrations_nM": [0, 10],
                          "prepace_ms": 500, "record_ms": 1500}, tmp_path / "job", svc_cfg)
    assert sc.resolve_drug().name == "my blocker" and sc.out_dir == tmp_path / "job"
    assert P.screen_cost(sc) == 16 * 2 * 2000 and sc.batch_cells == svc_cfg.screen_batch_cells


def test_service_config_refuses_bad_limits():
    with pytest.raises(ValueError, match="max_upload_mb"):
        ServiceConfig.create(model_dir="m", max_upload_mb=float("inf"))
    with pytest.raises(ValueError, match="unexpected|extra|not permitted"):
        ServiceConfig.create(model_dir="m", max_uplod_mb=3)


# ---- screens: the job store -----------------------------------------------------------------

def _store(root, **kw):
    base = dict(max_running=1, retention=3, retention_h=24.0, retry_after_s=7,
                heartbeat_s=0.2, stale_after_s=2.0)
    return JobStore(root, **{**base, **kw})


def test_job_store_shared_by_replicas_and_capped(tmp_path):
    a, b = _store(tmp_path), _store(tmp_path)           # two replicas on one directory
    job = a.new_id()
    lock = a.admit(job, {"cost_cell_ms": 5.0})
    assert b.get(job)["status"] == "running" and b.running() == [job]
    with pytest.raises(ApiError) as e:
        b.admit(b.new_id(), {})
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "7"
    b.request_cancel(job)                                # cancel from the other replica
    assert a.cancel_requested(job)
    a.finish(job, "cancelled", "cancelled by request")
    lock.release()
    assert b.get(job)["status"] == "cancelled" and b.running() == []
    assert set(public_state(b.get(job))) >= {"job_id", "status", "done", "total", "error"}
    with pytest.raises(ApiError) as e:
        b.get("0123456789abcdef")
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        b.get("../../etc")
    assert e.value.status == 404


def test_a_dead_replicas_running_job_reads_interrupted(tmp_path):
    import subprocess
    import sys

    s = _store(tmp_path)
    job = s.new_id()
    (tmp_path / job).mkdir()
    # a running job whose lock holder (a finished process on this host) is gone
    code = ("import sys, time; from cardiotwin.service.jobs import JobStore;"
            "s = JobStore(sys.argv[1], max_running=1, retention=3, retention_h=1.0);"
            f"lock = s._lock('{job}').acquire();"
            f"s._write('{job}', {{'job_id': '{job}', 'status': 'running', 'done': 0}})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert json.loads((tmp_path / job / "job.json").read_text())["status"] == "running"
    restarted = _store(tmp_path)
    assert restarted.recover() == 1
    st = restarted.get(job)
    assert st["status"] == "interrupted" and "stopped" in st["error"]
    assert json.loads((tmp_path / job / "job.json").read_text())["status"] == "interrupted"
    assert restarted.running() == []


def test_run_job_states_cancel_and_failures(tmp_path):
    s = _store(tmp_path, max_running=3)

    def good(cfg, on_progress):
        on_progress(5, 10)
        on_progress(10, 10)
        (s.screen_dir(cfg) / "summary.json").parent.mkdir(parents=True)
        (s.screen_dir(cfg) / "summary.json").write_text('{"ok": 1}')

    def cancelled(cfg, on_progress):
        s.request_cancel(cfg)
        on_progress(1, 10)
        raise AssertionError("not reached")

    def broken(cfg, on_progress):
        raise RuntimeError(f"worker pid 1234 died in {tmp_path}/secret")

    states = {}
    for name, fn in (("good", good), ("cancelled", cancelled), ("broken", broken)):
        job = s.new_id()
        run_job(s, job, s.admit(job, {}), job, fn)
        states[name] = s.get(job)
    assert states["good"]["status"] == "done" and states["good"]["done"] == 10
    assert s.results(states["good"]["job_id"]) == {"ok": 1}
    assert states["cancelled"]["status"] == "cancelled"
    err = states["broken"]["error"]
    assert states["broken"]["status"] == "failed" and "error id" in err
    assert "1234" not in err and str(tmp_path) not in err and "Traceback" not in err
    with pytest.raises(ApiError) as e:
        s.results(states["broken"]["job_id"])
    assert e.value.status == 409
    assert s.running() == []


def test_retention_removes_the_oldest_finished_jobs(tmp_path):
    s = _store(tmp_path, max_running=10, retention=2, retention_h=1.0)
    jobs = []
    for _ in range(4):
        j = s.new_id()
        lock = s.admit(j, {})
        s.finish(j, "done")
        lock.release()
        jobs.append(j)
        time.sleep(0.01)
    running = s.new_id()
    keep = s.admit(running, {})                         # admission prunes the oldest
    assert set(s.ids()) == {*jobs[2:], running} and s.prune() == []
    st = json.loads((tmp_path / jobs[2] / "job.json").read_text())
    st["finished"] = time.time() - 7200                 # older than retention_h
    (tmp_path / jobs[2] / "job.json").write_text(json.dumps(st))
    assert s.prune() == [jobs[2]] and running in s.ids()
    keep.release()


# ---- the app's pure parts -------------------------------------------------------------------

def test_app_builder_refuses_to_start_open(monkeypatch):
    from cardiotwin.serving import app_builder

    monkeypatch.delenv("CT_NO_TOKENS_HERE", raising=False)
    with pytest.raises(ValueError, match="no API token") as e:
        app_builder({"model_dir": "m", "api_tokens_env": "CT_NO_TOKENS_HERE"})
    assert "CT_NO_TOKENS_HERE" in str(e.value) and "require_auth: false" in str(e.value)
    with pytest.raises(ValueError, match="model_dir"):
        app_builder({})


def test_guard_decisions():
    from cardiotwin.service.app import Guard

    cfg = ServiceConfig.create(model_dir="m")
    g = Guard(cfg, (token_digest(TOKEN),))
    ok = {"host": "127.0.0.1:8000", "authorization": f"Bearer {TOKEN}"}
    assert g.refuse("/twin", ok, "192.168.1.9") is None
    assert g.refuse("/twin", {"host": "localhost"}, "127.0.0.1").status == 401
    assert g.refuse("/health", {"host": "localhost"}, "192.168.1.9") is None
    assert g.refuse("/health", {"host": "evil.org"}, "127.0.0.1").field == "host"
    assert g.refuse("/twin", {**ok, "origin": "http://evil.org"}, "127.0.0.1").status == 403
    loop = Guard(ServiceConfig.create(model_dir="m", require_auth=False), ())
    assert loop.refuse("/twin", {"host": "localhost"}, "127.0.0.1") is None
    assert loop.refuse("/twin", {"host": "localhost"}, "10.1.2.3").status == 403
    assert loop.refuse("/twin", {"host": "localhost"}, None).status == 403


def test_internal_errors_name_only_a_request_id(caplog):
    from cardiotwin.service.errors import internal_error

    try:
        raise RuntimeError("secret /srv/models/x internals")
    except RuntimeError as exc:
        r = internal_error(exc, "abc123")
    body = json.loads(r.body)
    assert r.status_code == 500 and body["request_id"] == "abc123" and body["field"] is None
    assert "secret" not in r.body.decode() and "/srv" not in r.body.decode()
    assert "secret /srv/models/x internals" in caplog.text


def test_a_failing_twin_fails_only_its_own_request(monkeypatch):
    """The batch simulation: when the batch raises, each twin is simulated alone and only the
    failing one gets its exception."""
    import cardiotwin.twin.inference as inference
    from cardiotwin.service.app import TwinService

    calls = []

    def fake_simulate(protocol, twins, recs, **kw):
        calls.append(list(twins))
        if "bad" in twins:
            raise ValueError("this twin cannot be simulated")
        for t in twins:
            t.append("simulated") if isinstance(t, list) else None

    monkeypatch.setattr(inference, "simulate_twins", fake_simulate)
    svc = object.__new__(TwinService)
    svc.cfg = ServiceConfig.create(model_dir="m", require_auth=False)
    svc.estimator = type("E", (), {"protocol": None})()
    goods = [[] for _ in range(5)]
    items = [(g, None) for g in goods[:2]] + [("bad", None)] + [(g, None) for g in goods[2:]]
    out = svc._simulate_items(items)
    assert [type(o).__name__ for o in out] == ["NoneType"] * 2 + ["ValueError"] + \
        ["NoneType"] * 3
    assert all(g == ["simulated"] for g in goods) and len(calls) == 1 + len(items)
    assert svc._simulate_items([(goods[0], None)]) == [None]
