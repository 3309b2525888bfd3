"""Settings of the end-to-end demo, with named sizes: ``default`` (a few minutes on 2 cores) and
``smallest`` (the test's: well under a minute after compilation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..validation import plain_errors


class DemoConfig(BaseModel):
    """Sizes and settings of every stage of ``cardiotwin demo``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out_dir: Path = Field(Path("out/demo"), description="everything is written under it")
    seed: int = Field(0, ge=0, description="seed of the population, the example cell and the "
                                           "screen population")
    spread: float = Field(0.2, gt=0, lt=1, description="multiplier range r: [1 - r, 1 + r] of "
                                                       "the training population and the screen")
    n_cells: int = Field(4000, gt=0, description="cells of the training population")
    ap_duration_ms: float = Field(4000.0, gt=0, description="classification AP run per cell (ms)")
    decimate_to_hz: float = Field(1000.0, gt=0, description="I_total stored at this rate (Hz)")
    preset: str = Field("ridge_mlp", description="network preset (cardiotwin.learn.PRESETS)")
    epochs: int = Field(60, gt=0, description="training epochs at most")
    input_pool: int = Field(4, gt=0, description="stored I_total samples averaged per network "
                                                 "input (4 at 1 kHz: 4 ms)")
    n_population_traces: int = Field(30, gt=0, description="cells drawn in the population figure")
    example_seed: int = Field(5, ge=0, description="seed of the synthetic example recording "
                                                   "(a beating cell)")
    twin_ap_ms: float = Field(5000.0, gt=0, description="twin's free-running AP (ms)")
    drug: str = Field("E-4031", description="catalog drug of the screen")
    concentrations_nM: tuple[float, ...] = Field((0.0, 10.0, 30.0, 100.0),
                                                 description="screen concentrations (nM)")
    screen_cells: int = Field(400, gt=0, description="cells of the screen population")
    screen_prepace_ms: float = Field(5000.0, ge=0, description="unrecorded run per "
                                                               "concentration (ms)")
    screen_record_ms: float = Field(5000.0, gt=0, description="recorded run (ms)")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the local Ray cluster "
                                                         "(default: all)")

    @field_validator("concentrations_nM")
    @classmethod
    def _concs(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(c < 0 for c in v):
            raise ValueError("expected one or more concentrations >= 0 nM")
        return v


SIZES: dict[str, dict[str, Any]] = {
    "default": {},
    "smallest": {"n_cells": 300, "ap_duration_ms": 1000.0, "epochs": 10,
                 "n_population_traces": 8, "twin_ap_ms": 2000.0,
                 "concentrations_nM": (0.0, 30.0), "screen_cells": 8,
                 "screen_prepace_ms": 1000.0, "screen_record_ms": 2000.0},
}


def demo_config(size: Literal["default", "smallest"] = "default", **overrides: Any) -> DemoConfig:
    """The DemoConfig of a named size, with ``overrides`` (None values ignored); ValueError
    naming the field on bad values."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; expected one of {', '.join(SIZES)}")
    fields = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return DemoConfig(**fields)
    except ValidationError as e:
        raise plain_errors(e, "demo") from None
