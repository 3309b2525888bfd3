"""Configuration of a CiPA risk run (:func:`cardiotwin.cipa.run.run_cipa`).

Units: Hz, ms, K; ``spread`` a fraction (0.2 = +-20%); doses as multiples of each drug's free
Cmax (:mod:`cardiotwin.drugs.cipa_table`). Each drug is one drug screen
(:class:`cardiotwin.drugs.ScreenConfig`) at 0 and ``multiples`` x Cmax on the same population,
with the late-sodium model variant (``late_sodium``, default on: the table's INaL block applies)
and the net charge recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..settings import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PositiveMs,
    Settings,
    TemperatureK,
)
from .metrics import METRICS

DEFAULT_MULTIPLES = (1.0, 2.0, 5.0, 10.0, 20.0, 25.0)
#: the classifier's features (each the mean over the doses): net charge, APD90, EADs
DEFAULT_FEATURES = ("qnet", "apd90", "ead")


class CipaConfig(Settings):
    """A CiPA run (module docstring)."""

    out_dir: Path = Field(description="output directory")
    drugs: tuple[str, ...] | None = Field(None, description="CiPA table drug names; None: "
                                                            "all (the 28 and flecainide)")
    n_cells: PositiveInt = Field(100, description="cells in the population")
    spread: Fraction = Field(0.2, description="multiplier range r: [1 - r, 1 + r]")
    seed: NonNegativeInt = Field(0, description="sampling and bootstrap seed")
    twin_multipliers: tuple[float, ...] | dict[str, float] | None = Field(
        None, description="the twin the population is around (as ScreenConfig); None: "
                          "the model baseline")
    twin_name: str = Field("baseline")
    multiples: tuple[PositiveFloat, ...] = Field(DEFAULT_MULTIPLES,
                                                 description="doses, x free Cmax")
    pacing_hz: NonNegativeFloat = Field(1.0, description="pacing rate (Hz); 0: free-running")
    late_sodium: bool = Field(True, description="the model's late-sodium variant")
    temperature_K: TemperatureK = Field(310.0)
    prepace_ms: PositiveMs = Field(5000.0)
    record_ms: PositiveMs = Field(5000.0)
    record_interval_ms: PositiveMs = Field(0.5)
    features: tuple[str, ...] = Field(DEFAULT_FEATURES, description=f"of {METRICS}")
    feature_multiples: tuple[PositiveFloat, ...] | None = Field(
        None, description="the doses (of multiples) the features average over; None: all")
    classifier_c: PositiveFloat = Field(1.0, description="inverse L2 strength")
    n_bootstrap: NonNegativeInt = Field(100, description="bootstrap replicates over cells")
    batch_cells: PositiveInt = Field(250, description="cells per Ray task")
    screen_figures: bool = Field(False, description="each drug screen's own figures too")
    figures: bool = Field(True)
    overwrite: bool = Field(False, description="recompute finished screens")

    @field_validator("drugs", mode="before")
    @classmethod
    def _drugs(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, str):
            v = [v]
        from ..drugs.catalog import drug_key
        from ..drugs.cipa_table import cipa_drugs

        table = cipa_drugs()
        names = []
        for x in v:
            row = table.get(drug_key(x))
            if row is None:
                raise ValueError(f"{x!r} is not in the CiPA table; expected one of "
                                 f"{', '.join(d.name for d in table.values())}")
            if row.name not in names:
                names.append(row.name)
        if not names:
            raise ValueError("give at least one drug (or none for all)")
        return tuple(names)

    @field_validator("multiples", mode="before")
    @classmethod
    def _multiples(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (int, float, str)) else list(v)
        if not v or len(set(map(float, v))) != len(v):
            raise ValueError(f"multiples must be distinct positive numbers, found {v}")
        return tuple(sorted(float(x) for x in v))

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else list(v)
        bad = [x for x in v if x not in METRICS]
        if bad or not v:
            raise ValueError(f"unknown feature(s) {bad or v}; expected some of "
                             f"{', '.join(METRICS)}")
        return tuple(v)

    @model_validator(mode="after")
    def _feature_doses(self) -> CipaConfig:
        if self.feature_multiples is not None:
            bad = sorted(set(self.feature_multiples) - set(self.multiples))
            if bad or not self.feature_multiples:
                raise ValueError(f"feature_multiples {bad or []} must be some of the multiples "
                                 f"{list(self.multiples)}")
        return self

    def feature_dose_index(self) -> list[int]:
        """Indices (into multiples) of the doses the features average over."""
        use = self.multiples if self.feature_multiples is None else self.feature_multiples
        return [i for i, m in enumerate(self.multiples) if m in use]

    @property
    def pacing_period_ms(self) -> float | None:
        return None if self.pacing_hz == 0 else 1000.0 / self.pacing_hz

    def selected(self) -> list:
        """The CiPA table rows to screen (:class:`~cardiotwin.drugs.cipa_table.CipaDrug`)."""
        from ..drugs.catalog import drug_key
        from ..drugs.cipa_table import cipa_drugs

        table = cipa_drugs()
        if self.drugs is None:
            return list(table.values())
        return [table[drug_key(n)] for n in self.drugs]

    def screen_config(self, row: Any):
        """The drug screen of one table row into out_dir/screens/<drug>."""
        from ..drugs.config import ScreenConfig

        concs = [0.0] + [m * row.cmax_free_nM for m in self.multiples]
        return ScreenConfig.create(
            drug=row.name, concentrations_nM=concs, n_cells=self.n_cells, spread=self.spread,
            seed=self.seed, twin_multipliers=self.twin_multipliers, twin_name=self.twin_name,
            temperature_K=self.temperature_K, prepace_ms=self.prepace_ms,
            record_ms=self.record_ms, record_interval_ms=self.record_interval_ms,
            pacing_period_ms=self.pacing_period_ms, late_sodium=self.late_sodium,
            net_charge=True, n_keep_traces=2, batch_cells=self.batch_cells,
            out_dir=Path(self.out_dir) / "screens" / row.drug.key,
            figures=self.screen_figures, overwrite=self.overwrite)
