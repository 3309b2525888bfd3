"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own schema and defaults filling,
no cloud account), with the node types and labels the jobs schedule on."""

import copy
from pathlib import Path

import pytest

from cardiotwin import resources

yaml = pytest.importorskip("yaml")
util = pytest.importorskip("ray.autoscaler._private.util")


CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_valid_for_ray(config):
    prepared = util.prepare_config(copy.deepcopy(config))  # what `ray up` does first
    util.validate_config(prepared)                         # Ray's schema and checks


def test_invalid_config_is_refused(config):
    """The validation is real: a misspelt field fails it."""
    bad = copy.deepcopy(config)
    bad["available_node_types"]["cpu_sim"]["max_workerz"] = 4
    with pytest.raises(Exception, match="max_workerz"):
        util.validate_config(util.prepare_config(bad))


def test_node_types_and_labels(config):
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    sim = [t for t in types.values() if resources.SIMULATION_LABEL in t["resources"]]
    gpu = [t for t in types.values() if resources.TRAINING_LABEL in t["resources"]]
    assert len(sim) == 1 and len(gpu) == 1
    assert sim[0]["node_config"]["InstanceType"].startswith("c")        # CPU nodes
    assert gpu[0]["node_config"]["InstanceType"].startswith("p5")       # H100 nodes
    assert sim[0]["max_workers"] > 0 and gpu[0]["max_workers"] > 0
    assert sim[0]["min_workers"] == 0 and gpu[0]["min_workers"] == 0   # autoscaling from zero
    # the project is installed on every node, with numba-cuda on the GPU nodes
    assert any("pip install" in c and "cardiotwin" in c for c in config["setup_commands"])
    assert any("[gpu]" in c for c in gpu[0]["worker_setup_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert sum(resources.ENV_FLAG in c for c in starts) == 2


def test_labels_only_on_labelled_clusters(monkeypatch):
    import ray

    monkeypatch.delenv(resources.ENV_FLAG, raising=False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert resources.simulation_resources() == {} and resources.training_resources() == {}
    monkeypatch.setattr(ray, "cluster_resources",
                        lambda: {"CPU": 64.0, resources.SIMULATION_LABEL: 1.0})
    assert resources.simulation_resources() == {resources.SIMULATION_LABEL: 0.001}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setenv(resources.ENV_FLAG, "1")
    assert resources.training_resources() == {resources.TRAINING_LABEL: 0.001}
