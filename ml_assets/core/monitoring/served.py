"""Realized performance of served predictions, per model version and arm, once labels mature."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from ml_assets.core.models.evaluation import evaluate
from ml_assets.core.models.labels import LABEL, outcome_labels
from ml_assets.core.models.spec import ModelSpec

SERVED_PERFORMANCE_SCHEMA: dict[str, pl.DataType] = {
    "version": pl.String(),
    "arm": pl.String(),
    "predictions": pl.Int64(),
    "players": pl.Int64(),
    "matured": pl.Int64(),
    "positives": pl.Int64(),
    "mean_probability": pl.Float64(),
    "roc_auc": pl.Float64(),
    "log_loss": pl.Float64(),
}


def served_performance(
    spec: ModelSpec, served: pl.DataFrame, events: pl.LazyFrame, last_day: date
) -> pl.DataFrame:
    """Per (version, arm) of `spec`'s served predictions: counts, and metrics on the matured ones.

    A player's prediction is judged on the snapshot its features described (`features_as_of`),
    each (player, day, version, arm) once: repeat requests of one player on one day are one case.
    """
    mine = (
        served.filter((pl.col("model") == spec.name) & pl.col("features_as_of").is_not_null())
        .group_by("version", "arm", "player_id", "features_as_of")
        .agg(pl.col("probability").last(), pl.len().alias("_requests"))
        .rename({"features_as_of": "snapshot_date"})
    )
    labelled = (
        outcome_labels(spec, mine, events, last_day)
        if mine.height
        else mine.with_columns(pl.lit(None, pl.Boolean).alias(LABEL))
    )
    rows = []
    for (version, arm), part in labelled.group_by("version", "arm", maintain_order=True):
        matured = part.filter(pl.col(LABEL).is_not_null())
        y = matured[LABEL].cast(pl.Float64).to_numpy()
        metrics = evaluate(y, matured["probability"].to_numpy()) if 0 < y.sum() < len(y) else {}
        rows.append(
            {
                "version": version,
                "arm": arm,
                "predictions": int(part["_requests"].sum()),
                "players": part["player_id"].n_unique(),
                "matured": matured.height,
                "positives": int(np.sum(y)),
                "mean_probability": float(part["probability"].cast(pl.Float64).mean() or 0.0),  # type: ignore[arg-type]
                "roc_auc": metrics.get("roc_auc"),
                "log_loss": metrics.get("log_loss"),
            }
        )
    return pl.DataFrame(rows, schema=SERVED_PERFORMANCE_SCHEMA).sort("version", "arm")
