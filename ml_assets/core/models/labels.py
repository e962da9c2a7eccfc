"""Labels for each label kind, and the point-in-time training set and scoring rows of a model spec.

Every training row is a feature-table row (one player as of one snapshot day D) plus `label` and
`split_date`. Features come only from that row, which the feature table builds from events on or
before D; the label reads only events after D. Rows whose label window is not over yet (it ends
after the last day with events) are left out, so a label is never guessed from days not yet seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from ml_assets.core.features.behaviour import (
    BehaviourConfig,
    behaviour_features,
    for_model,
    frequent_types,
    needs_behaviour,
)
from ml_assets.core.features.player import event_column
from ml_assets.core.models.spec import ModelSpec

LABEL = "label"  # bool: True = the positive event (churned / bought)
SPLIT = "split_date"  # the date the out-of-time split orders rows by

_NEXT = "_next_active_day"
_FIRST_DAY = "_first_day"
_FIRST_PURCHASE = "_first_purchase_day"


def activity_days(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct (player_id, event_date) pairs: the days each player was active."""
    return events.select("player_id", "event_date").unique().sort("event_date")


def sample_snapshot_days(days: list[date], every: int) -> list[date]:
    """Every `every`-th day counting back from the latest, so the newest matured day is always in."""
    ordered = sorted(set(days), reverse=True)
    return sorted(ordered[::every])


def purchase_count_column(purchase_event: str) -> str:
    """The feature column counting a player's lifetime `purchase_event` events."""
    return event_column(purchase_event) + "_count_total"


def _event_span(events: pl.LazyFrame) -> tuple[date, date]:
    """First and last day with events; raises when there are none."""
    span = events.select(
        pl.col("event_date").min().alias("first"), pl.col("event_date").max().alias("last")
    ).collect()
    first, last = span["first"].item(), span["last"].item()
    if first is None or last is None:
        raise ValueError("no clean events: nothing to label (the events table is empty)")
    return first, last


