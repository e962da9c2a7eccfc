"""Behaviour features of model rows: the shape of a player's recent play, from any event log.

The feature table counts events and sums values in calendar windows. What it misses is the shape of
play: how a new player's first days went, how values move, the time between events, sessions, when
a player plays. These families are computed for the rows a model trains on or scores (a player as of
a snapshot day D), from that player's events in a window of calendar days ending with D:

- new-player models (`tenure_days` given): the player's first `tenure_days` days, with each day of
  tenure measured from the first event's time (events up to the end of D, so a row never sees the
  future);
- other models: the trailing `window_days` days.

Families (named in `FAMILIES`, switched by `[features] families`):
- `tenure`: events in each 24 h of tenure since the first event (new-player models), the hour of
  the first event, and the share of the tenure days with play;
- `values`: min, mean, std, last value and the trend (least-squares slope per day) over the window;
- `gaps`: median, max and last time between events (hours) and hours since the last event;
- `sessions`: sessions cut where the gap passes `session_idle_minutes`: count, mean length
  (minutes) and events per session;
- `time_profile`: share of events per 6-hour block of the UTC day and per day of the week;
- `window_ratios`: events in each feature-table window over the next longer one (e.g. 1d/7d);
- `per_type`: count, values and gaps again for each of the `max_types` most frequent event types.

Every column starts with `bh_`. A row whose player has no event in its window gets zeros for counts
and nulls for statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import polars as pl

from ml_assets.core.features.player import KEY, event_column

FAMILIES: tuple[str, ...] = (
    "tenure",
    "values",
    "gaps",
    "sessions",
    "time_profile",
    "window_ratios",
    "per_type",
)
PREFIX = "bh_"
BATCH_DAYS = 7
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class BehaviourConfig:
    """Which families, over which window; stored with a model so it is scored as it was trained."""

    families: tuple[str, ...] = FAMILIES
    window_days: int = 7
    session_idle_minutes: float = 30.0
    max_types: int = 5
    windows: tuple[int, ...] = (1, 7, 28)  # the feature table's windows, for window_ratios
    types: tuple[str, ...] = field(default=())  # per-type event types; set from the training events

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown feature families {unknown}; known: {list(FAMILIES)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the model's record."""
        return {
            "families": list(self.families),
            "window_days": self.window_days,
            "session_idle_minutes": self.session_idle_minutes,
            "max_types": self.max_types,
            "windows": list(self.windows),
            "types": list(self.types),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BehaviourConfig:
        """The config `as_dict` wrote."""
        return cls(
            families=tuple(raw["families"]),
            window_days=int(raw["window_days"]),
            session_idle_minutes=float(raw["session_idle_minutes"]),
            max_types=int(raw["max_types"]),
            windows=tuple(int(w) for w in raw["windows"]),
            types=tuple(raw["types"]),
        )


def ratio_inputs(config: BehaviourConfig) -> list[str]:
    """Feature-table columns `window_ratios` reads."""
    return [f"events_{w}d" for w in sorted(set(config.windows))] if "window_ratios" in config.families else []


def needs_behaviour(features: Sequence[str]) -> bool:
    """Whether a model with these features reads behaviour columns."""
    return any(f.startswith(PREFIX) for f in features)


def for_model(features: Sequence[str], config: BehaviourConfig, events: pl.LazyFrame) -> BehaviourConfig:
    """`config` (a model's, from training) with the per-type event types its `features` use, among the
    types in `events`."""
    available = events.select("event_type").unique().collect()["event_type"].to_list()
    types = tuple(sorted(t for t in available if any(f.startswith(_type_stem(t)) for f in features)))
    return replace(config, types=types)


def _type_stem(event_type: str) -> str:
    return f"{PREFIX}{event_column(event_type).removeprefix('ev_')}_"


def frequent_types(events: pl.LazyFrame, limit: int) -> tuple[str, ...]:
    """The `limit` most frequent event types of `events` (ties by name), sorted by name."""
    if limit <= 0:
        return ()
    top = (
        events.group_by("event_type")
        .agg(pl.len().alias("n"))
        .sort(["n", "event_type"], descending=[True, False])
        .head(limit)
        .collect()
    )
    return tuple(sorted(top["event_type"].to_list()))


def _hours(seconds: pl.Expr) -> pl.Expr:
    return (seconds / 3600.0).cast(pl.Float32)


def _value_stats(value: pl.Expr, t_days: pl.Expr, stem: str) -> list[pl.Expr]:
    """min, mean, std, last and least-squares slope per day of `value` (nulls ignored)."""
    present = value.is_not_null()
    v, t = value.filter(present), t_days.filter(present)
    slope = ((t * v).mean() - t.mean() * v.mean()) / ((t * t).mean() - t.mean() ** 2)
    return [
        v.min().cast(pl.Float32).alias(f"{stem}value_min"),
        v.mean().cast(pl.Float32).alias(f"{stem}value_mean"),
        v.std().cast(pl.Float32).alias(f"{stem}value_std"),
        v.last().cast(pl.Float32).alias(f"{stem}value_last"),
        # no slope without time spread: the ratio is NaN or infinite then
        pl.when(slope.is_finite()).then(slope).cast(pl.Float32).alias(f"{stem}value_slope"),
    ]


def _gap_stats(seconds: pl.Expr, keep: pl.Expr | None, end: pl.Expr, stem: str) -> list[pl.Expr]:
    """Median, max and last gap between (kept) events, and hours from the last one to `end`."""
    t = seconds if keep is None else seconds.filter(keep)
    gaps = t.diff().drop_nulls()
    return [
        _hours(gaps.median()).alias(f"{stem}gap_median_h"),
        _hours(gaps.max()).alias(f"{stem}gap_max_h"),
        _hours(gaps.last()).alias(f"{stem}gap_last_h"),
        _hours(end - t.max()).alias(f"{stem}since_last_h"),
    ]


def _aggregations(config: BehaviourConfig, tenure_days: int | None) -> list[pl.Expr]:
    """Per (player, snapshot) aggregations over window events sorted by time (`_s`: seconds)."""
    on = set(config.families)
    s, value = pl.col("_s"), pl.col("value")
    first = s.min()
    t_days = (s - first) / _SECONDS_PER_DAY
    end = pl.col("_end").first()
    aggs: list[pl.Expr] = [pl.len().cast(pl.Int32).alias(f"{PREFIX}events")]
    if "tenure" in on and tenure_days:
        day_of_tenure = ((s - first) // _SECONDS_PER_DAY).cast(pl.Int32)
        aggs += [
            (day_of_tenure == k).sum().cast(pl.Int32).alias(f"{PREFIX}tenure_day{k}_events")
            for k in range(tenure_days)
        ]
        aggs.append(
            (day_of_tenure.n_unique() / tenure_days).cast(pl.Float32).alias(f"{PREFIX}tenure_active_share")
        )
        aggs.append(((first % _SECONDS_PER_DAY) / 3600.0).cast(pl.Float32).alias(f"{PREFIX}first_event_hour"))
    if "values" in on:
        aggs += _value_stats(value, t_days, PREFIX)
    if "gaps" in on:
        aggs += _gap_stats(s, None, end, PREFIX)
    if "sessions" in on:
        gaps = s.diff()
        idle = config.session_idle_minutes * 60.0
        sessions = (gaps > idle).sum() + 1
        in_session = gaps.filter(gaps <= idle).sum()
        aggs += [
            sessions.cast(pl.Int32).alias(f"{PREFIX}sessions"),
            (in_session / sessions / 60.0).cast(pl.Float32).alias(f"{PREFIX}session_minutes_mean"),
            (pl.len() / sessions).cast(pl.Float32).alias(f"{PREFIX}events_per_session"),
        ]
    if "time_profile" in on:
        hour_block = ((s % _SECONDS_PER_DAY) // (6 * 3600)).cast(pl.Int8)
        # 1970-01-01 was a Thursday: day 0 of the week here is Monday
        weekday = (((s // _SECONDS_PER_DAY) + 3) % 7).cast(pl.Int8)
        aggs += [
            (hour_block == b)
            .mean()
            .cast(pl.Float32)
            .alias(f"{PREFIX}share_hours_{6 * b:02d}_{6 * b + 6:02d}")
            for b in range(4)
        ]
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        aggs += [(weekday == d).mean().cast(pl.Float32).alias(f"{PREFIX}share_{names[d]}") for d in range(7)]
    if "per_type" in on:
        for event_type in config.types:
            stem = _type_stem(event_type)
            is_type = pl.col("event_type") == event_type
            aggs.append(is_type.sum().cast(pl.Int32).alias(f"{stem}events"))
            if "values" in on:
                aggs += _value_stats(pl.when(is_type).then(value), t_days, stem)
            if "gaps" in on:
                aggs += _gap_stats(s, is_type, end, stem)
    return aggs


def behaviour_columns(config: BehaviourConfig, tenure_days: int | None) -> list[str]:
    """The columns `behaviour_features` adds, in order."""
    return list(_output_types(config, tenure_days))


def _ratio_exprs(windows: Sequence[int]) -> list[tuple[str, pl.Expr]]:
    ordered = sorted(set(windows))
    out = []
    for short, long in zip(ordered, ordered[1:], strict=False):
        num, den = pl.col(f"events_{short}d"), pl.col(f"events_{long}d")
        ratio = pl.when(den > 0).then(num / den).cast(pl.Float32)
        out.append((f"{PREFIX}events_ratio_{short}d_{long}d", ratio))
    return out


def behaviour_features(
    rows: pl.DataFrame,
    events: pl.LazyFrame,
    config: BehaviourConfig,
    tenure_days: int | None = None,
) -> pl.DataFrame:
    """`rows` (player_id, snapshot_date, ... feature columns) with the behaviour columns added.

    Each row's window is its snapshot day and the days before it: `tenure_days` days for a new-player
    model (whose rows sit on the last observed day), else `config.window_days`. Only `events` of the
    rows' players within the rows' windows are read. Row order is kept.
    """
    days = tenure_days or config.window_days
    columns = behaviour_columns(config, tenure_days)
    ratio_columns = (
        [name for name, _ in _ratio_exprs(config.windows)] if "window_ratios" in config.families else []
    )
    stat_columns = [c for c in columns if c not in ratio_columns]
    if rows.height == 0:
        empty = pl.DataFrame(schema={**rows.schema})
        types = _output_types(config, tenure_days)
        return empty.with_columns(pl.lit(None, types[c]).alias(c) for c in columns)
    aggregations = _aggregations(config, tenure_days)
    snapshot_days = rows["snapshot_date"].unique().sort().to_list()
    parts = []
    # a few snapshot days per query: an event joins at most one row per day of its player
    for i in range(0, len(snapshot_days), BATCH_DAYS):
        batch = snapshot_days[i : i + BATCH_DAYS]
        keys = rows.filter(pl.col("snapshot_date").is_in(batch)).select(KEY).unique()
        parts.append(
            _window_stats(events, keys, batch[0] - timedelta(days=days - 1), batch[-1], days, aggregations)
        )
    stats = pl.concat(parts)
    out = rows.join(stats, on=KEY, how="left", maintain_order="left")
    # counts of a player with no event in the window are 0; statistics stay null
    counts = [c for c in stat_columns if stats.schema[c] == pl.Int32]
    out = out.with_columns(pl.col(counts).fill_null(0))
    if ratio_columns:
        out = out.with_columns(expr.alias(name) for name, expr in _ratio_exprs(config.windows))
    return out


def _window_stats(
    events: pl.LazyFrame, keys: pl.DataFrame, first: date, last: date, days: int, aggregations: list[pl.Expr]
) -> pl.DataFrame:
    """Aggregations per (player, snapshot) of `keys` over the events of their `days`-day windows."""
    return (
        events.filter(pl.col("event_date").is_between(first, last))
        .select(
            "player_id", "event_date", "event_type", "value", _s=pl.col("event_time").dt.epoch("ms") / 1000.0
        )
        .join(keys.lazy(), on="player_id", how="inner")
        .filter(
            (pl.col("event_date") <= pl.col("snapshot_date"))
            & (pl.col("event_date") > pl.col("snapshot_date") - pl.duration(days=days))
        )
        .with_columns(
            # end of the snapshot day, in seconds: "hours since the last event" is as of then
            _end=(pl.col("snapshot_date").cast(pl.Datetime("ms")).dt.epoch("ms") / 1000.0) + _SECONDS_PER_DAY
        )
        # events at the same instant (a log with dates only) in a fixed order, so "last value" does not
        # depend on how the scan happened to read them, and the same events give the same rows
        .sort("player_id", "snapshot_date", "_s", "event_type", "value", nulls_last=True)
        .group_by(KEY, maintain_order=True)
        .agg(aggregations)
        .collect()
    )


def _output_types(config: BehaviourConfig, tenure_days: int | None) -> dict[str, pl.DataType]:
    empty = pl.DataFrame(
        schema={"_s": pl.Float64, "value": pl.Float64, "event_type": pl.String, "_end": pl.Float64}
    )
    types = dict(empty.select(_aggregations(config, tenure_days)).schema)
    if "window_ratios" in config.families:
        types.update({name: pl.Float32() for name, _ in _ratio_exprs(config.windows)})
    return types
