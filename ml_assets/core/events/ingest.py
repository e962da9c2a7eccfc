"""Ingest an event log file: read it through a column mapping, type it canonically, land it as one batch.

Reading is all-or-nothing for the file's structure (a ragged CSV row, a line that is not JSON, an
unreadable Parquet file, a mapped column the file lacks: `IngestError`, nothing landed) and lenient
for values: a time or number that does not parse keeps its row, with a null in its place and the
source text in `event_time_raw` / `value_raw`, so cleaning can quarantine it with a reason.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from ml_assets.core.events.canonical import CANONICAL_COLUMNS
from ml_assets.core.events.landing import TimeBounds, write_batch
from ml_assets.core.events.mapping import EventMapping, load_mapping
from ml_assets.lake.files import Location

LINE = "__line"  # 1-based line (Parquet: row) number of each source row, as an editor counts
_UTC = pl.Datetime("us", "UTC")
# Unix seconds of 0001-01-01 and 9999-12-31T23:59:59, the range a datetime can hold.
_MIN_UNIX_S, _MAX_UNIX_S = -62_135_596_800, 253_402_300_799
_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
EVENT_COLUMNS = (*CANONICAL_COLUMNS, "event_time_raw", "value_raw", "received_date", "received_at")


class IngestError(ValueError):
    """A source file that cannot be ingested; the message names the file and the line or column."""


@dataclass(frozen=True)
class IngestReport:
    """What one `ingest` call did."""

    batch_id: str
    rows: int
    landed: bool  # False: this file with this mapping was already landed, nothing added
    first_day: date  # first and last UTC event day of the file's rows
    last_day: date
    unparsed_times: int  # rows landed with a null event_time (raw text kept in event_time_raw)
    unparsed_values: int = 0  # rows whose value text is not a finite number (text kept in value_raw)
    implausible_times: int = 0  # rows whose time parsed but lies outside the plausible window


def read_events(path: Path, mapping: EventMapping, bounds: TimeBounds = TimeBounds()) -> pl.DataFrame:
    """Rows of `path` in landing format (canonical columns, raw texts, received_date, received_at)."""
    events, _ = _read(_read_bytes(path), str(path), mapping, bounds, datetime.now(UTC))
    return events


def ingest(
    path: Path, mapping_path: Path, landing: Location, bounds: TimeBounds = TimeBounds()
) -> IngestReport:
    """Read `path` through the mapping at `mapping_path` and land it as one batch in `landing`.

    The batch is named by the file's bytes and the mapping, so ingesting the same file again with
    the same mapping lands nothing (`landed=False`). Everything is validated before anything is written.
    Every row is stamped with the moment of the ingest (`received_at`); rows whose time is not
    plausible by `bounds` keep it, for cleaning to quarantine, but do not widen the lake's days.
    """
    mapping = load_mapping(mapping_path)
    data = _read_bytes(path)
    events, unparsed_values = _read(data, str(path), mapping, bounds, datetime.now(UTC))
    batch_id = hashlib.sha256(data + mapping.fingerprint().encode()).hexdigest()
    landed = write_batch(landing, events, batch_id, source=Path(path).name, bounds=bounds)
    plausible = events.filter(bounds.plausible()).get_column("event_time").dt.date()
    unparsed = events.get_column("event_time").null_count()
    return IngestReport(
        batch_id=batch_id,
        rows=events.height,
        landed=landed,
        first_day=plausible.min(),  # type: ignore[arg-type]
        last_day=plausible.max(),  # type: ignore[arg-type]
        unparsed_times=unparsed,
        unparsed_values=unparsed_values,
        implausible_times=events.height - unparsed - plausible.len(),
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read file: {exc}") from exc


def _read(
    data: bytes, name: str, mapping: EventMapping, bounds: TimeBounds, received_at: datetime
) -> tuple[pl.DataFrame, int]:
    """Canonical rows of the file content `data`, and how many values did not parse."""
    if not data.strip():
        raise IngestError(f"{name}: file is empty")
    if mapping.format == "csv":
        source = _read_csv(data, name, mapping)
    elif mapping.format == "parquet":
        source = _read_parquet(data, name, mapping)
    else:
        source = _read_jsonl(data, name, mapping)
    if source.height == 0:
        raise IngestError(f"{name}: no data rows")
    return _to_canonical(source, name, mapping, bounds, received_at)


# ---------------------------------------------------------------------------------------------- sources
# Each reader returns the mapped source columns (text, or a native datetime) plus LINE.


def _check_columns(name: str, mapping: EventMapping, file_columns: list[str]) -> None:
    present = set(file_columns)
    for canonical, column in mapping.columns.items():
        if column not in present:
            raise IngestError(
                f"{name}: column {column!r} (mapped to {canonical}) is not in the file; "
                f"the file's columns are: {', '.join(repr(c) for c in file_columns)}"
            )


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise IngestError(f"{name}: line {line}: not valid UTF-8 ({exc.reason})") from exc


def _lines(text: str) -> pl.DataFrame:
    """Non-blank lines of `text` with their 1-based line numbers (CRLF endings tolerated)."""
    lines = pl.Series("text", [text]).str.split("\n").explode().str.strip_suffix("\r")
    frame = pl.DataFrame({"text": lines}).with_row_index(LINE, offset=1)
    return frame.filter(pl.col("text").str.strip_chars() != "")


def _quoted_csv(text: str, name: str, sep: str) -> pl.DataFrame:
    """RFC 4180 records of `text` (quoted fields may hold the separator, doubled quotes and line
    breaks), each with the line it starts on, as `_lines` frames them but with the fields split."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quotechar='"', strict=True)
    starts, records, line = [], [], 1
    try:
        for record in reader:
            if record and any(field.strip() for field in record):  # blank lines are not records
                starts.append(line)
                records.append(record)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise IngestError(f"{name}: line {line}: a quoted field is not closed ({exc})") from exc
    return pl.DataFrame(
        {LINE: starts, "fields": records}, schema={LINE: pl.UInt32, "fields": pl.List(pl.String)}
    )


