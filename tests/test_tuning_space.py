"""Tests of the hyperparameter search space (cardiotwin.learn.tuning): the space follows the
base preset's family (posterior flow or fc/ridge_mlp), every sampled config is a valid
TrainConfig, data fields and mixed families are refused; one small search with the flow family
on the r20 store writes a posterior artifact.
"""

import json

import numpy as np
import pytest
from conftest import R20_STATUSES

from cardiotwin.learn import preset
from cardiotwin.learn.config import PRESETS

tune = pytest.importorskip("ray.tune")

from cardiotwin.learn.tuning import (  # noqa: E402
    DATA_FIELDS,
    check_search_space,
    default_search_space,
)

FLOW_KEYS = {"flow_layers", "flow_hidden", "context_dim", "width", "depth", "learning_rate",
             "batch_size", "dropout", "feature_noise", "pca_components"}
POINT_KEYS = {"architecture", "width", "depth", "learning_rate", "batch_size"}
FLOW_BASES = [b for b, v in PRESETS.items() if v.get("architecture") == "flow"]
POINT_BASES = [b for b in PRESETS if b not in FLOW_BASES]


def sample(space: dict, n: int, seed: int) -> list[dict]:
    """``n`` configs drawn from ``space`` (a value per key from each domain's ``.sample()``)."""
    rng = np.random.RandomState(seed)
    draws = {k: d.sample(size=n, random_state=rng) for k, d in space.items()}
    return [{k: v[i] for k, v in draws.items()} for i in range(n)]


def test_families_of_presets():
    assert set(FLOW_BASES) == {"posterior_flow", "small_flow"}
    assert {"ridge_mlp", "small_fc", "study_fc"} <= set(POINT_BASES)


@pytest.mark.parametrize("base", FLOW_BASES)
def test_flow_space(base):
    space = default_search_space(base)
    assert set(space) == FLOW_KEYS
    configs = sample(space, 300, seed=1)
    for c in configs:
        cfg = preset(base, **c)
        assert cfg.architecture == "flow" and cfg.input == "multirate"
        assert cfg.flow_layers in (2, 4, 6, 8)
        assert 64 <= cfg.flow_hidden <= 512 and 32 <= cfg.context_dim <= 256
        assert 1 <= cfg.depth <= 3 and 64 <= cfg.pca_components <= 256
        assert 1e-4 <= cfg.learning_rate <= 3e-3
        assert 0 <= cfg.dropout <= 0.3 and 0 <= cfg.feature_noise <= 0.5
        assert cfg.batch_size == c["batch_size"]
    # the space is explored, not one corner of it
    assert {c["flow_layers"] for c in configs} == {2, 4, 6, 8}
    assert {c["depth"] for c in configs} == {1, 2, 3}
    lr = np.log10([c["learning_rate"] for c in configs])
    assert lr.min() < -3.7 and lr.max() > -2.7
    assert max(c["feature_noise"] for c in configs) > 0.4


@pytest.mark.parametrize("base", POINT_BASES)
def test_point_space(base):
    space = default_search_space(base)
    assert set(space) == POINT_KEYS
    configs = sample(space, 200, seed=2)
    for c in configs:
        cfg = preset(base, **c)
        assert cfg.architecture in ("fc", "ridge_mlp")
        assert cfg.width == c["width"] and cfg.depth == c["depth"]
    assert {c["architecture"] for c in configs} == {"fc", "ridge_mlp"}


def test_default_base_is_the_flow():
    from cardiotwin.cli import build_parser

    assert set(default_search_space()) == FLOW_KEYS
    a = build_parser().parse_args(["tune", "hyperparameters", "store", "--out", "x"])
    assert a.base == "posterior_flow"
    a = build_parser().parse_args(["tune", "hyperparameters", "store", "--out", "x",
                                   "--base", "ridge_mlp"])
    assert a.base == "ridge_mlp"


