from datetime import UTC, date, datetime

import polars as pl
import pytest

from ml_assets.core.events.landing import LANDING_SCHEMA, list_batches, read_window, scan_landing, write_batch
from ml_assets.core.settings import load_settings


def _rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "player_id": ["p1", "p2", "p1"],
            "event_time": [datetime(2025, 1, 2, tzinfo=UTC), None, datetime(2025, 1, 4, tzinfo=UTC)],
            "event_type": ["purchase", "purchase", "session_start"],
            "received_date": [date(2025, 1, 2), date(2025, 1, 5), date(2025, 1, 4)],
        }
    )


def test_batch_lands_once_and_records_window(tmp_path):
    assert write_batch(tmp_path, _rows(), "b1", "test.csv") is True
    assert write_batch(tmp_path, _rows(), "b1", "test.csv") is False
    assert len(list_batches(tmp_path)) == 1
    window = read_window(tmp_path)
    # the unparseable row belongs to its delivery day, so the window reaches 2025-01-05
    assert (window.first_day, window.last_day) == (date(2025, 1, 2), date(2025, 1, 5))
    landed = scan_landing(tmp_path).collect()
    assert landed.height == 3
    assert dict(landed.drop("partition_date").schema) == LANDING_SCHEMA
    assert landed.sort("event_id")["partition_date"].to_list() == [
        date(2025, 1, 2),
        date(2025, 1, 5),
        date(2025, 1, 4),
    ]


def test_empty_landing_scans_typed(tmp_path):
    assert scan_landing(tmp_path / "none").collect().height == 0
    assert read_window(tmp_path) is None


def test_batch_without_event_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="event_id"):
        write_batch(tmp_path, _rows().drop("event_id"), "b2", "x.csv")
    assert list_batches(tmp_path) == []


def test_settings_defaults_and_unknown_keys(tmp_path):
    settings = load_settings(tmp_path)
    assert settings.cleaning.watermark_days == 3
    assert settings.lake_uri == str(tmp_path / "lake")
    (tmp_path / "ml_assets.toml").write_text(
        "[cleaning]\nwatermark_days = 5\n[models.churn]\nhorizon_days = 7\n"
    )
    settings = load_settings(tmp_path)
    assert settings.cleaning.watermark_days == 5
    assert settings.spec("churn").label.horizon_days == 7
    (tmp_path / "ml_assets.toml").write_text("[cleaning]\nwatermark = 5\n")
    with pytest.raises(ValueError, match="cleaning.watermark"):
        load_settings(tmp_path)
    (tmp_path / "ml_assets.toml").write_text("[models.churn]\nhorizon = 5\n")
    with pytest.raises(ValueError, match=r"models.churn.*horizon"):
        load_settings(tmp_path)


def test_the_new_batch_cursor_finds_each_batch_once_and_stays_an_hour_long(tmp_path):
    import os

    from ml_assets.core.events.landing import CURSOR_GRACE_SECONDS, LandingCursor, list_batches, newer_batches

    folder = tmp_path / "landing"
    folder.mkdir()
    start = 1_700_000_000.0

    def land(name: str, mtime: float):
        path = folder / f"{name}.parquet"
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
        return path.name

    old = [land(f"old{i}", start + i) for i in range(5)]
    new, cursor = newer_batches(list_batches(folder), LandingCursor())
    assert sorted(f.name for f in new) == sorted(old)
    # a day later: one more batch, and one that shows up late with an mtime just behind the newest
    later = land("later", start + 86_400)
    late = land("late", start + 86_400 - 5)
    new, cursor = newer_batches(list_batches(folder), cursor)
    assert sorted(f.name for f in new) == sorted([later, late])
    assert cursor.recent == {"later.parquet", "late.parquet"}  # the day-old names are forgotten
    again, cursor = newer_batches(list_batches(folder), cursor)
    assert again == [] and cursor.after == start + 86_400
    assert CURSOR_GRACE_SECONDS < 86_400
