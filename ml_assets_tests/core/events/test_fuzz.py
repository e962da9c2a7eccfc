"""Fuzzing mapping and cleaning: whatever a file holds, ingest either refuses it with an IngestError
or lands every row, and cleaning accounts for every landed row (raw = clean + quarantined)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_assets.core.events.cleaning import REASONS, FieldLimits, clean_events
from ml_assets.core.events.ingest import IngestError, read_events
from ml_assets.core.events.landing import TimeBounds, conform, partition_day
from ml_assets.core.events.mapping import parse_mapping

MAPPING = parse_mapping(
    '[source]\nformat = "csv"\n'
    '[columns]\nevent_id = "id"\nplayer_id = "user"\nevent_time = "ts"\n'
    'event_type = "kind"\nvalue = "amount"\n'
    '[time]\nevent_time = "iso8601"\n'
)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
TIMES = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1)).map(lambda t: t.isoformat()),
    st.sampled_from(["", "9999-12-31T23:59:59Z", "1970-01-01", "2024-02-30", "yesterday", "0"]),
    TEXT,
)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "abc", "1,5", "NaN", "inf", "1e309", "-3"]),
    TEXT,
)
ROWS = st.lists(
    st.tuples(
        st.one_of(TEXT, st.sampled_from(["dup", "dup", ""])),  # ids, repeated on purpose
        TEXT,
        TIMES,
        st.one_of(TEXT, st.sampled_from(["Purchase", "purchase", "level-up", "level_up", "x" * 2000])),
        VALUES,
    ),
    min_size=1,
    max_size=25,
)


def _csv(rows: list[tuple[str, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(["id", "user", "ts", "kind", "amount"])
    # one plausible row, so files reach cleaning (a file with no plausible time is refused whole)
    writer.writerow(["anchor", "p", "2024-01-01T00:00:00Z", "play", "1"])
    writer.writerows(rows)
    return out.getvalue().encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_any_file_is_refused_clearly_or_every_row_is_accounted_for(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "e.csv"
    path.write_bytes(_csv(rows))
    try:
        events = read_events(path, MAPPING)
    except IngestError as exc:
        assert str(exc).startswith(str(path))  # a clear error names the file
        return
    landed = conform(events, "batch", "fuzz").with_columns(partition_day()).lazy()
    result = clean_events(landed, watermark_days=3, limits=FieldLimits(text=1000), bounds=TimeBounds())
    assert result.clean.height + result.quarantined.height == events.height
    assert set(result.quarantined["reason"]) <= set(REASONS)
    assert result.clean["event_id"].n_unique() == result.clean.height
    days = result.clean["event_date"]
    assert days.is_null().sum() == 0 and (days.len() == 0 or days.min() >= date(1990, 1, 1))
    assert result.clean.select(pl.col("value").is_nan().sum()).item() in (0, None)
