"""Daily partitions that span the landed data's own days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ml_assets.core.landing import DataWindow


def daily_partitions(window: DataWindow | None) -> dg.DailyPartitionsDefinition:
    """UTC days from the first to the last landed day; today only while nothing has landed."""
    if window is None:
        today = datetime.now(UTC).date()
        window = DataWindow(today, today)
    return dg.DailyPartitionsDefinition(
        start_date=window.first_day.isoformat(),
        end_date=(window.last_day + timedelta(days=1)).isoformat(),
        timezone="UTC",
    )


def window_days(start: datetime, end: datetime) -> tuple[date, date]:
    """A partition time window [start, end) as its first and last day, both inclusive."""
    return start.date(), (end - timedelta(days=1)).date()


def day_chunks(first: date, last: date, days: int) -> list[tuple[date, date]]:
    """[first, last] cut into consecutive inclusive ranges of at most `days` days."""
    out = []
    while first <= last:
        end = min(last, first + timedelta(days=days - 1))
        out.append((first, end))
        first = end + timedelta(days=1)
    return out
