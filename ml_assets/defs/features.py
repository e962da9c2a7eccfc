"""player_features: one row per (snapshot day, player), from clean events up to that day."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.core.features.player import player_feature_chunks as build_feature_chunks
from ml_assets.core.schemas import PlayerFeatures
from ml_assets.core.settings import Settings
from ml_assets.defs.checks import ChunkedSchemaCheck, schema_check_spec
from ml_assets.defs.partitions import run_window
from ml_assets.defs.resources import LakeResource
from ml_assets.defs.stage import stage_defs
from ml_assets.lake.io_manager import FrameChunks
from ml_assets.lake.tables import CLEAN_EVENTS, EVENT_TABLES, PLAYER_FEATURES

# Features of day D read every clean day up to D: lifetime counts, tenure and recency need all history.
HISTORY_DAYS = 3660


def feature_defs(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.Definitions:
    """The feature stage over `partitions`: player_features."""

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            CLEAN_EVENTS: dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-HISTORY_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
                )
            )
        },
        metadata={"partition_expr": EVENT_TABLES[PLAYER_FEATURES]},
        check_specs=[schema_check_spec(PLAYER_FEATURES, blocking=True)],
        group_name="features",
        kinds={"polars", "delta"},
    )
    def player_features(
        context: dg.AssetExecutionContext, lake: LakeResource, clean_events: pl.LazyFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Trailing-window, lifetime and game features for players active in the longest window."""
        options = lake.settings().features
        first, last = run_window(context)
        check = ChunkedSchemaCheck(PlayerFeatures, PLAYER_FEATURES)
        chunks = FrameChunks(
            build_feature_chunks(
                clean_events,
                first,
                last,
                windows=options.windows,
                max_event_types=options.max_event_types,
                chunk_rows=options.chunk_rows,
            ),
            on_chunk=check,
        )
        yield dg.Output(chunks, metadata={"snapshot_days": (last - first).days + 1})
        yield check.result()

    return stage_defs(settings, [player_features])
