"""The base of every stage's configuration: a frozen pydantic model that forbids unknown
fields, with declarative constraints (the ``Annotated`` types below; no hand-written
``if v <= 0: raise`` validators) and :meth:`Settings.create`, which turns a validation error
into one plain line per invalid field (:func:`cardiotwin.validation.plain_errors`).

Units are in the names: ``PositiveMs`` (ms), ``PositiveHz`` (Hz), ``TemperatureK`` (K).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .validation import plain_errors

TEMPERATURE_RANGE_K = (250.0, 330.0)

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
"""A fraction in the open interval (0, 1), e.g. a multiplier range 0.4 = +-40%."""
ClosedFraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A fraction in [0, 1], e.g. a share of cells or a compensation level."""
PositiveMs = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeMs = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveHz = Annotated[float, Field(gt=0, allow_inf_nan=False)]
TemperatureK = Annotated[float, Field(ge=TEMPERATURE_RANGE_K[0], le=TEMPERATURE_RANGE_K[1],
                                      allow_inf_nan=False)]
"""A temperature in K within the range the model's Q10 scaling is meant for (250-330 K)."""
NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """A stage configuration: frozen, unknown fields refused, constraints declared on fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def create(cls: type[S], **fields: Any) -> S:
        """Like the constructor, but a ValueError with one plain line per invalid field (no
        pydantic boilerplate): for command lines, settings files and HTTP bodies."""
        try:
            return cls(**fields)
        except ValidationError as e:
            raise plain_errors(e) from None

    @classmethod
    def from_json_text(cls: type[S], text: str | bytes) -> S:
        """Validate a JSON document (ValueError with plain lines)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise plain_errors(e) from None
