"""Per-player feature snapshots from clean events, as Polars lazy queries.

A snapshot row (snapshot_date D, player) uses only events on or before D. The population of a
snapshot is every player active in the longest trailing window ending at D. Windows are computed
from running totals over a player's active days: the total at D minus the total at D - w. Each
active day is expanded into the days it stands for, in player-then-day order, so D - w is simply
the row w places up; the feature table is then gathered from the small totals table by index:
no joins, no sorts and no per-group window functions over the big table.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

ATTRIBUTES = ("platform", "country", "app_version")
KEY = ["player_id", "snapshot_date"]
_PLAIN_TYPE = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
MAX_STEM = 40  # characters of a sanitised type name kept in its column name


def event_column(event_type: str) -> str:
    """The feature-column stem of an event type, the same whatever other types exist.

    A lower_snake_case type of up to MAX_STEM characters keeps its name (`level_complete` ->
    `ev_level_complete`). Any other gets its sanitised, shortened name plus 6 hex digits of its
    hash, so `Purchase` and `purchase`, `level-up` and `level_up`, or two non-ASCII names never
    share a column.
    """
    if len(event_type) <= MAX_STEM and _PLAIN_TYPE.fullmatch(event_type):
        return "ev_" + event_type
    stem = re.sub(r"[^0-9a-z]+", "_", event_type.lower()).strip("_")[:MAX_STEM]
    digest = hashlib.sha256(event_type.encode()).hexdigest()[:6]
    return f"ev_{stem}_{digest}" if stem else f"ev_x{digest}"


class EventTypeCollision(ValueError):
    """Two event types whose feature columns would be the same."""


@dataclass(frozen=True)
class EventVocabulary:
    """The event types that get generic features, and which of them carry a value."""

    types: tuple[str, ...]
    valued: frozenset[str]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for t in self.types:
            other = seen.setdefault(event_column(t), t)
            if other != t:
                raise EventTypeCollision(
                    f"event types {other!r} and {t!r} would both be feature column {event_column(t)!r}; "
                    "rename one in the mapping's [event_types] section"
                )

    def column(self, event_type: str) -> str:
        """The feature-column stem of `event_type` (see `event_column`)."""
        return event_column(event_type)


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


def daily_activity(events: pl.LazyFrame, vocab: EventVocabulary) -> pl.DataFrame:
    """One row per (player, active day), sorted: counts and value sums/maxima per event type, attributes."""
    aggs: list[pl.Expr] = [pl.len().cast(pl.Int32).alias("n_events")]
    for t in vocab.types:
        c, is_t = vocab.column(t), pl.col("event_type") == t
        aggs.append(is_t.sum().cast(pl.Int32).alias(f"{c}_n"))
        if t in vocab.valued:
            value = pl.when(is_t).then(pl.col("value"))  # cheaper than a filter inside each group
            aggs.append(value.otherwise(0.0).sum().alias(f"{c}_sum"))  # non-null sums ~10% faster
            aggs.append(value.max().alias(f"{c}_max"))
    aggs += [pl.col(a).drop_nulls().last().alias(a) for a in ATTRIBUTES]
    daily = events.group_by("player_id", "event_date").agg(aggs).sort("player_id", "event_date")
    # in memory, not streaming: the streaming engine (30% faster at 10M events) sums a day's values in an
    # order that depends on the rest of the input, so a day alone and the same day in a range would
    # differ in the last bits; the state must not
    return daily.collect(engine="in-memory")


def running_totals(
    daily: pl.LazyFrame, vocab: EventVocabulary, fill: Sequence[str] = ATTRIBUTES
) -> pl.LazyFrame:
    """`daily` (sorted by player and day) with running totals up to and including each active day.

    Attributes in `fill` (by default all) take the player's latest non-null value where a day has
    none; a caller that knows an attribute has no nulls leaves it out and saves the scan.

    Integer totals are global cumulative sums minus the value where the player's rows begin: plain
    column scans, several times faster than grouped (`over`) window functions on this table (an
    overflow wraps and the difference is still exact). Value sums are summed within each player
    in row order, so a total is the same bits whether the days were summed in one run or one
    day at a time from a stored state. The scans run as separate steps whose results later steps
    read as columns: an expression that uses a scan twice would otherwise compute it twice.

    A player's first row may be a stored state instead of a day (see `state.py`): it carries
    `active_days`, `first_day` and each type's `{c}_last_day`, which the totals then start from;
    daily rows have 1, null and null there. Without those columns every row is one active day.
    """
    starts = pl.col("_start")
    day = pl.col("event_date")
    given = daily.collect_schema()
    from_state = "active_days" in given
    never = pl.lit(date(1, 1, 1))  # a player's own "not yet": forward fills must not cross players
    player = pl.col("_pc").cast(pl.Int64) * 2**32
    summed: dict[str, pl.DataType] = {"n_events": pl.Int32()}  # a player never has 2**31 events
    if from_state:
        summed["active_days"] = pl.Int32()
    counted, maxima = [], []
    for t in vocab.types:
        c = vocab.column(t)
        summed[f"{c}_n"] = pl.Int32()
        counted.append(f"{c}_n")
        if t in vocab.valued:
            summed[f"{c}_sum"] = pl.Float64()
            maxima.append(f"{c}_max")

    def daily_value(col: str) -> pl.Expr:
        return pl.col(col).fill_null(0).cast(summed[col])

    def seen_day(col: str) -> pl.Expr:
        # a stored state's row knows the day the type was last seen; a day's row is that day
        return pl.coalesce(pl.col(f"{col.removesuffix('_n')}_last_day"), day) if from_state else day

    row = pl.int_range(pl.len(), dtype=pl.Int32)
    exact = [col for col, kind in summed.items() if kind.is_float()]
    scans = [
        *(daily_value(col).cum_sum().alias(f"_run_{col}") for col in summed if col not in exact),
        *(daily_value(col).cum_sum().over("_pc").alias(col) for col in exact),
        *((player + pl.col(f"_key_{col}")).cum_max().sub(player).alias(f"_best_{col}") for col in maxima),
        *(
            pl.when(pl.col(col) > 0)
            .then(seen_day(col))
            .when(starts)
            .then(never)
            .forward_fill()
            .alias(f"_seen_{col}")
            for col in counted
        ),
        pl.when(starts).then(row).forward_fill().alias("_first_row"),
        pl.when(starts)
        .then(pl.coalesce(pl.col("first_day"), day) if from_state else day)
        .forward_fill()
        .alias("first_day"),
        # the row of the player's latest non-null value (-1: none yet); an integer scan is cheaper
        # than forward-filling the strings over each player
        *(
            pl.when(pl.col(a).is_not_null())
            .then(row)
            .when(starts)
            .then(-1)
            .forward_fill()
            .alias(f"_latest_{a}")
            for a in fill
        ),
    ]

    def per_player(col: str) -> pl.Expr:
        if col in exact:
            return pl.col(col)  # summed within the player by the scans
        run = pl.col(f"_run_{col}")
        return run - pl.when(starts).then(run - daily_value(col)).forward_fill()

    cums: list[pl.Expr] = [
        *(
            pl.when(pl.col(f"_latest_{a}") >= 0)
            .then(pl.col(a).gather(pl.col(f"_latest_{a}").clip(0)))
            .alias(a)
            for a in fill
        ),
        per_player("n_events").alias("cum_events"),
        (per_player("active_days") if from_state else row - pl.col("_first_row") + 1).alias(
            "cum_active_days"
        ),
    ]
    for t in vocab.types:
        c = vocab.column(t)
        seen = pl.col(f"_seen_{c}_n")
        cums.append(per_player(f"{c}_n").cast(pl.Int32).alias(f"{c}_cum_n"))
        cums.append(pl.when(seen != never).then(seen).alias(f"{c}_last_day"))
        if t in vocab.valued:
            cums.append(per_player(f"{c}_sum").alias(f"{c}_cum_sum"))
            cums.append(_value_of_key(pl.col(f"_best_{c}_max")).alias(f"{c}_cum_max"))
    # the per-day counts, sums and maxima only feed the totals: dropping them keeps the table narrow
    temporary = [
        *summed,
        *maxima,
        "_start",
        "_first_row",
        *(f"_latest_{a}" for a in fill),
        *(
            f"_{k}_{col}"
            for k, cols in (("run", summed), ("best", maxima), ("seen", counted), ("key", maxima))
            for col in cols
        ),
    ]
    return (
        daily.with_columns(_pc=_player_code())
        .with_columns(
            (pl.col("_pc") != pl.col("_pc").shift(1).fill_null(-1)).alias("_start"),
            *(_key_of_value(pl.col(col)).alias(f"_key_{col}") for col in maxima),
        )
        .with_columns(scans)
        .with_columns(cums)
        .drop(temporary, strict=False)
    )


# Running maxima within each player: the player code and an order-preserving 32-bit key of the
# value are packed into one Int64, so a single global `cum_max` never carries a maximum across
# players: about ten times faster than `cum_max().over(...)`. Features store maxima as Float32, and
# rounding to Float32 keeps order, so the result equals the Float64 maximum rounded. NaN is
# skipped, as Polars' max does; key 0 stands for "no value yet".


def _key_of_value(value: pl.Expr) -> pl.Expr:
    """An Int64 in [1, 2**32) that orders like `value` rounded to Float32; 0 where it is null or NaN."""
    bits = value.fill_nan(None).cast(pl.Float32).reinterpret(dtype=pl.Int32).cast(pl.Int64)
    # non-negative floats order like their bits, negative ones in reverse
    return pl.when(bits >= 0).then(bits + 2**31).otherwise(-bits - 1).fill_null(0)


def _value_of_key(key: pl.Expr) -> pl.Expr:
    """The Float32 value of a `_key_of_value` key (null for 0)."""
    bits = pl.when(key >= 2**31).then(key - 2**31).otherwise(-key - 1).cast(pl.Int32)
    return pl.when(key > 0).then(bits.reinterpret(dtype=pl.Float32))


def _summed(vocab: EventVocabulary) -> list[str]:
    """Running-total columns that windows difference."""
    cols = ["cum_events", "cum_active_days"]
    for t in vocab.types:
        cols.append(f"{vocab.column(t)}_cum_n")
        if t in vocab.valued:
            cols.append(f"{vocab.column(t)}_cum_sum")
    return cols


def _player_code() -> pl.Expr:
    """A dense integer per player for rows sorted by player: cheap to compare across shifted rows."""
    return (pl.col("player_id") != pl.col("player_id").shift(1)).fill_null(True).cum_sum().cast(pl.Int32)


def _spans(
    totals: pl.DataFrame, first: date, last: date, longest: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Snapshot days each active day stands for, as two spans: (start1, length1, start2, length2).

    An active day covers the days until the player's next active day, but only the first `longest`
    (after that the player has left the population) and the last `longest` (the next active day's
    windows look back that far). So on every snapshot day of a population row, each of the `longest`
    days before it has a grid row of its own: windows become shifts within the player's rows.
    Days are numbers since 1970-01-01; `totals` (the active days: the daily or the totals table, or
    just their keys) is sorted by player and day and carries `_pc` and `event_date`.
    """
    day = totals["event_date"].to_physical().to_numpy().astype(np.int32)
    player = totals["_pc"].to_numpy()
    lo, hi = _day_number(first) - longest, _day_number(last)
    following = np.full(len(day), 2**30, dtype=np.int32)  # far future: no next active day
    same = player[1:] == player[:-1]
    following[:-1][same] = day[1:][same]
    start1 = np.maximum(day, lo)
    end1 = np.minimum(np.minimum(day + (longest - 1), following - 1), hi)
    start2 = np.maximum(np.maximum(day + longest, following - longest), lo)
    end2 = np.minimum(following - 1, hi)
    return start1, np.maximum(end1 - start1 + 1, 0), start2, np.maximum(end2 - start2 + 1, 0)


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


