"""The warm path: today's features of the players the collector just heard from, every few seconds.

The batch graph writes the online store once a day (`online_features`). Between runs, the warm
path applies newly collected events incrementally, the same way the batch graph makes day D's
features: the stored player state as of the newest day the graph processed, advanced with the
events landed since (cleaned by the same rules), then `features_from_state` for today. Only the
players with new events are computed, so a tick costs their events, not the game's.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ml_assets.core.events.cleaning import clean_events
from ml_assets.core.events.landing import LANDING_SCHEMA, list_batches, partition_day
from ml_assets.core.features.player import daily_activity
from ml_assets.core.features.snapshots import features_from_state
from ml_assets.core.features.state import (
    CARRY_DAYS,
    STATE_DATE,
    advance_state,
    conform_state,
    latest_state,
    state_schema,
    state_vocabulary,
    vocabulary_from_counts,
)
from ml_assets.core.settings import Settings
from ml_assets.lake.files import write_atomic
from ml_assets.lake.tables import EVENT_TYPE_COUNTS, PLAYER_STATE, open_table, table_uri
from ml_assets.serving.online_features import online_batch
from ml_assets.serving.online_store import OnlineStore

LOG = logging.getLogger(__name__)


def warm_features(
    state: pl.LazyFrame | None,
    counts: pl.LazyFrame | None,
    events: pl.DataFrame,
    day: date,
    windows: Sequence[int],
    max_event_types: int,
) -> pl.DataFrame:
    """Features of `day` for the players of `events` (their clean events after the stored state's
    newest day, up to `day`), from the stored `state` and event type `counts` (None: nothing stored)."""
    players = events["player_id"].unique()
    stored_last: date | None = None
    if state is not None:
        stored_last = state.select(pl.col(STATE_DATE).max()).collect().item()
    if stored_last is not None and counts is not None:
        known = vocabulary_from_counts(counts, stored_last, None)
        features_vocab = vocabulary_from_counts(counts, stored_last, max_event_types)
    else:
        own = _counts(events)
        known = vocabulary_from_counts(own, day, None)
        features_vocab = vocabulary_from_counts(own, day, max_event_types)
    valued = set(known.valued) | set(events.filter(pl.col("value").is_not_null())["event_type"].unique())
    vocab = state_vocabulary([*known.types, *events["event_type"].unique().to_list()], valued)
    first = (stored_last + timedelta(days=1)) if stored_last is not None else events["event_date"].min()
    assert isinstance(first, date)
    mine = pl.col("player_id").is_in(players.implode())
    if state is not None and stored_last is not None:
        theirs = state.filter(mine)
        prior = latest_state(theirs, stored_last, vocab)
        since = day - timedelta(days=max(windows) + CARRY_DAYS)
        kept = conform_state(theirs.filter(pl.col(STATE_DATE) >= since), vocab).collect()
    else:
        prior = pl.DataFrame(schema=state_schema(vocab))
        kept = prior
    daily = daily_activity(events.sort("event_time", "event_id").lazy(), vocab)
    fresh = advance_state(prior, daily, vocab, first, day)
    combined = pl.concat([kept, fresh]).sort("player_id", STATE_DATE)
    pieces = list(
        features_from_state(
            combined.lazy(), pl.LazyFrame(), day, day, windows, max_event_types, vocab=features_vocab
        )
    )
    if not pieces:
        return pl.DataFrame()
    return pl.concat(pieces).filter(pl.col("player_id").is_in(players.implode()))


def _counts(events: pl.DataFrame) -> pl.LazyFrame:
    daily = events.group_by("event_type").agg(
        pl.len().cast(pl.Int64).alias("events"),
        pl.col("value").is_not_null().sum().cast(pl.Int64).alias("valued_events"),
    )
    return daily.with_columns(pl.lit(events["event_date"].max()).alias("event_date")).lazy()


@dataclass
class TickReport:
    at: datetime
    players: int
    events: int
    seconds: float
    lag_seconds: float | None  # from the oldest newly collected event's receipt to the store write


class WarmPath:
    """Runs `tick` on a timer in the server: new landed or spooled rows -> their players' features.

    The rows landed since the stored state's newest day are kept in memory, a file's rows read once:
    a tick reads only the files that appeared since the last one, so its cost follows what was
    collected since, not the day so far.
    """

    def __init__(self, settings: Settings, store: OnlineStore) -> None:
        self.settings = settings
        self.store = store
        self.spool_dir = spool_dir(settings)
        self._since: date | None = None  # the first day the cache holds
        self._day: date | None = None
        self._rows = pl.DataFrame()  # landing rows of [_since, _day], with `_file`
        self._files_read: set[str] = set()
        self._applied: set[str] = set()  # event ids applied: a rolled spool file repeats them
        self._lock = threading.Lock()
        self.last: TickReport | None = None
        self.max_lag_seconds: float | None = None
        self.ticks = 0

    def _files(self, since: datetime) -> tuple[list[str], list[str]]:
        cutoff = since.timestamp()
        spool = [str(f) for f in sorted(self.spool_dir.glob("*.parquet"))]
        landed = [f.uri for f in list_batches(self.settings.landing_uri) if f.mtime >= cutoff]
        return landed, spool

    def tick(self, now: datetime | None = None) -> TickReport | None:
        """Apply what landed since the last tick; None when nothing new came."""
        with self._lock:
            return self._tick(now or datetime.now(UTC))

    def _tick(self, now: datetime) -> TickReport | None:
        started = time.perf_counter()
        day = now.date()
        uri = self.settings.lake_uri
        state_table = open_table(table_uri(uri, PLAYER_STATE))
        counts_table = open_table(table_uri(uri, EVENT_TYPE_COUNTS))
        state = pl.scan_delta(state_table) if state_table is not None else None
        counts = pl.scan_delta(counts_table) if counts_table is not None else None
        stored_last = state.select(pl.col(STATE_DATE).max()).collect().item() if state is not None else None
        if stored_last is not None and stored_last >= day:
            return None  # the batch graph has processed today already
        cleaning = self.settings.cleaning
        bounds = cleaning.time_bounds()
        since_day = (stored_last + timedelta(days=1)) if stored_last is not None else date(1970, 1, 1)
        if (since_day, day) != (self._since, self._day):  # the graph moved on, or a new day began
            self._since, self._day = since_day, day
            self._rows, self._files_read, self._applied = pl.DataFrame(), set(), set()
        # a file written before the day after the stored state (less the clock skew allowed) holds
        # no event of a later day
        since = datetime.combine(since_day, datetime.min.time(), UTC) - timedelta(
            hours=cleaning.max_future_skew_hours
        )
        landed, spool = self._files(since)
        present = {str(f) for f in [*landed, *spool]}
        new = [f for f in [*landed, *spool] if str(f) not in self._files_read]
        if self._rows.height:  # a rolled spool file's rows come back in its landing batch
            self._rows = self._rows.filter(pl.col("_file").is_in(list(present)))
        self._files_read &= present
        if not new:
            return None
        fresh = _read(new).with_columns(partition_day(bounds))
        self._files_read |= {str(f) for f in new}
        fresh = fresh.filter(pl.col("partition_date").is_between(since_day, day))
        self._rows = pl.concat([self._rows, fresh], how="vertical") if self._rows.height else fresh
        fresh_ids = set(fresh["event_id"].drop_nulls().to_list()) - self._applied
        players = fresh.filter(pl.col("event_id").is_in(list(fresh_ids)))["player_id"].drop_nulls().unique()
        if players.is_empty():
            return None
        mine = self._rows.filter(pl.col("player_id").is_in(players.implode())).drop("_file")
        clean = clean_events(mine.lazy(), cleaning.watermark_days, cleaning.limits(), bounds).clean
        clean = clean.filter(pl.col("event_date").is_between(since_day, day))
        features = self.settings.features
        rows = warm_features(state, counts, clean, day, features.windows, features.max_event_types)
        written_at = datetime.now(UTC)
        self.store.write_encoded(online_batch(rows, written_at, "warm"))
        received = fresh.filter(pl.col("event_id").is_in(list(fresh_ids)))["received_at"].min()
        lag = (written_at - received).total_seconds() if isinstance(received, datetime) else None
        self._applied |= fresh_ids
        self.ticks += 1
        if lag is not None:
            self.max_lag_seconds = max(self.max_lag_seconds or 0.0, lag)
        self.last = TickReport(written_at, rows.height, clean.height, time.perf_counter() - started, lag)
        return self.last

    def report(self) -> dict[str, Any]:
        """The last tick (players, events, seconds, lag) and the worst lag since the server started."""
        last = self.last
        return {
            "ticks": self.ticks,
            "last_at": last.at.isoformat() if last else None,
            "last_players": last.players if last else 0,
            "last_events": last.events if last else 0,
            "last_seconds": last.seconds if last else None,
            "last_lag_seconds": last.lag_seconds if last else None,
            "max_lag_seconds": self.max_lag_seconds,
            "rows_in_memory": self._rows.height,
        }


def spool_dir(settings: Settings) -> Path:
    """Where the collector spools acknowledged events before they land."""
    return settings.serving_dir / "spool"


def status_path(settings: Settings) -> Path:
    """Where the warm path process reports its last tick, for the server's /v1/status."""
    return settings.serving_dir / "warm_status.json"


