"""Population generation on a simulated multi-node Ray cluster (ray.cluster_utils.Cluster: a
head and 2 worker nodes on this machine, one CPU each) survives losing a worker node mid-run:
the run finishes, every cell is stored exactly once, and the rows equal an undisturbed run's.
Black-box: only the public API of cardiotwin.population."""

import os
import threading
import time

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from cardiotwin.population import GenerationConfig, generate_population
from cardiotwin.protocols import Protocol, Segment

OBJECT_STORE_BYTES = 90 * 1024 * 1024
N_CELLS, SHARD_SIZE = 48, 6


@pytest.fixture(scope="module")
def cluster():
    """A head and 2 worker nodes (1 CPU, 90 MB object store each), with the driver connected;
    torn down whatever the test does. A Ray session already open in this process (the shared
    2-CPU fixture) is closed first and reopened afterwards."""
    was_local = ray.is_initialized()
    if was_local:
        ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
                   for _ in range(2)]
        c.wait_for_nodes()
        ray.init(address=c.address, include_dashboard=False)
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
        if was_local:
            ray.init(address="local", num_cpus=2, include_dashboard=False)


def _config(tmp_path, out: str) -> GenerationConfig:
    protocol = Protocol((Segment(50.0, -80.0, -80.0), Segment(50.0, -40.0, -40.0),
                         Segment(50.0, 0.0, 0.0), Segment(50.0, 0.0, -80.0)))
    path = tmp_path / "short.json"
    path.write_text(protocol.to_json())
    return GenerationConfig(n_cells=N_CELLS, shard_size=SHARD_SIZE, spread=0.4, seed=5,
                            protocol=str(path), ap_duration_ms=1000.0, keep_rejected=True,
                            decimate_to_hz=1000.0, n_workers=3, out_dir=str(tmp_path / out))


def _rows(store) -> dict[str, np.ndarray]:
    from cardiotwin.population import list_to_numpy

    t = store.read_table(columns=["cell_id", "multipliers", "status", "I_total"])
    t = t.sort_by("cell_id")
    return {"cell_id": t.column("cell_id").to_numpy(),
            "status": np.asarray(t.column("status").to_pylist()),
            "multipliers": list_to_numpy(t.column("multipliers")),
            "I_total": list_to_numpy(t.column("I_total"))}


@pytest.mark.slow  # about 60-75 s on 2 shared cores (cluster start, two runs)
def test_worker_node_lost_mid_run(cluster, tmp_path):
    c, workers = cluster
    cfg = _config(tmp_path, "disturbed")
    out = cfg.out_dir
    seen: dict[str, object] = {}
    log: list[str] = []

    def remove_after_first_shard() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            sidecars = list(out.glob("shard-*.json")) if out.is_dir() else []
            if sidecars:
                seen["sidecars_at_removal"] = len(sidecars)
                seen["removed_at_s"] = round(time.perf_counter() - t0, 1)
                c.remove_node(workers[0])
                seen["removed"] = True
                return
            time.sleep(0.05)

    remover = threading.Thread(target=remove_after_first_shard, daemon=True)
    t0 = time.perf_counter()
    remover.start()
    # every shard takes >= 2 s (the actors' test hook), so the node goes while work is in flight
    store = generate_population(
        cfg, progress=False, echo=lambda s: log.append(f"{time.perf_counter() - t0:.1f} s: {s}"),
        actor_env={"CARDIOTWIN_TEST_SLOW_SHARD_S": "2"})
    remover.join(timeout=60)
    wall = time.perf_counter() - t0
    assert seen.get("removed"), "the worker node was never removed\n" + "\n".join(log)
    n_shards = -(-N_CELLS // SHARD_SIZE)
    assert seen["sidecars_at_removal"] < n_shards, "the node was removed after the run's end"
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert store.manifest["status"] == "complete" and len(store.files) == n_shards

    got = _rows(store)
    ids = got["cell_id"]
    assert len(ids) == N_CELLS and np.array_equal(np.sort(ids), np.arange(N_CELLS))  # once each

    # the same dataset, undisturbed, on what is left of the cluster
    ref = _rows(generate_population(_config(tmp_path, "reference"), progress=False, echo=None))
    assert np.array_equal(got["cell_id"], ref["cell_id"])
    assert np.array_equal(got["status"], ref["status"])
    assert np.array_equal(got["multipliers"], ref["multipliers"])
    assert np.array_equal(got["I_total"], ref["I_total"])  # bit for bit
    assert "ok" in set(ref["status"].tolist()) and np.isfinite(ref["I_total"]).all()
    print(f"disturbed run {wall:.1f} s; node removed at {seen['removed_at_s']} s with "
          f"{seen['sidecars_at_removal']} of {n_shards} shards done")
