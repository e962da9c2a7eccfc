"""Daily partitions: live lakes grow with the clock, finished logs keep their own days."""

from datetime import UTC, date, datetime

from ml_assets.core.events.landing import DataWindow
from ml_assets.core.settings import PartitionSettings
from ml_assets.defs.partitions import daily_partitions, partition_days

TODAY = date(2026, 11, 28)
NOW = datetime(2026, 11, 28, 9, tzinfo=UTC)


def test_a_historical_log_keeps_its_own_days():
    cdnow = DataWindow(date(1997, 1, 1), date(1998, 6, 30))
    keys = partition_days(daily_partitions(cdnow, PartitionSettings(), TODAY), NOW)
    assert (keys[0], keys[-1], len(keys)) == ("1997-01-01", "1998-06-30", 546)


def test_a_live_lake_ends_at_the_newest_complete_day_and_grows_with_the_clock():
    live = daily_partitions(DataWindow(date(2026, 10, 1), date(2026, 11, 27)), PartitionSettings(), TODAY)
    assert partition_days(live, NOW)[-1] == "2026-11-27"
    assert partition_days(live, datetime(2026, 11, 30, 0, 1, tzinfo=UTC))[-1] == "2026-11-29"


def test_the_mode_setting_overrides_auto():
    recent = DataWindow(date(2026, 11, 1), date(2026, 11, 20))
    archive = daily_partitions(recent, PartitionSettings(mode="archive"), TODAY)
    assert partition_days(archive, NOW)[-1] == "2026-11-20"
    old = DataWindow(date(2025, 1, 1), date(2025, 2, 1))
    assert (
        partition_days(daily_partitions(old, PartitionSettings(mode="live"), TODAY), NOW)[-1] == "2026-11-27"
    )
    # auto: 30 days is the line between a live game and a finished log
    stale = DataWindow(date(2026, 9, 1), date(2026, 10, 28))
    assert partition_days(daily_partitions(stale, PartitionSettings(), TODAY), NOW)[-1] == "2026-10-28"
