#!/usr/bin/env python
"""Bounded load test of the live twin service (issue 20): --clients clients for --seconds on
127.0.0.1, mixing good, malformed and oversized requests, while /health is polled.

The app is started through ``app_builder`` as serve/config.yaml does (API tokens on, a fresh
random token in the environment) with a 2 MB upload limit. Each client loops over a weighted
draw of request kinds: good (the example ABF, parameters only or the full twin with an AP of
--ap-ms; a JSON trace; each kind warmed up twice before the clock starts), malformed (random
bytes, a truncated ABF, bad JSON, a flat trace, ``temperature_K=nan``, a wrong content type,
no token, a foreign Host header, a drug file path), oversized (a 3 MB upload, a chunked
upload with no Content-Length, an ABF of 300,000 two-sample sweeps, a screen over the cost
budget). Reported: p50/p99 of the good requests (all and per kind), the count of each status
code per kind, /health latency throughout (p50/p99/max), the number of 5xx, and whether the
service answers /health and a good twin at the end. Exit status 1 on any 5xx or a service
down at the end.

    python benchmarks/bench_serve_load.py --model out/demo/model --clients 8 --seconds 30
    python benchmarks/bench_serve_load.py                        # trains a small model first
"""

import argparse
import collections
import concurrent.futures as cf
import json
import os
import random
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from bench_serving import _model

from _report import loadavg, table

TOKEN_ENV = "CARDIOTWIN_BENCH_TOKENS"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _many_sweeps_abf(path: Path) -> bytes:
    import pyabf.abfWriter

    sweeps = np.zeros((300_000, 2), dtype=np.float32)
    sweeps[:, 1] = 1.0
    pyabf.abfWriter.writeABF1(sweeps, str(path), sampleRateHz=10_000.0, units="pA")
    return path.read_bytes()


