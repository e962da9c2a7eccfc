"""UTC day ranges: the one place that walks days, so every stage cuts a window the same way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

ONE_DAY = timedelta(days=1)


def each_day(first: date, last: date) -> Iterator[date]:
    """Every day from `first` to `last`, both inclusive."""
    day = first
    while day <= last:
        yield day
        day += ONE_DAY


def day_chunks(first: date, last: date, days: int) -> list[tuple[date, date]]:
    """[first, last] cut into consecutive inclusive ranges of at most `days` days (`days` >= 1)."""
    if days < 1:
        raise ValueError(f"day ranges need at least 1 day each, not {days}")
    out = []
    while first <= last:
        end = min(last, first + timedelta(days=days - 1))
        out.append((first, end))
        first = end + ONE_DAY
    return out
