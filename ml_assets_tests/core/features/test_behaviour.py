"""Behaviour features: each family's values on a hand-checked log, point-in-time windows, switches."""

from datetime import UTC, date, datetime

import polars as pl
import pytest

from ml_assets.core.features.behaviour import (
    FAMILIES,
    BehaviourConfig,
    behaviour_columns,
    behaviour_features,
    for_model,
    frequent_types,
)
from ml_assets.core.models.training import within_budget


def _events(rows: list[tuple[str, datetime, str, float | None]]) -> pl.LazyFrame:
    frame = pl.DataFrame(
        rows,
        schema={
            "player_id": pl.String,
            "event_time": pl.Datetime("us", "UTC"),
            "event_type": pl.String,
            "value": pl.Float64,
        },
        orient="row",
    )
    return frame.with_columns(event_date=pl.col("event_time").dt.date()).lazy()


def _t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)  # 2024-01-01 is a Monday


EVENTS = _events(
    [
        ("a", _t(1, 10), "play", 10.0),
        ("a", _t(1, 10, 20), "buy", 2.0),
        ("a", _t(2, 9), "play", 20.0),
        ("a", _t(3, 23), "play", None),
        ("a", _t(4, 1), "play", 99.0),  # after the snapshot day: never seen by a row of Jan 3
        ("b", _t(2, 1), "play", 5.0),
    ]
)
ROWS = pl.DataFrame(
    {
        "player_id": ["a", "b", "c"],
        "snapshot_date": [date(2024, 1, 3)] * 3,
        "events_1d": [1, 0, 0],
        "events_7d": [4, 1, 0],
        "events_28d": [4, 1, 0],
    }
)


def test_each_family_on_a_hand_checked_log():
    config = BehaviourConfig(types=frequent_types(EVENTS, 2))
    out = behaviour_features(ROWS, EVENTS, config, tenure_days=3)
    a, b, c = out.rows(named=True)
    # tenure from the first event's time (Jan 1 10:00): day 0 runs to Jan 2 10:00
    assert [a[f"bh_tenure_day{k}_events"] for k in range(3)] == [3, 0, 1]
    assert a["bh_first_event_hour"] == 10.0 and a["bh_tenure_active_share"] == pytest.approx(2 / 3)
    # values: 10, 2, 20 (the null is no value); the 99 after Jan 3 is never read
    assert (a["bh_value_min"], a["bh_value_last"]) == (2.0, 20.0)
    assert a["bh_value_mean"] == pytest.approx(32 / 3)
    assert a["bh_value_slope"] > 0
    # gaps 20 min, 22 h 40 min, 38 h; the last event 1 h before the end of Jan 3
    assert a["bh_gap_median_h"] == pytest.approx(22 + 2 / 3, rel=1e-6)
    assert (a["bh_gap_max_h"], a["bh_gap_last_h"], a["bh_since_last_h"]) == (38.0, 38.0, 1.0)
    # sessions cut at gaps over 30 minutes: {10:00, 10:20}, {Jan 2 9:00}, {Jan 3 23:00}
    assert a["bh_sessions"] == 3 and a["bh_session_minutes_mean"] == pytest.approx(20 / 3)
    # when: 3 of 4 events between 06 and 12 UTC; Monday twice, Tuesday and Wednesday once
    assert (a["bh_share_hours_06_12"], a["bh_share_hours_18_24"]) == (0.75, 0.25)
    assert (a["bh_share_mon"], a["bh_share_tue"], a["bh_share_wed"]) == (0.5, 0.25, 0.25)
    # ratios of the feature table's windows
    assert (a["bh_events_ratio_1d_7d"], a["bh_events_ratio_7d_28d"]) == (0.25, 1.0)
    # per type: the two most frequent types
    assert (a["bh_buy_events"], a["bh_play_events"], a["bh_play_value_mean"]) == (1, 3, 15.0)
    assert a["bh_play_gap_last_h"] == 38.0
    assert b["bh_events"] == 1 and b["bh_since_last_h"] == 47.0 and b["bh_gap_max_h"] is None
    # no events in the window: counts 0, statistics null
    assert (c["bh_events"], c["bh_sessions"], c["bh_play_events"]) == (0, 0, 0)
    assert c["bh_value_mean"] is None and c["bh_gap_median_h"] is None


def test_events_at_the_same_instant_give_the_same_features_in_any_order():
    # a log with dates only: several events of a day share one timestamp
    same = [("a", _t(2, 0), "buy", v) for v in (3.0, 12.0, None, 7.0)]
    outs = [
        behaviour_features(ROWS, _events(order), BehaviourConfig(families=("values",)), tenure_days=3)
        for order in (same, same[::-1], same[1:] + same[:1])
    ]
    assert outs[0]["bh_value_last"][0] == 12.0  # the largest value of the instant comes last
    assert all(out.equals(outs[0]) for out in outs)


def test_the_trailing_window_of_other_models_and_row_order():
    rows = ROWS.reverse()
    out = behaviour_features(rows, EVENTS, BehaviourConfig(window_days=2))
    assert out["player_id"].to_list() == ["c", "b", "a"]
    # Jan 2 and 3 only: a's Jan 1 events are outside a 2-day window
    assert out.filter(pl.col("player_id") == "a")["bh_events"].item() == 2
    assert "bh_tenure_day0_events" not in out.columns  # tenure is for new-player models


def test_families_switch_off_and_an_unknown_family_is_refused():
    only = BehaviourConfig(families=("gaps",))
    columns = behaviour_columns(only, tenure_days=None)
    assert columns == ["bh_events", "bh_gap_median_h", "bh_gap_max_h", "bh_gap_last_h", "bh_since_last_h"]
    assert behaviour_features(ROWS, EVENTS, only).columns == [*ROWS.columns, *columns]
    all_on = behaviour_columns(BehaviourConfig(), tenure_days=5)
    assert len(all_on) > len(columns) and set(FAMILIES) == set(BehaviourConfig().families)
    with pytest.raises(ValueError, match="unknown feature families"):
        BehaviourConfig(families=("gaps", "vibes"))


def test_no_rows_gives_every_column_and_scoring_finds_a_models_types():
    config = BehaviourConfig(types=("buy", "play"))
    empty = behaviour_features(ROWS.clear(), EVENTS, config)
    assert empty.height == 0 and empty.columns == [*ROWS.columns, *behaviour_columns(config, None)]
    # a model that kept one per-type column of "play" gets "play" computed, not "buy"
    scoring = for_model(["bh_play_gap_last_h", "events_7d"], BehaviourConfig(), EVENTS)
    assert scoring.types == ("play",)
    assert BehaviourConfig.from_dict(config.as_dict()) == config


def test_the_feature_budget_keeps_the_highest_probe_gains_in_input_order():
    kept, dropped = within_budget(["a", "b", "c", "d"], {"a": 1.0, "b": 5.0, "c": 0.5, "d": 3.0}, 2)
    assert kept == ["b", "d"]
    assert dropped == {"a": "over_budget: gain rank 3 of 4", "c": "over_budget: gain rank 4 of 4"}
    assert within_budget(["a", "b"], {}, 0) == (["a", "b"], {})
