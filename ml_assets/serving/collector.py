"""The event collector's core: validate a client's batch, drop repeats, make it durable, land it.

No HTTP here (`serving/app.py` is the thin FastAPI layer). A batch is acknowledged only once its
rows sit in an fsync'd spool file: a crash after the acknowledgement loses nothing. Spool files
are rolled into ordinary landing batches every `roll_seconds` (one landing batch for many client
requests, so the landing sensor and `raw_events` see a few files a minute, not one per request).
A roll is idempotent: its batch id is a hash of the spool files it holds, so a crash between
landing and deleting the spool lands nothing twice.

Repeats are dropped by event_id against every id the collector acknowledged within the dedup
horizon (spool and landing), so a client that retries after a timeout never double counts.
Cleaning still deduplicates across all sources (ingest, simulator) on the same horizon.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ml_assets.core.events.cleaning import FieldLimits
from ml_assets.core.events.landing import (
    LANDING_SCHEMA,
    TimeBounds,
    conform,
    list_batches,
    write_batch,
)
from ml_assets.lake.files import Location, fsync_dir

LOG = logging.getLogger(__name__)
SOURCE = "collector"
TEXT_FIELDS = ("platform", "country", "app_version")


@dataclass(frozen=True)
class Rejection:
    """One event of a batch the collector refused, with why (the others of the batch are accepted)."""

    index: int
    event_id: str | None
    reason: str


@dataclass(frozen=True)
class Receipt:
    """What became of a batch: events made durable, repeats dropped, and the events refused."""

    accepted: int
    duplicates: int
    rejected: list[Rejection] = field(default_factory=list)


class NotDurable(RuntimeError):
    """The events could not be written and fsync'd: the client must retry (HTTP 503)."""


