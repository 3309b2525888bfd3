"""Settings of the end-to-end demo, with named sizes: ``default`` (a few minutes on 2 cores) and
``smallest`` (the test's: well under a minute after compilation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from ..settings import (
    Fraction,
    NonEmptyStr,
    NonNegativeFloat,
    NonNegativeInt,
    NonNegativeMs,
    PositiveHz,
    PositiveInt,
    PositiveMs,
    Settings,
)
from ..validation import plain_errors


class DemoConfig(Settings):
    """Sizes and settings of every stage of ``cardiotwin demo``."""

    out_dir: Path = Field(Path("out/demo"), description="everything is written under it")
    seed: NonNegativeInt = Field(0, description="seed of the population, the example cell and "
                                                "the screen population")
    spread: Fraction = Field(0.2, description="multiplier range r: [1 - r, 1 + r] of the "
                                              "training population and the screen")
    n_cells: PositiveInt = Field(4000, description="cells of the training population")
    ap_duration_ms: PositiveMs = Field(4000.0, description="classification AP run per cell (ms)")
    decimate_to_hz: PositiveHz = Field(1000.0, description="I_total stored at this rate (Hz)")
    preset: NonEmptyStr = Field("posterior_flow", description="network preset "
                                                              "(cardiotwin.learn.PRESETS)")
    epochs: PositiveInt = Field(60, description="training epochs at most")
    input_pool: PositiveInt = Field(4, description="stored I_total samples averaged per network "
                                                 "input (4 at 1 kHz: 4 ms)")
    n_population_traces: PositiveInt = Field(30, description="cells drawn in the population figure")
    example_seed: NonNegativeInt = Field(5, description="seed of the synthetic example recording "
                                                   "(a beating cell)")
    twin_ap_ms: PositiveMs = Field(5000.0, description="twin's free-running AP (ms)")
    drug: NonEmptyStr = Field("E-4031", description="catalog drug of the screen")
    concentrations_nM: tuple[NonNegativeFloat, ...] = Field(
        (0.0, 10.0, 30.0, 100.0), min_length=1, description="screen concentrations (nM), "
                                                            "one or more, each >= 0")
    screen_cells: PositiveInt = Field(400, description="cells of the screen population")
    screen_prepace_ms: NonNegativeMs = Field(5000.0, description="unrecorded run per "
                                                               "concentration (ms)")
    screen_record_ms: PositiveMs = Field(5000.0, description="recorded run (ms)")
    num_cpus: PositiveInt | None = Field(None, description="CPUs of the local Ray cluster "
                                                         "(default: all)")


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
