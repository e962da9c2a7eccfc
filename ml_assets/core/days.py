"""UTC day ranges: the one place that walks days, so every stage cuts a window the same way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, timedelta

import numpy as np

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


def piece_days(rows_per_day: Sequence[int], days: int, max_rows: int) -> int:
    """Days per piece for a window whose days hold `rows_per_day` rows: at least `days`, and more
    while every run of that many consecutive days holds at most `max_rows` rows.

    A piece's fixed cost (a scan, a collect, a sort) is paid per piece, so a long log of thin days
    (546 days of 130 events) is cut by rows, not by calendar: one piece instead of 78. A window whose
    `days`-day runs already exceed `max_rows` keeps `days`, as memory was sized for.
    """
    if days < 1:
        raise ValueError(f"day ranges need at least 1 day each, not {days}")
    counts = np.asarray(rows_per_day, dtype=np.int64)
    if counts.size <= days:
        return days
    sums = np.concatenate([[0], np.cumsum(counts)])

    def fits(width: int) -> bool:
        return int((sums[width:] - sums[:-width]).max()) <= max_rows

    if not fits(days):
        return days
    low, high = days, counts.size  # fits(low); the largest width that fits is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low