def _kinds(url: str, token: str, abf: bytes, trace: list[float], many: bytes, ap: bool):
    """{kind: (group, weight, send())}: each send returns the response."""
    auth = {"Authorization": f"Bearer {token}"}
    json_h = {**auth, "Content-Type": "application/json"}
    rng = np.random.default_rng(0)
    junk = rng.bytes(5000)

    def chunked(n_mb):
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.abf"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        block = b"\0" * 65536
        for _ in range(int(n_mb * 1e6 / len(block)) + 1):
            yield block

    def post(path, **kw):
        return requests.post(f"{url}{path}", timeout=300, **kw)

    k = {
        "twin_params": ("good", 4, lambda: post("/twin?simulate=false", headers=auth,
                                                 files={"file": ("cell.abf", abf)})),
        "twin_json": ("good", 2, lambda: post("/twin?simulate=false", headers=json_h,
                                               data=json.dumps({"current": trace}))),
        "random_bytes": ("malformed", 1, lambda: post("/twin", headers=auth,
                                                       files={"file": ("x.abf", junk)})),
        "truncated_abf": ("malformed", 1, lambda: post(
            "/twin", headers=auth, files={"file": ("x.abf", abf[: len(abf) // 3])})),
        "bad_json": ("malformed", 1, lambda: post("/twin", headers=json_h, data=b"{nope")),
        "flat_trace": ("malformed", 1, lambda: post(
            "/twin?simulate=false", headers=json_h,
            data=json.dumps({"current": [0.0] * len(trace)}))),
        "temperature_nan": ("malformed", 1, lambda: post(
            "/twin?temperature_K=nan", headers=auth, files={"file": ("cell.abf", abf)})),
        "wrong_content_type": ("malformed", 1, lambda: post(
            "/twin", headers={**auth, "Content-Type": "text/plain"}, data=b"hello")),
        "no_token": ("malformed", 1, lambda: post("/twin", files={"file": ("c.abf", abf)})),
        "foreign_host": ("malformed", 1, lambda: requests.get(
            f"{url}/model", headers={**auth, "Host": "evil.example.com"}, timeout=60)),
        "drug_file": ("malformed", 1, lambda: post(
            "/screens", headers=json_h, data=json.dumps({"drug": "x",
                                                         "drug_file": "/etc/passwd"}))),
        "upload_3mb": ("oversized", 1, lambda: post(
            "/twin", headers=auth, files={"file": ("big.abf", rng.bytes(3_000_000))})),
        "chunked_6mb": ("oversized", 1, lambda: post(
            "/twin", data=chunked(6),
            headers={**auth, "Content-Type": "multipart/form-data; boundary=b"})),
        "many_sweeps": ("oversized", 1, lambda: post(
            "/twin?sweep=mean", headers=auth, files={"file": ("many.abf", many)})),
        "screen_cost": ("oversized", 1, lambda: post(
            "/screens", headers=json_h, data=json.dumps({"drug": "E-4031", "n_cells": 10,
                                                         "prepace_ms": 1e300}))),
    }
    if ap:
        k["twin_full"] = ("good", 2, lambda: post("/twin", headers=auth,
                                                  files={"file": ("cell.abf", abf)}))
    return k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model artifact (default: train a small one)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--ap-ms", type=float, default=2000.0,
                   help="the full twin's AP (ms); 0: no full twins in the mix")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--health-every-s", type=float, default=0.25)
    a = p.parse_args()
    import ray
    from ray import serve

    from cardiotwin.serving import app_builder
    from cardiotwin.twin import read_abf, write_example_recording

    work = Path(tempfile.mkdtemp(prefix="bench-serve-load-"))
    ray.init(num_cpus=a.num_cpus, include_dashboard=False)
    model = _model(a, work)
    ex = write_example_recording(work / "ex", seed=1, spread=0.2, ap=False)
    abf = ex.voltage_clamp_abf.read_bytes()
    trace = read_abf(ex.voltage_clamp_abf).current_pA_per_pF.tolist()
    many = _many_sweeps_abf(work / "many.abf")
    token = secrets.token_urlsafe(32)
    os.environ[TOKEN_ENV] = token
    port = _port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_builder({"model_dir": model, "api_tokens_env": TOKEN_ENV,
                           "max_upload_mb": 2.0, "max_json_mb": 2.0,
                           "ap_duration_ms": max(a.ap_ms, 1.0),
                           "screen_dir": str(work / "screens")}),
              name="bench-load", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    kinds = _kinds(url, token, abf, trace, many, a.ap_ms > 0)
    names = list(kinds)
    weights = [kinds[n][1] for n in names]
    for n in names:                       # warm-up (kernels, first batches), not counted
        if kinds[n][0] == "good":
            for _ in range(2):
                kinds[n][2]()

    codes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    good_lat: dict[str, list[float]] = collections.defaultdict(list)
    health: list[float] = []
    health_codes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + a.seconds

    def client(seed: int) -> None:
        r = random.Random(seed)
        while time.monotonic() < stop:
            name = r.choices(names, weights)[0]
            t0 = time.perf_counter()
            try:
                status = kinds[name][2]().status_code
            except requests.RequestException as e:
                status = f"error:{type(e).__name__}"
            dt = time.perf_counter() - t0
            with lock:
                codes[name][status] += 1
                if kinds[name][0] == "good" and status == 200:
                    good_lat[name].append(dt)

    def poll_health() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                s = requests.get(f"{url}/health", timeout=30).status_code
            except requests.RequestException as e:
                s = f"error:{type(e).__name__}"
            health.append(time.perf_counter() - t0)
            health_codes[s] += 1
            time.sleep(a.health_every_s)

    with cf.ThreadPoolExecutor(a.clients + 1) as pool:
        futs = [pool.submit(client, i) for i in range(a.clients)] + [pool.submit(poll_health)]
        for f in futs:
            f.result()

    up = requests.get(f"{url}/health", timeout=30).status_code == 200
    final = kinds["twin_params"][2]().status_code
    rows = []
    for n in names:
        c = codes[n]
        rows.append([n, kinds[n][0], str(sum(c.values())),
                     ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=str))])
    n5xx = sum(v for c in codes.values() for k, v in c.items()
               if isinstance(k, int) and k >= 500)
    errors = sum(v for c in codes.values() for k, v in c.items() if not isinstance(k, int))
    lat = np.array([x for v in good_lat.values() for x in v]) * 1e3
    hl = np.array(health) * 1e3
    print(f"{a.clients} clients for {a.seconds:g} s on 127.0.0.1, {a.num_cpus} CPU(s), full "
          f"twin AP {a.ap_ms:g} ms; load average {loadavg()}")
    print(table(["kind", "group", "requests", "status codes"], rows))
    if len(lat):
        print(f"good requests: {len(lat)} answered 200, p50 {np.percentile(lat, 50):.0f} ms, "
              f"p99 {np.percentile(lat, 99):.0f} ms ("
              + "; ".join(f"{n} p50 {np.percentile(v, 50) * 1e3:.0f} / p99 "
                          f"{np.percentile(v, 99) * 1e3:.0f} ms" for n, v in good_lat.items())
              + ")")
    print(f"/health: {len(hl)} polls ({dict(health_codes)}), p50 {np.percentile(hl, 50):.1f} "
          f"ms, p99 {np.percentile(hl, 99):.1f} ms, max {hl.max():.1f} ms")
    print(f"5xx: {n5xx}; client errors (no answer): {errors}; at the end /health "
          f"{'up' if up else 'DOWN'}, a good twin {final}")
    serve.shutdown()
    ray.shutdown()
    raise SystemExit(0 if n5xx == 0 and errors == 0 and up and final == 200 else 1)


if __name__ == "__main__":
    main()
