"""The amortized posterior of a trained flow artifact: samples and per-parameter summaries of
the 52 multipliers for each recorded trace, with an out-of-distribution check.

Per cell (:class:`CellPosterior`, multiplier scale): mean, SD and the 5/25/50/75/95% quantiles
of ``n_samples`` posterior samples (default 1,000), the contraction 1 - SD / prior SD (the
prior is uniform over the training range) and ``identifiable`` (contraction >= 0.5: the
recording at least halves the prior's SD). Samples are recalibrated per parameter by the map
fitted on the validation split (:class:`cardiotwin.learn.calibration.MarginalRecalibration`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .artifact import ParameterEstimator
from .calibration import IDENTIFIABLE_CONTRACTION, UNIFORM_UNIT_SD, MarginalRecalibration
from .ood import OODDetector

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_KEYS = ("q05", "q25", "q50", "q75", "q95")
DEFAULT_SAMPLES = 1000
POINT_SAMPLES = 256  # samples behind the posterior mean of :meth:`PosteriorEstimator.predict`
N_PARAMETERS = 52


def load_flow_model(path):
    """The Keras model of a flow artifact (its layers registered by importing ``flow``)."""
    import keras

    from . import flow  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(path, compile=False)


class FlowPosterior:
    """Posterior sampling of a flow network (the ``full`` model of
    :func:`~cardiotwin.learn.networks.build_flow_network`, trained or loaded)."""

    def __init__(self, model, n_layers: int):
        from .flow import FlowSampler

        w, b = model.get_layer("projection").get_weights()
        self.w = np.asarray(w, np.float32)
        self.b = np.asarray(b, np.float32)
        self.sampler = FlowSampler(model.get_layer("posterior"), n_layers)

    def ood_detector(self) -> OODDetector:
        """The OOD distances of the network's whitening columns (thresholds not set)."""
        w = self.w[:, N_PARAMETERS:].astype(np.float64)
        return OODDetector.from_whitening(w, 1.0 / np.linalg.norm(w, axis=0))

    def sample_unit(self, x: np.ndarray, n_samples: int, rng: np.random.Generator,
                    recalibration: MarginalRecalibration | None = None) -> np.ndarray:
        """Unit-scale samples (n, n_samples, 52) for normalized inputs ``x`` (n, d), then
        ``recalibration`` when given."""
        from .flow import from_logit

        cond = self.sampler.condition(np.asarray(x, np.float32) @ self.w + self.b)
        unit = from_logit(self.sampler.sample(cond, n_samples, rng))
        return unit if recalibration is None else recalibration.apply(unit)

    def sample_unit_chunked(self, x: np.ndarray, n_samples: int, seed: int,
                            recalibration: MarginalRecalibration | None = None,
                            chunk_cells: int = 512) -> np.ndarray:
        """:meth:`sample_unit` a block of cells at a time (bounded memory per call)."""
        rng = np.random.default_rng(seed)
        return np.concatenate([self.sample_unit(x[a:a + chunk_cells], n_samples, rng,
                                                recalibration)
                               for a in range(0, len(x), chunk_cells)])


@dataclass
class CellPosterior:
    """Posterior samples of one cell (multipliers, (n_samples, 52)) and their summaries."""

    names: list[str]
    samples: np.ndarray
    low: np.ndarray
    high: np.ndarray
    ood: dict[str, Any] = field(default_factory=dict)
    prior_sd: np.ndarray | None = None  # each multiplier's SD under the prior (None: uniform)

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(axis=0)

    @property
    def sd(self) -> np.ndarray:
        return self.samples.std(axis=0)

    @property
    def quantiles(self) -> np.ndarray:
        """(5, 52): the :data:`QUANTILES` of each parameter."""
        return np.quantile(self.samples, QUANTILES, axis=0)

    @property
    def contraction(self) -> np.ndarray:
        prior_sd = (self.prior_sd if self.prior_sd is not None
                    else (self.high - self.low) * UNIFORM_UNIT_SD)
        return 1.0 - self.sd / prior_sd

    @property
    def identifiable(self) -> np.ndarray:
        return self.contraction >= IDENTIFIABLE_CONTRACTION

    def summaries(self) -> list[dict[str, Any]]:
        """Per parameter {mean, sd, q05 ... q95, contraction} (multiplier scale)."""
        q = self.quantiles
        mean, sd, shrink = self.mean, self.sd, self.contraction
        return [{"mean": float(mean[j]), "sd": float(sd[j]),
                 **{k: float(q[i, j]) for i, k in enumerate(QUANTILE_KEYS)},
                 "contraction": float(shrink[j])} for j in range(len(self.names))]


