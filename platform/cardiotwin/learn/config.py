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
- ``posterior_flow`` (the default): an amortized posterior. The multi-rate trace
  (:mod:`cardiotwin.learn.multirate`: full resolution right after each step, coarse bins
  elsewhere) goes through the fixed ridge and PCA-whitening layers of ``ridge_mlp`` and an MLP
  into a context vector that conditions a normalizing flow (a conditional affine layer, then
  ``flow_layers`` affine couplings) over the 52 multipliers on the logit of the unit scale:
  a joint posterior with exact sampling and density (:mod:`cardiotwin.learn.flow`). Trained by
  maximum likelihood with fresh recording noise in every batch, then calibrated on the
  validation split (a temperature of the base distribution) and checked on the test split
  (:mod:`cardiotwin.learn.calibration`).
- ``small_flow``: the same family, small, for tests.

Input resolution: with ``input = "pool"`` the stored I_total (pA/pF) is averaged over blocks
of ``input_pool`` samples before the network (e.g. ``input_pool = 10`` on a 10 kHz store, or 1
on a 1 kHz store: 1 ms resolution, 4950 inputs on protocol_a); with ``input = "multirate"``
over the multi-rate bins (``fast_window_ms`` ... ``slow_bin_ms``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..settings import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    NonNegativeMs,
    PositiveFloat,
    PositiveInt,
    PositiveMs,
    Settings,
)

STATUSES = ("ok", "quiescent", "non_repolarizing", "unstable")


class TrainConfig(Settings):
    """Architecture and training settings. Sizes are counts; the learning rate is per step."""

    architecture: Literal["fc", "ridge_mlp", "flow"] = "fc"
    depth: NonNegativeInt = Field(26, le=200, description="hidden layers")
    width: PositiveInt = Field(1024, le=16384, description="units per hidden layer")
    activation: Literal["tanh", "relu", "gelu", "swish"] = "tanh"
    pca_components: PositiveInt = Field(128, description="whitened principal components fed "
                                                         "to the MLP (ridge_mlp)")
    dropout: NonNegativeFloat = Field(0.0, lt=1.0, description="dropout rate after each "
                                                              "hidden layer")
    learning_rate: Fraction = Field(1e-4, description="Adam learning rate (per step)")
    weight_decay: NonNegativeFloat = Field(0.0, description="flow: decoupled weight decay "
                                                           "(AdamW) per step")
    batch_size: PositiveInt | None = Field(None, description="samples per batch; None: "
                                                             "batch_fraction of the data")
    batch_fraction: PositiveFloat = Field(0.01, le=1.0,
                                          description="batch size as a fraction of the training "
                                                      "samples when batch_size is None")
    epochs: PositiveInt = Field(1000, description="at most this many epochs")
    patience: PositiveInt = Field(20, description="early stopping: epochs without a better "
                                                  "validation loss")
    input: Literal["pool", "multirate"] = Field("pool", description="network input: block "
                                                "means of input_pool samples, or multi-rate "
                                                "bins")
    input_pool: PositiveInt = Field(10, description="average this many stored samples per "
                                                    "network input (input pool)")
    fast_window_ms: NonNegativeMs = Field(5.0, description="multirate: ms after each segment "
                                                           "start kept at full resolution")
    medium_window_ms: NonNegativeMs = Field(50.0, description="multirate: ms after each "
                                                              "segment start in medium bins")
    medium_bin_ms: PositiveMs = Field(1.0, description="multirate: medium bin width (ms)")
    slow_bin_ms: PositiveMs = Field(5.0, description="multirate: bin width (ms) for the rest "
                                                     "of each segment")
    feature_noise: NonNegativeFloat = Field(0.0, description="flow: SD of Gaussian noise on "
                                                            "the embedding's (whitened) input "
                                                            "features while training: a "
                                                            "regularizer")
    flow_layers: PositiveInt = Field(6, le=64, description="flow: affine coupling layers")
    flow_hidden: PositiveInt = Field(256, le=8192, description="flow: units of each "
                                                               "coupling's two hidden layers")
    context_dim: PositiveInt = Field(128, le=4096, description="flow: size of the trace "
                                                              "embedding that conditions it")
    posterior_samples: PositiveInt = Field(200, description="flow: posterior samples per test "
                                                            "cell for calibration")
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
        if self.fast_window_ms > self.medium_window_ms:
            raise ValueError(f"fast_window_ms: {self.fast_window_ms} is longer than "
                             f"medium_window_ms {self.medium_window_ms}")
        return self

    def multirate_widths(self) -> dict[str, float] | None:
        """The multi-rate bin widths (ms) for the dataset reader; None with pooled input."""
        if self.input != "multirate":
            return None
        return {k: getattr(self, k) for k in ("fast_window_ms", "medium_window_ms",
                                              "medium_bin_ms", "slow_bin_ms")}

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
    "posterior_flow": dict(architecture="flow", input="multirate", depth=2, width=256,
                           activation="gelu", pca_components=192, dropout=0.1,
                           feature_noise=0.3, learning_rate=5e-4, batch_size=128, epochs=400,
                           patience=20, flow_layers=4, flow_hidden=128, context_dim=64),
    "small_flow": dict(architecture="flow", input="multirate", depth=1, width=128,
                       activation="gelu", pca_components=48, dropout=0.1, feature_noise=0.3,
                       learning_rate=1e-3, batch_size=64, epochs=60, patience=10,
                       flow_layers=2, flow_hidden=64, context_dim=32, posterior_samples=100),
}
DEFAULT_PRESET = "posterior_flow"


def preset(name: str, **overrides) -> TrainConfig:
    """The preset ``name`` with ``overrides`` applied (ValueError names the known presets)."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; expected one of "
                         f"{', '.join(PRESETS)}")
    return TrainConfig.create(**{**PRESETS[name], **overrides})
