"""Network and training configuration, with named presets.

``TrainConfig`` is a :class:`cardiotwin.settings.Settings`: it validates on construction
(declared constraints; a ``ValidationError`` is a ``ValueError``), and :func:`preset` reports
invalid fields in plain lines.
Presets (:data:`PRESETS`, :func:`preset`):

- ``study_fc``: the source study's network: fully connected, 26 hidden layers x 1024, tanh,
  Adam (learning rate 1e-4), MSE, batches of 1% of the training data, early stopping on the
  validation loss.
- ``ridge_mlp``: a linear map fitted in closed form (ridge regression, penalty chosen on the
  validation split) plus a nonlinear correction learned by an MLP on the PCA-whitened trace
  (``pca_components``), whose output layer starts at zero. Why: the inputs are thousands of
  strongly correlated time points, so gradient descent on a first dense layer is badly
  conditioned (measured: a linear Keras layer trained with Adam reaches median MAE 0.18 where
  the closed-form ridge reaches 0.10 on the same 1385 cells at +-20%); ridge gets the large
  linear part exactly and the MLP only has to learn what is left, on well-conditioned inputs.
- ``small_fc``: a small fully connected network for tests and quick protocol-search trials.

Input resolution: the stored I_total (pA/pF) is averaged over blocks of ``input_pool`` samples
before the network (e.g. ``input_pool = 10`` on a 10 kHz store, or 1 on a 1 kHz store: 1 ms
resolution, 4950 inputs on protocol_a).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..settings import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Settings,
)

STATUSES = ("ok", "quiescent", "non_repolarizing", "unstable")


class TrainConfig(Settings):
    """Architecture and training settings. Sizes are counts; the learning rate is per step."""

    architecture: Literal["fc", "ridge_mlp"] = "fc"
    depth: NonNegativeInt = Field(26, le=200, description="hidden layers")
    width: PositiveInt = Field(1024, le=16384, description="units per hidden layer")
    activation: Literal["tanh", "relu", "gelu", "swish"] = "tanh"
    pca_components: PositiveInt = Field(128, description="whitened principal components fed "
                                                         "to the MLP (ridge_mlp)")
    dropout: NonNegativeFloat = Field(0.0, lt=1.0, description="dropout rate after each "
                                                              "hidden layer")
    learning_rate: Fraction = Field(1e-4, description="Adam learning rate (per step)")
    batch_size: PositiveInt | None = Field(None, description="samples per batch; None: "
                                                             "batch_fraction of the data")
    batch_fraction: PositiveFloat = Field(0.01, le=1.0,
                                          description="batch size as a fraction of the training "
                                                      "samples when batch_size is None")
    epochs: PositiveInt = Field(1000, description="at most this many epochs")
    patience: PositiveInt = Field(20, description="early stopping: epochs without a better "
                                                  "validation loss")
    input_pool: PositiveInt = Field(10, description="average this many stored samples per "
                                                    "network input")
    input_noise_pA_per_pF: NonNegativeFloat = Field(
        0.5, description="recording noise SD (pA/pF per 0.1 ms sample) the network must "
                         "tolerate: enters the input scaling, the ridge penalty and a noisy "
                         "copy of the training inputs for the MLP")
    seed: NonNegativeInt = Field(0, description="weights initialization and shuffling")
    statuses: tuple[str, ...] = Field(("ok",), description="train on cells of these statuses")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        bad = set(self.statuses) - set(STATUSES)
        if bad:
            raise ValueError(f"statuses: unknown {sorted(bad)}; expected ok, quiescent, "
                             "non_repolarizing, unstable")
        if "unstable" in self.statuses:
            raise ValueError("statuses: unstable cells have no valid trace to train on")
        return self

    def batch_size_for(self, n_train: int) -> int:
        """The batch size for ``n_train`` training samples."""
        if self.batch_size is not None:
            return self.batch_size
        return max(1, round(self.batch_fraction * n_train))


PRESETS: dict[str, dict] = {
    "study_fc": dict(architecture="fc", depth=26, width=1024, activation="tanh",
                     learning_rate=1e-4, batch_fraction=0.01, patience=20),
    "ridge_mlp": dict(architecture="ridge_mlp", depth=2, width=256, activation="gelu",
                      pca_components=128, dropout=0.2, learning_rate=1e-3, batch_size=32,
                      patience=20, input_pool=1),
    "small_fc": dict(architecture="fc", depth=2, width=256, activation="tanh",
                     learning_rate=1e-3, batch_size=32, patience=10, input_pool=5),
}


def preset(name: str, **overrides) -> TrainConfig:
    """The preset ``name`` with ``overrides`` applied (ValueError names the known presets)."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; expected one of "
                         f"{', '.join(PRESETS)}")
    return TrainConfig.create(**{**PRESETS[name], **overrides})
