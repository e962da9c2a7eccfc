from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ml_assets.core.features.player import EventTypeCollision, EventVocabulary, event_column
from ml_assets.core.features.snapshots import player_features


def _events(rows: list[tuple[str, date, str, float | None]]) -> pl.LazyFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "player_id": [r[0] for r in rows],
            "event_time": [datetime(r[1].year, r[1].month, r[1].day, 12, tzinfo=UTC) for r in rows],
            "event_type": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "platform": ["ios"] * len(rows),
            "country": ["US"] * len(rows),
            "app_version": ["1.0"] * len(rows),
            "event_date": [r[1] for r in rows],
        }
    ).lazy()


D = date(2025, 1, 1)


def day(n: int) -> date:
    return D + timedelta(days=n)


def test_windows_count_only_events_on_or_before_snapshot():
    events = _events(
        [
            ("a", day(0), "purchase", 5.0),
            ("a", day(3), "purchase", 10.0),
            ("a", day(9), "session_start", None),
            ("a", day(40), "purchase", 100.0),  # after every snapshot: must never be seen
            ("b", day(9), "purchase", 1.0),
        ]
    )
    f = player_features(events, day(9), day(10), windows=(1, 7, 28)).collect()
    a9 = f.filter((pl.col("player_id") == "a") & (pl.col("snapshot_date") == day(9))).row(0, named=True)
    assert a9["ev_purchase_count_28d"] == 2
    assert a9["ev_purchase_count_7d"] == 1  # days 3..9
    assert a9["ev_purchase_count_1d"] == 0
    assert a9["ev_purchase_value_sum_28d"] == 15.0
    assert a9["ev_purchase_value_max"] == 10.0
    assert a9["ev_purchase_recency_days"] == 6
    assert a9["ev_session_start_count_1d"] == 1
    assert a9["events_7d"] == 2 and a9["active_days_28d"] == 3
    assert a9["tenure_days"] == 9 and a9["recency_days"] == 0
    assert a9["game_is_payer"] is True
    a10 = f.filter((pl.col("player_id") == "a") & (pl.col("snapshot_date") == day(10))).row(0, named=True)
    assert a10["recency_days"] == 1 and a10["ev_session_start_count_1d"] == 0
    assert a10["ev_purchase_value_total"] == 15.0
    # b joined on day 9: tenure 0, no history before
    b9 = f.filter((pl.col("player_id") == "b") & (pl.col("snapshot_date") == day(9))).row(0, named=True)
    assert b9["tenure_days"] == 0 and b9["ev_session_start_recency_days"] is None


def test_population_is_players_active_in_longest_window():
    events = _events([("a", day(0), "x", None), ("b", day(20), "x", None)])
    f = player_features(events, day(0), day(40), windows=(1, 7)).collect()
    a_days = f.filter(pl.col("player_id") == "a")["snapshot_date"].to_list()
    assert a_days == [day(i) for i in range(7)]
    assert f.filter(pl.col("player_id") == "b")["snapshot_date"].min() == day(20)
    assert f.filter(pl.col("player_id") == "b")["snapshot_date"].max() == day(26)
    assert f.select(pl.struct("player_id", "snapshot_date").is_unique().all()).item()


def test_game_features_only_when_types_exist():
    events = _events(
        [
            ("a", day(0), "session_start", None),
            ("a", day(0), "session_end", 300.0),
            ("a", day(1), "session_start", None),
            ("a", day(1), "session_end", 100.0),
            ("a", day(1), "level_start", 1.0),
            ("a", day(1), "level_fail", 1.0),
            ("a", day(1), "level_start", 1.0),
            ("a", day(1), "level_complete", 1.0),
        ]
    )
    f = player_features(events, day(1), day(1)).collect().row(0, named=True)
    assert f["game_session_length_mean_7d"] == 200.0
    assert f["game_level_fail_rate_28d"] == 0.5
    assert f["game_level_max"] == 1.0
    assert "game_is_payer" not in f
    generic = player_features(_events([("a", day(0), "x", 1.0)]), day(0), day(0)).collect()
    assert not [c for c in generic.columns if c.startswith("game_")]


def test_chunks_equal_the_whole():
    from ml_assets.core.features.snapshots import player_feature_chunks

    rows = [
        (p, day(d), t, float(d)) for p in "abc" for d in range(0, 30, 3) for t in ("purchase", "session_end")
    ]
    events = _events(rows)
    whole = player_features(events, day(2), day(25)).collect()
    pieces = list(player_feature_chunks(events, day(2), day(25), chunk_rows=20))
    assert len(pieces) == 3
    assert {p["player_id"].n_unique() for p in pieces} == {1}  # whole players per piece
    assert (
        pl.concat(pieces).sort("player_id", "snapshot_date").equals(whole.sort("player_id", "snapshot_date"))
    )


def test_lifetime_max_stays_within_each_player():
    # "a" sorts first with the larger values: a running maximum must not carry over to "b"
    events = _events(
        [
            ("a", day(0), "purchase", 50.0),
            ("a", day(2), "purchase", 7.5),
            ("b", day(1), "session_start", None),
            ("b", day(2), "purchase", 3.25),
            ("b", day(4), "purchase", 9.0),
            ("b", day(5), "purchase", 0.0),
        ]
    )
    f = player_features(events, day(1), day(5)).collect()
    max_by_day = {
        (r["player_id"], r["snapshot_date"]): r["ev_purchase_value_max"] for r in f.iter_rows(named=True)
    }
    assert max_by_day[("a", day(1))] == 50.0 and max_by_day[("a", day(5))] == 50.0
    assert max_by_day[("b", day(1))] is None  # no purchase yet
    assert [max_by_day[("b", day(d))] for d in (2, 3, 4, 5)] == [3.25, 3.25, 9.0, 9.0]