def parse_time(raw: Any) -> datetime | None:
    """An event time from ISO 8601 text (a zone required) or epoch milliseconds; None if neither."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            return None
        try:
            return datetime.fromtimestamp(raw / 1000.0, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            return None
        # a time without a zone is ambiguous across devices: refuse it rather than guess UTC
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    return None


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)  # numeric ids are common in client code; ids are strings in the lake
    raise TypeError


def validate_event(raw: Any, limits: FieldLimits) -> tuple[dict[str, Any] | None, str | None]:
    """One client event as a landing row (canonical columns), or None and the reason it is refused."""
    if not isinstance(raw, Mapping):
        return None, "not_an_object"
    row: dict[str, Any] = {}
    try:
        for name in ("event_id", "player_id", "event_type", *TEXT_FIELDS):
            row[name] = _text(raw.get(name))
    except TypeError:
        return None, "field_not_text"
    for name in ("event_id", "player_id", "event_type"):
        if row[name] is None or not row[name].strip():
            return None, f"missing_{name}"
    if any(v is not None and len(v) > limits.text for v in row.values()):
        return None, "field_too_long"
    row["event_type"] = row["event_type"].strip()
    when = parse_time(raw.get("event_time"))
    if when is None:
        return None, "malformed_event_time"
    row["event_time"] = when
    row["event_time_raw"] = str(raw.get("event_time"))
    value = raw.get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None, "malformed_value"
    row["value"] = None if value is None else float(value)
    properties = raw.get("properties")
    if properties is not None:
        if isinstance(properties, Mapping):
            properties = json.dumps(properties, separators=(",", ":"), allow_nan=False, default=str)
        elif not isinstance(properties, str):
            return None, "malformed_properties"
        if len(properties) > limits.properties:
            return None, "field_too_long"
    row["properties"] = properties
    return row, None


def _digest(event_id: str) -> bytes:
    # 128 bits: a false "duplicate" (a collision) is about 1e-20 likely over billions of ids
    return hashlib.blake2b(event_id.encode(), digest_size=16).digest()


class DedupIndex:
    """Event ids the collector acknowledged, by the UTC day it received them, for `horizon_days`.

    Ids are kept as 16-byte digests: a set for the current day, and each earlier day frozen into a
    sorted array (16 bytes an id, about a tenth of a set of strings), searched by bisection.
    """

    def __init__(self, horizon_days: int) -> None:
        self.horizon_days = horizon_days
        self._open: dict[date, set[bytes]] = {}
        self._frozen: dict[date, np.ndarray] = {}

    def __contains__(self, event_id: str) -> bool:
        key = _digest(event_id)
        if any(key in ids for ids in self._open.values()):
            return True
        for ids in self._frozen.values():
            i = int(np.searchsorted(ids, key))
            # numpy's fixed-width bytes drop trailing zero bytes when read back: compare likewise
            if i < len(ids) and ids[i] == key.rstrip(b"\0"):
                return True
        return False

    def __len__(self) -> int:
        return sum(len(v) for v in self._open.values()) + sum(len(v) for v in self._frozen.values())

    def add(self, ids: Sequence[str], day: date) -> None:
        self._open.setdefault(day, set()).update(_digest(i) for i in ids)

    def expire(self, today: date) -> None:
        """Forget ids received before the horizon (cleaning tells such repeats apart as distinct
        events too), and freeze the days before `today`."""
        cutoff = today - timedelta(days=self.horizon_days)
        for day in [d for d in self._frozen if d < cutoff]:
            del self._frozen[day]
        for day in [d for d in self._open if d < today]:
            ids = self._open.pop(day)
            if day >= cutoff:
                merged = np.concatenate(
                    [self._frozen.get(day, np.empty(0, "S16")), np.array(list(ids), "S16")]
                )
                self._frozen[day] = np.unique(merged)

    def load(self, frames: pl.LazyFrame, today: date) -> None:
        """Remember the ids of already-landed or spooled collector rows received within the horizon."""
        since = today - timedelta(days=self.horizon_days)
        rows = (
            frames.filter((pl.col("source") == SOURCE) & (pl.col("received_date") >= since))
            .select("event_id", "received_date")
            .unique()
            .collect()
        )
        for (day,), part in rows.partition_by("received_date", as_dict=True).items():
            self.add(part["event_id"].to_list(), day)
        self.expire(today)


def fsync_write_parquet(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` to `target` so that, once this returns, it survives a crash or power loss:
    written aside, fsync'd, renamed into place, and the directory entry fsync'd."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            frame.write_parquet(fh, statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(target.parent)


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    ids: list[str]
    future: Future[None]


class Collector:
    """Accepts client batches: validation, dedup, durable group commits to a spool, rolls to landing.

    One writer thread commits whatever requests are waiting as one spool file with one fsync
    (group commit), so many small client batches cost one disk flush, not one each.
    """

    def __init__(
        self,
        landing: Location,
        spool_dir: Path,
        dedup_horizon_days: int = 7,
        limits: FieldLimits = FieldLimits(),
        bounds: TimeBounds = TimeBounds(),
        roll_seconds: float = 10.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.landing = landing
        self.spool_dir = spool_dir
        self.limits = limits
        self.bounds = bounds
        self.roll_seconds = roll_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seen = DedupIndex(dedup_horizon_days)
        # ids of batches being written, with their write: a retry of them waits for its outcome
        self._inflight: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[_Pending] = []
        self._stopping = False
        self._roll_lock = threading.Lock()
        self.landed_batches = 0
        self.last_durable_at: datetime | None = None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)
        self._writer.start()
        self._roller = threading.Thread(target=self._roll_loop, name="collector-roller", daemon=True)
        self._roller.start()

    # -- startup ---------------------------------------------------------------------------------

    def recover(self) -> None:
        """Land what a crash left in the spool, then remember every id acknowledged in the horizon."""
        for partial in self.spool_dir.glob(".*.tmp"):  # a write cut short: never acknowledged
            partial.unlink()
        self.roll()
        today = self._clock().date()
        files = [f.uri for f in list_batches(self.landing)]
        if files:
            scan = pl.scan_parquet(files, schema=LANDING_SCHEMA, missing_columns="insert")
            self._seen.load(scan, today)

    # -- accepting -------------------------------------------------------------------------------

    def accept(self, events: Sequence[Any], timeout_s: float = 30.0) -> Receipt:
        """Validate `events`, drop repeats, and return once the rest are durable (NotDurable if not)."""
        received = self._clock()
        rows: list[dict[str, Any]] = []
        rejected: list[Rejection] = []
        for i, raw in enumerate(events):
            row, reason = validate_event(raw, self.limits)
            if row is None:
                event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
                rejected.append(Rejection(i, event_id if isinstance(event_id, str) else None, reason or ""))
            else:
                rows.append(row)
        pending: _Pending | None = None
        waits: set[Future[None]] = set()  # writes of this batch's ids that another request started
        with self._lock:
            fresh: list[dict[str, Any]] = []
            ids: list[str] = []
            batch_ids: set[str] = set()
            for row in rows:
                event_id = row["event_id"]
                if event_id in self._seen or event_id in batch_ids:
                    continue
                if event_id in self._inflight:
                    waits.add(self._inflight[event_id])
                    continue
                batch_ids.add(event_id)
                fresh.append(row)
                ids.append(event_id)
            duplicates = len(rows) - len(fresh)
            if fresh:
                for row in fresh:
                    row["received_at"] = received
                    row["received_date"] = received.date()
                pending = _Pending(fresh, ids, Future())
                self._inflight.update(dict.fromkeys(ids, pending.future))
                self._queue.append(pending)
                self._wake.notify()
        # 200 only when every event is durable: ours, and the repeats another request is writing
        for future in [*([pending.future] if pending else []), *waits]:
            try:
                future.result(timeout=timeout_s)
            except TimeoutError as exc:
                raise NotDurable(f"the spool write did not finish within {timeout_s} s") from exc
        return Receipt(len(fresh), duplicates, rejected)

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue and self._stopping:
                    return
                group, self._queue = self._queue, []
            try:
                self._commit(group)
            except Exception as exc:  # every waiting client gets the failure as a 503, none an ack
                with self._lock:
                    for pending in group:
                        for event_id in pending.ids:
                            self._inflight.pop(event_id, None)
                for pending in group:
                    pending.future.set_exception(NotDurable(f"events not durable: {exc}"))
                continue
            now = self._clock()
            with self._lock:
                for pending in group:
                    for event_id in pending.ids:
                        self._inflight.pop(event_id, None)
                    self._seen.add(pending.ids, pending.rows[0]["received_date"])
                self.last_durable_at = now
            for pending in group:
                pending.future.set_result(None)

    def _commit(self, group: list[_Pending]) -> None:
        rows = [row for pending in group for row in pending.rows]
        frame = conform(pl.DataFrame(rows, schema_overrides=_ROW_TYPES, strict=False), "spool", SOURCE)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        fsync_write_parquet(frame, self.spool_dir / name)

    # -- rolling into landing --------------------------------------------------------------------

    def spool_files(self) -> list[Path]:
        """Durable spool files not yet landed, oldest first."""
        return sorted(self.spool_dir.glob("*.parquet"))

    def roll(self) -> int:
        """Land the spool as one landing batch (its id: a hash of the spool file names); rows landed."""
        # the process lock keeps this server's threads apart; the file lock, servers on one home
        with self._roll_lock, open(self.spool_dir / ".roll.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            files = self.spool_files()
            if not files:
                return 0
            digest = hashlib.sha256("\n".join(f.name for f in files).encode()).hexdigest()[:24]
            batch_id = f"{SOURCE}-{files[0].name[:20]}-{digest}"
            frame = pl.read_parquet([str(f) for f in files], schema=LANDING_SCHEMA, missing_columns="insert")
            write_batch(self.landing, frame, batch_id, SOURCE, self.bounds, durable=True)
            for f in files:
                f.unlink()
            fsync_dir(self.spool_dir)
            self.landed_batches += 1
            return frame.height

    def _roll_loop(self) -> None:
        while not self._stopping:
            time.sleep(self.roll_seconds)
            try:
                self.roll()
                with self._lock:
                    self._seen.expire(self._clock().date())
            except Exception:  # a failed roll keeps the spool; the next tick (or a restart) retries it
                LOG.exception("rolling the collector spool into landing failed; will retry")

    def close(self) -> None:
        """Finish queued writes, land the spool, and stop the threads."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        self._writer.join(timeout=30)
        self.roll()

    @property
    def remembered_ids(self) -> int:
        return len(self._seen)


# the landing columns a validated client event fills (the batch bookkeeping comes from `conform`)
_ROW_TYPES: dict[str, pl.DataType] = {
    c: t for c, t in LANDING_SCHEMA.items() if c not in ("value_raw", "batch_id", "source")
}
