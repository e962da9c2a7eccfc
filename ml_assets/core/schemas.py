"""Pandera models of every table: written once, used by the asset checks and by the tests."""

from __future__ import annotations

from datetime import date, datetime

import pandera.errors as pa_errors
import pandera.polars as pa
import polars as pl
from pandera.engines.polars_engine import DateTime

from ml_assets.core.events.cleaning import REASONS

UTC_TIME = DateTime(time_zone="UTC", time_unit="us")


class RawEvents(pa.DataFrameModel):
    """Landed rows as received: anything may be wrong with them except their bookkeeping."""

    event_id: str = pa.Field(nullable=True)
    player_id: str = pa.Field(nullable=True)
    event_time: UTC_TIME = pa.Field(nullable=True)  # type: ignore[valid-type]
    event_type: str = pa.Field(nullable=True)
    value: float = pa.Field(nullable=True)
    received_date: date
    batch_id: str
    partition_date: date

    class Config:
        strict = False


class CleanEvents(pa.DataFrameModel):
    """Typed, valid, deduplicated events."""

    event_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    player_id: str = pa.Field(str_length={"min_value": 1})
    event_time: UTC_TIME  # type: ignore[valid-type]
    event_type: str = pa.Field(str_length={"min_value": 1})
    value: float = pa.Field(nullable=True, ge=0)
    platform: str = pa.Field(nullable=True)
    country: str = pa.Field(nullable=True)
    app_version: str = pa.Field(nullable=True)
    properties: str = pa.Field(nullable=True)
    event_date: date
    received_date: date

    @pa.dataframe_check
    @classmethod
    def event_date_matches_time(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("event_time").dt.date() == pl.col("event_date"))

    @pa.dataframe_check
    @classmethod
    def not_received_before_it_happened(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("received_date") >= pl.col("event_date"))


class QuarantinedEvents(pa.DataFrameModel):
    """Every rejected row, with the rule it broke."""

    event_id: str = pa.Field(nullable=True)
    reason: str = pa.Field(isin=list(REASONS))
    partition_date: date
    batch_id: str

    class Config:
        strict = False


class PlayerFeatures(pa.DataFrameModel):
    """One row per (player, snapshot day); counts never negative, recency within tenure."""

    player_id: str
    snapshot_date: date
    tenure_days: pl.Int32 = pa.Field(ge=0)
    recency_days: pl.Int32 = pa.Field(ge=0)
    events_total: int = pa.Field(ge=1)
    counts: pl.Int32 = pa.Field(alias=r"^(events|active_days|ev_.+_count)_\d+d$", regex=True, ge=0)
    totals: pl.Int32 = pa.Field(alias=r"^ev_.+_count_total$", regex=True, ge=0)

    @pa.dataframe_check
    @classmethod
    def one_row_per_player_and_day(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.struct("player_id", "snapshot_date").is_unique())

    @pa.dataframe_check
    @classmethod
    def recency_within_tenure(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("recency_days") <= pl.col("tenure_days"))

    class Config:
        strict = False
        coerce = False


class TrainingSet(PlayerFeatures):
    """Feature rows with a matured label and the day the out-of-time split orders them by."""

    label: bool
    split_date: date

    @pa.dataframe_check
    @classmethod
    def split_not_after_snapshot(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("split_date") <= pl.col("snapshot_date"))


class Predictions(pa.DataFrameModel):
    """One probability per (player, snapshot day), the model version that produced it, its top reasons."""

    player_id: str
    snapshot_date: date
    probability: float = pa.Field(ge=0, le=1)
    model_version: str = pa.Field(str_length={"min_value": 1})
    # absent when the model's spec turns explanations off (explain_top = 0)
    reason_1: str = pa.Field(nullable=True, required=False)
    reason_1_contribution: float = pa.Field(nullable=True, required=False)

    @pa.dataframe_check
    @classmethod
    def one_row_per_player_and_day(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.struct("player_id", "snapshot_date").is_unique())


class FeatureDrift(pa.DataFrameModel):
    """Per day and feature of the production model (and its score): drift against the reference."""

    feature: str = pa.Field(str_length={"min_value": 1})
    kind: str = pa.Field(isin=["numeric", "categorical", "score"])
    rows: int = pa.Field(ge=0)
    psi: float = pa.Field(nullable=True, ge=0)
    drifted: bool
    snapshot_date: date
    model_version: str = pa.Field(str_length={"min_value": 1})

    @pa.dataframe_check
    @classmethod
    def one_row_per_day_and_feature(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.struct("snapshot_date", "feature").is_unique())

    class Config:
        strict = False


class ModelPerformance(pa.DataFrameModel):
    """Per day: the served model's quality overall ("all") and per segment value."""

    snapshot_date: date
    model_version: str = pa.Field(str_length={"min_value": 1})
    segment_column: str
    segment: str = pa.Field(nullable=True)
    rows: int = pa.Field(ge=1)
    estimated: bool
    roc_auc: float = pa.Field(nullable=True)
    log_loss: float = pa.Field(nullable=True)
    degraded: bool = pa.Field(nullable=True)

    @pa.dataframe_check
    @classmethod
    def one_overall_row_per_day(cls, data: pa.PolarsData) -> pl.LazyFrame:
        overall = pl.col("segment_column") == "all"
        return data.lazyframe.select(~overall | pl.col("snapshot_date").is_unique().over(overall))

    class Config:
        strict = False


__all__ = [
    "Predictions",
    "CleanEvents",
    "FeatureDrift",
    "ModelPerformance",
    "PlayerFeatures",
    "QuarantinedEvents",
    "RawEvents",
    "TrainingSet",
    "datetime",
    "validate_frame",
]


def validate_frame(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> tuple[bool, pl.DataFrame]:
    """Validate lazily (all failures, not the first); the failure cases are empty when it passes."""
    try:
        model.validate(frame, lazy=True)
    except pa_errors.SchemaErrors as exc:
        return False, pl.DataFrame(exc.failure_cases)
    except pa_errors.SchemaError as exc:
        cases = exc.failure_cases if isinstance(exc.failure_cases, pl.DataFrame) else None
        return False, cases if cases is not None else pl.DataFrame({"check": [str(exc)]})
    return True, pl.DataFrame()
