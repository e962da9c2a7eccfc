"""Feature snapshots from the player state table, and from events (through a state built in memory).

A snapshot of day D reads the state rows of the `max(windows)` days up to D (every active day in
the longest window, with its running totals) plus each player's state as of the day before them
(their totals when the windows begin). What a day costs depends on the window and the players,
not on how long the game has run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, timedelta

import polars as pl

from ml_assets.core.days import day_chunks
from ml_assets.core.features.player import (
    EventVocabulary,
    daily_activity,
    empty_features,
    feature_pieces,
    player_code,
)
from ml_assets.core.features.state import (
    CARRY_DAYS,
    STATE_DATE,
    advance_state,
    conform_state,
    cumulative_counts,
    event_type_counts,
    latest_state,
    state_schema,
    state_vocabulary,
    vocabulary_from_counts,
)

_WHOLE_PIECE_ROWS = 2_000_000  # `player_features` computes pieces of this many grid rows, then concatenates


def state_days_needed(first: date, windows: Sequence[int]) -> date:
    """The first state day the snapshots of `first` on read."""
    return first - timedelta(days=max(windows) + CARRY_DAYS - 1)


def snapshot_totals(
    state: pl.LazyFrame, vocab: EventVocabulary, first: date, last: date, longest: int
) -> pl.DataFrame:
    """Running totals for the snapshots of [first, last], sorted by player and day, with `_pc`.

    The active rows of (first - longest, last] are the players' totals on those days; a player's
    latest row on or before first - longest (their totals when the longest window begins) comes
    first, dated that day: only its sums are read, as the lagged totals of the windows.
    """
    start = first - timedelta(days=longest)
    window = conform_state(
        state.filter(pl.col(STATE_DATE).is_between(start, last, closed="right") & pl.col("active")), vocab
    ).collect()
    # of the days before, only the window's players' rows: the other rows (players ever, carried)
    # are most of those days, and the reader skips them by the player_id column alone
    players = window["player_id"].unique()
    before = latest_state(
        state.filter(pl.col("player_id").is_in(players.implode())), start, vocab
    ).with_columns(pl.lit(start).alias(STATE_DATE))
    return (
        pl.concat([before, window])
        .sort("player_id", STATE_DATE, maintain_order=True)
        .rename({STATE_DATE: "event_date"})
        .drop("active", "last_active_day")
        .with_columns(player_code().alias("_pc"))
    )


def features_from_state(
    state: pl.LazyFrame,
    counts: pl.LazyFrame,
    first: date,
    last: date,
    windows: Sequence[int] = (1, 7, 28),
    max_event_types: int = 40,
    chunk_rows: int = 1_000_000,
    vocab: EventVocabulary | None = None,
) -> Iterator[pl.DataFrame]:
    """Feature snapshots of days [first, last] from the state table, in pieces of whole players.

    The vocabulary is the `max_event_types` most frequent types up to `last` in `counts` (the
    event type counts per day), the same choice the events themselves would give.
    """
    vocab = vocab or vocabulary_from_counts(counts, last, max_event_types)
    totals = snapshot_totals(state, vocab, first, last, max(windows))
    yield from feature_pieces(totals, vocab, windows, first, last, chunk_rows)


def build_state(events: pl.LazyFrame, counts: pl.DataFrame, last: date, event_days: int = 14) -> pl.DataFrame:
    """The state rows of every day of `events` up to `last`, built from nothing.

    `counts` are the `cumulative_counts` of the events (the state tracks every type seen by
    `last`). Daily activity is aggregated `event_days` of events at a time (memory holds one
    range's events), then the running totals are one pass over all of it.
    """
    seen = vocabulary_from_counts(counts.lazy(), last, None)
    vocab = state_vocabulary(seen.types, seen.valued)
    empty = pl.DataFrame(schema=state_schema(vocab))
    if counts.is_empty():
        return empty
    start: date = counts["event_date"].min()  # type: ignore[assignment]
    parts = [
        daily_activity(events.filter(pl.col("event_date").is_between(lo, hi)), vocab)
        for lo, hi in day_chunks(start, last, event_days)
    ]
    return advance_state(empty, pl.concat(parts).sort("player_id", "event_date"), vocab, start, last)


def counts_of(events: pl.LazyFrame, last: date) -> pl.DataFrame:
    """The `cumulative_counts` of `events` from their first day to `last`."""
    daily = event_type_counts(events.filter(pl.col("event_date") <= last))
    first = daily["event_date"].min() if daily.height else last
    return cumulative_counts(None, daily, first, last)  # type: ignore[arg-type]


def player_feature_chunks(
    events: pl.LazyFrame,
    first: date,
    last: date,
    windows: Sequence[int] = (1, 7, 28),
    max_event_types: int = 40,
    chunk_rows: int = 1_000_000,
    event_days: int = 14,
    vocab: EventVocabulary | None = None,
) -> Iterator[pl.DataFrame]:
    """Feature snapshots of days [first, last] from clean `events` (reads only days <= last), in
    pieces of whole players of about `chunk_rows` grid rows: the same rows as from a stored state."""
    events = events.filter(pl.col("event_date") <= last)
    counts = counts_of(events, last)
    state = build_state(events, counts, last, event_days)
    yield from features_from_state(
        state.lazy(), counts.lazy(), first, last, windows, max_event_types, chunk_rows, vocab
    )


def player_features(
    events: pl.LazyFrame,
    first: date,
    last: date,
    windows: Sequence[int] = (1, 7, 28),
    max_event_types: int = 40,
    vocab: EventVocabulary | None = None,
) -> pl.LazyFrame:
    """Feature snapshots for every day in [first, last] from clean `events` (reads only days <= last).

    Generic features for each event type in the vocabulary (counts and value sums per window,
    value mean over the longest window, lifetime count and max, days since last), activity
    (events, active days per window, tenure, recency), game features where their event types
    exist, and the player's latest attributes. Rows come sorted by player and snapshot day.
    """
    events = events.filter(pl.col("event_date") <= last)
    vocab = vocab or vocabulary_from_counts(counts_of(events, last).lazy(), last, max_event_types)
    pieces = list(
        player_feature_chunks(events, first, last, windows, max_event_types, _WHOLE_PIECE_ROWS, vocab=vocab)
    )
    if not pieces:  # no rows: the empty table still has every column
        empty = pl.DataFrame(schema=state_schema(vocab)).lazy()
        totals = snapshot_totals(empty, vocab, first, last, max(windows))
        return empty_features(totals, vocab, windows).lazy()
    return pl.concat(pieces, rechunk=False).lazy()
