"""Tests of the learning stage (cardiotwin.learn): split, transforms, training to an artifact,
reload, refusal of other protocols, accuracy against the trivial predictor, Ray Tune search.

One small population on protocol_a (1500 cells at +-20%, I_total stored at 1 kHz, 1 s
classification run, every status kept) is generated once for the module on a local Ray
cluster of 2 CPUs.
"""

import json

import numpy as np
import pytest
from conftest import R20_STATUSES as STATUSES
from conftest import generate_r20

from cardiotwin.learn import ProtocolMismatchError, load_estimator, preset
from cardiotwin.learn.config import TrainConfig
from cardiotwin.learn.dataset import InputTransform, OutputScaling, load_dataset, split_of
from cardiotwin.learn.networks import build_network
from cardiotwin.learn.train import load_prepared, predict_unit, train_model
from cardiotwin.protocols import builtin_protocol


@pytest.fixture(scope="module")
def store(r20_store):
    return r20_store


@pytest.fixture(scope="module")
def other_store(ray_session, tmp_path_factory):
    """A store simulated with another protocol (a short step protocol)."""
    p = tmp_path_factory.mktemp("proto") / "short.csv"
    p.write_text("duration_ms,v_start_mV,v_end_mV\n50,-80,-80\n100,-40,-40\n")
    return generate_r20(tmp_path_factory.mktemp("pop") / "other", n_cells=40,
                        protocol=str(p), decimate_to_hz=None, shard_size=40)


@pytest.fixture(scope="module")
def trained(r20_model):
    return r20_model


def test_split_depends_only_on_cell_id():
    ids = np.arange(200_000)
    sp = split_of(ids)
    frac = np.bincount(sp, minlength=3) / len(ids)
    assert np.allclose(frac, [0.7, 0.1, 0.2], atol=0.005)
    perm = np.random.default_rng(0).permutation(ids)
    assert np.array_equal(split_of(perm), sp[perm])
    assert np.array_equal(split_of(ids[:1000]), sp[:1000])


def test_transforms_round_trip():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 103)).astype(np.float32)
    from cardiotwin.learn.dataset import pool

    t = InputTransform.fit(pool(x, 4), 4, 103)
    t2 = InputTransform.from_json(json.loads(json.dumps(t.to_json())))
    assert np.array_equal(t.from_stored(x), t2.from_stored(x))
    assert t.n_inputs == 26                       # ceil(103 / 4)
    z = t.from_stored(x)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-5) and np.allclose(z.std(axis=0), 1, atol=1e-4)
    with pytest.raises(ValueError, match="expected 103 samples"):
        t.from_stored(x[:, :100])
    s = OutputScaling(np.full(3, 0.8), np.full(3, 1.2))
    m = np.array([[0.8, 1.0, 1.2]])
    assert np.allclose(s.to_unit(m), [[0, 0.5, 1]])
    assert np.allclose(s.from_unit(s.to_unit(m)), m)


def test_study_preset_is_the_source_study_network():
    cfg = preset("study_fc")
    assert (cfg.depth, cfg.width, cfg.activation, cfg.learning_rate) == (26, 1024, "tanh", 1e-4)
    assert cfg.batch_size_for(200_000) == 2000          # 1% of the data
    model = build_network(cfg, 990)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert len(dense) == 27                              # 26 hidden + output
    assert all(d.units == 1024 and d.activation.__name__ == "tanh" for d in dense[:-1])
    assert dense[-1].units == 52
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="unknown network preset"):
        preset("nope")
    with pytest.raises(ValueError):
        TrainConfig(statuses=("ok", "bogus"))


def test_dataset_split_and_filters(store):
    d = load_dataset(store.path, pool_k=5, statuses=STATUSES)
    n = sum(d.sizes().values())
    assert n == store.n_rows
    for s in ("train", "val", "test"):
        assert np.all(split_of(d.cell_ids[s]) == ("train", "val", "test").index(s))
        assert d.i_total[s].shape[1] == 990
    ok = load_dataset(store.path, pool_k=5)
    assert sum(ok.sizes().values()) < n                  # default: status ok only


