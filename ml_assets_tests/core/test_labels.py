from datetime import UTC, date, datetime, timedelta

import polars as pl

from ml_assets.core.features import player_features
from ml_assets.core.labels import (
    activity_days,
    build_training_set,
    rolling_churn_labels,
    sample_snapshot_days,
)

D0 = date(2025, 1, 1)


def d(n: int) -> date:
    return D0 + timedelta(days=n)


def _events(pairs: list[tuple[str, int]]) -> pl.LazyFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(pairs))],
            "player_id": [p for p, _ in pairs],
            "event_time": [datetime(d(n).year, d(n).month, d(n).day, tzinfo=UTC) for _, n in pairs],
            "event_type": ["x"] * len(pairs),
            "value": [None] * len(pairs),
            "platform": [None] * len(pairs),
            "country": [None] * len(pairs),
            "app_version": [None] * len(pairs),
            "event_date": [d(n) for _, n in pairs],
        },
        schema_overrides={
            "value": pl.Float64,
            "platform": pl.String,
            "country": pl.String,
            "app_version": pl.String,
        },
    ).lazy()


def test_rolling_label_looks_only_at_the_horizon_after_the_snapshot():
    events = _events([("a", 0), ("a", 5), ("b", 0), ("b", 20), ("c", 0), ("c", 40)])
    snaps = pl.LazyFrame({"player_id": ["a", "b", "c"], "snapshot_date": [d(0)] * 3})
    out = rolling_churn_labels(snaps, activity_days(events), horizon_days=14, last_day=d(40)).collect()
    labels = dict(zip(out["player_id"], out["churned"], strict=True))
    assert labels == {"a": False, "b": True, "c": True}


def test_immature_snapshots_are_left_out():
    events = _events([("a", 0), ("a", 30)])
    snaps = pl.LazyFrame({"player_id": ["a", "a"], "snapshot_date": [d(10), d(20)]})
    out = rolling_churn_labels(snaps, activity_days(events), horizon_days=14, last_day=d(30)).collect()
    assert out["snapshot_date"].to_list() == [d(10)]


def test_sample_keeps_latest_day():
    days = [d(i) for i in range(10)]
    assert sample_snapshot_days(days, 3) == [d(0), d(3), d(6), d(9)]


def test_planted_future_events_do_not_leak_into_features():
    """Adding events after the snapshot changes the label but not one feature value of that snapshot."""
    base = [("a", 0), ("a", 2), ("b", 1)]
    leak = [("a", 12), ("a", 13), ("b", 14)]
    quiet = build_training_set(
        player_features(_events(base), d(0), d(5)), _events(base + [("z", 30)]), 14, 1, 10_000, 1
    )
    noisy = build_training_set(
        player_features(_events(base + leak), d(0), d(5)),
        _events(base + leak + [("z", 30)]),
        14,
        1,
        10_000,
        1,
    )
    feature_cols = [c for c in quiet.columns if c != "churned"]
    assert quiet.select(feature_cols).equals(noisy.select(feature_cols))
    last = pl.col("snapshot_date") == d(5)
    assert quiet.filter(last)["churned"].all() and not noisy.filter(last)["churned"].any()


def test_row_cap_keeps_every_snapshot_day_and_is_seeded():
    pairs = [(f"p{i}", day) for i in range(200) for day in (0, 1, 2, 40)]
    events = _events(pairs)
    features = player_features(events, d(0), d(2))
    capped = build_training_set(features, events, 14, 1, 150, seed=3)
    assert capped.height <= 150 and capped["snapshot_date"].n_unique() == 3
    assert capped.equals(build_training_set(features, events, 14, 1, 150, seed=3))
