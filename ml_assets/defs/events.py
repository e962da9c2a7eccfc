"""raw_events, clean_events and quarantined_events: daily partitions by event day."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.core.days import day_chunks
from ml_assets.core.events.cleaning import clean_events as split_clean
from ml_assets.core.events.cleaning import dedup_window, reason_counts, repeats_within
from ml_assets.core.events.landing import list_batches, scan_landing
from ml_assets.core.schemas import CleanEvents, QuarantinedEvents, RawEvents
from ml_assets.core.settings import Settings
from ml_assets.defs.checks import ChunkedSchemaCheck, schema_check_result, schema_check_spec
from ml_assets.defs.partitions import ONE_DAY, run_window
from ml_assets.defs.resources import LakeResource
from ml_assets.defs.stage import stage_defs
from ml_assets.lake.io_manager import FrameChunks
from ml_assets.lake.tables import (
    CLEAN_EVENTS,
    EVENT_TABLES,
    QUARANTINED_EVENTS,
    RAW_EVENTS,
    committed_rows,
    prior_clean_ids,
)

SINGLE_RUN = dg.BackfillPolicy.single_run()
BATCH_ROWS = 500_000


def event_defs(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.Definitions:
    """The event stage over `partitions`: raw_events, then clean_events and quarantined_events."""

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN,
        metadata={"partition_expr": EVENT_TABLES[RAW_EVENTS]},
        check_specs=[schema_check_spec(RAW_EVENTS, blocking=True)],
        group_name="events",
        kinds={"polars", "delta"},
    )
    def raw_events(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Landed rows as received, by the day they belong to (event day, else delivery day)."""
        first, last = run_window(context)
        landing = lake.landing_uri
        bounds = lake.settings().cleaning.time_bounds()
        rows = scan_landing(landing, bounds).filter(pl.col("partition_date").is_between(first, last))
        check = ChunkedSchemaCheck(RawEvents, RAW_EVENTS)
        # streamed in batches: a long backfill never holds every landed row at once
        batches = rows.collect_batches(chunk_size=BATCH_ROWS)
        yield dg.Output(
            FrameChunks(batches, on_chunk=check),
            metadata={"landing_batches": len(list_batches(landing)), "data_window": f"{first} .. {last}"},
        )
        yield check.result()

    @dg.multi_asset(
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN,
        outs={
            CLEAN_EVENTS: dg.AssetOut(
                metadata={"partition_expr": EVENT_TABLES[CLEAN_EVENTS]},
                group_name="events",
                kinds={"polars", "delta"},
                description="Valid, deduplicated events, by event day.",
            ),
            QUARANTINED_EVENTS: dg.AssetOut(
                metadata={"partition_expr": EVENT_TABLES[QUARANTINED_EVENTS]},
                group_name="events",
                kinds={"polars", "delta"},
                description="Every rejected raw row with the rule it broke: nothing is dropped silently.",
            ),
        },
        check_specs=[
            schema_check_spec(CLEAN_EVENTS, blocking=True),
            schema_check_spec(QUARANTINED_EVENTS, blocking=False),
            dg.AssetCheckSpec(
                name="unique_event_ids",
                asset=CLEAN_EVENTS,
                blocking=True,
                description="no event id is clean twice within [cleaning] dedup_horizon_days of its days",
            ),
            dg.AssetCheckSpec(
                name="every_raw_row_accounted_for",
                asset=CLEAN_EVENTS,
                blocking=True,
                description="raw rows = clean rows + quarantined rows: nothing is dropped silently",
            ),
        ],
    )
    def cleaned(
        context: dg.AssetExecutionContext, lake: LakeResource, raw_events: pl.LazyFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Valid, deduplicated events; every rejected row goes to quarantine with its reason."""
        settings = lake.settings()
        watermark = settings.cleaning.watermark_days
        first, last = run_window(context)
        raw_rows, quarantined = [0], []

        horizon = settings.cleaning.dedup_horizon_days
        # ids clean on the days just before the run's first; then, piece by piece, this run's own
        earlier = prior_clean_ids(lake.table_uri(CLEAN_EVENTS), *dedup_window(first, horizon))

        def clean_pieces() -> Iterator[pl.DataFrame]:
            nonlocal earlier
            # a week of event days at a time, each checked against the ids of the horizon before it;
            # not grown by rows (`lake.piece_days`): within a piece every later copy of an id is a
            # duplicate, while copies further apart than the dedup horizon are distinct events
            for start, end in day_chunks(first, last, settings.features.chunk_days):
                raw = raw_events.filter(pl.col("partition_date").is_between(start, end)).collect()
                raw_rows[0] += raw.height
                seen = earlier.filter(pl.col("event_date") >= dedup_window(start, horizon)[0])["event_id"]
                result = split_clean(
                    raw.lazy(),
                    watermark,
                    settings.cleaning.limits(),
                    settings.cleaning.time_bounds(),
                    seen_ids=seen,
                )
                earlier = pl.concat([earlier, result.clean.select("event_id", "event_date")]).filter(
                    pl.col("event_date") >= dedup_window(end + ONE_DAY, horizon)[0]
                )
                quarantined.append(
                    result.quarantined
                )  # rejects are few: kept until the clean rows are written
                yield result.clean

        clean_check = ChunkedSchemaCheck(CleanEvents, CLEAN_EVENTS)
        clean = FrameChunks(clean_pieces(), on_chunk=clean_check)
        yield dg.Output(clean, output_name=CLEAN_EVENTS, metadata={"data_window": f"{first} .. {last}"})
        rejected = pl.concat(quarantined)
        yield dg.Output(
            rejected,
            output_name=QUARANTINED_EVENTS,
            metadata={f"reason/{k}": v for k, v in reason_counts(rejected).items()},
        )
        yield clean_check.result()
        yield schema_check_result(rejected, QuarantinedEvents, QUARANTINED_EVENTS)
        # the committed clean ids of the run's days and the horizon before them: each once
        ids = prior_clean_ids(lake.table_uri(CLEAN_EVENTS), dedup_window(first, horizon)[0], last)
        repeated = repeats_within(ids, horizon)
        yield dg.AssetCheckResult(
            check_name="unique_event_ids",
            asset_key=CLEAN_EVENTS,
            passed=repeated == 0,
            metadata={"ids_checked": ids.height, "repeated": repeated, "horizon_days": horizon},
        )
        # counted in the committed tables, not in this run's memory: clean and quarantined rows are
        # two Delta commits, and whatever left them out of step (a kill between the two, a hand
        # edit) fails this blocking check until a rerun of the days replaces both
        committed = {
            name: committed_rows(lake.table_uri(name), EVENT_TABLES[name], first, last)
            for name in (RAW_EVENTS, CLEAN_EVENTS, QUARANTINED_EVENTS)
        }
        yield dg.AssetCheckResult(
            check_name="every_raw_row_accounted_for",
            asset_key=CLEAN_EVENTS,
            passed=committed[CLEAN_EVENTS] + committed[QUARANTINED_EVENTS] == committed[RAW_EVENTS]
            and clean.rows + rejected.height == raw_rows[0],
            metadata={
                "raw": committed[RAW_EVENTS],
                "clean": committed[CLEAN_EVENTS],
                "quarantined": committed[QUARANTINED_EVENTS],
                "days": f"{first} .. {last}",
            },
        )

    return stage_defs(settings, [raw_events, cleaned])