def test_training_artifact_reloads_and_predicts_the_same(trained, store):
    cfg, out, meta = trained
    for f in ("model.keras", "metadata.json", "evaluation/metrics.json",
              "evaluation/parameter_errors.csv", "evaluation/parameter_recovery.png"):
        assert (out / f).is_file(), f
    est = load_estimator(out)
    assert est.metadata == json.loads((out / "metadata.json").read_text())
    assert TrainConfig(**est.metadata["config"]) == cfg
    assert est.protocol_hash == builtin_protocol("protocol_a").protocol_hash
    assert est.metadata["data"]["manifest_hashes"][0]
    # the reloaded network reproduces the test metrics recorded at training
    prep = load_prepared(store.path, cfg)
    y = predict_unit(est.model, prep.x["test"])
    mae = np.median(np.abs(y - prep.y["test"]).mean(axis=0))
    assert mae == pytest.approx(meta["test_metrics"]["median_mae_unit"], rel=1e-5)
    # stored-rate traces through the estimator give the same multipliers
    stored = load_dataset(store.path, pool_k=1, statuses=STATUSES).i_total["test"][:3]
    m = est.predict(stored, est.protocol_hash, at="stored")
    assert np.allclose(m, prep.scaling.from_unit(np.clip(y[:3], 0, 1)), atol=1e-5)


def test_network_beats_trivial_predictor(trained):
    tm = trained[2]["test_metrics"]
    assert tm["median_mae_unit"] <= 0.5 * tm["trivial"]["median_mae_unit"], tm
    assert tm["n_identifiable"] >= 20


def test_other_protocol_refused_at_training_and_inference(trained, store, other_store,
                                                          tmp_path):
    cfg = preset("small_fc", epochs=1, statuses=STATUSES)
    with pytest.raises(ProtocolMismatchError, match="does not match the model's protocol"):
        train_model(other_store.path, tmp_path / "m", cfg,
                    protocol=builtin_protocol("protocol_a"), log=lambda s: None)
    with pytest.raises(ValueError, match="differ in protocol_hash"):
        train_model([store.path, other_store.path], tmp_path / "m2", cfg, log=lambda s: None)
    est = load_estimator(trained[1])
    x = np.zeros((1, 49500), np.float32)
    with pytest.raises(ProtocolMismatchError):
        est.predict(x, other_store.protocol_hash)
    with pytest.raises(ValueError, match="samples at the protocol's rate"):
        est.predict(x[:, :1000], est.protocol_hash)
    x[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.predict(x, est.protocol_hash)
    assert est.predict(np.zeros(49500), est.protocol_hash).shape == (1, 52)


def test_cli_train(store, tmp_path, capsys):
    from cardiotwin.cli import main

    out = tmp_path / "cli_model"
    rc = main(["train", str(store.path), "--out", str(out), "--preset", "small_fc",
               "--epochs", "2", "--statuses", "ok,quiescent", "--protocol", "protocol_a"])
    assert rc == 0 and (out / "metadata.json").is_file()
    assert "epoch    2" in capsys.readouterr().out
    assert main(["train", str(store.path), "--out", str(out), "--preset", "small_fc"]) == 2
    assert "exists" in capsys.readouterr().err


def test_hyperparameter_search(store, tmp_path):
    from ray import tune

    from cardiotwin.learn.tuning import tune_hyperparameters

    space = {"architecture": tune.choice(["fc", "ridge_mlp"]), "width": tune.choice([32, 64]),
             "depth": tune.choice([1, 2]), "learning_rate": tune.loguniform(1e-3, 3e-3),
             "batch_size": tune.choice([32, 64]), "input_pool": 5,
             "statuses": STATUSES}
    s = tune_hyperparameters(store.path, tmp_path / "hp", search_space=space, num_samples=2,
                             max_epochs=3, grace_period=1, log=lambda m: None)
    assert s["n_trials"] == 2 and s["n_finished"] >= 1
    best = json.loads((tmp_path / "hp" / "best_config.json").read_text())
    assert best["test_metrics"]["median_mae_unit"] > 0
    assert (tmp_path / "hp" / "best_model" / "model.keras").is_file()
    assert (tmp_path / "hp" / "trials.csv").is_file()