@dataclass(frozen=True)
class SnapshotIndex:
    """Population rows of a range of snapshot days, as positions in a player-sorted totals table.

    `rows[i]` is the totals row (the player's last active day on or before the snapshot day)
    of population row i, `days[i]` its snapshot day (days since 1970-01-01), and `lagged[w][i]`
    the totals row that was current w days earlier, or `len(totals)` when the player had not
    started yet (a row of zeros stands there).
    """

    rows: np.ndarray
    days: np.ndarray
    lagged: dict[int, np.ndarray]


def snapshot_index(totals: pl.DataFrame, first: date, last: date, windows: Sequence[int]) -> SnapshotIndex:
    """The population rows of snapshot days [first, last] and their windows' lagged rows.

    `totals` (the active days, or just their keys) must be sorted by player and day and carry
    `_pc` and `event_date`; the index positions are its rows. Every active day is expanded into
    the days it covers (two spans, see `_spans`) in player-then-day order by NumPy repeat. Within
    a run of consecutive days of one player, the day w days before a row is the row w places
    earlier; a row fewer than w places into its run has nothing before the window.
    """
    longest = max(windows)
    start1, length1, start2, length2 = _spans(totals, first, last, longest)
    # span 2i is totals row i's first span, 2i + 1 its second; empty spans are left out
    starts = np.stack([start1, start2], axis=1).ravel()
    lengths = np.stack([length1, length2], axis=1).ravel()
    kept = np.flatnonzero(lengths).astype(np.int32)
    start, days, span_row = starts[kept], lengths[kept], kept >> 1
    first_span, player = (kept & 1) == 0, totals["_pc"].to_numpy()[span_row]
    offset = np.cumsum(days, dtype=np.int32) - days  # grid position of each span's first day
    # a span continues the previous one's run when it is the same player's next day
    follows = np.zeros(len(days), dtype=bool)
    follows[1:] = (player[1:] == player[:-1]) & (start[1:] == start[:-1] + days[:-1])
    run_first = np.maximum.accumulate(np.where(follows, 0, np.arange(len(days), dtype=np.int32)))
    # int32 throughout: these arrays have a row per grid day
    position = np.arange(int(days.sum()), dtype=np.int32)
    day = np.repeat(start - offset, days)
    day += position
    in_run = position - np.repeat(offset[run_first], days)
    row = np.repeat(span_row, days)
    # first spans hold exactly the population days (within `longest` of the active day)
    in_population = np.repeat(first_span, days)
    in_population &= day >= _day_number(first)
    population = np.flatnonzero(in_population).astype(np.int32)
    population_in_run = in_run[population]
    lagged = {
        w: np.where(population_in_run >= w, row[np.maximum(population - w, 0)], np.int32(len(totals)))
        for w in windows
    }
    return SnapshotIndex(rows=row[population], days=day[population], lagged=lagged)


