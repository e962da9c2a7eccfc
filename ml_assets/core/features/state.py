"""Per-player running state: each player's lifetime totals as of every day they changed.

The features of day D need each player's lifetime totals (counts, value sums and maxima, first
and last days, latest attributes) and the same totals `w` days earlier for each window. Computing
them from every event since the game began makes the daily refresh grow with the game's age. The
state table stores them instead: a row per (day, player) for every player active that day, with
their totals through that day. A player who stays away gets their unchanged row again every
CARRY_DAYS days (a "carried" row), so any CARRY_DAYS consecutive days hold a row of every player
ever seen: the state as of day D is each player's latest row in [D - CARRY_DAYS + 1, D].

A day's rows come from the state as of the day before plus that day's events. A range of days
is the same computation over the range's events at once and gives the same bits (integer totals
are exact, value sums are summed per player in day order), so a backfill in one run and a daily
refresh one day at a time write the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, timedelta

import polars as pl

from ml_assets.core.days import ONE_DAY, day_chunks
from ml_assets.core.features.player import ATTRIBUTES, EventVocabulary, daily_activity, running_totals

STATE_DATE = "state_date"
# Every player has a row in any this many consecutive days: a day's state reads this many days
# back. Larger means fewer carried rows (players ever / CARRY_DAYS a day) but a longer read.
CARRY_DAYS = 28
_FAR = date(9999, 12, 31)


def event_type_counts(events: pl.LazyFrame) -> pl.DataFrame:
    """Events and events with a value per (day, event type) of `events`."""
    return (
        events.group_by("event_date", "event_type")
        .agg(
            pl.len().alias("events"),
            pl.col("value").is_not_null().sum().cast(pl.Int64).alias("valued_events"),
        )
        .with_columns(pl.col("events").cast(pl.Int64))
        .sort("event_date", "event_type")
        .collect()
    )


def cumulative_counts(
    prior: pl.DataFrame | None, daily: pl.DataFrame, first: date, last: date
) -> pl.DataFrame:
    """Events and valued events per event type up to each day of [first, last]: a row per day and
    type seen by then. `prior` holds the totals as of `first` - 1 (event_type, events,
    valued_events; None: nothing before), `daily` the `event_type_counts` of the days."""
    days = pl.DataFrame({"event_date": pl.date_range(first, last, eager=True)})
    before = (
        prior.select("event_type", "events", "valued_events")
        if prior is not None
        else pl.DataFrame(schema={"event_type": pl.String, "events": pl.Int64, "valued_events": pl.Int64})
    )
    types = pl.concat([before.select("event_type"), daily.select("event_type")]).unique()
    running = (
        days.join(types, how="cross")
        .join(daily, on=["event_date", "event_type"], how="left")
        .fill_null(0)
        .sort("event_type", "event_date")
        .with_columns(pl.col("events", "valued_events").cum_sum().over("event_type"))
        .join(before, on="event_type", how="left", suffix="_before")
        .with_columns(
            pl.col("events") + pl.col("events_before").fill_null(0),
            pl.col("valued_events") + pl.col("valued_events_before").fill_null(0),
        )
    )
    return (
        running.filter(pl.col("events") > 0)
        .select("event_date", "event_type", "events", "valued_events")
        .sort("event_date", "event_type")
    )


def vocabulary_from_counts(counts: pl.LazyFrame, as_of: date, max_types: int | None) -> EventVocabulary:
    """The `max_types` most frequent event types up to `as_of` (ties by name; None: all), and the valued.

    `counts` are `cumulative_counts`: the row of `as_of` holds every type seen by then. The same
    choice `event_vocabulary` makes from the events themselves.
    """
    totals = (
        counts.filter(pl.col("event_date") == as_of)
        .select("event_type", pl.col("events").alias("n"), (pl.col("valued_events") > 0).alias("valued"))
        .sort(["n", "event_type"], descending=[True, False])
    )
    stats = (totals if max_types is None else totals.head(max_types)).collect()
    return EventVocabulary(
        types=tuple(sorted(stats["event_type"].to_list())),
        valued=frozenset(stats.filter(pl.col("valued"))["event_type"].to_list()),
    )


def state_schema(vocab: EventVocabulary) -> pl.Schema:
    """The state table's columns for the event types of `vocab` (value columns for valued types)."""
    columns: dict[str, pl.DataType] = {
        STATE_DATE: pl.Date(),
        "player_id": pl.String(),
        "active": pl.Boolean(),
        "first_day": pl.Date(),
        "last_active_day": pl.Date(),
        "cum_events": pl.Int32(),
        "cum_active_days": pl.Int32(),
    }
    for t in vocab.types:
        c = vocab.column(t)
        columns[f"{c}_cum_n"] = pl.Int32()
        columns[f"{c}_last_day"] = pl.Date()
        if t in vocab.valued:
            columns[f"{c}_cum_sum"] = pl.Float64()
            columns[f"{c}_cum_max"] = pl.Float32()
    columns.update({a: pl.String() for a in ATTRIBUTES})
    return pl.Schema(columns)


