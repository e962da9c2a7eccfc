"""Churn labels and the point-in-time training set."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

LABEL = "churned"


def activity_days(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct (player_id, event_date) pairs: the days each player was active."""
    return events.select("player_id", "event_date").unique().sort("event_date")


def rolling_churn_labels(
    snapshots: pl.LazyFrame, activity: pl.LazyFrame, horizon_days: int, last_day: date
) -> pl.LazyFrame:
    """`snapshots` (player_id, snapshot_date, ...) with `churned`: no activity in D+1..D+horizon.

    Only matured snapshots are kept (D + horizon <= last_day, the last day with data), so a label
    is never guessed from days not yet seen. Features are untouched: the label reads only later days.
    """
    matured = snapshots.filter(pl.col("snapshot_date") <= last_day - timedelta(days=horizon_days))
    nxt = activity.select(
        "player_id", pl.col("event_date").alias("next_active_day"), _on=pl.col("event_date")
    )
    labelled = (
        matured.with_columns(_on=pl.col("snapshot_date"))
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
    gap = (pl.col("next_active_day") - pl.col("snapshot_date")).dt.total_days()
    return labelled.with_columns(
        pl.col("next_active_day").is_null().or_(gap > horizon_days).alias(LABEL)
    ).drop("next_active_day")


def sample_snapshot_days(days: list[date], every: int) -> list[date]:
    """Every `every`-th day counting back from the latest, so the newest matured day is always in."""
    ordered = sorted(set(days), reverse=True)
    return sorted(ordered[::every])


def build_training_set(
    features: pl.LazyFrame,
    events: pl.LazyFrame,
    horizon_days: int,
    every_days: int,
    max_rows: int,
    seed: int,
) -> pl.DataFrame:
    """Point-in-time training rows: features as of sampled snapshot days, with matured churn labels.

    The last day with data is the latest event day; snapshots closer to it than the horizon are
    left out. Above `max_rows`, a seeded sample keeps the same share of every snapshot day.
    """
    last_day = events.select(pl.col("event_date").max()).collect().item()
    if last_day is None:
        raise ValueError("no clean events: nothing to label")
    matured_days = (
        features.select("snapshot_date")
        .unique()
        .filter(pl.col("snapshot_date") <= last_day - timedelta(days=horizon_days))
        .collect()["snapshot_date"]
        .to_list()
    )
    chosen = sample_snapshot_days(matured_days, every_days)
    picked = features.filter(pl.col("snapshot_date").is_in(chosen))
    labelled = rolling_churn_labels(picked, activity_days(events), horizon_days, last_day).collect()
    if labelled.height > max_rows:
        fraction = max_rows / labelled.height
        labelled = labelled.filter(
            pl.int_range(pl.len()).shuffle(seed=seed).over("snapshot_date")
            < (pl.len().over("snapshot_date") * fraction).floor()
        )
    return labelled.sort("snapshot_date", "player_id")
