"""Typed, range-checked values for `ml_assets.toml`, and the one-line errors a bad value gets.

Tables of the file are parsed by strict Pydantic models (a string is never taken for a number), so
a wrong type or an out-of-range value fails when the settings load, before any run starts, with a
line that names the key, the value and what is allowed.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ml_assets.core.models.metrics import COMPARABLE, ESTIMABLE


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, each naming the file, key and allowed values."""


class Table(BaseModel):
    """A table of the settings file: strict types, unknown keys refused, immutable once parsed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(ge=1, description="a whole number >= 1")]
NonNegativeInt = Annotated[int, Field(ge=0, description="a whole number >= 0")]
AnyInt = Annotated[int, Field(description="a whole number")]
PositiveFloat = Annotated[float, Field(gt=0, description="a number > 0")]
NonNegativeFloat = Annotated[float, Field(ge=0, description="a number >= 0")]
OpenFraction = Annotated[float, Field(gt=0, lt=1, description="a number between 0 and 1, both excluded")]
Fraction = Annotated[float, Field(gt=0, le=1, description="a number > 0 and <= 1")]
Text = Annotated[str, Field(description="a string")]
Name = Annotated[str, Field(min_length=1, description="a non-empty string")]
Globs = Annotated[list[str], Field(description="a list of strings (glob patterns)")]


def _day(value: Any) -> Any:
    """A TOML date, or its text."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value  # left for the date check to reject, naming the key
    return value


Day = Annotated[date, BeforeValidator(_day), Field(description="a day, YYYY-MM-DD")]


def _comparable(metric: str) -> str:
    if metric not in COMPARABLE:
        raise ValueError(f"not a comparable metric: {metric!r}")
    return metric


def _estimable(metric: str) -> str:
    if metric not in ESTIMABLE:
        raise ValueError(f"not an estimable metric: {metric!r}")
    return metric


# A metric whose direction is known, so a promotion gate can compare it.
MetricName = Annotated[str, AfterValidator(_comparable), Field(description=f"one of {list(COMPARABLE)}")]
# A metric monitoring has both before labels mature (estimated) and after (realized).
MonitoredMetric = Annotated[str, AfterValidator(_estimable), Field(description=f"one of {list(ESTIMABLE)}")]

T = TypeVar("T", bound=Table)


def parse(model: type[T], table: Any, where: str) -> T:
    """`table` parsed as `model`; SettingsError with one line per problem, keys prefixed by `where`."""
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: must be a table, not {table!r}")
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        raise SettingsError("\n".join(_line(model, error, where) for error in exc.errors())) from None


def _line(model: type[Table], error: Any, where: str) -> str:
    loc = [str(part) for part in error["loc"]]
    key = f"{where}.{loc[0]}" if loc else where
    field = model.model_fields.get(loc[0]) if loc else None
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; known: {sorted(model.model_fields)}"
    if field is None:
        return f"{key}: {error['msg']}"
    allowed = field.description or _description(field.annotation) or error["msg"]
    item = f" (item {int(loc[1]) + 1})" if len(loc) > 1 and loc[1].isdigit() else ""
    return f"{key} = {error['input']!r}{item}: must be {allowed}"


def _description(annotation: Any) -> str | None:
    """The description carried by an optional field's `Annotated` type (`PositiveInt | None`)."""
    for arg in get_args(annotation):
        for meta in getattr(arg, "__metadata__", ()):
            if getattr(meta, "description", None):
                return str(meta.description)
    return None