def test_snapshot_index_lags_only_within_a_run_of_the_same_player():
    from ml_assets.core.features.player import snapshot_index

    totals = pl.DataFrame(
        {"event_date": [day(0), day(3), day(1)], "_pc": pl.Series([1, 1, 2], dtype=pl.Int32)}
    )
    index = snapshot_index(totals, day(0), day(4), windows=(1, 3))
    # population: within 3 days of an active day. Player 1: days 0-2 from row 0, 3-4 from row 1;
    # player 2: days 1-3 from row 2
    assert index.days.tolist() == [_n(d) for d in [0, 1, 2, 3, 4, 1, 2, 3]]
    assert index.rows.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    none = 3  # the zero row after the totals
    assert index.lagged[1].tolist() == [none, 0, 0, 0, 1, none, 2, 2]
    assert index.lagged[3].tolist() == [none, none, none, 0, 0, none, none, none]

    # a gap longer than the window: the days before the next active day still stand for row 0
    gap = pl.DataFrame({"event_date": [day(0), day(8)], "_pc": pl.Series([1, 1], dtype=pl.Int32)})
    index = snapshot_index(gap, day(0), day(9), windows=(1, 3))
    assert index.days.tolist() == [_n(d) for d in [0, 1, 2, 8, 9]]
    assert index.lagged[1].tolist() == [2, 0, 0, 0, 1]
    assert index.lagged[3].tolist() == [2, 2, 2, 0, 0]


def _n(d: int) -> int:
    return (day(d) - date(1970, 1, 1)).days


def test_no_events_give_an_empty_table_and_no_pieces():
    from ml_assets.core.features.snapshots import player_feature_chunks

    events = _events([("a", day(0), "x", 1.0)]).filter(pl.col("player_id") == "nobody")
    empty = player_features(events, day(0), day(3)).collect()
    assert empty.height == 0 and {"player_id", "snapshot_date", "events_7d", "platform"} <= set(empty.columns)
    assert list(player_feature_chunks(events, day(0), day(3))) == []


def test_attributes_are_the_latest_known_and_never_cross_players():
    events = _events(
        [
            ("a", day(0), "session_start", None),
            ("a", day(1), "session_start", None),  # no platform that day: the day-0 one holds
            ("a", day(2), "session_start", None),
            ("b", day(0), "session_start", None),  # "b" never reports one: "a"'s must not leak in
            ("b", day(2), "session_start", None),
        ]
    ).with_columns(
        platform=pl.when(pl.col("player_id") == "b")
        .then(None)
        .when(pl.col("event_date") == day(0))
        .then(pl.lit("ios"))
        .when(pl.col("event_date") == day(2))
        .then(pl.lit("android"))
    )
    f = player_features(events, day(0), day(2)).collect()
    platform = {(r["player_id"], r["snapshot_date"]): r["platform"] for r in f.iter_rows(named=True)}
    assert [platform[("a", day(d))] for d in (0, 1, 2)] == ["ios", "ios", "android"]
    assert [platform[("b", day(d))] for d in (0, 1, 2)] == [None, None, None]
    assert f["country"].to_list() == ["US"] * 6  # no nulls: taken as they are


def test_a_failure_in_the_snapshot_index_thread_reaches_the_caller(monkeypatch):
    from ml_assets.core.features import player as features
    from ml_assets.core.features.snapshots import player_feature_chunks

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("index failed")

    monkeypatch.setattr(features, "snapshot_index", broken)
    events = _events([("a", day(0), "purchase", 1.0), ("b", day(1), "purchase", 2.0)])
    with pytest.raises(RuntimeError, match="index failed"):
        list(player_feature_chunks(events, day(0), day(3), chunk_rows=2))


def test_event_types_that_sanitise_alike_get_distinct_stable_columns():
    """`Purchase`/`purchase`, `level-up`/`level_up` and two non-ASCII names each keep their counts."""
    types = ["Purchase", "purchase", "level-up", "level_up", "клик", "点击"]
    rows = [("p1", day(0), t, None) for i, t in enumerate(types) for _ in range(i + 1)]
    out = player_features(_events(rows), day(0), day(0), windows=[1]).collect()
    counts = {t: out[f"{event_column(t)}_count_1d"][0] for t in types}
    assert counts == {t: i + 1 for i, t in enumerate(types)}
    assert event_column("purchase") == "ev_purchase" and event_column("level_up") == "ev_level_up"
    assert event_column("Purchase").startswith("ev_purchase_") and event_column("клик").startswith("ev_x")
    # the name depends on the type alone, not on which other types exist
    assert EventVocabulary(("Purchase",), frozenset()).column("Purchase") == event_column("Purchase")
    assert len(event_column("x" * 1_000_000)) < 60


def test_a_column_collision_names_both_event_types(monkeypatch):
    monkeypatch.setattr("ml_assets.core.features.player.event_column", lambda t: "ev_same")
    with pytest.raises(EventTypeCollision, match=r"'a' and 'b' would both be feature column 'ev_same'"):
        EventVocabulary(("a", "b"), frozenset())
