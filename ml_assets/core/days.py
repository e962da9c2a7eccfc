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


def next_chunk_days(days: int, rows: int, least: int, max_rows: int) -> int:
    """Days to read next after a chunk of `days` days that held `rows` rows: as many as `max_rows`
    rows at that rate, at least `least` days (the configured chunk) and at most twice `days`, so a
    busier period that follows overshoots `max_rows` little. `max_rows` <= 0: always `least`."""
    if max_rows <= 0:
        return least
    fit = max_rows * days // rows if rows else 2 * days
    return max(least, min(2 * days, fit))