def conform_state(state: pl.LazyFrame, vocab: EventVocabulary) -> pl.LazyFrame:
    """State rows with exactly `vocab`'s columns. A type (or its values) first seen after a row was
    written has no column there: its count and sum were 0 and its maximum and last day null."""
    have = state.collect_schema()
    columns = []
    for name, dtype in state_schema(vocab).items():
        if name not in have:
            zero = name.endswith(("_cum_n", "_cum_sum"))
            columns.append(pl.lit(0 if zero else None, dtype).alias(name))
        elif name.endswith(("_cum_n", "_cum_sum")):
            columns.append(pl.col(name).fill_null(0).cast(dtype))
        else:
            columns.append(pl.col(name).cast(dtype))
    return state.select(columns)


def latest_state(state: pl.LazyFrame, as_of: date, vocab: EventVocabulary) -> pl.DataFrame:
    """Each player's state as of `as_of`: their latest row of the CARRY_DAYS days up to it, by player."""
    recent = state.filter(pl.col(STATE_DATE).is_between(as_of - timedelta(days=CARRY_DAYS - 1), as_of))
    return (
        conform_state(recent, vocab)
        .sort("player_id", STATE_DATE)
        .unique("player_id", keep="last", maintain_order=True)
        .collect()
    )


def latest_rows(rows: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """Each player's latest row of `rows` within the CARRY_DAYS days up to `as_of` (every player's
    state as of `as_of`, given rows that hold those days), by player."""
    return (
        rows.filter(pl.col(STATE_DATE) > as_of - timedelta(days=CARRY_DAYS))
        .sort("player_id", STATE_DATE)
        .unique("player_id", keep="last", maintain_order=True)
    )


def prior_state(
    state: pl.LazyFrame, first: date, last: date, active: pl.Series, vocab: EventVocabulary
) -> pl.DataFrame:
    """What `advance_state` of [first, last] needs of the state as of `first` - 1: the rows of the
    `active` players and of those whose carried row falls due by `last`. Only their rows are read
    whole; of the others, just player and day."""
    before = first - timedelta(days=1)
    recent = state.filter(pl.col(STATE_DATE).is_between(before - timedelta(days=CARRY_DAYS - 1), before))
    latest = recent.group_by("player_id").agg(pl.col(STATE_DATE).max()).collect()
    due = latest.filter(pl.col(STATE_DATE) <= last - timedelta(days=CARRY_DAYS))["player_id"]
    needed = pl.concat([due, active]).unique()
    return latest_state(state.filter(pl.col("player_id").is_in(needed.implode())), before, vocab)


def advance_state(
    prior: pl.DataFrame, daily: pl.DataFrame, vocab: EventVocabulary, first: date, last: date
) -> pl.DataFrame:
    """The state rows of days [first, last], sorted by player and day.

    `prior` is the state as of `first` - 1 (`latest_state`, conformed to `vocab`); `daily` is
    `daily_activity` of the days' events with `vocab` (every type the state tracks), sorted by
    player and day. A player's stored state enters the running totals as their first row.
    """
    schema = state_schema(vocab)
    active = pl.DataFrame(schema=schema)
    if not daily.is_empty():
        stored = prior.join(daily.select("player_id").unique(), on="player_id", how="semi")
        rows = _with_state_columns(daily, vocab)
        if not stored.is_empty():  # daily rows come sorted; stored rows go before each player's days
            rows = pl.concat([_as_daily_row(stored, vocab), rows], how="diagonal")
            rows = rows.sort("player_id", "event_date", maintain_order=True)
        # only attributes with gaps need their latest value carried over: the scans cost time
        fill = [a for a in ATTRIBUTES if rows[a].null_count() > 0]
        totals = running_totals(rows.lazy(), vocab, fill)
        active = (
            totals.filter(~pl.col("_stored"))
            .with_columns(
                pl.col("event_date").alias(STATE_DATE),
                pl.lit(True).alias("active"),
                pl.col("event_date").alias("last_active_day"),
            )
            .select(schema.names())
            .collect(engine="in-memory")  # column scans: faster in memory than streaming
        )
    carried = _carried(prior.select(schema.names()), active, last)
    if carried.is_empty():
        return active  # sorted by player and day already
    return pl.concat([active, carried]).sort("player_id", STATE_DATE)


def state_pieces(
    events: pl.LazyFrame,
    stored: pl.LazyFrame | None,
    vocab: EventVocabulary,
    first: date,
    last: date,
    chunk_days: int,
) -> Iterator[pl.DataFrame]:
    """The state rows of days [first, last], `chunk_days` days a piece (memory holds one piece's
    days), each piece from the state the pieces before left: the same bits as one pass or one run
    a day. `events` are the clean events of the days, `stored` the state table (None: no table yet)."""
    pieces = day_chunks(first, last, chunk_days)
    latest: pl.DataFrame | None = None
    for lo, hi in pieces:
        daily = daily_activity(events.filter(pl.col("event_date").is_between(lo, hi)), vocab)
        if latest is None:
            # one piece needs only its players and those due a carried row; more pieces carry
            # every player along, so they start from every player's state
            latest = (
                pl.DataFrame(schema=state_schema(vocab))
                if stored is None
                else prior_state(stored, lo, hi, daily["player_id"].unique(), vocab)
                if len(pieces) == 1
                else latest_state(stored, lo - ONE_DAY, vocab)
            )
        rows = advance_state(latest, daily, vocab, lo, hi)
        yield rows
        latest = latest_rows(pl.concat([latest, rows]), hi)


def state_vocabulary(types: Iterable[str], valued: Iterable[str]) -> EventVocabulary:
    """The vocabulary a state tracks: every type seen, value columns for those that ever had one."""
    return EventVocabulary(types=tuple(sorted(set(types))), valued=frozenset(valued))


def _as_daily_row(state: pl.DataFrame, vocab: EventVocabulary) -> pl.DataFrame:
    """Stored state rows in the shape of `daily_activity` rows, dated the player's last active day."""
    columns: list[pl.Expr] = [
        pl.col("player_id"),
        pl.col("last_active_day").alias("event_date"),
        pl.col("cum_events").alias("n_events"),
        pl.col("cum_active_days").alias("active_days"),
        pl.col("first_day"),
        pl.lit(True).alias("_stored"),
    ]
    for t in vocab.types:
        c = vocab.column(t)
        columns += [pl.col(f"{c}_cum_n").alias(f"{c}_n"), pl.col(f"{c}_last_day")]
        if t in vocab.valued:
            columns += [
                pl.col(f"{c}_cum_sum").alias(f"{c}_sum"),
                pl.col(f"{c}_cum_max").cast(pl.Float64).alias(f"{c}_max"),
            ]
    return state.select(*columns, *ATTRIBUTES)


def _with_state_columns(daily: pl.DataFrame, vocab: EventVocabulary) -> pl.DataFrame:
    """Daily rows with the columns a stored row fills: one active day, no stored first or last days."""
    return daily.with_columns(
        pl.lit(1, pl.Int32).alias("active_days"),
        pl.lit(None, pl.Date).alias("first_day"),
        pl.lit(False).alias("_stored"),
        *(pl.lit(None, pl.Date).alias(f"{vocab.column(t)}_last_day") for t in vocab.types),
    )


def _carried(prior: pl.DataFrame, active: pl.DataFrame, last: date) -> pl.DataFrame:
    """Rows repeating a player's state every CARRY_DAYS days they stay away, up to `last`.

    Each stored or new row is repeated at its day + k * CARRY_DAYS (k >= 1) before the player's
    next active day, so no player goes CARRY_DAYS days without a row.
    """
    # a player's rows: at most one stored row, then active days only, so the next row is the next active day
    rows = pl.concat([prior, active]).sort("player_id", STATE_DATE)
    same_player = pl.col("player_id").shift(-1) == pl.col("player_id")
    next_active = pl.when(same_player).then(pl.col(STATE_DATE).shift(-1))
    step = pl.duration(days=CARRY_DAYS)
    until = pl.min_horizontal(pl.coalesce(next_active, pl.lit(_FAR)) - pl.duration(days=1), pl.lit(last))
    repeats = ((until - pl.col(STATE_DATE)).dt.total_days() // CARRY_DAYS).clip(0)
    return (
        rows.with_columns(repeats.alias("_k"))
        .filter(pl.col("_k") > 0)
        .with_columns(pl.int_ranges(1, pl.col("_k") + 1).alias("_k"))
        .explode("_k")
        .with_columns(
            (pl.col(STATE_DATE) + step * pl.col("_k")).alias(STATE_DATE),
            pl.lit(False).alias("active"),
        )
        .drop("_k")
    )
