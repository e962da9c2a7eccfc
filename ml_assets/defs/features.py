"""The feature stage: event type counts and player state per day, then player_features from them.

Day D's state is the state of the days before plus day D's events, and day D's features read the
state of the longest window before D: a daily refresh costs the same in a game's second year as
in its second month (see core/features/state.py).
"""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import polars as pl

from ml_assets.core.days import ONE_DAY
from ml_assets.core.features.snapshots import features_from_state, state_days_needed
from ml_assets.core.features.state import (
    CARRY_DAYS,
    cumulative_counts,
    event_type_counts,
    state_pieces,
    state_vocabulary,
    vocabulary_from_counts,
)
from ml_assets.core.schemas import PlayerFeatures
from ml_assets.core.settings import Settings
from ml_assets.defs.checks import ChunkedSchemaCheck, schema_check_spec
from ml_assets.defs.engine import run_sharded
from ml_assets.defs.partitions import run_window
from ml_assets.defs.resources import LakeResource
from ml_assets.defs.stage import stage_defs
from ml_assets.engine.steps import FeaturesJob, Output, StateJob, features_shard, state_shard
from ml_assets.lake.io_manager import FrameChunks
from ml_assets.lake.tables import (
    CLEAN_EVENTS,
    EVENT_TABLES,
    EVENT_TYPE_COUNTS,
    PLAYER_FEATURES,
    PLAYER_STATE,
    latest_table,
)


def _days(start_offset: int, end_offset: int) -> dg.TimeWindowPartitionMapping:
    """Upstream days [D + start_offset, D + end_offset] of day D; days before the first are none."""
    return dg.TimeWindowPartitionMapping(
        start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True
    )


def feature_defs(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.Definitions:
    """The feature stage over `partitions`: event_type_counts, player_state, player_features."""
    longest = max(settings.features.windows)

    @dg.asset(
        name=EVENT_TYPE_COUNTS,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        # the totals of the day before: read from the table, not loaded as a frame
        ins={EVENT_TYPE_COUNTS: dg.AssetIn(partition_mapping=_days(-1, -1), dagster_type=dg.Nothing)},
        metadata={"partition_expr": EVENT_TABLES[EVENT_TYPE_COUNTS]},
        group_name="features",
        kinds={"polars", "delta"},
    )
    def type_counts(
        context: dg.AssetExecutionContext, lake: LakeResource, clean_events: pl.LazyFrame
    ) -> pl.DataFrame:
        """Events and events with a value per event type up to each day: the features' vocabulary."""
        first, last = run_window(context)
        before = first - ONE_DAY
        _require(context, EVENT_TYPE_COUNTS, before, before)
        table = latest_table(lake.table_uri(EVENT_TYPE_COUNTS))
        prior = None
        if table is not None:
            prior = pl.scan_delta(table).filter(pl.col("event_date") == before).collect()
        return cumulative_counts(prior, event_type_counts(clean_events), first, last)

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            EVENT_TYPE_COUNTS: dg.AssetIn(),
            # the state of the CARRY_DAYS days before: read from the table, not loaded as a frame
            PLAYER_STATE: dg.AssetIn(
                partition_mapping=_days(-CARRY_DAYS, -1),
                dagster_type=dg.Nothing,
            ),
        },
        metadata={"partition_expr": EVENT_TABLES[PLAYER_STATE]},
        group_name="features",
        kinds={"polars", "delta"},
    )
    def player_state(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        clean_events: pl.LazyFrame,
        event_type_counts: pl.LazyFrame,
    ) -> dg.Output:  # of FrameChunks or WrittenFiles: Dagster takes no union as an output type
        """Each player's lifetime totals on every day they played (and every 28 days they stay away)."""
        first, last = run_window(context)
        _require(context, PLAYER_STATE, first - timedelta(days=CARRY_DAYS), first - ONE_DAY)
        vocab = vocabulary_from_counts(event_type_counts, last, None)
        vocab = state_vocabulary(vocab.types, vocab.valued)
        table = latest_table(lake.table_uri(PLAYER_STATE))
        stored = pl.scan_delta(table) if table is not None else None
        chunk_days = lake.piece_days(CLEAN_EVENTS, first, last)
        metadata = {"event_types": len(vocab.types), "days_per_piece": chunk_days}
        engine = lake.engine()
        if engine.distributed:
            out = Output(lake.table_uri(PLAYER_STATE), EVENT_TABLES[PLAYER_STATE])
            job = StateJob(out, engine.shards, clean_events, stored, vocab, first, last, chunk_days)
            return run_sharded(engine, state_shard, job, metadata)
        pieces = state_pieces(clean_events, stored, vocab, first, last, chunk_days)
        return dg.Output(FrameChunks(pieces), metadata=metadata)

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            PLAYER_STATE: dg.AssetIn(partition_mapping=_days(-(longest + CARRY_DAYS - 1), 0)),
            EVENT_TYPE_COUNTS: dg.AssetIn(),
        },
        metadata={"partition_expr": EVENT_TABLES[PLAYER_FEATURES]},
        check_specs=[schema_check_spec(PLAYER_FEATURES, blocking=True)],
        group_name="features",
        kinds={"polars", "delta"},
    )
    def player_features(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        player_state: pl.LazyFrame,
        event_type_counts: pl.LazyFrame,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Trailing-window, lifetime and game features for players active in the longest window."""
        options = lake.settings().features
        first, last = run_window(context)
        _require(context, PLAYER_STATE, state_days_needed(first, options.windows), last)
        check = ChunkedSchemaCheck(PlayerFeatures, PLAYER_FEATURES)
        engine = lake.engine()
        if engine.distributed:
            vocab = vocabulary_from_counts(event_type_counts, last, options.max_event_types)
            out = Output(lake.table_uri(PLAYER_FEATURES), EVENT_TABLES[PLAYER_FEATURES], PlayerFeatures)
            windows, rows = tuple(options.windows), options.chunk_rows
            job = FeaturesJob(out, engine.shards, player_state, vocab, first, last, windows, rows)
            yield run_sharded(engine, features_shard, job, {"snapshot_days": (last - first).days + 1}, check)
            yield check.result()
            return
        chunks = FrameChunks(
            features_from_state(
                player_state,
                event_type_counts,
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

    return stage_defs(settings, [type_counts, player_state, player_features])


def _require(context: dg.AssetExecutionContext, table: str, first: date, last: date) -> None:
    """Fail unless `table` is materialized for every existing day of [first, last]: a missing
    day of state would silently count as a day nobody played."""
    partitions = context.assets_def.partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
    # the days of [first, last] that are partitions, without listing every partition of the game's
    # life (6 ms a call at 361 days, three calls a daily run)
    lowest, highest = partitions.get_first_partition_key(), partitions.get_last_partition_key()
    needed: set[str] = set()
    if lowest is not None and highest is not None:
        days = ((first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1))
        needed = {key for key in days if lowest <= key <= highest}
    done = context.instance.get_materialized_partitions(dg.AssetKey(table))
    missing = sorted(needed - done)
    if missing:
        raise ValueError(
            f"{table} is not materialized for {len(missing)} day(s) it needs "
            f"({missing[0]} .. {missing[-1]}): materialize {table} from {missing[0]} first"
        )
