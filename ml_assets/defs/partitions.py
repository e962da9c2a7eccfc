"""Daily partitions that span the landed data's own days."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

from ml_assets.core.days import ONE_DAY
from ml_assets.core.events.landing import DataWindow


def daily_partitions(window: DataWindow | None) -> dg.TimeWindowPartitionsDefinition:
    """UTC days from the first to the last landed day; today only while nothing has landed."""
    if window is None:
        today = datetime.now(UTC).date()
        window = DataWindow(today, today)
    return dg.DailyPartitionsDefinition(
        start_date=window.first_day.isoformat(),
        end_date=(window.last_day + ONE_DAY).isoformat(),
        timezone="UTC",
    )


def window_days(start: datetime, end: datetime) -> tuple[date, date]:
    """A partition time window [start, end) as its first and last day, both inclusive."""
    return start.date(), (end - ONE_DAY).date()


def run_window(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day of the partitions a run materializes."""
    return window_days(*context.partition_time_window)
