"""player_features: one row per (snapshot day, player), from clean events up to that day."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.checks import ChunkedSchemaCheck, schema_check_spec
from ml_assets.core.features import player_feature_chunks as build_feature_chunks
from ml_assets.lake_io import FrameChunks
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
        check = ChunkedSchemaCheck(PlayerFeatures, "player_features")
        chunks = FrameChunks(
            build_feature_chunks(
                clean_events,
                first,
                last,
                windows=settings.get("features", "windows"),
                max_event_types=int(settings.get("features", "max_event_types")),
                chunk_rows=int(settings.get("features", "chunk_rows")),
            ),
            on_chunk=check,
        )
        yield dg.Output(chunks, metadata={"snapshot_days": (last - first).days + 1})
        yield check.result()

    return [player_features]