class PosteriorEstimator(ParameterEstimator):
    """A flow artifact: :meth:`predict` gives posterior means (as the point networks give
    their estimates), :meth:`posterior` the samples and summaries."""

    def __post_init__(self):
        super().__post_init__()
        post = self.metadata["posterior"]
        self.recalibration = MarginalRecalibration.from_json(post["recalibration"])
        self._flow = FlowPosterior(self.model, int(self.metadata["config"]["flow_layers"]))
        base = self._flow.ood_detector()
        o = post["ood"]
        self._ood = OODDetector(base.basis, base.sd, base.mean, float(o["t2_threshold"]),
                                float(o["q_threshold"]), float(o["quantile"]))

    def predict_unit(self, x: np.ndarray) -> np.ndarray:
        """Posterior means on the unit scale (POINT_SAMPLES samples, fixed seed)."""
        return self._flow.sample_unit(x, POINT_SAMPLES, np.random.default_rng(0),
                                      self.recalibration).mean(axis=1)

    def posterior(self, i_total: np.ndarray, protocol_hash: str, *, at: str = "protocol",
                  n_samples: int = DEFAULT_SAMPLES, seed: int = 0) -> list[CellPosterior]:
        """The posterior of each trace (see :meth:`predict` for ``i_total``, ``at`` and the
        protocol check): ``n_samples`` samples each, with the OOD check."""
        if not 1 <= int(n_samples) <= 100_000:
            raise ValueError(f"n_samples: expected 1..100000, found {n_samples}")
        x = self.network_input(i_total, protocol_hash, at=at)
        unit = self._flow.sample_unit(x, int(n_samples), np.random.default_rng(seed),
                                      self.recalibration)
        ood = self._ood.score(x)
        sc = self._scaling
        prior_sd = sc.prior_sd()
        return [CellPosterior(self.names, sc.from_unit(unit[i]), sc.low, sc.high, ood[i],
                              prior_sd) for i in range(len(x))]


CALIBRATION_VAL_CELLS = 2000   # validation cells behind the recalibration
EVALUATION_TEST_CELLS = 4000   # test cells behind the artifact's calibration report


def evaluate_posterior(model, prep, config) -> tuple[np.ndarray, np.ndarray, dict[str, Any],
                                                     dict[str, Any]]:
    """Calibrate and check a trained flow on the splits of ``prep`` (a train.Prepared):
    the marginal recalibration on up to CALIBRATION_VAL_CELLS validation cells, the OOD
    thresholds on the validation split, the calibration report and point metrics on up to
    EVALUATION_TEST_CELLS test cells. With recording noise configured, every split gets it
    (seeded): the model is checked on the data it is made for. Returns (test cell index,
    posterior means on the unit scale of those cells, the metadata block, the report)."""
    from ..model.parameters import INFERRED_NAMES
    from .calibration import calibration_report

    post = FlowPosterior(model, config.flow_layers)
    seed = config.seed

    def noisy(x: np.ndarray, k: int) -> np.ndarray:
        if prep.noise_sd is None:
            return x
        rng = np.random.default_rng(seed + k)
        return (x + rng.standard_normal(x.shape, np.float32) * prep.noise_sd).astype(np.float32)

    n_s = config.posterior_samples
    x_val = noisy(prep.x["val"][:CALIBRATION_VAL_CELLS], 11)
    y_val = prep.y["val"][:CALIBRATION_VAL_CELLS]
    raw_val = post.sample_unit_chunked(x_val, n_s, seed + 12)
    recal = MarginalRecalibration.fit(raw_val, y_val)
    x_test = noisy(prep.x["test"][:EVALUATION_TEST_CELLS], 13)
    y_test = prep.y["test"][:EVALUATION_TEST_CELLS]
    raw = post.sample_unit_chunked(x_test, n_s, seed + 14)
    uncalibrated = calibration_report(raw, y_test, list(INFERRED_NAMES))
    samples = recal.apply(raw)
    report = calibration_report(samples, y_test, list(INFERRED_NAMES))
    ood = post.ood_detector().calibrated(noisy(prep.x["val"], 15))
    flags = [o["flag"] for o in ood.score(x_test)]
    block = {"recalibration": {**recal.to_json(), "n_cells": int(len(y_val))},
             "calibration": {k: v for k, v in report.items() if k != "per_parameter"},
             "uncalibrated": {k: uncalibrated[k] for k in ("coverage", "sbc")},
             "contraction": [r["contraction"] for r in report["per_parameter"]],
             "identifiable": [r["identifiable"] for r in report["per_parameter"]],
             "ood": {**ood.to_json(), "test_flag_rate": float(np.mean(flags))},
             "noise_pA_per_pF": config.input_noise_pA_per_pF,
             "scale": "calibration on the unit scale (the training range mapped to [0, 1])"}
    return np.arange(len(x_test)), samples.mean(axis=1), block, report
