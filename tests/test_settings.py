"""The configuration base: declarative constraints and plain one-line errors."""

from __future__ import annotations

import pytest

from cardiotwin.settings import (
    ClosedFraction,
    Fraction,
    PositiveInt,
    PositiveMs,
    Settings,
    TemperatureK,
)


class _Run(Settings):
    n_cells: PositiveInt
    spread: Fraction = 0.4
    share: ClosedFraction = 1.0
    step_ms: PositiveMs = 10.0
    temperature_K: TemperatureK = 310.0


@pytest.mark.parametrize("fields, expected", [
    (dict(n_cells=0), "n_cells: Input should be greater than 0, found 0"),
    (dict(n_cells=3, spread=1.0), "spread: Input should be less than 1, found 1.0"),
    (dict(n_cells=3, spread=float("nan")), "spread: Input should be a finite number"),
    (dict(n_cells=3, share=1.5), "share: Input should be less than or equal to 1"),
    (dict(n_cells=3, step_ms=float("inf")), "step_ms: Input should be a finite number"),
    (dict(n_cells=3, temperature_K=1000), "temperature_K: Input should be less than or equal "
                                          "to 330"),
    (dict(n_cells=3, extra=1), "extra: Extra inputs are not permitted"),
    (dict(n_cells="many"), "n_cells: Input should be a valid integer"),
])
def test_constraints_give_one_plain_line(fields, expected):
    with pytest.raises(ValueError) as e:
        _Run.create(**fields)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert "pydantic" not in str(e.value)


def test_valid_values_pass_and_are_frozen():
    r = _Run.create(n_cells=5, spread=0.2, share=0.0, temperature_K=298)
    assert (r.n_cells, r.spread, r.share, r.temperature_K) == (5, 0.2, 0.0, 298.0)
    with pytest.raises(ValueError):
        r.n_cells = 6  # type: ignore[misc]


def test_every_invalid_field_reported():
    with pytest.raises(ValueError) as e:
        _Run.create(n_cells=-1, spread=2.0)
    assert str(e.value).count(";") == 1 and "n_cells" in str(e.value) and "spread" in str(e.value)


def test_from_json_text():
    assert _Run.from_json_text('{"n_cells": 4}').n_cells == 4
    with pytest.raises(ValueError, match="n_cells"):
        _Run.from_json_text('{"n_cells": 0}')
