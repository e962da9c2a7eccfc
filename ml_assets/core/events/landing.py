"""Landing batches: canonical event rows as delivered, one Parquet file per batch, named by content.

`ingest` and the simulator both land rows here; `raw_events` reads them. A batch's name is a
content hash its producer supplies (the source file's bytes plus the mapping, or the simulator's
parameters and day), so landing the same thing twice finds the batch already there and adds
nothing. The lake's data window (first and last UTC day seen) is kept beside the batches, so the
daily partitions span the data's own dates.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date

import polars as pl

from ml_assets.core.events.canonical import CANONICAL_SCHEMA
from ml_assets.lake.files import Entry, Location, folder

# The canonical event columns plus the delivery bookkeeping every landed row carries.
LANDING_SCHEMA: dict[str, pl.DataType] = {
    **CANONICAL_SCHEMA,
    # The source's own text of the time, kept so a quarantine row can say what was wrong with it.
    "event_time_raw": pl.String(),
    # The source's text of a value that is not a finite number (null when it parsed): cleaning
    # quarantines such rows as malformed_value with this text, instead of nulling the value.
    "value_raw": pl.String(),
    # The UTC day the row was delivered; a row whose event_time is earlier arrived late.
    "received_date": pl.Date(),
    # When the row reached the lake (ingest: the moment it ran; the simulator: the end of its
    # delivery day): an event time later than this, past a skew, is implausible.
    "received_at": pl.Datetime("us", "UTC"),
    "batch_id": pl.String(),
    "source": pl.String(),
}
WINDOW_FILE = "_window.json"


@dataclass(frozen=True)
class TimeBounds:
    """When an event can plausibly have happened: not before `earliest`, and not more than
    `future_skew_hours` after it reached the lake (clocks drift; a year 2100 does not)."""

    earliest: date = date(1990, 1, 1)
    future_skew_hours: float = 24.0

    def receipt(self) -> pl.Expr:
        """When each row reached the lake: `received_at`, else the end of its delivery day."""
        end_of_day = (
            pl.col("received_date").cast(pl.Datetime("us")) + pl.duration(days=1)
        ).dt.replace_time_zone("UTC")
        return pl.coalesce(pl.col("received_at"), end_of_day)

    def too_early(self) -> pl.Expr:
        return pl.col("event_time") < pl.lit(self.earliest).cast(pl.Datetime("us")).dt.replace_time_zone(
            "UTC"
        )

    def too_late(self) -> pl.Expr:
        return pl.col("event_time") > self.receipt() + pl.duration(hours=self.future_skew_hours)

    def plausible(self) -> pl.Expr:
        """True for a row whose event time is known and plausible."""
        return pl.col("event_time").is_not_null() & ~self.too_early() & ~self.too_late()


@dataclass(frozen=True)
class DataWindow:
    """First and last UTC day of the landed data, both inclusive."""

    first_day: date
    last_day: date


def conform(frame: pl.DataFrame, batch_id: str, source: str) -> pl.DataFrame:
    """`frame` with exactly the landing columns, in order and typed; missing optional columns are null."""
    missing = [c for c in ("event_id", "received_date") if c not in frame.columns]
    if missing:
        raise ValueError(f"landing batch {source!r} lacks required column(s) {missing}")
    frame = frame.with_columns(batch_id=pl.lit(batch_id), source=pl.lit(source))
    return frame.select(
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in LANDING_SCHEMA.items()
    )


def partition_day(bounds: TimeBounds = TimeBounds()) -> pl.Expr:
    """The daily partition of a landed row: its event day, else (a time that did not parse or is
    implausible) its delivery day, so one row from 1970 or 2100 cannot stretch the lake's days."""
    event_day = pl.when(bounds.plausible()).then(pl.col("event_time").dt.date())
    return pl.coalesce(event_day, pl.col("received_date")).alias("partition_date")


def batch_name(batch_id: str) -> str:
    """The file name of batch `batch_id` in the landing area."""
    return f"{batch_id}.parquet"


def has_batch(landing: Location, batch_id: str) -> bool:
    """Whether batch `batch_id` has landed."""
    return folder(landing).exists(batch_name(batch_id))


