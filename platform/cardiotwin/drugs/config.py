"""Configuration of a drug screen (:func:`cardiotwin.drugs.screen.run_screen`) and its
command-line options.

Units: ms, mV, K, nM; ``spread`` a fraction (0.2 = +-20%). ``ScreenConfig`` validates on
construction (a :class:`cardiotwin.settings.Settings`: declarative constraints;
``ScreenConfig.create`` gives one plain ValueError line per problem).
The drug is a catalog name (matched ignoring case and punctuation), a definition dict, or a name
defined in ``drug_file``; it is resolved once (:meth:`ScreenConfig.resolve_drug`) and the
screen's identity holds the resolved IC50s, not the file path.

The population: cell i = twin x multipliers_i, multipliers_i ~ U(1 - spread, 1 + spread) on the
52 inferred parameters (cell i from (seed, i), as ``cardiotwin.population``). The twin is the
model baseline, or ``twin_multipliers``: 52 values in ``model.INFERRED_NAMES`` order or
{parameter name: multiplier} over any of the 87 inputs.

Each (cell, concentration) is simulated from the model's initial state: ``prepace_ms``
free-running (or paced at ``pacing_period_ms``) at that concentration towards steady state, not
recorded, then ``record_ms`` recorded every ``record_interval_ms``. Defaults (5 s + 5 s,
0.5 ms), measured on 200 cells at +-20%: statuses after 5 s of pre-pacing agree with 10 s in
99% of cells at 0 nM and 97.5% at 50 nM E-4031 (5 s vs 2 s: 97.5% and 94.5%); against 0.1 ms
sampling (at 10 nM), 0.5 ms gives the same outcome for every cell, APD90 within 1.2 ms (median
0.05 ms) and a quarter of the analysis time (0.7 vs 2.6 ms per cell).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..settings import (
    Fraction,
    NonNegativeInt,
    NonNegativeMs,
    PositiveFloat,
    PositiveInt,
    PositiveMs,
    Settings,
    TemperatureK,
)
from ..storage.identity import identity_hash
from .catalog import Drug, get_drug

FORMAT = "cardiotwin.screen/1"
RUN_ONLY_FIELDS = ("out_dir", "batch_cells", "figures", "drug_file", "overwrite")
VARIANT_FIELDS = ("late_sodium", "net_charge")
MAX_CONCENTRATIONS = 64
EAD_REPOLARIZATION_MAX = 0.9

__all__ = ["FORMAT", "MAX_CONCENTRATIONS", "RUN_ONLY_FIELDS", "ScreenConfig"]


class ScreenConfig(Settings):
    """A population drug screen (see the module docstring)."""

    drug: str | Drug = Field(description="catalog name, or a definition {'name', 'blocks'}")
    concentrations_nM: tuple[float, ...] = Field(
        (0.0, 10.0, 30.0, 50.0, 100.0), description="concentrations (nM, >= 0, distinct)")
    n_cells: PositiveInt = Field(200, description="cells in the population")
    spread: Fraction = Field(0.2, description="multiplier range r: [1 - r, 1 + r]")
    seed: NonNegativeInt = Field(0, description="sampling seed")
    sampler: Literal["uniform", "lhs", "sobol"] = Field("uniform")
    twin_multipliers: tuple[float, ...] | dict[str, float] | None = Field(
        None, description="the twin: 52 multipliers (INFERRED_NAMES order) or {name: mult}; "
                          "None: model baseline")
    twin_name: str = Field("baseline", description="label of the twin")
    temperature_K: TemperatureK = Field(310.0)
    prepace_ms: NonNegativeMs = Field(5000.0, description="unrecorded run at each "
                                                          "concentration (ms)")
    record_ms: PositiveMs = Field(5000.0, description="recorded run (ms)")
    record_interval_ms: PositiveMs = Field(0.5, description="sampling of the recorded run (ms)")
    pacing_period_ms: PositiveMs | None = Field(None, description="None: free-running")
    pacing_amplitude: PositiveFloat = Field(3.0, description="stimulus (pA/pF)")
    pacing_width_ms: PositiveMs = Field(5.0, description="stimulus width (ms)")
    depolarized_mdp_mV: float | None = Field(
        -60.0, description="beats with a higher MDP are depolarized oscillations, not full "
                           "APs (None: no split)")
    ead_min_repolarization: Annotated[float, Field(ge=0.0, lt=EAD_REPOLARIZATION_MAX,
                                                   allow_inf_nan=False)] = Field(
        0.3, description="EADs count only after the AP has repolarized this fraction of its "
                         "amplitude (0.3: from the APD30 level; excludes the phase-1 notch)")
    n_keep_traces: NonNegativeInt = Field(4, description="AP traces kept per concentration "
                                                         "for figures")
    trace_interval_ms: PositiveMs = Field(1.0, description="sampling of the kept traces (ms)")
    batch_cells: PositiveInt = Field(250, description="cells per Ray task (one kernel call)")
    drug_file: Path | None = Field(None, description="user drugs (.csv/.json)")
    out_dir: Path | None = Field(None, description="output directory; None: nothing written")
    late_sodium: bool = Field(False, description="simulate the late-sodium variant of the "
                                                 "model (model.late_sodium): the drug's INaL "
                                                 "block applies; False: the default model, "
                                                 "INaL block not applied")
    net_charge: bool = Field(False, description="also record the charge carried by the CiPA "
                                                "currents (qnet, pA/pF ms per 1000 ms)")
    figures: bool = Field(True, description="write the PNG figures")
    overwrite: bool = Field(False, description="replace a finished screen in out_dir")

    @field_validator("drug", mode="before")
    @classmethod
    def _drug(cls, v: Any) -> Any:
        from collections.abc import Mapping

        from .catalog import drug_from_dict

        return drug_from_dict(v) if isinstance(v, Mapping) else v

    @field_validator("concentrations_nM", mode="before")
    @classmethod
    def _concs(cls, v: Any) -> tuple[float, ...]:
        if isinstance(v, (int, float, str)):
            v = [v]
        out = []
        for x in v:
            try:
                c = float(x)
            except (TypeError, ValueError):
                raise ValueError(f"concentration {x!r} is not a number of nM") from None
            if not math.isfinite(c) or c < 0:
                raise ValueError(f"concentrations must be finite and >= 0 nM, found {x!r}")
            out.append(c)
        if not out:
            raise ValueError("give at least one concentration (nM)")
        if len(set(out)) != len(out):
            raise ValueError(f"concentrations must be distinct, found {out}")
        if len(out) > MAX_CONCENTRATIONS:
            raise ValueError(f"at most {MAX_CONCENTRATIONS} concentrations, found {len(out)}")
        return tuple(sorted(out))

    @field_validator("twin_multipliers")
    @classmethod
    def _twin(cls, v):
        if v is None:
            return v
        from ..model.parameters import N_INFERRED, inputs_from_multipliers, inputs_from_named

        if isinstance(v, dict):
            inputs_from_named(v)
            return {str(k): float(x) for k, x in v.items()}
        if len(v) != N_INFERRED:
            raise ValueError(f"twin_multipliers: expected {N_INFERRED} values in "
                             f"INFERRED_NAMES order (or a name -> multiplier dict), found "
                             f"{len(v)}")
        inputs_from_multipliers(list(v))
        return tuple(float(x) for x in v)

    @model_validator(mode="after")
    def _consistent(self) -> ScreenConfig:
        n_rec = round(self.record_ms / self.record_interval_ms)
        if abs(n_rec * self.record_interval_ms - self.record_ms) > 1e-9 * self.record_ms:
            raise ValueError(f"record_ms ({self.record_ms}) must be a whole number of "
                             f"record_interval_ms ({self.record_interval_ms})")
        if self.pacing_period_ms is not None and self.pacing_width_ms >= self.pacing_period_ms:
            raise ValueError(f"pacing_width_ms ({self.pacing_width_ms}) must be shorter than "
                             f"pacing_period_ms ({self.pacing_period_ms})")
        drug = self.resolve_drug()    # unknown names and bad definitions fail here
        if drug.blocks and not drug.model_blocks() and not self.late_sodium:
            raise ValueError(f"drug {drug.name!r} blocks only INaL, which the default model "
                             "lacks: set late_sodium (--late-sodium) to simulate the model's "
                             "late-sodium variant")
        return self

    def ignored_blocks(self) -> list[str]:
        """The drug's blocked currents this screen's model does not have (INaL without
        late_sodium)."""
        from .catalog import LATE_SODIUM

        if self.late_sodium:
            return []
        return [b.current for b in self.resolve_drug().blocks if b.current == LATE_SODIUM]

    # ---- derived ---------------------------------------------------------------------------

    def resolve_drug(self) -> Drug:
        """The drug, with its IC50s (a name is looked up in ``drug_file``, then the catalog)."""
        return get_drug(self.drug, self.drug_file)

    def twin_inputs(self):
        """The twin's model inputs (87,)."""
        from ..model.parameters import BASELINE, inputs_from_multipliers, inputs_from_named

        if self.twin_multipliers is None:
            return BASELINE.copy()
        if isinstance(self.twin_multipliers, dict):
            return inputs_from_named(self.twin_multipliers)
        return inputs_from_multipliers(list(self.twin_multipliers))[0]

    def identity(self) -> dict[str, Any]:
        """Every field that changes the results, canonical (the drug resolved)."""
        from ..model.parameters import REGISTRY_VERSION

        d = self.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS))
        for k in VARIANT_FIELDS:          # absent when off: the hashes of earlier screens hold
            if not d[k]:
                del d[k]
        d["drug"] = self.resolve_drug().model_dump(mode="json")
        d["registry_version"] = REGISTRY_VERSION
        d["format"] = FORMAT
        return d

    def config_hash(self) -> str:
        """The identity hash (:func:`cardiotwin.storage.identity.identity_hash`) of
        :meth:`identity`."""
        return identity_hash(self.identity())