def _with_next_active_day(rows: pl.LazyFrame, events: pl.LazyFrame) -> pl.LazyFrame:
    """`rows` with `_next_active_day`: the player's first active day strictly after `snapshot_date`."""
    nxt = activity_days(events).select(
        "player_id", pl.col("event_date").alias(_NEXT), _on=pl.col("event_date")
    )
    return (
        rows.with_columns(_on=pl.col("snapshot_date"))
        .sort("_on")
        .join_asof(
            nxt.sort("_on"),
            on="_on",
            by="player_id",
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .drop("_on")
    )


def _churned(days: int) -> pl.Expr:
    """No activity in snapshot_date+1 .. snapshot_date+days."""
    gap = (pl.col(_NEXT) - pl.col("snapshot_date")).dt.total_days()
    return pl.col(_NEXT).is_null() | (gap > days)


def _sampled_matured_rows(spec: ModelSpec, features: pl.LazyFrame, last_day: date) -> pl.LazyFrame:
    """Feature rows of every `snapshot_every_days`-th day whose horizon ends by `last_day`."""
    horizon = spec.label.horizon_days
    matured = (
        features.select("snapshot_date")
        .unique()
        .filter(pl.col("snapshot_date") <= last_day - timedelta(days=horizon))
        .collect()["snapshot_date"]
        .to_list()
    )
    chosen = sample_snapshot_days(matured, spec.snapshot_every_days)
    return features.filter(pl.col("snapshot_date").is_in(chosen))


def _rolling(spec: ModelSpec, features: pl.LazyFrame, events: pl.LazyFrame) -> pl.LazyFrame:
    """Sampled snapshots; label = no activity in D+1..D+horizon."""
    _, last_day = _event_span(events)
    rows = _with_next_active_day(_sampled_matured_rows(spec, features, last_day), events)
    return rows.with_columns(
        _churned(spec.label.horizon_days).alias(LABEL), pl.col("snapshot_date").alias(SPLIT)
    )


def _first_purchase(spec: ModelSpec, features: pl.LazyFrame, events: pl.LazyFrame) -> pl.LazyFrame:
    """Sampled snapshots of players with no purchase up to D; label = first purchase in D+1..D+horizon."""
    _, last_day = _event_span(events)
    first_buy = (
        events.filter(pl.col("event_type") == spec.label.purchase_event)
        .group_by("player_id")
        .agg(pl.col("event_date").min().alias(_FIRST_PURCHASE))
    )
    horizon = timedelta(days=spec.label.horizon_days)
    return (
        _sampled_matured_rows(spec, features, last_day)
        .join(first_buy, on="player_id", how="left")
        .filter(pl.col(_FIRST_PURCHASE).is_null() | (pl.col(_FIRST_PURCHASE) > pl.col("snapshot_date")))
        .with_columns(
            pl.col(_FIRST_PURCHASE)
            .is_not_null()
            .and_(pl.col(_FIRST_PURCHASE) <= pl.col("snapshot_date") + horizon)
            .alias(LABEL),
            pl.col("snapshot_date").alias(SPLIT),
        )
    )


def _new_player(spec: ModelSpec, features: pl.LazyFrame, events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per new player: features at F+OP-1, label = no activity in F+OP..F+OP+CP-1, split by F.

    Players first seen on the first day of the data are left out: they may have started before the
    log began (left-censored), so their F, and hence their observation window, is unknown.
    """
    data_first, last_day = _event_span(events)
    observe, churn = spec.label.observation_days, spec.label.churn_days
    cohorts = (
        events.group_by("player_id")
        .agg(pl.col("event_date").min().alias(_FIRST_DAY))
        .filter(pl.col(_FIRST_DAY) > data_first)
        .filter(pl.col(_FIRST_DAY) + timedelta(days=observe + churn - 1) <= last_day)
        .with_columns(snapshot_date=pl.col(_FIRST_DAY) + timedelta(days=observe - 1))
    )
    rows = features.join(cohorts, on=["player_id", "snapshot_date"], how="inner")
    return _with_next_active_day(rows, events).with_columns(
        _churned(churn).alias(LABEL), pl.col(_FIRST_DAY).alias(SPLIT)
    )


_BUILDERS: dict[str, Callable[[ModelSpec, pl.LazyFrame, pl.LazyFrame], pl.LazyFrame]] = {
    "rolling": _rolling,
    "first_purchase": _first_purchase,
    "new_player": _new_player,
}


def cap_rows(frame: pl.DataFrame, max_rows: int, seed: int) -> pl.DataFrame:
    """At most `max_rows` rows: a seeded sample keeping the same share (rounded down) of every split_date.

    `frame` must be in a deterministic order (the result depends on it and on `seed` only).
    """
    if frame.height <= max_rows:
        return frame
    keys = pl.Series("_key", np.random.default_rng(seed).random(frame.height))
    quota = (pl.len().over(SPLIT).cast(pl.Int64) * max_rows) // frame.height
    return frame.with_columns(keys).filter(pl.col("_key").rank("ordinal").over(SPLIT) <= quota).drop("_key")


def behaviour_window(spec: ModelSpec) -> int | None:
    """Days of tenure a new-player model's behaviour features cover (None: the trailing window)."""
    return spec.label.observation_days if spec.label.kind == "new_player" else None


def build_training_set(
    spec: ModelSpec,
    features: pl.LazyFrame,
    events: pl.LazyFrame,
    behaviour: BehaviourConfig | None = None,
) -> pl.DataFrame:
    """Point-in-time training rows of `spec`: every feature column, `label` and `split_date`.

    rolling: sampled snapshot days D, label = no activity in D+1..D+horizon, split by D.
    first_purchase: as rolling, but only players with no `purchase_event` event up to D (from the
    events); label = such an event in D+1..D+horizon.
    new_player: each player's first day F; features as of F+observation_days-1; label = no activity
    in the churn_days after; split by F; players first seen on the first day of the data are left out.

    Only rows whose label window ends by the last event day are kept. Above `spec.max_rows`, a
    seeded sample keeps the same share of every split_date. Sorted by (split_date, player_id).
    With `behaviour`, each row also gets its behaviour features (`features/behaviour.py`), per-type
    ones for the config's `max_types` most frequent event types. Raises ValueError when `events` is
    empty.
    """
    kind = spec.label.kind
    if kind not in _BUILDERS:
        raise ValueError(f"model {spec.name!r}: unknown label kind {kind!r}; known: {sorted(_BUILDERS)}")
    columns = features.collect_schema().names()
    for reserved in (LABEL, SPLIT):
        if reserved in columns:
            raise ValueError(f"features already have a {reserved!r} column; it is reserved for the label")
    # label and sample on the keys alone, then fetch features only for the kept rows, a day at a
    # time: all matured snapshot rows with every feature would be ~20x the capped set in memory
    keys = _BUILDERS[kind](spec, features.select("player_id", "snapshot_date"), events)
    labelled = keys.select("player_id", "snapshot_date", LABEL, SPLIT).collect()
    kept = cap_rows(labelled.sort(SPLIT, "player_id", "snapshot_date"), spec.max_rows, spec.seed)

    def with_features(rows: pl.DataFrame, days: tuple[date, date] | None) -> pl.DataFrame:
        source = features if days is None else features.filter(pl.col("snapshot_date").is_between(*days))
        joined = source.join(rows.lazy(), on=["player_id", "snapshot_date"], how="inner")
        return joined.select(*columns, LABEL, SPLIT).collect()

    groups = _day_groups(kept, KEPT_ROWS_PER_READ)
    if not groups:
        out = with_features(kept, None)
    else:
        parts = [with_features(kept.filter(pl.col("snapshot_date").is_between(*g)), g) for g in groups]
        out = pl.concat(parts).sort(SPLIT, "player_id", "snapshot_date")
    if behaviour is None or not behaviour.families:
        return out
    types = frequent_types(events, behaviour.max_types) if "per_type" in behaviour.families else ()
    config = replace(behaviour, types=types)
    return behaviour_features(out, events, config, behaviour_window(spec))


# Kept rows whose features are read together: consecutive snapshot days up to this many rows (a
# day's feature rows are about 20x its kept rows), so a long log of small days is a few reads,
# not one per day (156 of them took 1.8 s of a 480-day log's training set)
KEPT_ROWS_PER_READ = 25_000


def _day_groups(kept: pl.DataFrame, rows: int) -> list[tuple[date, date]]:
    """Consecutive snapshot days of `kept` as (first, last) ranges of about `rows` rows each (a
    day with more is a range of its own)."""
    counts = kept.group_by("snapshot_date").len().sort("snapshot_date").rows()
    groups: list[list[date]] = []
    total = 0
    for day, n in counts:
        if not groups or total + n > rows:
            groups.append([day, day])
            total = 0
        groups[-1][1] = day
        total += n
    return [(first, last) for first, last in groups]


def scoring_columns(spec: ModelSpec) -> set[str]:
    """Feature columns `scoring_rows` reads to pick a spec's population (beyond the model's own)."""
    if spec.label.kind == "first_purchase":
        return {purchase_count_column(spec.label.purchase_event)}
    if spec.label.kind == "new_player":
        return {"tenure_days"}
    return set()


def scoring_rows(spec: ModelSpec, features: pl.DataFrame) -> pl.DataFrame:
    """The rows of `features` a model of `spec` scores: the population its training rows came from.

    rolling: every row. first_purchase: players with no purchase so far (lifetime purchase count
    0 or null; every row when the features have no such column). new_player: rows at the last
    observed day (tenure_days == observation_days - 1).
    """
    kind = spec.label.kind
    if kind == "rolling":
        return features
    if kind == "first_purchase":
        count = purchase_count_column(spec.label.purchase_event)
        if count not in features.columns:
            return features
        return features.filter(pl.col(count).fill_null(0) == 0)
    if kind == "new_player":
        if "tenure_days" not in features.columns:
            raise ValueError(f"model {spec.name!r}: new_player scoring needs a tenure_days column")
        return features.filter(pl.col("tenure_days") == spec.label.observation_days - 1)
    raise ValueError(f"model {spec.name!r}: unknown label kind {kind!r}")


def with_behaviour(
    spec: ModelSpec,
    features: list[str],
    recorded: dict[str, Any] | None,
    rows: pl.DataFrame,
    events: pl.LazyFrame | None,
) -> pl.DataFrame:
    """`rows` with the behaviour columns a model reads: one trained on `features` with the behaviour
    config `recorded` (`BehaviourConfig.as_dict`; None: a model from before behaviour features).
    `events` must cover each row's window (`behaviour_days`); None when the caller does not read
    events, which is an error for a model that needs them."""
    if recorded is None or not needs_behaviour(features):
        return rows
    if events is None:
        raise ValueError(
            f"model {spec.name!r} was trained on behaviour features (bh_*), but [features] families is "
            "now empty, so its assets no longer read the clean events: list the families again, or "
            "retrain the model without them"
        )
    config = for_model(features, BehaviourConfig.from_dict(recorded), events)
    return behaviour_features(rows, events, config, behaviour_window(spec))


def behaviour_days(spec: ModelSpec, config: BehaviourConfig) -> int:
    """Days of events up to a row's snapshot day its behaviour features read."""
    return behaviour_window(spec) or config.window_days


def look_ahead_days(spec: ModelSpec) -> int:
    """Days after a scored row's snapshot that its outcome needs."""
    return spec.label.churn_days if spec.label.kind == "new_player" else spec.label.horizon_days


def outcome_labels(spec: ModelSpec, rows: pl.DataFrame, events: pl.LazyFrame, last_day: date) -> pl.DataFrame:
    """`rows` (player_id, snapshot_date, ...) with the outcome their prediction was about, as `label`.

    Churn kinds: True when the player had no event in D+1..D+look-ahead; first_purchase: True when
    a purchase event came in that window. Null while the window has not fully passed (last_day).
    """
    ahead = look_ahead_days(spec)
    wanted = events.select("player_id", "event_date", "event_type")
    if spec.label.kind == "first_purchase":
        wanted = wanted.filter(pl.col("event_type") == spec.label.purchase_event)
    matured = pl.col("snapshot_date") + pl.duration(days=ahead) <= pl.lit(last_day)
    hits = _hits_by_mask(rows, wanted, ahead)
    if hits is None:
        hits = _hits_as_of(rows, wanted, ahead)
    hit = pl.col("_hit").fill_null(False)
    outcome = hit if spec.label.kind == "first_purchase" else ~hit
    return hits.with_columns(pl.when(matured).then(outcome).otherwise(None).alias(LABEL)).drop("_hit")


# Days an Int64 bit mask holds (bit 63 is the sign)
_MASK_DAYS = 63
_BITS = pl.Series([1 << i for i in range(_MASK_DAYS)], dtype=pl.Int64)


def _hits_by_mask(rows: pl.DataFrame, wanted: pl.LazyFrame, ahead: int) -> pl.DataFrame | None:
    """`rows` with `_hit`: whether the player has a `wanted` event in D+1..D+ahead; None when the
    rows' days and their windows span more than `_MASK_DAYS` days, or a key is null.

    One bit per day of a player's events, so each row tests its window with a shift and a mask: a
    join on the player alone instead of a unique, a sort and an as-of join on (player, day), ~3x
    faster on a week of 10M-event predictions."""
    days = rows["snapshot_date"]
    if rows.height == 0 or days.null_count() or rows["player_id"].null_count():
        return None
    first, last = days.min(), days.max()
    assert isinstance(first, date) and isinstance(last, date)
    if (last - first).days + ahead > _MASK_DAYS:
        return None
    # bit k: an event on day first + 1 + k
    bit = (pl.col("event_date") - pl.lit(first)).dt.total_days() - 1
    masks = (
        wanted.filter(
            pl.col("event_date").is_between(first + timedelta(days=1), last + timedelta(days=ahead))
        )
        .group_by("player_id")
        .agg(_mask=pl.lit(_BITS).gather(bit.unique()).bitwise_or())
        .collect()
    )
    joined = rows.join(masks, on="player_id", how="left", maintain_order="left")
    mask = joined["_mask"].fill_null(0).to_numpy()
    shift = days.to_physical().to_numpy().astype(np.int64) - (first - date(1970, 1, 1)).days
    hit = ((mask >> shift) & ((1 << ahead) - 1)) != 0
    return joined.drop("_mask").with_columns(_hit=pl.Series(hit, dtype=pl.Boolean))


def _hits_as_of(rows: pl.DataFrame, wanted: pl.LazyFrame, ahead: int) -> pl.DataFrame:
    """`_hits_by_mask` for any span of days, by an as-of join."""
    # the first qualifying day after each snapshot (an as-of join): a hit when it is within the window
    after = wanted.select("player_id", _on=pl.col("event_date")).unique().sort("_on")
    hits = (
        rows.lazy()
        .select("player_id", "snapshot_date")
        .unique()
        .with_columns(_on=pl.col("snapshot_date"))
        .sort("_on")
        .join_asof(
            after.with_columns(_next=pl.col("_on")),
            on="_on",
            by="player_id",
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .filter(pl.col("_next") <= pl.col("snapshot_date") + pl.duration(days=ahead))
        .select("player_id", "snapshot_date", _hit=pl.lit(True))
        .collect()
    )
    return rows.join(hits, on=["player_id", "snapshot_date"], how="left")
