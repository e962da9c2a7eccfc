"""The warm path: today's features of the players the collector just heard from, every few seconds.

The batch graph writes the online store once a day (`online_features`). Between runs, the warm
path applies newly collected events incrementally, the same way the batch graph makes day D's
features: the stored player state as of the newest day the graph processed, advanced with the
events landed since (cleaned by the same rules), then `features_from_state` for today. Only the
players with new events are computed, so a tick costs their events, not the game's.
"""

from __future__ import annotations

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
from ml_assets.lake.tables import EVENT_TYPE_COUNTS, PLAYER_STATE, open_table, table_uri
from ml_assets.serving.collector import Collector
from ml_assets.serving.online_features import online_rows
from ml_assets.serving.online_store import OnlineStore


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
        known = vocabulary_from_counts(_counts(events), day, None)
        features_vocab = vocabulary_from_counts(_counts(events), day, max_event_types)
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
    """Runs `tick` on a timer in the server: new landed or spooled rows -> their players' features."""

    def __init__(self, settings: Settings, store: OnlineStore, collector: Collector | None) -> None:
        self.settings = settings
        self.store = store
        self.collector = collector
        self._done: set[str] = set()  # files already applied (by path)
        self._applied: set[str] = set()  # event ids applied today: a rolled spool file repeats them
        self._day: date | None = None
        self._lock = threading.Lock()
        self.last: TickReport | None = None
        self.max_lag_seconds: float | None = None
        self.ticks = 0

    def _files(self, since: datetime) -> list[Path]:
        cutoff = since.timestamp()
        spool = self.collector.spool_files() if self.collector is not None else []
        landed = [f for f in list_batches(self.settings.landing_dir) if _mtime(f) >= cutoff]
        return [*landed, *spool]

    def tick(self, now: datetime | None = None) -> TickReport | None:
        """Apply what landed since the last tick; None when nothing new came."""
        with self._lock:
            return self._tick(now or datetime.now(UTC))

    def _tick(self, now: datetime) -> TickReport | None:
        started = time.perf_counter()
        day = now.date()
        if day != self._day:
            self._day, self._applied = day, set()
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
        # a file written before the day after the stored state (less the clock skew allowed) holds
        # no event of a later day
        since_day = (stored_last + timedelta(days=1)) if stored_last is not None else date(1970, 1, 1)
        since = datetime.combine(since_day, datetime.min.time(), UTC) - timedelta(
            hours=cleaning.max_future_skew_hours
        )
        files = self._files(since)
        new = [f for f in files if str(f) not in self._done]
        if not new:
            return None
        fresh = _read(new)
        fresh_ids = set(fresh["event_id"].drop_nulls().to_list()) - self._applied
        players = fresh["player_id"].drop_nulls().unique()
        if players.is_empty():
            self._done.update(str(f) for f in new)
            return None
        landed = (
            _read(files)
            .with_columns(partition_day(bounds))
            .filter(
                pl.col("player_id").is_in(players.implode())
                & pl.col("partition_date").is_between(since_day, day)
            )
        )
        clean = clean_events(landed.lazy(), cleaning.watermark_days, cleaning.limits(), bounds).clean
        clean = clean.filter(pl.col("event_date").is_between(since_day, day))
        features = self.settings.features
        rows = warm_features(state, counts, clean, day, features.windows, features.max_event_types)
        written_at = datetime.now(UTC)
        self.store.write(online_rows(rows, written_at, "warm"))
        received = fresh.filter(pl.col("event_id").is_in(list(fresh_ids)))["received_at"].min()
        lag = (written_at - received).total_seconds() if isinstance(received, datetime) else None
        self._done.update(str(f) for f in new)
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
        }


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:  # a spool file rolled away between listing and looking
        return 0.0


def _read(files: list[Path]) -> pl.DataFrame:
    present = [str(f) for f in files if f.exists()]
    if not present:
        return pl.DataFrame(schema=LANDING_SCHEMA)
    return pl.read_parquet(present, schema=LANDING_SCHEMA, missing_columns="insert")
