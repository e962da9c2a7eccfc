"""Daily partitions over the landed data's own days: growing with the clock for a live game, closed
for a finished log.

- live: UTC days from the first landed day on, with no end. Dagster adds a partition each UTC
  midnight for the day that just ended (`end_offset=0`), so the daemon's sensors and schedules see
  new days without a code reload.
- archive: the first to the newest landed day. A historical log (CDNOW, 1997-1998) keeps its own
  500 days instead of growing ten thousand empty ones up to today; landing later days extends it
  at the next code load.
- auto (the default): live when the newest landed day is within `live_within_days` of today.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ml_assets.core.days import ONE_DAY
from ml_assets.core.events.landing import DataWindow
from ml_assets.core.settings import PartitionSettings


def utc_now() -> datetime:
    """The current UTC time: the one clock partitions are read by (tests move it)."""
    return datetime.now(UTC)


def utc_today() -> date:
    return utc_now().date()


def is_live(window: DataWindow | None, options: PartitionSettings, today: date) -> bool:
    """Whether the partitions grow with the clock (see the module docstring)."""
    if options.mode != "auto":
        return options.mode == "live"
    return window is None or window.last_day >= today - timedelta(days=options.live_within_days)


def daily_partitions(
    window: DataWindow | None, options: PartitionSettings | None = None, today: date | None = None
) -> dg.TimeWindowPartitionsDefinition:
    """The daily partitions of a lake whose landed data spans `window` (None: nothing landed yet)."""
    options = options or PartitionSettings()
    today = today or utc_today()
    if window is not None and window.last_day > today:
        # no day after today holds data yet: a window stretched by a stray far-future row (a lake
        # landed before the plausible-time rule) must not become millennia of partitions
        window = DataWindow(min(window.first_day, today), today)
    first = window.first_day if window else today - ONE_DAY
    if is_live(window, options, today):
        return dg.DailyPartitionsDefinition(start_date=first.isoformat(), timezone="UTC", end_offset=0)
    last = window.last_day if window else today
    return dg.DailyPartitionsDefinition(
        start_date=first.isoformat(), end_date=(last + ONE_DAY).isoformat(), timezone="UTC"
    )


def partition_days(partitions: dg.TimeWindowPartitionsDefinition, now: datetime | None = None) -> list[str]:
    """The partition keys (YYYY-MM-DD) that exist at `now` (default: the current time)."""
    return list(partitions.get_partition_keys(current_time=now or utc_now()))


def window_days(start: datetime, end: datetime) -> tuple[date, date]:
    """A partition time window [start, end) as its first and last day, both inclusive."""
    return start.date(), (end - ONE_DAY).date()


def run_window(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day of the partitions a run materializes."""
    return window_days(*context.partition_time_window)