def _suffix(window: int) -> Callable[[str], str]:
    """A column renamer that tags a lagged copy with its window, e.g. `events@7`."""
    return lambda column: f"{column}@{window}"


def _features_for(
    totals: pl.DataFrame, index: SnapshotIndex, vocab: EventVocabulary, windows: Sequence[int]
) -> pl.LazyFrame:
    """Feature rows of `index` (the population of some snapshot days) from running totals sorted by
    player and day."""
    longest = windows[-1]
    summed = totals.select(_summed(vocab))
    with_zeros = pl.concat([summed, summed.clear(1).fill_null(0)]).rechunk()
    grid = pl.concat(
        [
            totals.drop("_pc")[index.rows].rename({"event_date": "last_active_day"}),
            pl.DataFrame({"snapshot_date": pl.Series(index.days).cast(pl.Date)}),
            *(with_zeros[index.lagged[w]].rename(_suffix(w)) for w in windows),
        ],
        how="horizontal",
    ).lazy()
    day = pl.col("snapshot_date")

    def in_window(col: str, w: int) -> pl.Expr:
        return pl.col(col) - pl.col(f"{col}@{w}")

    def days_since(col: str) -> pl.Expr:
        # dates are day numbers underneath: subtracting those skips the Duration round trip
        return day.to_physical() - pl.col(col).to_physical()

    out: list[pl.Expr] = [
        days_since("first_day").alias("tenure_days"),
        days_since("last_active_day").alias("recency_days"),
        pl.col("cum_events").cast(pl.Int64).alias("events_total"),
    ]
    # value sums stay Float64 until means are taken from them, in a second step: a mean written in
    # the first would compute its window's count and sum a second time
    means: list[pl.Expr] = []
    for w in windows:
        out.append(in_window("cum_events", w).cast(pl.Int32).alias(f"events_{w}d"))
        out.append(in_window("cum_active_days", w).cast(pl.Int32).alias(f"active_days_{w}d"))
    for t in vocab.types:
        c = vocab.column(t)
        for w in windows:
            out.append(in_window(f"{c}_cum_n", w).cast(pl.Int32).alias(f"{c}_count_{w}d"))
        out.append(pl.col(f"{c}_cum_n").cast(pl.Int32).alias(f"{c}_count_total"))
        out.append(days_since(f"{c}_last_day").alias(f"{c}_recency_days"))
        if t in vocab.valued:
            out += [in_window(f"{c}_cum_sum", w).alias(f"{c}_value_sum_{w}d") for w in windows]
            out.append(pl.lit(None, pl.Float32).alias(f"{c}_value_mean_{longest}d"))  # keeps its place
            n, total = pl.col(f"{c}_count_{longest}d"), pl.col(f"{c}_value_sum_{longest}d")
            means.append(pl.when(n > 0).then(total / n).cast(pl.Float32).alias(f"{c}_value_mean_{longest}d"))
            out.append(pl.col(f"{c}_cum_max").cast(pl.Float32).alias(f"{c}_value_max"))
            out.append(pl.col(f"{c}_cum_sum").cast(pl.Float32).alias(f"{c}_value_total"))
    sums = [f"{vocab.column(t)}_value_sum_{w}d" for t in vocab.types if t in vocab.valued for w in windows]
    return (
        grid.select(*KEY, *out, *ATTRIBUTES)
        .with_columns(means)
        .with_columns(pl.col(sums).cast(pl.Float32))
        .with_columns(game_features(vocab, windows))
    )


