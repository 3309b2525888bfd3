"""Configuration of a greedy protocol search (:func:`cardiotwin.protocol_search.run_search`).

Defaults are the source study's greedy structure: each cycle appends a hold at -100 mV for
250 ms and one test step of 250 ms chosen from -120 ... +50 mV in 10 mV steps (18 candidates,
-120 mV the If probe). The candidate is scored (``scorer``) by default by its Fisher
information (:mod:`.fisher`: the posterior variance left in prior-whitened units on
``fisher_cells`` base cells, seconds per cycle); ``scorer="network"`` keeps the study's score
(the candidate whose trained network has the lowest held-out MSE is appended), also the way to
confirm a final protocol (:mod:`.compare`).

``SearchConfig`` validates on construction (a :class:`cardiotwin.settings.Settings`:
declarative constraints; a ``ValidationError`` is a ``ValueError``; :meth:`SearchConfig.create`
flattens it into one plain line per field for command lines).

Search identity (:meth:`SearchConfig.identity`, hashed into ``config_hash``): every field that
changes the scores (candidates, timings, population, network). Budget fields (``max_steps``,
``max_duration_ms``, ``stop_when_no_improvement``, ``min_improvement``) and resources
(``cpus_per_trial``, ``gpus_per_trial``) are run-only: a stopped search may be resumed with a
larger budget or on another cluster, not with another identity.

Network (``network``, ``input_pool``): by default ``ridge_mlp`` (closed-form ridge plus a
2 x 256 MLP correction) on 2 ms inputs. Measured here on 600 cells at +-40% (415 training
cells, 120 held out), median MAE on the unit scale (trivial predictor 0.249): ``small_fc``
0.305-0.309 (worse than trivial: gradient descent on thousands of correlated inputs with a
few hundred cells does not learn, so the candidates' scores are noise), ``ridge_mlp`` 0.220
(1 ms inputs) / 0.223 (5 ms), 3-16 s per training on one core. The scores must separate the
candidates at the population sizes a search affords, hence this default.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..settings import (
    Fraction,
    NonNegativeFloat,
    NonNegativeMs,
    PositiveFloat,
    PositiveInt,
    PositiveMs,
    Settings,
    TemperatureK,
)
from ..storage.identity import identity_hash

FORMAT = "cardiotwin.protocol_search/1"
DEFAULT_CANDIDATES_MV = tuple(float(v) for v in range(-120, 51, 10))
RUN_ONLY_FIELDS = ("max_steps", "max_duration_ms", "stop_when_no_improvement",
                   "min_improvement", "cpus_per_trial", "gpus_per_trial")
SCORES = ("test_mse", "test_median_mae", "val_mse")
SCORERS = ("fisher", "network")
CRITERIA = ("trace", "logdet")
STATUSES = ("ok", "quiescent", "non_repolarizing")
MIN_CELLS = 20          # fewer cannot fill the 70:10:20 split reliably
V_LIMIT_MV = 200.0      # as cardiotwin.protocols

Millivolts = Annotated[float, Field(ge=-V_LIMIT_MV, le=V_LIMIT_MV, allow_inf_nan=False)]
"""A command potential within the protocols' +-200 mV."""


