"""Learning: a Keras network maps a voltage-clamp I_total trace (pA/pF) to the 52 parameter
multipliers. Dataset and split (``dataset``), presets (``config``), networks (``networks``),
training to a model artifact (``train``, ``artifact``), evaluation (``evaluate``) and the Ray
Tune hyperparameter search (``tuning``). Keras/TensorFlow load on first use."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter: errors only

_LAZY = {"TrainConfig": "config", "preset": "config", "PRESETS": "config",
         "train_model": "train", "load_estimator": "artifact",
         "ParameterEstimator": "artifact", "ProtocolMismatchError": "artifact",
         "load_dataset": "dataset", "split_of": "dataset"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
