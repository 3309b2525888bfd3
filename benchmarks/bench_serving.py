"""Latency and throughput of the live twin service (Ray Serve over HTTP on 127.0.0.1).

Sequential requests with the example ABF: the full twin (parameters + voltage-clamp fit +
free-running AP of --ap-ms) and parameters only; p50/p99 end to end and the server-side split
(parsing, inference, simulations); then throughput with --clients concurrent clients.

    python benchmarks/bench_serving.py --model out/model            # an existing artifact
    python benchmarks/bench_serving.py                              # trains a small one first
"""

import argparse
import concurrent.futures as cf
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from _report import loadavg, table


def _model(args, work: Path) -> str:
    if args.model:
        return args.model
    from cardiotwin.learn import preset
    from cardiotwin.learn.train import train_model
    from cardiotwin.population import GenerationConfig, generate_population

    store = generate_population(GenerationConfig(
        n_cells=600, spread=0.2, seed=5, ap_duration_ms=1000.0, keep_rejected=True,
        decimate_to_hz=1000.0, shard_size=300, out_dir=str(work / "pop")), progress=False,
        echo=None)
    cfg = preset("ridge_mlp", input_pool=5, epochs=10,
                 statuses=("ok", "quiescent", "non_repolarizing"))
    train_model(store.path, work / "model", cfg, log=lambda s: None)
    return str(work / "model")


def _post(url: str, data: bytes) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = requests.post(url, files={"file": ("cell.abf", data)}, timeout=120)
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model artifact (default: train a small one)")
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--ap-ms", type=float, default=10_000.0)
    p.add_argument("--replicas", type=int, default=1)
    a = p.parse_args()
    import ray
    from ray import serve

    from cardiotwin.serving import TwinDeployment
    from cardiotwin.twin import write_example_recording

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    ray.init(num_cpus=2, include_dashboard=False)
    model = _model(a, work)
    ex = write_example_recording(work / "ex", seed=1, spread=0.2, ap=False)
    data = ex.voltage_clamp_abf.read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(TwinDeployment.options(num_replicas=a.replicas, max_ongoing_requests=32,
                                     ray_actor_options={"num_cpus": 1}).bind(
        model_dir=model, ap_duration_ms=a.ap_ms, require_auth=False), name="bench",
        route_prefix="/")
    base = f"http://127.0.0.1:{port}/twin"
    rows = []
    for label, url in (("parameters only", f"{base}?simulate=false"),
                       (f"full twin ({a.ap_ms / 1000:.0f} s AP)", base)):
        for _ in range(3):
            _post(url, data)
        lat, parts = [], []
        for _ in range(a.requests):
            dt, tw = _post(url, data)
            lat.append(dt)
            parts.append(tw["timings_s"])
        lat = np.array(lat) * 1e3
        split = {k: np.median([t.get(k, 0.0) for t in parts]) * 1e3
                 for k in ("parsing", "inference", "vc_simulation", "ap_simulation", "analysis")}
        rows.append([label, f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 99):.1f}"]
                    + [f"{v:.1f}" for v in split.values()])
        if label.startswith("full"):
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(a.clients) as pool:
                conc = list(pool.map(lambda _, url=url: _post(url, data), range(a.requests)))
            thr = a.requests / (time.perf_counter() - t0)
            conc_lat = np.array([dt for dt, _ in conc]) * 1e3
            batches = np.array([tw.get("simulation_batch_size", 1) for _, tw in conc])
    print(f"{a.requests} sequential requests with the example ABF (protocol_a, 10 kHz, "
          f"{len(data) / 1e6:.1f} MB); {a.replicas} replica(s); load average {loadavg()}")
    print(table(["request", "p50 ms", "p99 ms", "parse", "infer", "vc sim", "ap sim",
                 "analysis"], rows))
    print(f"throughput, full twin, {a.clients} concurrent clients: {thr:.2f} requests/s "
          f"(latency p50 {np.percentile(conc_lat, 50):.0f} ms, p99 "
          f"{np.percentile(conc_lat, 99):.0f} ms; simulation batch mean {batches.mean():.1f}, "
          f"max {batches.max()})")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