def _read_csv(data: bytes, name: str, mapping: EventMapping) -> pl.DataFrame:
    text = _decode(data, name)
    sep = mapping.separator
    if sep != "whitespace" and '"' in text:
        # quotes: Python's csv module, RFC 4180 (a field may span lines), records kept with their lines
        rows = _quoted_csv(text, name, sep)
    else:
        lines = _lines(text)
        split = (
            pl.col("text").str.extract_all(r"\S+") if sep == "whitespace" else pl.col("text").str.split(sep)
        )
        rows = lines.select(LINE, split.alias("fields"))
        del lines  # the split fields replace the text: halves peak memory on big files
    del text
    if rows.height == 0:
        raise IngestError(f"{name}: file is empty")

    def field(i: int) -> pl.Expr:
        return pl.col("fields").list.get(i, null_on_oob=True)

    if mapping.has_header:
        header = rows.head(1).select(pl.col("fields").list.len().alias("n"), LINE)
        width = int(header["n"][0])
        names = rows.head(1).select(field(i).alias(str(i)) for i in range(width)).row(0)
        file_columns = [str(n).strip() for n in names]
        duplicates = sorted({c for c in file_columns if file_columns.count(c) > 1})
        if duplicates:
            raise IngestError(f"{name}: line {header[LINE][0]}: duplicate column name(s) {duplicates}")
        rows = rows.slice(1)
        if rows.height == 0:
            raise IngestError(f"{name}: no data rows after the header")
    else:
        width = int(rows["fields"].list.len()[0])
        file_columns = [f"column_{i + 1}" for i in range(width)]
    ragged = rows.filter(pl.col("fields").list.len() != width).head(1)
    if ragged.height:
        found = ragged["fields"].list.len()[0]
        raise IngestError(f"{name}: line {ragged[LINE][0]}: expected {width} fields, found {found}")
    _check_columns(name, mapping, file_columns)
    wanted = dict.fromkeys(mapping.columns.values())
    return rows.select(LINE, *(field(file_columns.index(c)).alias(c) for c in wanted))


def _read_parquet(data: bytes, name: str, mapping: EventMapping) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:  # polars raises several kinds; all mean the same to the user
        raise IngestError(f"{name}: not a readable Parquet file: {exc}") from exc
    _check_columns(name, mapping, frame.columns)
    return _select_source(frame.with_row_index(LINE, offset=1), name, mapping)


