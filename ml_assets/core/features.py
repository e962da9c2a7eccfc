"""Per-player feature snapshots from clean events, as Polars lazy queries.

A snapshot row (snapshot_date D, player) uses only events on or before D. The population of a
snapshot is every player active in the longest trailing window ending at D. Windows are computed
from running totals over a player's active days: the total at D minus the total at D - w, each
found with an as-of join, so no day-by-player grid is ever built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

ATTRIBUTES = ("platform", "country", "app_version")
KEY = ["player_id", "snapshot_date"]


@dataclass(frozen=True)
class EventVocabulary:
    """The event types that get generic features, and which of them carry a value."""

    types: tuple[str, ...]
    valued: frozenset[str]

    def column(self, event_type: str) -> str:
        """A column-name-safe stem for an event type (lower case, non-alphanumerics to `_`)."""
        return "ev_" + re.sub(r"[^0-9a-z]+", "_", event_type.lower()).strip("_")


def event_vocabulary(events: pl.LazyFrame, max_types: int) -> EventVocabulary:
    """The `max_types` most frequent event types in `events` (ties by name), and those with values."""
    stats = (
        events.group_by("event_type")
        .agg(pl.len().alias("n"), pl.col("value").is_not_null().any().alias("valued"))
        .sort(["n", "event_type"], descending=[True, False])
        .head(max_types)
        .collect()
    )
    types = tuple(sorted(stats["event_type"].to_list()))
    valued = frozenset(stats.filter(pl.col("valued"))["event_type"].to_list())
    return EventVocabulary(types=types, valued=valued)


def daily_activity(events: pl.LazyFrame, vocab: EventVocabulary) -> pl.LazyFrame:
    """One row per (player, active day): counts and value sums/maxima per event type, attributes."""
    aggs: list[pl.Expr] = [pl.len().cast(pl.Int32).alias("n_events")]
    for t in vocab.types:
        c, is_t = vocab.column(t), pl.col("event_type") == t
        aggs.append(is_t.sum().cast(pl.Int32).alias(f"{c}_n"))
        if t in vocab.valued:
            aggs.append(pl.col("value").filter(is_t).sum().alias(f"{c}_sum"))
            aggs.append(pl.col("value").filter(is_t).max().alias(f"{c}_max"))
    aggs += [pl.col(a).drop_nulls().last().alias(a) for a in ATTRIBUTES]
    return events.group_by("player_id", "event_date").agg(aggs).sort("player_id", "event_date")


def running_totals(daily: pl.LazyFrame, vocab: EventVocabulary) -> pl.LazyFrame:
    """`daily` with per-player running totals up to and including each active day."""
    per_player = pl.col("player_id")
    cums: list[pl.Expr] = [
        pl.col("n_events").cum_sum().over(per_player).alias("cum_events"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over(per_player).alias("cum_active_days"),
        pl.col("event_date").min().over(per_player).alias("first_day"),
    ]
    for t in vocab.types:
        c = vocab.column(t)
        cums.append(pl.col(f"{c}_n").cum_sum().over(per_player).alias(f"{c}_cum_n"))
        last = pl.when(pl.col(f"{c}_n") > 0).then(pl.col("event_date"))
        cums.append(last.forward_fill().over(per_player).alias(f"{c}_last_day"))
        if t in vocab.valued:
            cums.append(pl.col(f"{c}_sum").fill_null(0).cum_sum().over(per_player).alias(f"{c}_cum_sum"))
            cums.append(pl.col(f"{c}_max").cum_max().forward_fill().over(per_player).alias(f"{c}_cum_max"))
    cums += [pl.col(a).forward_fill().over(per_player) for a in ATTRIBUTES]
    # the per-day counts, sums and maxima only feed the totals: dropping them keeps the table narrow
    per_day = ["n_events", *[f"{vocab.column(t)}_{k}" for t in vocab.types for k in ("n", "sum", "max")]]
    return daily.with_columns(cums).drop(per_day, strict=False)


def _summed(vocab: EventVocabulary) -> list[str]:
    """Running-total columns that windows difference."""
    cols = ["cum_events", "cum_active_days"]
    for t in vocab.types:
        cols.append(f"{vocab.column(t)}_cum_n")
        if t in vocab.valued:
            cols.append(f"{vocab.column(t)}_cum_sum")
    return cols


def snapshot_grid(totals: pl.LazyFrame, first: date, last: date, population_days: int) -> pl.LazyFrame:
    """A row per (player, snapshot day in [first, last]) for players active within `population_days`.

    Each active day covers the snapshots from itself until the day before the player's next active
    day, at most `population_days` of them; the row carries that day's running totals.
    """
    next_day = pl.col("event_date").shift(-1).over("player_id")
    cover_end = pl.min_horizontal(
        pl.col("event_date") + timedelta(days=population_days - 1),
        next_day - timedelta(days=1),
        pl.lit(last),
    )
    cover_start = pl.max_horizontal(pl.col("event_date"), pl.lit(first))
    return (
        totals.filter(pl.col("event_date") <= last)
        .with_columns(cover_start=cover_start, cover_end=cover_end)
        .filter(pl.col("cover_start") <= pl.col("cover_end"))
        .with_columns(snapshot_date=pl.date_ranges("cover_start", "cover_end"))
        .explode("snapshot_date")
        .rename({"event_date": "last_active_day"})
        .drop("cover_start", "cover_end")
    )


def _features_for(
    totals: pl.LazyFrame,
    base: pl.LazyFrame,
    vocab: EventVocabulary,
    windows: Sequence[int],
    first: date,
    last: date,
) -> pl.LazyFrame:
    """Feature rows for snapshot days [first, last] from running totals and their as-of base."""
    longest = windows[-1]
    grid = snapshot_grid(totals, first, last, longest).sort("snapshot_date")
    for w in windows:
        # totals as of D - w (the last active day on or before it): subtracting gives days D-w+1..D.
        # The grid is sorted by snapshot day, so D - w is sorted too: no re-sort before the join.
        grid = (
            grid.with_columns(_asof=(pl.col("snapshot_date") - timedelta(days=w)).set_sorted())
            .join_asof(
                base, on="_asof", by="player_id", strategy="backward", suffix=f"__{w}", check_sortedness=False
            )
            .drop("_asof")
        )
    out: list[pl.Expr] = [
        (pl.col("snapshot_date") - pl.col("first_day")).dt.total_days().cast(pl.Int32).alias("tenure_days"),
        (pl.col("snapshot_date") - pl.col("last_active_day"))
        .dt.total_days()
        .cast(pl.Int32)
        .alias("recency_days"),
        pl.col("cum_events").cast(pl.Int64).alias("events_total"),
    ]

    def in_window(col: str, w: int) -> pl.Expr:
        return pl.col(col) - pl.col(f"{col}__{w}").fill_null(0)

    for w in windows:
        out.append(in_window("cum_events", w).cast(pl.Int32).alias(f"events_{w}d"))
        out.append(in_window("cum_active_days", w).cast(pl.Int32).alias(f"active_days_{w}d"))
    for t in vocab.types:
        c = vocab.column(t)
        for w in windows:
            out.append(in_window(f"{c}_cum_n", w).cast(pl.Int32).alias(f"{c}_count_{w}d"))
        out.append(pl.col(f"{c}_cum_n").cast(pl.Int32).alias(f"{c}_count_total"))
        days_since = (pl.col("snapshot_date") - pl.col(f"{c}_last_day")).dt.total_days()
        out.append(days_since.cast(pl.Int32).alias(f"{c}_recency_days"))
        if t in vocab.valued:
            for w in windows:
                out.append(in_window(f"{c}_cum_sum", w).cast(pl.Float32).alias(f"{c}_value_sum_{w}d"))
            mean = in_window(f"{c}_cum_sum", longest) / in_window(f"{c}_cum_n", longest)
            out.append(
                pl.when(in_window(f"{c}_cum_n", longest) > 0)
                .then(mean)
                .cast(pl.Float32)
                .alias(f"{c}_value_mean_{longest}d")
            )
            out.append(pl.col(f"{c}_cum_max").cast(pl.Float32).alias(f"{c}_value_max"))
            out.append(pl.col(f"{c}_cum_sum").cast(pl.Float32).alias(f"{c}_value_total"))
    features = grid.select(*KEY, *out, *ATTRIBUTES)
    return features.with_columns(game_features(vocab, windows)).sort(KEY)


def _prepare(
    events: pl.LazyFrame,
    last: date,
    windows: Sequence[int],
    max_event_types: int,
    vocab: EventVocabulary | None,
) -> tuple[pl.LazyFrame, pl.LazyFrame, EventVocabulary, list[int]]:
    events = events.filter(pl.col("event_date") <= last)
    vocab = vocab or event_vocabulary(events, max_event_types)
    totals = running_totals(daily_activity(events, vocab), vocab)
    base = totals.select("player_id", pl.col("event_date").alias("_asof"), *_summed(vocab)).sort("_asof")
    return totals, base, vocab, sorted(set(windows))


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
    exist, and the player's latest attributes.
    """
    totals, base, vocab, windows = _prepare(events, last, windows, max_event_types, vocab)
    return _features_for(totals, base, vocab, windows, first, last)


