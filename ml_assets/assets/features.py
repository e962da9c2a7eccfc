"""player_features: one row per (snapshot day, player), from clean events up to that day."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.checks import schema_check_result, schema_check_spec
from ml_assets.core.features import player_features as build_features
from ml_assets.partitions import window_days
from ml_assets.resources import LakeResource
from ml_assets.schemas import PlayerFeatures

# Features of day D read every clean day up to D: lifetime counts, tenure and recency need all history.
HISTORY_DAYS = 3660


def build_feature_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The feature-stage assets over `partitions`."""

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            "clean_events": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-HISTORY_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
                )
            )
        },
        metadata={"partition_expr": "snapshot_date"},
        check_specs=[schema_check_spec("player_features", blocking=True)],
        group_name="features",
        kinds={"polars", "delta"},
    )
    def player_features(
        context: dg.AssetExecutionContext, lake: LakeResource, clean_events: pl.LazyFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Trailing-window, lifetime and game features for players active in the longest window."""
        settings = lake.settings()
        first, last = window_days(*context.partition_time_window)
        frame = build_features(
            clean_events,
            first,
            last,
            windows=settings.get("features", "windows"),
            max_event_types=int(settings.get("features", "max_event_types")),
        ).collect()
        yield dg.Output(
            frame,
            metadata={
                "players": frame["player_id"].n_unique(),
                "snapshot_days": frame["snapshot_date"].n_unique(),
                "feature_columns": frame.width - 2,
            },
        )
        yield schema_check_result(frame, PlayerFeatures, "player_features")

    return [player_features]
