"""Landing batches: canonical event rows as delivered, one Parquet file per batch, named by content.

`ingest` and the simulator both land rows here; `raw_events` reads them. A batch's name is a
content hash its producer supplies (the source file's bytes plus the mapping, or the simulator's
parameters and day), so landing the same thing twice finds the batch already there and adds
nothing. The lake's data window (first and last UTC day seen) is kept beside the batches, so the
daily partitions span the data's own dates.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from ml_assets.core.events.canonical import CANONICAL_SCHEMA

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
    "batch_id": pl.String(),
    "source": pl.String(),
}
WINDOW_FILE = "_window.json"


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


def partition_day() -> pl.Expr:
    """The daily partition of a landed row: its event day, else (unparseable time) its delivery day."""
    return pl.coalesce(pl.col("event_time").dt.date(), pl.col("received_date")).alias("partition_date")


def batch_path(landing_dir: Path, batch_id: str) -> Path:
    return landing_dir / f"{batch_id}.parquet"


def write_batch(landing_dir: Path, frame: pl.DataFrame, batch_id: str, source: str) -> bool:
    """Land `frame` as batch `batch_id`; False (and nothing written) when that batch is already landed.

    The file appears atomically (written aside, then renamed), so a crash leaves no partial batch.
    """
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = batch_path(landing_dir, batch_id)
    if target.exists():
        return False
    rows = conform(frame, batch_id, source)
    if rows.height == 0:
        raise ValueError(f"landing batch {source!r} has no rows")
    fd, tmp = tempfile.mkstemp(dir=landing_dir, suffix=".parquet.tmp")
    os.close(fd)
    try:
        rows.write_parquet(tmp, statistics=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    days = rows.select(partition_day()).to_series()
    extend_window(landing_dir, DataWindow(days.min(), days.max()))  # type: ignore[arg-type]
    return True


def read_window(landing_dir: Path) -> DataWindow | None:
    """The recorded data window, or None when nothing has landed."""
    path = landing_dir / WINDOW_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return DataWindow(date.fromisoformat(raw["first_day"]), date.fromisoformat(raw["last_day"]))


def extend_window(landing_dir: Path, window: DataWindow) -> DataWindow:
    """Widen the recorded window to cover `window`; written atomically."""
    old = read_window(landing_dir)
    if old is not None:
        window = DataWindow(min(old.first_day, window.first_day), max(old.last_day, window.last_day))
    payload = json.dumps({"first_day": window.first_day.isoformat(), "last_day": window.last_day.isoformat()})
    tmp = landing_dir / (WINDOW_FILE + ".tmp")
    tmp.write_text(payload)
    os.replace(tmp, landing_dir / WINDOW_FILE)
    return window


def list_batches(landing_dir: Path) -> list[Path]:
    """Landed batch files, in name order."""
    if not landing_dir.exists():
        return []
    return sorted(landing_dir.glob("*.parquet"))


def scan_landing(landing_dir: Path) -> pl.LazyFrame:
    """All landed rows as one lazy frame with a `partition_date` column; empty (typed) when none landed."""
    files = list_batches(landing_dir)
    if not files:
        empty = pl.DataFrame(schema=LANDING_SCHEMA).lazy()
        return empty.with_columns(partition_day())
    # batches landed before a column existed read it as null
    scan = pl.scan_parquet([str(f) for f in files], schema=LANDING_SCHEMA, missing_columns="insert")
    return scan.with_columns(partition_day())