def write_batch(
    landing: Location,
    frame: pl.DataFrame,
    batch_id: str,
    source: str,
    bounds: TimeBounds = TimeBounds(),
    durable: bool = False,
) -> bool:
    """Land `frame` as batch `batch_id`; False (and nothing written) when that batch is already landed.

    The file appears atomically (a rename, or one PUT on an object store), so a crash leaves no
    partial batch. `durable` also fsyncs a local file and its folder before returning (the
    collector acknowledges events to clients on that promise; a re-runnable ingest does not need it).
    """
    place = folder(landing)
    name = batch_name(batch_id)
    if place.exists(name):
        return False
    rows = conform(frame, batch_id, source)
    if rows.height == 0:
        raise ValueError(f"landing batch {source!r} has no rows")
    buffer = io.BytesIO()
    rows.write_parquet(buffer, statistics=True)
    if not place.create(name, buffer.getvalue(), durable=durable):
        return False  # landed by another writer meanwhile: the same content, by its name
    days = rows.select(partition_day(bounds)).to_series()
    extend_window(landing, DataWindow(days.min(), days.max()))  # type: ignore[arg-type]
    return True


def _window_from(raw: bytes | None) -> DataWindow | None:
    if raw is None:
        return None
    parsed = json.loads(raw)
    return DataWindow(date.fromisoformat(parsed["first_day"]), date.fromisoformat(parsed["last_day"]))


def read_window(landing: Location) -> DataWindow | None:
    """The recorded data window, or None when nothing has landed."""
    return _window_from(folder(landing).read(WINDOW_FILE))


def extend_window(landing: Location, window: DataWindow) -> DataWindow:
    """Widen the recorded window to cover `window`, atomically and without losing a concurrent
    update (the collector and an ingest may land at the same time, and neither may narrow what the
    other widened): under a file lock locally, by compare-and-swap on an object store."""

    def widen(raw: bytes | None) -> bytes:
        old = _window_from(raw)
        new = window
        if old is not None:
            new = DataWindow(min(old.first_day, window.first_day), max(old.last_day, window.last_day))
        payload = {"first_day": new.first_day.isoformat(), "last_day": new.last_day.isoformat()}
        return json.dumps(payload).encode()

    written = _window_from(folder(landing).update(WINDOW_FILE, widen))
    assert written is not None
    return written


def list_batches(landing: Location) -> list[Entry]:
    """Landed batch files, in name order."""
    return folder(landing).list(".parquet")


# A landing batch appears by a rename right after it is written, so its modification time is at
# most a write's duration behind the moment it shows up; an hour covers any write.
CURSOR_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class LandingCursor:
    """What a reader of new batches has seen: the newest modification time, and the names of the
    batches modified within the grace before it (so a batch that shows up late is still new)."""

    after: float = 0.0
    recent: frozenset[str] = frozenset()


def newer_batches(files: list[Entry], cursor: LandingCursor) -> tuple[list[Entry], LandingCursor]:
    """The batches of `files` not seen by `cursor`, and the cursor after them. Its size stays that of
    an hour of batches, however long the lake has run (a collector lands one every few seconds)."""
    floor = cursor.after - CURSOR_GRACE_SECONDS
    new = [f for f in files if f.mtime >= floor and f.name not in cursor.recent]
    after = max([cursor.after, *(f.mtime for f in files)])
    recent = frozenset(f.name for f in files if f.mtime >= after - CURSOR_GRACE_SECONDS)
    return new, LandingCursor(after, recent)


def scan_landing(landing: Location, bounds: TimeBounds = TimeBounds()) -> pl.LazyFrame:
    """All landed rows as one lazy frame with a `partition_date` column; empty (typed) when none landed."""
    files = list_batches(landing)
    if not files:
        empty = pl.DataFrame(schema=LANDING_SCHEMA).lazy()
        return empty.with_columns(partition_day(bounds))
    # batches landed before a column existed read it as null
    scan = pl.scan_parquet([f.uri for f in files], schema=LANDING_SCHEMA, missing_columns="insert")
    return scan.with_columns(partition_day(bounds))