def player_feature_chunks(
    events: pl.LazyFrame,
    first: date,
    last: date,
    windows: Sequence[int] = (1, 7, 28),
    max_event_types: int = 40,
    chunk_days: int = 7,
) -> Iterator[pl.DataFrame]:
    """`player_features` computed `chunk_days` snapshot days at a time, for bounded memory.

    Running totals are computed once; each piece holds only its days' rows, with the same columns.
    """
    totals, base, vocab, windows = _prepare(events, last, windows, max_event_types, None)
    totals_df, base_df = pl.collect_all([totals, base])
    day = first
    while day <= last:
        end = min(last, day + timedelta(days=chunk_days - 1))
        yield _features_for(totals_df.lazy(), base_df.lazy(), vocab, windows, day, end).collect()
        day = end + timedelta(days=1)


def game_features(vocab: EventVocabulary, windows: Sequence[int]) -> list[pl.Expr]:
    """Derived game features for the event types present (sessions, levels, spend, ads)."""
    present = set(vocab.types)
    short, longest = sorted(windows)[min(1, len(windows) - 1)], max(windows)
    col = vocab.column
    exprs: list[pl.Expr] = []

    def ratio(num: str, den: str) -> pl.Expr:
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).cast(pl.Float32)

    if "session_end" in vocab.valued:
        exprs.append(
            ratio(f"{col('session_end')}_value_sum_{short}d", f"{col('session_end')}_count_{short}d").alias(
                f"game_session_length_mean_{short}d"
            )
        )
    if {"level_fail", "level_start"} <= present:
        exprs.append(
            ratio(f"{col('level_fail')}_count_{longest}d", f"{col('level_start')}_count_{longest}d").alias(
                f"game_level_fail_rate_{longest}d"
            )
        )
    if "level_complete" in vocab.valued:
        exprs.append(pl.col(f"{col('level_complete')}_value_max").alias("game_level_max"))
    if "purchase" in present:
        exprs.append((pl.col(f"{col('purchase')}_count_total") > 0).alias("game_is_payer"))
    if {"ad_impression", "session_start"} <= present:
        exprs.append(
            ratio(f"{col('ad_impression')}_count_{short}d", f"{col('session_start')}_count_{short}d").alias(
                f"game_ads_per_session_{short}d"
            )
        )
    return exprs