def _read_jsonl(data: bytes, name: str, mapping: EventMapping) -> pl.DataFrame:
    text = _decode(data, name)
    lines = _lines(text)
    if lines.height == 0:
        raise IngestError(f"{name}: file is empty")
    try:
        frame = pl.read_ndjson(io.BytesIO(data.removeprefix(codecs.BOM_UTF8)), infer_schema_length=None)
    except Exception as exc:  # find the culprit line; polars' message does not say which
        raise _json_error(text, name, exc) from exc
    if frame.height != lines.height:
        raise IngestError(f"{name}: {lines.height} non-blank lines but {frame.height} JSON records")
    _check_columns(name, mapping, frame.columns)
    return _select_source(frame.with_columns(lines[LINE]), name, mapping)


def _json_error(text: str, name: str, cause: Exception) -> IngestError:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return IngestError(f"{name}: line {number}: invalid JSON: {exc.msg} (column {exc.colno})")
        if not isinstance(record, dict):
            return IngestError(f"{name}: line {number}: not a JSON object: {line.strip()[:80]!r}")
    return IngestError(f"{name}: cannot read JSON lines: {cause}")


def _select_source(frame: pl.DataFrame, name: str, mapping: EventMapping) -> pl.DataFrame:
    """The mapped columns of a typed source as text; native datetimes stay datetimes."""
    exprs = []
    for column in dict.fromkeys(mapping.columns.values()):
        dtype = frame.schema[column]
        col = pl.col(column)
        if dtype == pl.String or isinstance(dtype, pl.Datetime | pl.Date):
            exprs.append(col)
        elif dtype.is_nested():
            # JSON text of the nested value (an object stays an object: good for `properties`).
            encoded = pl.struct(col.alias("_")).struct.json_encode().str.slice(5).str.strip_suffix("}")
            exprs.append(pl.when(col.is_null()).then(None).otherwise(encoded).alias(column))
        else:
            exprs.append(col.cast(pl.String))
    try:
        return frame.select(LINE, *exprs)
    except pl.exceptions.PolarsError as exc:
        raise IngestError(f"{name}: cannot read mapped columns as text: {exc}") from exc


# ---------------------------------------------------------------------------------------------- canonical


def _text(column: str) -> pl.Expr:
    """Source text trimmed, with empty text as null."""
    trimmed = pl.col(column).str.strip_chars()
    return pl.when(trimmed == "").then(None).otherwise(trimmed)


def _to_canonical(
    source: pl.DataFrame, name: str, mapping: EventMapping, bounds: TimeBounds, received_at: datetime
) -> tuple[pl.DataFrame, int]:
    exprs: dict[str, pl.Expr] = {}
    for canonical in CANONICAL_COLUMNS:
        if canonical == "event_time":
            continue
        if canonical in mapping.columns:
            exprs[canonical] = _text(mapping.columns[canonical])
        elif canonical in mapping.constants:
            exprs[canonical] = pl.lit(mapping.constants[canonical])
        else:
            exprs[canonical] = pl.lit(None, dtype=pl.String)
    if mapping.event_types:
        renames = mapping.event_types
        exprs["event_type"] = exprs["event_type"].replace(list(renames), list(renames.values()))
    if "event_id" not in mapping.columns:
        exprs["event_id"] = pl.lit(None, dtype=pl.String)  # derived from the typed row, below
    text_value = exprs["value"].cast(pl.String)
    number = text_value.cast(pl.Float64, strict=False)
    exprs["value"] = pl.when(number.is_finite()).then(number).otherwise(None)
    # the source text of a value that is not a finite number ("abc", "1,5", NaN, inf, 1e309)
    value_raw = pl.when(text_value.is_not_null() & ~number.is_finite().fill_null(False)).then(text_value)

    time_column = mapping.columns["event_time"]
    raw_time = source.get_column(time_column)
    events = source.select(
        **{c: e.cast(pl.Float64 if c == "value" else pl.String) for c, e in exprs.items()},
        event_time=_parse_times(raw_time, mapping.time_format("event_time")),
        event_time_raw=raw_time.cast(pl.String),
        value_raw=value_raw,
    )
    if "event_id" not in mapping.columns:
        events = events.with_columns(event_id=derived_event_ids(events))
    unparsed_values = events["value_raw"].count()

    events = events.with_columns(
        received_at=pl.lit(received_at, dtype=_UTC), received_date=pl.lit(None, pl.Date)
    )
    # a file is a backfill: each row counts as delivered on its own event day (nothing in it is
    # late); rows without a plausible time go to the file's newest plausible day
    plausible_day = pl.when(bounds.plausible()).then(pl.col("event_time").dt.date())
    latest = events.select(plausible_day.max()).item()
    if latest is None:
        sample = raw_time.drop_nulls().head(1).to_list()
        parsed = events["event_time"].count() > 0
        problem = (
            f"is a plausible time (from {bounds.earliest} to {bounds.future_skew_hours:g} h after now)"
            if parsed
            else f"parsed as {mapping.time_format('event_time')!r}"
        )
        raise IngestError(
            f"{name}: no {time_column!r} value {problem}"
            + (f" (first value: {sample[0]!r})" if sample else " (the column is empty)")
        )
    events = events.with_columns(received_date=pl.coalesce(plausible_day, pl.lit(latest)))
    return events.select(EVENT_COLUMNS), unparsed_values