def player_code() -> pl.Expr:
    """A dense integer per player for rows sorted by player (`_pc` of the totals tables)."""
    return _player_code()


def empty_features(totals: pl.DataFrame, vocab: EventVocabulary, windows: Sequence[int]) -> pl.DataFrame:
    """The feature table with no rows and every column, for totals with no rows."""
    windows = sorted(set(windows))
    keys = totals.select(_player_code().alias("_pc"), "event_date")
    return _features_for(
        totals, snapshot_index(keys, date(1970, 1, 2), date(1970, 1, 1), windows), vocab, windows
    ).collect()


def feature_pieces(
    totals: pl.DataFrame,
    vocab: EventVocabulary,
    windows: Sequence[int],
    first: date,
    last: date,
    chunk_rows: int,
) -> Iterator[pl.DataFrame]:
    """Feature rows of snapshot days [first, last], whole players, about `chunk_rows` grid rows a piece.

    `totals` holds running totals (`running_totals` columns plus `_pc`) sorted by player and day,
    from `max(windows)` days before `first` on: a player's earlier history enters as one row at or
    before that day. A piece's snapshot index is NumPy work on one core: a worker thread computes
    it one piece ahead, so it overlaps the multi-threaded Polars steps. No totals, no pieces.
    """
    windows = sorted(set(windows))
    keys = totals.select("_pc", "event_date")
    bounds = _piece_bounds(keys, first, last, windows[-1], chunk_rows)
    if not bounds:
        return
    totals = totals.rechunk()  # a gather from one chunk is several times faster than from many
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-index") as pool:

        def index_of(piece: int) -> Future[SnapshotIndex]:
            begin, end = bounds[piece]
            return pool.submit(snapshot_index, keys.slice(begin, end - begin), first, last, windows)

        ahead = index_of(0)
        for piece, (begin, end) in enumerate(bounds):
            index = ahead.result()
            if piece + 1 < len(bounds):
                ahead = index_of(piece + 1)
            yield _features_for(totals.slice(begin, end - begin), index, vocab, windows).collect()


def _piece_bounds(
    keys: pl.DataFrame, first: date, last: date, longest: int, chunk_rows: int
) -> list[tuple[int, int]]:
    """Row ranges of whole players, about `chunk_rows` grid rows each, of a player-sorted daily table."""
    if keys.is_empty():
        return []
    _, length1, _, length2 = _spans(keys, first, last, longest)
    width = (length1 + length2).astype(np.int64)
    # a piece starts at the first row of the player whose grid rows cross the next multiple of chunk_rows
    player = keys["_pc"].to_numpy()
    player_start = np.flatnonzero(np.concatenate([[True], player[1:] != player[:-1]]))
    piece = (np.cumsum(width) - width)[player_start] // max(1, chunk_rows)
    starts = player_start[np.concatenate([[True], piece[1:] != piece[:-1]])].tolist()
    return list(zip(starts, [*starts[1:], keys.height], strict=True))


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
