"""Shared fixtures: a local Ray cluster of 2 CPUs, a small +-20% population on protocol_a and
a network trained on it (used by the learning and serving tests); helpers shared by the CPU and
GPU simulator tests (reading the reference traces, relative RMS).

Markers (pyproject.toml): a test that uses a Ray fixture is marked ``ray``, one that uses a
trained-network fixture ``training`` (here, by fixture), besides the tests marked by hand;
``pytest`` runs the unit tests only, ``pytest -m "ray or training or slow"`` the rest (CI runs
both).
"""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

R20_STATUSES = ("ok", "quiescent", "non_repolarizing")


def rel_rms(sim, ref) -> float:
    """Relative RMS difference of ``sim`` from ``ref``."""
    sim, ref = np.asarray(sim, float), np.asarray(ref, float)
    return float(np.sqrt(np.mean((sim - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """The columns of a gzipped CSV with a header row (the reference traces in tests/data)."""
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        data = np.loadtxt(fh, delimiter=",", ndmin=2)
    return {name: data[:, k] for k, name in enumerate(header)}


def sorted_table(store):
    """A population store's rows as one table, in cell_id order."""
    t = store.read_table()
    return t.take(np.argsort(t.column("cell_id").to_numpy()))


def assert_same_rows(a, b):
    """Two population tables hold the same columns and values (list columns element-wise)."""
    from cardiotwin.population import list_to_numpy

    assert a.num_rows == b.num_rows
    assert a.schema.names == b.schema.names
    for name in a.schema.names:
        x, y = a.column(name), b.column(name)
        if name in ("multipliers", "I_total"):
            np.testing.assert_array_equal(list_to_numpy(x), list_to_numpy(y), err_msg=name)
        else:
            np.testing.assert_array_equal(x.to_numpy(zero_copy_only=False),
                                          y.to_numpy(zero_copy_only=False), err_msg=name)


RAY_FIXTURES = frozenset({"ray_session"})
TRAINING_FIXTURES = frozenset({"r20_model", "tiny_model", "noisy_model", "flow_model",
                               "clean_flow_model"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark tests by the fixtures they use (before ``-m`` selects), see the module docstring."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)
        if names & TRAINING_FIXTURES:
            item.add_marker(pytest.mark.training)


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    os.environ.pop("RAY_ADDRESS", None)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()


SHORT_PROTOCOL_CSV = """duration_ms,v_start_mV,v_end_mV
50,-80,-80
100,-80,20
50,-120,-120
100,-40,-40
"""


@pytest.fixture(scope="session")
def short_protocol_path(tmp_path_factory) -> Path:
    """A 300 ms step protocol (segments CSV) for small, fast populations."""
    p = tmp_path_factory.mktemp("protocol") / "short.csv"
    p.write_text(SHORT_PROTOCOL_CSV)
    return p


def generate_r20(out, **kw):
    """1500 cells at +-20% on protocol_a, I_total at 1 kHz, 1 s classification run, every
    status kept."""
    from cardiotwin.population import GenerationConfig, generate_population

    base = dict(n_cells=1500, spread=0.2, seed=11, ap_duration_ms=1000.0, keep_rejected=True,
                decimate_to_hz=1000.0, shard_size=500, n_workers=2, out_dir=str(out))
    base.update(kw)
    return generate_population(GenerationConfig(**base), progress=False, echo=None)


@pytest.fixture(scope="session")
def r20_store(ray_session, tmp_path_factory):
    return generate_r20(tmp_path_factory.mktemp("pop") / "r20")


@pytest.fixture(scope="session")
def flow_model(r20_store, tmp_path_factory):
    """(config, artifact dir, metadata) of the small posterior flow trained on the store to
    read recordings with 0.5 pA/pF noise (as the example recording's)."""
    from cardiotwin.learn import preset
    from cardiotwin.learn.train import train_model
    from cardiotwin.protocols import builtin_protocol

    cfg = preset("small_flow", statuses=R20_STATUSES, input_noise_pA_per_pF=0.5)
    out = tmp_path_factory.mktemp("models") / "small_flow"
    meta = train_model(r20_store.path, out, cfg, protocol=builtin_protocol("protocol_a"),
                       log=lambda s: None)
    return cfg, out, meta


@pytest.fixture(scope="session")
def clean_flow_model(r20_store, tmp_path_factory):
    """(config, artifact dir, metadata) of the small posterior flow for noise-free traces."""
    from cardiotwin.learn import preset
    from cardiotwin.learn.train import train_model

    cfg = preset("small_flow", statuses=R20_STATUSES, input_noise_pA_per_pF=0.0)
    out = tmp_path_factory.mktemp("models") / "small_flow_clean"
    meta = train_model(r20_store.path, out, cfg, log=lambda s: None)
    return cfg, out, meta


@pytest.fixture(scope="session")
def r20_model(r20_store, tmp_path_factory):
    """(config, artifact dir, metadata) of ridge_mlp trained on the store (noise-free)."""
    from cardiotwin.learn import preset
    from cardiotwin.learn.train import train_model
    from cardiotwin.protocols import builtin_protocol

    cfg = preset("ridge_mlp", input_pool=1, epochs=40, patience=8, statuses=R20_STATUSES,
                 input_noise_pA_per_pF=0.0)
    out = tmp_path_factory.mktemp("models") / "ridge_mlp"
    meta = train_model(r20_store.path, out, cfg, protocol=builtin_protocol("protocol_a"),
                       log=lambda s: None)
    return cfg, out, meta