def test_unknown_base():
    with pytest.raises(ValueError, match="unknown base preset 'flow'"):
        default_search_space("flow")


def test_fixed_values_are_returned():
    space = {**default_search_space("small_flow"), "statuses": R20_STATUSES,
             "input_noise_pA_per_pF": 0.5}
    assert check_search_space(space, "small_flow") == {"statuses": R20_STATUSES,
                                                       "input_noise_pA_per_pF": 0.5}
    assert check_search_space(default_search_space("ridge_mlp"), "ridge_mlp") == {}


@pytest.mark.parametrize("field", ["input_pool", "statuses", "slow_bin_ms"])
def test_sampled_data_field_refused(field):
    assert field in DATA_FIELDS
    space = {**default_search_space("posterior_flow"), field: tune.choice([1, 5])}
    with pytest.raises(ValueError, match=f"{field} sampled"):
        check_search_space(space, "posterior_flow")
    grid = {**default_search_space("posterior_flow"), field: tune.grid_search([1, 5])}
    with pytest.raises(ValueError, match=f"{field} sampled"):
        check_search_space(grid, "posterior_flow")


def test_mixed_families_refused():
    space = {**default_search_space("ridge_mlp"),
             "architecture": tune.choice(["ridge_mlp", "flow"])}
    with pytest.raises(ValueError, match="not comparable"):
        check_search_space(space, "ridge_mlp")
    # a point architecture on a flow base is one family: accepted
    check_search_space({"architecture": tune.choice(["fc", "ridge_mlp"])}, "posterior_flow")
    with pytest.raises(ValueError, match="not comparable"):
        check_search_space({"architecture": tune.grid_search(["fc", "flow"])}, "small_flow")
    with pytest.raises(ValueError, match="continuous"):
        check_search_space({"architecture": tune.uniform(0, 1)}, "small_flow")


def test_flow_search_writes_posterior_artifact(r20_store, tmp_path):
    from cardiotwin.learn import load_estimator
    from cardiotwin.learn.posterior import PosteriorEstimator
    from cardiotwin.learn.tuning import tune_hyperparameters

    # fixed data fields: every status, coarser bins (657 inputs, not 1630: the ridge behind
    # each trial costs ~d^3)
    fixed = {"statuses": R20_STATUSES, "slow_bin_ms": 20.0, "medium_bin_ms": 2.0}
    space = {**default_search_space("small_flow"), **fixed}
    s = tune_hyperparameters(r20_store.path, tmp_path / "hp", base="small_flow",
                             search_space=space, num_samples=2, max_epochs=2, grace_period=1,
                             seed=3, log=lambda m: None)
    assert s["n_trials"] == 2 and s["n_finished"] >= 1
    assert set(s["sampled"]) == FLOW_KEYS | set(fixed)
    assert np.isfinite(s["val_loss"])
    best = json.loads((tmp_path / "hp" / "best_config.json").read_text())
    assert best["best_config"]["architecture"] == "flow"
    assert best["best_config"]["flow_layers"] == s["sampled"]["flow_layers"]
    assert best["best_config"]["epochs"] == 2
    meta = json.loads((tmp_path / "hp" / "best_model" / "metadata.json").read_text())
    cal = meta["posterior"]["calibration"]
    assert set(cal["coverage"]) == {"0.5", "0.9"}
    assert 0 < cal["coverage"]["0.9"] <= 1
    assert len(meta["posterior"]["contraction"]) == 52
    assert meta["config"]["statuses"] == list(R20_STATUSES)
    assert meta["config"]["slow_bin_ms"] == 20.0 and meta["config"]["medium_bin_ms"] == 2.0
    assert meta["data"]["statuses"] == list(R20_STATUSES)   # the data were read with them
    assert meta["config"]["context_dim"] == s["sampled"]["context_dim"]
    est = load_estimator(tmp_path / "hp" / "best_model")
    assert isinstance(est, PosteriorEstimator)
    assert (tmp_path / "hp" / "trials.csv").is_file()