class SearchConfig(Settings):
    """A greedy protocol search. Units: mV, ms, K; ``spread`` is a fraction (0.4 = +-40%)."""

    # ---- the protocol pieces ----
    candidates_mV: tuple[Millivolts, ...] = Field(
        DEFAULT_CANDIDATES_MV, description="candidate test potentials (mV, distinct)")
    step_ms: PositiveMs = Field(250.0, description="duration of the test step (ms)")
    holding_mV: Millivolts = Field(-100.0, description="holding potential before each step "
                                                       "(mV)")
    holding_ms: NonNegativeMs = Field(250.0, description="duration of the hold (ms); 0: no "
                                                         "hold")
    sample_interval_ms: PositiveMs = Field(0.1, description="I_total sample interval (ms)")
    temperature_K: TemperatureK = Field(310.0, description="temperature (K)")
    # ---- the population ----
    n_cells: Annotated[int, Field(ge=MIN_CELLS)] = Field(
        2000, description="synthetic cells simulated for every candidate (>= 20: the 70:10:20 "
                          "split)")
    spread: Fraction = Field(0.4, description="multipliers span [1 - spread, 1 + spread]")
    sampler: Literal["uniform", "lhs", "sobol"] = "uniform"
    seed: Annotated[int, Field(ge=0)] = Field(0, description="sampling seed (same cells for "
                                                             "all candidates)")
    statuses: tuple[str, ...] | None = Field(
        None, description="None: train on every cell that stays numerically stable under the "
                          "voltage clamp (its trace is valid whatever its AP phenotype); else "
                          "only cells of these AP statuses (one free-running AP run per cell "
                          "classifies them once)")
    ap_duration_ms: PositiveMs = Field(4000.0, description="classification AP run (ms), "
                                                             "used only with statuses")
    # ---- the scorer ----
    scorer: Literal["fisher", "network"] = Field(
        "fisher", description="fisher: the candidate whose Fisher information (finite "
                              "differences of I_total w.r.t. the 52 multipliers) leaves the "
                              "least posterior variance wins (seconds per cycle); network: the "
                              "source study's score, a network trained per candidate")
    fisher_cells: Annotated[int, Field(ge=1)] = Field(
        200, description="base cells of the Fisher score (each simulated with 52 perturbed "
                         "copies)")
    noise_pA_per_pF: PositiveFloat = Field(
        0.5, description="recording noise sigma of the Fisher score (pA/pF per sample at "
                         "sample_interval_ms)")
    fd_step: Annotated[float, Field(gt=0, le=0.05, allow_inf_nan=False)] = Field(
        5e-3, description="finite-difference step on the unit scale")
    criterion: Literal["trace", "logdet"] = Field(
        "trace", description="Fisher score: trace (mean posterior variance over the prior's, "
                             "A-optimal) or logdet (D-optimal)")
    # ---- the network and the score (scorer network) ----
    network: str = Field("ridge_mlp", description="learn preset (ridge_mlp, small_fc, "
                                                  "study_fc)")
    input_pool: PositiveInt = Field(20, description="I_total samples averaged per network input "
                                                  "(20 = 2 ms at 0.1 ms)")
    network_overrides: dict[str, Any] = Field(default_factory=dict,
                                              description="TrainConfig fields over the preset")
    epochs: PositiveInt = Field(100, description="at most this many epochs per trial "
                                               "(early stopping on the validation split)")
    score: Literal["test_mse", "test_median_mae", "val_mse"] = Field(
        "test_mse", description="the candidate with the lowest value is appended (unit "
                                "scale: multipliers mapped to [0, 1])")
    deterministic: bool = Field(True, description="TensorFlow op determinism in the trials "
                                                  "(a resumed search repeats its scores)")
    # ---- budget (run-only) ----
    max_steps: PositiveInt = Field(10, description="stop after this many appended steps")
    max_duration_ms: PositiveMs | None = Field(None, description="stop before the protocol "
                                                                 "would exceed this (ms)")
    stop_when_no_improvement: bool = Field(True, description="stop when a cycle's best score "
                                                             "does not beat the previous one")
    min_improvement: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = Field(
        0.0, description="relative improvement a cycle must bring")
    # ---- resources (run-only) ----
    cpus_per_trial: PositiveInt = Field(1, description="CPUs per trial (numba and TF threads)")
    gpus_per_trial: NonNegativeFloat | None = Field(None, description="None: 1 when the cluster "
                                                                   "has GPUs, else 0")

    @field_validator("candidates_mV")
    @classmethod
    def _candidates(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("candidates_mV is empty; give at least one test potential (mV)")
        v = tuple(float(x) + 0.0 for x in v)     # -0.0 -> 0.0 (one candidate, one hash)
        if len(set(v)) != len(v):
            dup = sorted({x for x in v if v.count(x) > 1})
            raise ValueError(f"candidates_mV has duplicates {dup}")
        return v

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("statuses is empty; use None to keep every stable cell")
        bad = sorted(set(v) - set(STATUSES))
        if bad:
            raise ValueError(f"statuses: unknown {bad}; expected some of {list(STATUSES)} "
                             "(unstable cells have no valid trace)")
        return tuple(v)

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        dt = self.sample_interval_ms
        for name in ("step_ms", "holding_ms"):
            d = getattr(self, name)
            if abs(d / dt - round(d / dt)) > 1e-9 * max(1.0, d / dt):
                raise ValueError(f"{name} ({d} ms) must be a whole number of "
                                 f"sample_interval_ms ({dt} ms)")
        if self.max_duration_ms is not None and self.max_duration_ms < self.cycle_ms:
            raise ValueError(f"max_duration_ms ({self.max_duration_ms} ms) is shorter than one "
                             f"cycle (hold + step = {self.cycle_ms} ms)")
        for key in ("epochs", "statuses", "input_pool"):
            if key in self.network_overrides:
                raise ValueError(f"network_overrides may not set {key!r}: use the search's "
                                 f"own {key!r} field")
        self.train_config()  # unknown preset or invalid override -> ValueError here
        from ..protocols import Protocol

        Protocol(self.cycle_segments(self.candidates_mV[0]), dt, self.temperature_K)
        return self

    # ---- derived ---------------------------------------------------------------------------

    @property
    def cycle_ms(self) -> float:
        """Duration of one appended cycle: hold + step (ms)."""
        return self.holding_ms + self.step_ms

    def cycle_segments(self, v_mV: float) -> tuple:
        """The segments one cycle appends for test potential ``v_mV``: the hold (when
        ``holding_ms`` > 0), then the step."""
        from ..protocols import Segment

        hold = (Segment(self.holding_ms, self.holding_mV, self.holding_mV),) \
            if self.holding_ms > 0 else ()
        return hold + (Segment(self.step_ms, float(v_mV), float(v_mV)),)

    def cycle_protocol(self, v_mV: float):
        """One cycle as a Protocol (what a trial simulates from the cached state)."""
        from ..protocols import Protocol

        return Protocol(self.cycle_segments(v_mV), self.sample_interval_ms, self.temperature_K)

    def train_config(self):
        """The network's TrainConfig: the preset, ``network_overrides``, ``epochs``,
        ``input_pool``."""
        from ..learn.config import preset

        return preset(self.network, **{**self.network_overrides, "epochs": self.epochs,
                                       "input_pool": self.input_pool})

    def identity(self) -> dict[str, Any]:
        """Every field that changes the scores, in canonical form (run-only fields removed)."""
        from ..model.parameters import REGISTRY_VERSION

        d = self.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS))
        if self.statuses is None:
            d["ap_duration_ms"] = None
        if self.scorer == "network":     # searches of the study's score keep their hashes
            for k in ("scorer", "fisher_cells", "noise_pA_per_pF", "fd_step", "criterion"):
                d.pop(k)
        d["registry_version"] = REGISTRY_VERSION
        d["format"] = FORMAT
        return d

    def config_hash(self) -> str:
        """The identity hash (:func:`cardiotwin.storage.identity.identity_hash`) of
        :meth:`identity`."""
        return identity_hash(self.identity())


def parse_candidates(text: str) -> tuple[float, ...]:
    """Candidates from a command line: ``"-120:50:10"`` (start:stop:step, stop included) or a
    comma-separated list ``"-120,-80,0"`` (mV)."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            n = int(math.floor((parts[1] - parts[0]) / parts[2] + 1e-9)) + 1
            return tuple(parts[0] + k * parts[2] for k in range(n))
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"candidates: expected START:STOP:STEP (mV, STOP included, STEP > 0) "
                         f"or a comma-separated list of mV, found {text!r}") from None
