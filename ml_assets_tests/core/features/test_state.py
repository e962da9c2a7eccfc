"""The player state table: built a day at a time it equals one pass over all days, bit for bit,
and features from it equal features from the events."""

from datetime import date, timedelta

import polars as pl
from polars.testing import assert_frame_equal

from ml_assets.core.events.cleaning import clean_events
from ml_assets.core.events.landing import conform, partition_day
from ml_assets.core.features.player import daily_activity
from ml_assets.core.features.snapshots import build_state, counts_of, features_from_state, player_features
from ml_assets.core.features.state import (
    CARRY_DAYS,
    STATE_DATE,
    advance_state,
    cumulative_counts,
    event_type_counts,
    latest_state,
    state_vocabulary,
)
from ml_assets.simulator.game import SimulationParams, simulate_days
from ml_assets_tests.core.features.test_player import _events, day

START = date(2025, 1, 1)


def _game(days: int, players: int = 250) -> pl.DataFrame:
    params = SimulationParams(players=players, days=days, seed=5, start=START)
    batches = [
        conform(frame, f"b{d}", "simulator") for d, frame in simulate_days(params, START, params.last_day)
    ]
    return clean_events(pl.concat(batches).with_columns(partition_day()).lazy(), 3).clean


def _day_by_day(events: pl.LazyFrame, counts: pl.DataFrame, first: date, last: date) -> pl.DataFrame:
    """The state as a daily refresh writes it: each day from the stored rows of the days before."""
    vocab = state_vocabulary(counts["event_type"], counts.filter(pl.col("valued_events") > 0)["event_type"])
    stored = build_state(events, counts.filter(pl.col("event_date") < first), first - timedelta(days=1))
    d = first
    while d <= last:
        prior = latest_state(stored.lazy(), d - timedelta(days=1), vocab)
        today = daily_activity(events.filter(pl.col("event_date") == d), vocab)
        stored = pl.concat([stored, advance_state(prior, today, vocab, d, d)], how="diagonal_relaxed")
        d += timedelta(days=1)
    return stored


def test_a_state_built_day_by_day_equals_one_pass_bit_for_bit():
    clean = _game(days=70)
    last = clean["event_date"].max()
    events, counts = clean.lazy(), counts_of(clean.lazy(), last)
    whole = build_state(events, counts, last)
    daily = _day_by_day(events, counts, last - timedelta(days=24), last)
    order = ["player_id", STATE_DATE]
    assert_frame_equal(daily.select(whole.columns).sort(order), whole.sort(order), check_exact=True)
    # features of the last 10 days from the stored state equal those computed from the events
    first = last - timedelta(days=9)
    from_state = pl.concat(features_from_state(daily.lazy(), counts.lazy(), first, last))
    from_events = player_features(events, first, last).collect()
    assert from_state.height > 1000
    assert_frame_equal(from_state, from_events, check_exact=True)


def test_every_player_has_a_row_in_any_carry_window_and_a_returning_player_keeps_lifetime_totals():
    events = _events(
        [("a", day(0), "purchase", 5.0), ("a", day(1), "purchase", 7.0), ("b", day(0), "level_up", None)]
        + [("b", day(k), "level_up", None) for k in range(2, 100, 3)]
        + [("a", day(90), "session_start", None)]
    )
    counts = counts_of(events, day(100))
    state = build_state(events, counts, day(100))
    a_days = sorted(state.filter(pl.col("player_id") == "a")[STATE_DATE].to_list())
    assert max((b - x).days for x, b in zip(a_days, a_days[1:], strict=False)) <= CARRY_DAYS
    assert state.filter((pl.col("player_id") == "a") & ~pl.col("active")).height == 3  # days 29, 57, 85
    f = (
        player_features(events, day(90), day(90))
        .collect()
        .filter(pl.col("player_id") == "a")
        .row(0, named=True)
    )
    assert f["events_total"] == 3 and f["tenure_days"] == 90 and f["recency_days"] == 0
    assert f["ev_purchase_count_total"] == 2 and f["ev_purchase_value_max"] == 7.0
    assert f["ev_purchase_recency_days"] == 89 and f["ev_purchase_count_28d"] == 0
    assert f["active_days_28d"] == 1 and f["events_28d"] == 1


def test_a_type_first_seen_late_has_zero_counts_in_older_state_rows():
    early = [("a", day(k), "session_start", None) for k in range(0, 10)]
    late = [("a", day(12), "purchase", 3.0), ("b", day(12), "purchase", 1.0)]
    events = _events(early + late)
    counts = counts_of(events, day(12))
    before = build_state(events, counts.filter(pl.col("event_date") <= day(10)), day(10))
    assert "ev_purchase_cum_n" not in before.columns
    vocab = state_vocabulary(counts["event_type"], ["purchase"])
    prior = latest_state(before.lazy(), day(11), vocab)
    after = advance_state(
        prior, daily_activity(events.filter(pl.col("event_date") == day(12)), vocab), vocab, day(12), day(12)
    )
    stored = pl.concat([before, after], how="diagonal_relaxed")
    got = pl.concat(features_from_state(stored.lazy(), counts.lazy(), day(12), day(12)))
    assert_frame_equal(got, player_features(events, day(12), day(12)).collect(), check_exact=True)


def test_cumulative_counts_continue_from_the_day_before():
    events = _events(
        [("a", day(0), "purchase", 1.0), ("a", day(2), "level_up", None), ("b", day(3), "purchase", None)]
    )
    whole = counts_of(events, day(4))
    first_part = counts_of(events, day(1))
    prior = first_part.filter(pl.col("event_date") == day(1))
    rest = cumulative_counts(
        prior, event_type_counts(events.filter(pl.col("event_date") >= day(2))), day(2), day(4)
    )
    assert_frame_equal(pl.concat([first_part, rest]), whole)
    last = whole.filter(pl.col("event_date") == day(4))
    assert dict(zip(last["event_type"], last["events"], strict=True)) == {"level_up": 1, "purchase": 2}
    assert whole.filter(pl.col("event_date") == day(1))["event_type"].to_list() == ["purchase"]