def read_status(settings: Settings) -> dict[str, Any] | None:
    """The warm path's last report, or None before its first."""
    path = status_path(settings)
    return json.loads(path.read_text()) if path.exists() else None


def run_warm_path(home: str, config: str | None, stop: Any, parent: int) -> None:
    """The warm path's process: a tick every `warm_seconds` until `stop` is set or the server that
    started it is gone. Its own process, so a tick's work never stalls the server's requests."""
    from ml_assets.core.settings import load_settings
    from ml_assets.serving.stores import online_store

    os.nice(10)  # behind the server's requests for the CPU
    settings = load_settings(home, config)
    store = online_store(settings)
    warm = WarmPath(settings, store)
    every = settings.serving.warm_seconds
    due = time.monotonic() + every
    try:
        # a second's naps, not one of warm_seconds: a SIGKILLed server's child notices soon
        while not stop.wait(min(1.0, every)) and os.getppid() == parent:
            if time.monotonic() < due:
                continue
            due = time.monotonic() + every
            try:
                warm.tick()
            except Exception:  # logged; the next tick tries again (the rows stay in landing)
                LOG.exception("warm path tick failed")
            write_atomic(status_path(settings), json.dumps(warm.report()))
    finally:
        store.close()


def _read(files: list[str]) -> pl.DataFrame:
    """The rows of `files` that still exist (a spool file may have rolled away), with `_file`."""
    frames = []
    for f in files:
        try:
            rows = pl.read_parquet(f, schema=LANDING_SCHEMA, missing_columns="insert")
        except FileNotFoundError:
            continue
        frames.append(rows.with_columns(pl.lit(f).alias("_file")))
    if not frames:
        return pl.DataFrame(schema={**LANDING_SCHEMA, "_file": pl.String()})
    return pl.concat(frames, how="vertical")