def derived_event_ids(events: pl.DataFrame) -> pl.Series:
    """Ids for a log without them: a hash of each row's typed content plus its occurrence among
    identical rows, in file order.

    Identical rows stay distinct events (CDNOW's repeat purchases), and the ids depend on what the
    rows say, not on how the file is written: a re-export with CRLF line endings, a byte-order
    mark, other quoting or more rows appended gives its rows the ids they had, so the duplicate
    rule catches it instead of counting every event twice.
    """
    content = [c for c in CANONICAL_COLUMNS if c != "event_id"]
    text = events.select(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in content], separator="\x1f").alias(
            "row"
        )
    ).to_series()
    digests = pl.Series("digest", [hashlib.sha256(row.encode()).hexdigest()[:20] for row in text])
    occurrence = pl.int_range(pl.len()).over("digest")
    return (
        pl.DataFrame({"digest": digests})
        .select(pl.col("digest") + "-" + occurrence.cast(pl.String))
        .to_series()
        .alias("event_id")
    )


def _parse_times(raw: pl.Series, time_format: str) -> pl.Series:
    """`raw` as Datetime(us, UTC); text that does not parse as `time_format` becomes null."""
    if isinstance(raw.dtype, pl.Datetime):
        typed = raw.dt.cast_time_unit("us")
        if raw.dtype.time_zone is None:
            return typed.dt.replace_time_zone("UTC")
        return typed.dt.convert_time_zone("UTC")
    if raw.dtype == pl.Date:
        return raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    frame = pl.DataFrame({"t": raw.str.strip_chars()})
    t = pl.col("t")
    if time_format in ("unix_s", "unix_ms"):
        per_unit = 1_000_000 if time_format == "unix_s" else 1_000
        scale = 1 if time_format == "unix_s" else 1_000
        as_float = t.cast(pl.Float64, strict=False)
        in_range = as_float.is_between(_MIN_UNIX_S * scale, _MAX_UNIX_S * scale)
        as_int = t.cast(pl.Int64, strict=False)
        micros = (
            pl.when(as_int.is_not_null()).then(as_int * per_unit).otherwise((as_float * per_unit).round())
        )
        expr = pl.from_epoch(pl.when(in_range).then(micros.cast(pl.Int64)), time_unit="us")
        expr = expr.dt.replace_time_zone("UTC")
    elif time_format == "iso8601":
        norm = t.str.replace(r"[Zz]$", "+00:00").str.replace(r"^(\d{4}-\d{2}-\d{2})[ t]", "${1}T")
        return _first_parse(frame.select(norm).to_series()).alias("event_time")
    else:
        parsed = frame.select(t.str.to_datetime(time_format, strict=False, time_unit="us")).to_series()
        if parsed.dtype.time_zone is None:  # type: ignore[attr-defined]
            return parsed.dt.replace_time_zone("UTC").alias("event_time")
        return parsed.dt.convert_time_zone("UTC").alias("event_time")
    return frame.select(expr.cast(_UTC)).to_series().alias("event_time")


def _first_parse(text: pl.Series) -> pl.Series:
    """ISO 8601 `text` parsed by the first layout that fits each value; later layouts see only the rest."""
    result = None
    for layout in (*_ISO_AWARE, *_ISO_NAIVE):
        if result is None:
            todo = text
        else:
            missing = (result.is_null() & text.is_not_null()).arg_true()
            if missing.len() == 0:
                break
            todo = text.gather(missing)
        parsed = todo.str.to_datetime(layout, strict=False, time_unit="us")
        parsed = parsed.dt.replace_time_zone("UTC") if parsed.dtype.time_zone is None else parsed  # type: ignore[attr-defined]
        parsed = parsed.dt.convert_time_zone("UTC")
        result = parsed if result is None else result.scatter(missing, parsed)
    assert result is not None
    return result
