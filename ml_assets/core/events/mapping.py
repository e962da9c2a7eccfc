"""Column mappings: how a source event log (CSV, Parquet, JSON lines) maps onto the canonical schema.

A mapping is a small TOML file (the format the README documents, a promise to users):

    [source]     format = "csv" | "parquet" | "jsonl"; separator = "," | "\\t" | "whitespace"
                 (csv only, default ","); has_header = true (csv only, default true; without a
                 header the source columns are named column_1, column_2, ...)
    [columns]    canonical column = source column
    [constants]  canonical column = one value for every row
    [time]       canonical time column = unix_s | unix_ms | iso8601 | a strftime pattern
                 (default iso8601)
    [event_types] source event type = the event type to land instead (e.g. "Purchase" =
                 "purchase"), to merge spellings of one type or give a type a plain name

Every mistake is a `MappingError` naming the section and key at fault, raised before any data is read.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.core.events.canonical import CANONICAL_COLUMNS

TIME_COLUMNS = ("event_time",)
FORMATS = ("csv", "parquet", "jsonl")
SEPARATORS = {",": ",", "\t": "\t", "whitespace": "whitespace"}
NAMED_TIME_FORMATS = ("unix_s", "unix_ms", "iso8601")
DEFAULT_TIME_FORMAT = "iso8601"

_SOURCE_KEYS = ("format", "separator", "has_header")
_SECTIONS = ("source", "columns", "constants", "time", "event_types")
# Columns whose values must differ row by row, so a constant makes no sense for them.
_NEVER_CONSTANT = ("event_id", "player_id", "event_time")


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the TOML section and key at fault."""


@dataclass(frozen=True)
class EventMapping:
    """A validated mapping of one source layout onto the canonical event schema."""

    format: str
    separator: str = ","
    has_header: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str | float] = field(default_factory=dict)
    time_formats: dict[str, str] = field(default_factory=dict)
    event_types: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Stable canonical text of the mapping (key order and TOML spelling do not matter).

        Renames enter only when there are some, so a mapping without [event_types] keeps the
        fingerprint, and its files the batch ids, they had before the section existed.
        """
        content: dict[str, object] = {
            "format": self.format,
            "separator": self.separator,
            "has_header": self.has_header,
            "columns": self.columns,
            "constants": self.constants,
            "time": self.time_formats,
        }
        if self.event_types:
            content["event_types"] = self.event_types
        return json.dumps(content, sort_keys=True, separators=(",", ":"))

    def time_format(self, column: str) -> str:
        """How canonical time column `column` is written in the source."""
        return self.time_formats.get(column, DEFAULT_TIME_FORMAT)


def load_mapping(path: Path) -> EventMapping:
    """Read and validate the mapping TOML file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file: {exc}") from exc
    return parse_mapping(text, origin=str(path))


def parse_mapping(text: str, origin: str = "<mapping>") -> EventMapping:
    """Validate mapping TOML `text`; `origin` names it in error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{origin}: invalid TOML: {exc}") from exc

    def fail(message: str) -> MappingError:
        return MappingError(f"{origin}: {message}")

    for name, section in raw.items():
        if name not in _SECTIONS:
            raise fail(f"unknown section [{name}] (known: {', '.join(f'[{s}]' for s in _SECTIONS)})")
        if not isinstance(section, dict):
            raise fail(f"{name!r} must be a [{name}] table")

    source = raw.get("source", {})
    for key in source:
        if key not in _SOURCE_KEYS:
            raise fail(f"unknown key [source] {key} (known: {', '.join(_SOURCE_KEYS)})")
    if "format" not in source:
        raise fail(f"[source] format is required ({' | '.join(FORMATS)})")
    fmt = source["format"]
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise fail(f"[source] format = {fmt!r} is not one of {' | '.join(FORMATS)}")
    if fmt != "csv":
        for key in ("separator", "has_header"):
            if key in source:
                raise fail(f"[source] {key} applies only to format = 'csv', not {fmt!r}")
    separator = source.get("separator", ",")
    if not isinstance(separator, str) or separator not in SEPARATORS:
        raise fail(f"[source] separator = {separator!r} is not one of ',', '\\t', 'whitespace'")
    has_header = source.get("has_header", True)
    if not isinstance(has_header, bool):
        raise fail(f"[source] has_header = {has_header!r} must be true or false")

    columns: dict[str, str] = {}
    for canonical, source_column in raw.get("columns", {}).items():
        _check_canonical(canonical, "columns", fail)
        if not isinstance(source_column, str) or not source_column:
            raise fail(f"[columns] {canonical} = {source_column!r} must be a non-empty source column name")
        columns[canonical] = source_column

    constants: dict[str, str | float] = {}
    for canonical, value in raw.get("constants", {}).items():
        _check_canonical(canonical, "constants", fail)
        if canonical in _NEVER_CONSTANT:
            raise fail(f"[constants] {canonical}: {canonical} must come from [columns], not be a constant")
        if canonical in columns:
            raise fail(f"[constants] {canonical}: {canonical} is also mapped in [columns]; choose one")
        if canonical == "value":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise fail(f"[constants] value = {value!r} must be a number")
            constants[canonical] = float(value)
        else:
            if not isinstance(value, str):
                raise fail(f"[constants] {canonical} = {value!r} must be a string")
            constants[canonical] = value

    time_formats: dict[str, str] = {}
    for canonical, time_format in raw.get("time", {}).items():
        _check_canonical(canonical, "time", fail)
        if canonical not in TIME_COLUMNS:
            raise fail(f"[time] {canonical}: not a time column (time columns: {', '.join(TIME_COLUMNS)})")
        if canonical not in columns:
            raise fail(f"[time] {canonical}: the column is not mapped in [columns]")
        if not isinstance(time_format, str):
            raise fail(f"[time] {canonical} = {time_format!r} must be a string")
        if time_format not in NAMED_TIME_FORMATS and "%" not in time_format:
            raise fail(
                f"[time] {canonical} = {time_format!r} is not unix_s, unix_ms, iso8601 "
                "or a strftime pattern such as '%Y%m%d'"
            )
        time_formats[canonical] = time_format

    event_types: dict[str, str] = {}
    for source_type, landed_type in raw.get("event_types", {}).items():
        if "event_type" not in columns:
            raise fail("[event_types] renames source event types: map event_type in [columns] first")
        if not isinstance(landed_type, str) or not landed_type.strip():
            raise fail(f"[event_types] {source_type!r} = {landed_type!r} must be a non-empty event type")
        event_types[source_type] = landed_type.strip()

    for required in ("player_id", "event_time"):
        if required not in columns:
            raise fail(f"[columns] {required} is required (the source column holding it)")
    if "event_type" not in columns and "event_type" not in constants:
        raise fail("event_type is required: map it in [columns] or give it in [constants]")

    return EventMapping(
        format=fmt,
        separator=SEPARATORS[separator],
        has_header=has_header,
        columns=columns,
        constants=constants,
        time_formats=time_formats,
        event_types=event_types,
    )


def _check_canonical(name: str, section: str, fail: Callable[[str], MappingError]) -> None:
    if name not in CANONICAL_COLUMNS:
        raise fail(f"[{section}] {name}: unknown canonical column (known: {', '.join(CANONICAL_COLUMNS)})")
