"""Crash safety of the model artifacts (the parameter network of cardiotwin.learn and the
reconstruction network of cardiotwin.reconstruct): an overwrite interrupted at any step leaves
a loadable model, the old one or the new one, never none.

A crash is simulated at the k-th ``os.replace`` of the overwrite, for every k: from then on the
"dead" process does nothing (every later ``os.replace`` and ``shutil.rmtree``, cleanup handlers
included, raises), so the directory is left exactly as a kill at that point would leave it.
The loader then runs with the real functions. Tiny Keras models keep it fast.
"""

import json
import os
import shutil
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from cardiotwin.storage import atomic

N_IN = 8


class Crash(BaseException):
    """The process died (not an Exception: nothing may handle it)."""


def _tiny_model(bias: float, n_out: int):
    keras.utils.set_random_seed(0)
    x = keras.Input((N_IN,))
    out = keras.layers.Dense(n_out, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(bias))(x)
    return keras.Model(x, out)


# ---- the two artifact kinds: save(out, tag, overwrite) and load(out) -> tag ---------------------

def _learn_kind():
    from cardiotwin.learn.artifact import load_estimator, save_artifact
    from cardiotwin.learn.dataset import InputTransform, OutputScaling
    from cardiotwin.model.parameters import INFERRED_NAMES

    n = len(INFERRED_NAMES)
    transform = InputTransform.fit(np.random.default_rng(0).normal(size=(20, N_IN)), 1, N_IN)
    scaling = OutputScaling(np.full(n, 0.8), np.full(n, 1.2))
    bias = {"old": 0.25, "new": 0.75}

    def save(out, tag, overwrite=False, model=None):
        meta = {"parameter_names": list(INFERRED_NAMES), "protocol_hash": "p" * 64,
                "input": transform.to_json(), "output": scaling.to_json(),
                "uncertainty": {"rmse_multiplier": [0.1] * n}, "tag": tag}
        return save_artifact(out, model or _tiny_model(bias[tag], n), meta,
                             {"evaluation/metrics.json": lambda p: p.write_text("{}")},
                             overwrite=overwrite)

    def load(out):
        est = load_estimator(out)
        # the network's output is its bias (unit scale); transforms read back
        y = est.predict_unit(np.zeros((1, N_IN)))
        assert np.allclose(y, bias[est.metadata["tag"]], atol=1e-6)
        assert np.allclose(est.scaling.from_unit(y), 0.8 + 0.4 * y)
        assert est.transform.n_inputs == N_IN
        assert est.metadata["code_version"]
        return est.metadata["tag"]

    return save, load


def _reconstruct_kind():
    from cardiotwin.reconstruct.infer import load_reconstructor
    from cardiotwin.reconstruct.train import ReconTrainConfig, save_artifact
    from cardiotwin.reconstruct.windows import WindowConfig

    cfg = ReconTrainConfig()
    bias = {"old": 0.25, "new": 0.75}

    def save(out, tag, overwrite=False, model=None):
        return save_artifact(out, model or _tiny_model(bias[tag], 6), cfg,
                             WindowConfig(length=64, pre_ms=20.0), history={"tag": tag},
                             overwrite=overwrite)

    def load(out):
        est = load_reconstructor(out, warm=False)  # a stand-in network, not a U-Net
        y = np.asarray(est.model(np.zeros((1, N_IN), np.float32)))
        tag = est.metadata["training"]["tag"]
        assert np.allclose(y, bias[tag])
        assert est.metadata["code_version"]
        return tag

    return save, load


KINDS = {"learn": _learn_kind, "reconstruct": _reconstruct_kind}


@pytest.fixture(params=sorted(KINDS))
def kind(request):
    return KINDS[request.param]()


def _crash_at(monkeypatch, k: int) -> dict:
    """Make the k-th os.replace (and everything after it) fail as a dead process would."""
    state = {"calls": 0, "dead": False}
    real_replace = os.replace

    def replace(src, dst, *a, **kw):
        state["calls"] += 1
        if state["dead"] or state["calls"] >= k:
            state["dead"] = True
            raise Crash(f"killed at os.replace #{state['calls']}")
        return real_replace(src, dst, *a, **kw)

    def rmtree(*a, **kw):
        if state["dead"]:
            raise Crash("killed")
        return real_rmtree(*a, **kw)

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(atomic, "shutil", types.SimpleNamespace(rmtree=rmtree))
    return state


def test_overwrite_killed_at_every_rename_leaves_a_loadable_model(kind, tmp_path,
                                                                   monkeypatch):
    save, load = kind
    seen = set()
    states_without_model = 0
    for k in range(1, 20):
        out = tmp_path / f"k{k}" / "model"
        save(out, "old")
        assert load(out) == "old"
        with monkeypatch.context() as m:
            state = _crash_at(m, k)
            try:
                save(out, "new", overwrite=True)
                crashed = False
            except Crash:
                crashed = True
        states_without_model += not out.exists()     # killed between the two renames
        got = load(out)                               # recovers, then loads
        seen.add(got)
        if not crashed:
            assert got == "new"
        assert not (out.parent / f".{out.name}.old").exists()
        # a later overwrite works whatever the crash left behind
        save(out, "new", overwrite=True)
        assert load(out) == "new"
        if not crashed:
            break
    else:
        pytest.fail("the overwrite never completed")
    assert state["calls"] >= 3, state            # metadata rename + the two directory renames
    assert seen == {"old", "new"}                 # crashes before and after the swap were hit
    assert states_without_model >= 1              # and the one between the renames


def test_failed_model_save_keeps_the_old_artifact(kind, tmp_path):
    save, load = kind
    out = tmp_path / "model"
    save(out, "old")

    class Broken:
        def save(self, path):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save(out, "new", overwrite=True, model=Broken())
    assert load(out) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]   # no temporary left


def test_failed_removal_of_the_old_artifact_keeps_the_new_one(kind, tmp_path, monkeypatch):
    save, load = kind
    out = tmp_path / "model"
    save(out, "old")
    with monkeypatch.context() as m:
        m.setattr(atomic, "shutil", types.SimpleNamespace(
            rmtree=lambda *a, **kw: (_ for _ in ()).throw(Crash())))
        with pytest.raises(Crash):
            save(out, "new", overwrite=True)
    assert (tmp_path / ".model.old").exists()
    assert load(out) == "new"
    assert not (tmp_path / ".model.old").exists()


def test_existing_artifact_refused_without_overwrite(kind, tmp_path):
    save, load = kind
    out = tmp_path / "model"
    save(out, "old")
    with pytest.raises(ValueError, match="exists"):
        save(out, "new")
    assert load(out) == "old"


def test_metadata_is_strict_json_with_the_code_version(tmp_path):
    import cardiotwin
    from cardiotwin.reconstruct.train import ReconTrainConfig, save_artifact
    from cardiotwin.reconstruct.windows import WindowConfig

    save_artifact(tmp_path / "m", _tiny_model(0.0, 6), ReconTrainConfig(), WindowConfig(),
                  test_metrics={"mae": float("nan"), "apd": {"APD90": float("inf")}})
    text = (tmp_path / "m" / "metadata.json").read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert meta["test_metrics"] == {"mae": None, "apd": {"APD90": None}}
    assert meta["code_version"] == cardiotwin.__version__
