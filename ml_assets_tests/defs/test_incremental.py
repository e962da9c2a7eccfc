"""player_features through Dagster: a daily refresh, one run a day, writes what one backfill run
writes, and reads the state of the days before instead of all history."""

from datetime import date, timedelta

import polars as pl
from polars.testing import assert_frame_equal

from ml_assets_tests.conftest import make_lake, read_table, run_graph

SELECT = ["raw_events", "clean_events", "event_type_counts", "player_state", "player_features"]
FIRST, LAST = date(2025, 1, 1), date(2025, 2, 14)


def _table(settings, name: str, column: str) -> pl.DataFrame:
    frame = read_table(settings, name)
    return frame.select(sorted(frame.columns)).sort(column, "player_id")


def test_daily_runs_write_the_same_state_and_features_as_one_backfill(tmp_path, instance):
    days = (LAST - FIRST).days + 1
    backfill = make_lake(tmp_path / "backfill", players=250, days=days)
    assert run_graph(backfill, instance, FIRST.isoformat(), LAST.isoformat(), SELECT).success

    daily = make_lake(tmp_path / "daily", players=250, days=days)
    split = LAST - timedelta(days=7)
    assert run_graph(daily, instance, FIRST.isoformat(), split.isoformat(), SELECT).success
    d = split + timedelta(days=1)
    while d <= LAST:
        assert run_graph(daily, instance, d.isoformat(), d.isoformat(), SELECT).success, d
        d += timedelta(days=1)
    # a rerun of a day changes nothing
    again = LAST - timedelta(days=3)
    assert run_graph(daily, instance, again.isoformat(), again.isoformat(), SELECT[2:]).success

    for name, column in (("player_state", "state_date"), ("player_features", "snapshot_date")):
        expected, got = _table(backfill, name, column), _table(daily, name, column)
        assert got.height > 1000
        assert_frame_equal(got, expected, check_exact=True)


def _failure(result) -> tuple[str, str]:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_key, failure.step_failure_data.error.cause.message


def test_state_and_counts_refuse_to_run_over_missing_days(tmp_path, instance):
    settings = make_lake(tmp_path / "h", players=100, days=12)
    assert run_graph(settings, instance, "2025-01-01", "2025-01-05", SELECT).success
    result = run_graph(settings, instance, "2025-01-10", "2025-01-10", SELECT)
    assert not result.success
    step, message = _failure(result)
    assert step == "event_type_counts"
    assert "event_type_counts is not materialized for 1 day(s) it needs (2025-01-09 .. 2025-01-09)" in message
    result = run_graph(settings, instance, "2025-01-10", "2025-01-10", ["player_state"])
    step, message = _failure(result)
    assert step == "player_state"
    assert "player_state is not materialized for 4 day(s) it needs (2025-01-06 .. 2025-01-09)" in message
