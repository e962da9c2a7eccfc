from datetime import UTC, date, datetime

import polars as pl

from ml_assets.core.events.cleaning import CLEAN_COLUMNS, FieldLimits, clean_events, reason_counts
from ml_assets.core.events.landing import LANDING_SCHEMA, conform, partition_day


def _landed(rows: list[dict]) -> pl.LazyFrame:
    frame = pl.DataFrame(rows, schema=LANDING_SCHEMA)
    return frame.with_columns(partition_day()).lazy()


def _row(event_id: str, **kw) -> dict:
    base = {
        "event_id": event_id,
        "player_id": "p1",
        "event_time": datetime(2025, 1, 10, 8, tzinfo=UTC),
        "event_type": "purchase",
        "value": 1.0,
        "received_date": date(2025, 1, 10),
        "batch_id": "b1",
        "source": "t",
    }
    return {k: kw.get(k, base.get(k)) for k in LANDING_SCHEMA}


def test_each_rule_quarantines_with_its_reason_and_nothing_is_lost():
    rows = [
        _row("ok"),
        _row("ok2", event_type="  custom_type  ", value=None),
        _row("", player_id="p2"),
        _row("np", player_id=" "),
        _row("bt", event_time=None, event_time_raw="2025-13-45"),
        _row("et", event_type=""),
        _row("nv", value=-3.0),
        _row("fut", received_date=date(2025, 1, 9)),
        _row("late_ok", received_date=date(2025, 1, 13)),
        _row("late_bad", received_date=date(2025, 1, 14)),
        _row("ok", received_date=date(2025, 1, 11), batch_id="b2"),  # re-delivery of "ok"
    ]
    result = clean_events(_landed(rows), watermark_days=3)
    assert sorted(result.clean["event_id"].to_list()) == ["late_ok", "ok", "ok2"]
    reasons = dict(zip(result.quarantined["event_id"], result.quarantined["reason"], strict=True))
    assert reasons == {
        "": "missing_event_id",
        "np": "missing_player_id",
        "bt": "malformed_event_time",
        "et": "empty_event_type",
        "nv": "negative_value",
        "fut": "event_time_after_receipt",
        "late_bad": "late_beyond_watermark",
        "ok": "duplicate_event_id",
    }
    assert result.clean.height + result.quarantined.height == len(rows)
    # the earliest delivery is the one kept
    kept = result.clean.filter(pl.col("event_id") == "ok")
    assert kept["received_date"].to_list() == [date(2025, 1, 10)]
    assert result.clean.filter(pl.col("event_id") == "ok2")["event_type"].to_list() == ["custom_type"]
    assert result.clean.columns == CLEAN_COLUMNS
    assert reason_counts(result.quarantined)["duplicate_event_id"] == 1


def test_invalid_copy_does_not_shadow_valid_delivery():
    rows = [
        _row("x", value=-1.0, received_date=date(2025, 1, 10)),
        _row("x", received_date=date(2025, 1, 11)),
    ]
    result = clean_events(_landed(rows), watermark_days=3)
    assert result.clean["event_id"].to_list() == ["x"]
    assert result.quarantined["reason"].to_list() == ["negative_value"]


def test_cleaning_is_idempotent():
    rows = [_row("a"), _row("a", batch_id="b2"), _row("b", value=-1.0)]
    one, two = clean_events(_landed(rows), 3), clean_events(_landed(rows), 3)
    assert one.clean.equals(two.clean) and one.quarantined.equals(two.quarantined)


def test_a_field_over_its_limit_is_quarantined_not_featurised():
    day = date(2025, 1, 1)
    rows = pl.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "player_id": ["p", "p", "p"],
            "event_time": [datetime(2025, 1, 1, 12, tzinfo=UTC)] * 3,
            "event_type": ["play", "x" * 1_000_000, "play"],
            "properties": [None, None, "{" + '"k": "' + "v" * 200 + '"}'],
            "received_date": [day] * 3,
        }
    )
    landed = conform(rows, "batch", "test").with_columns(partition_day()).lazy()
    assert set(LANDING_SCHEMA) <= set(landed.collect_schema().names())
    result = clean_events(landed, watermark_days=3, limits=FieldLimits(text=1_000, properties=100))
    assert result.clean["event_id"].to_list() == ["a"]
    assert result.quarantined.select("event_id", "reason").rows() == [
        ("b", "field_too_long"),
        ("c", "field_too_long"),
    ]


def test_ids_seen_on_earlier_days_and_repeats_within_the_horizon():
    from ml_assets.core.events.cleaning import repeats_within

    day = date(2025, 1, 9)
    rows = pl.DataFrame(
        {
            "event_id": ["old", "new"],
            "player_id": ["p", "p"],
            "event_time": [datetime(2025, 1, 9, 12, tzinfo=UTC)] * 2,
            "event_type": ["play", "play"],
            "received_date": [day, day],
        }
    )
    landed = conform(rows, "batch", "test").with_columns(partition_day()).lazy()
    result = clean_events(landed, watermark_days=3, seen_ids=pl.Series(["old"]))
    assert result.clean["event_id"].to_list() == ["new"]
    assert result.quarantined.select("event_id", "reason").rows() == [("old", "duplicate_event_id")]
    ids = pl.DataFrame(
        {
            "event_id": ["a", "a", "b", "b", "c"],
            "event_date": [
                date(2025, 1, 1),
                date(2025, 1, 8),
                date(2025, 1, 1),
                date(2025, 1, 9),
                date(2025, 1, 1),
            ],
        }
    )
    assert repeats_within(ids, horizon_days=7) == 1  # a, 7 days apart; b is 8 days apart


def test_repeats_within_counts_each_later_copy_near_the_one_before():
    from ml_assets.core.events.cleaning import repeats_within

    # an id clean three times, unsorted: each copy within the horizon of the copy before it counts
    ids = pl.DataFrame(
        {
            "event_id": ["x", "y", "x", "x", "y"],
            "event_date": [
                date(2025, 1, 20),
                date(2025, 1, 1),
                date(2025, 1, 1),
                date(2025, 1, 3),
                date(2025, 1, 1),
            ],
        }
    )
    assert repeats_within(ids, horizon_days=2) == 2  # x: 1 -> 3 (2 days); y twice on one day
    assert repeats_within(ids, horizon_days=17) == 3  # and x: 3 -> 20
    assert repeats_within(ids.filter(pl.col("event_id") == "y").head(1), horizon_days=30) == 0
