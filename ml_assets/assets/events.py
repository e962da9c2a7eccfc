"""raw_events, clean_events and quarantined_events: daily partitions by event day."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.checks import ChunkedSchemaCheck, schema_check_result, schema_check_spec
from ml_assets.core.events import clean_events as split_clean
from ml_assets.core.events import reason_counts
from ml_assets.core.landing import list_batches, scan_landing
from ml_assets.lake_io import FrameChunks
from ml_assets.partitions import day_chunks, window_days
from ml_assets.resources import LakeResource
from ml_assets.schemas import CleanEvents, QuarantinedEvents, RawEvents

SINGLE_RUN = dg.BackfillPolicy.single_run()
BATCH_ROWS = 500_000


def build_event_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The event-stage assets over `partitions`."""

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=SINGLE_RUN,
        metadata={"partition_expr": "partition_date"},
        check_specs=[schema_check_spec("raw_events", blocking=True)],
        group_name="events",
        kinds={"polars", "delta"},
    )
    def raw_events(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Landed rows as received, by the day they belong to (event day, else delivery day)."""
        first, last = window_days(*context.partition_time_window)
        landing = lake.landing_dir
        rows = scan_landing(landing).filter(pl.col("partition_date").is_between(first, last))
        check = ChunkedSchemaCheck(RawEvents, "raw_events")
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
            "clean_events": dg.AssetOut(
                metadata={"partition_expr": "event_date"}, group_name="events", kinds={"polars", "delta"}
            ),
            "quarantined_events": dg.AssetOut(
                metadata={"partition_expr": "partition_date"}, group_name="events", kinds={"polars", "delta"}
            ),
        },
        check_specs=[
            schema_check_spec("clean_events", blocking=True),
            schema_check_spec("quarantined_events", blocking=False),
            dg.AssetCheckSpec(
                name="every_raw_row_accounted_for",
                asset="clean_events",
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
        watermark = int(settings.get("cleaning", "watermark_days"))
        first, last = window_days(*context.partition_time_window)
        raw_rows, quarantined = [0], []

        def clean_pieces() -> Iterator[pl.DataFrame]:
            # a week of event days at a time: duplicates share their event day, so each piece dedups fully
            for start, end in day_chunks(first, last, int(settings.get("features", "chunk_days"))):
                raw = raw_events.filter(pl.col("partition_date").is_between(start, end)).collect()
                raw_rows[0] += raw.height
                result = split_clean(raw.lazy(), watermark)
                quarantined.append(
                    result.quarantined
                )  # rejects are few: kept until the clean rows are written
                yield result.clean

        clean_check = ChunkedSchemaCheck(CleanEvents, "clean_events")
        clean = FrameChunks(clean_pieces(), on_chunk=clean_check)
        yield dg.Output(clean, output_name="clean_events", metadata={"data_window": f"{first} .. {last}"})
        rejected = pl.concat(quarantined)
        yield dg.Output(
            rejected,
            output_name="quarantined_events",
            metadata={f"reason/{k}": v for k, v in reason_counts(rejected).items()},
        )
        yield clean_check.result()
        yield schema_check_result(rejected, QuarantinedEvents, "quarantined_events")
        yield dg.AssetCheckResult(
            check_name="every_raw_row_accounted_for",
            asset_key="clean_events",
            passed=clean.rows + rejected.height == raw_rows[0],
            metadata={"raw": raw_rows[0], "clean": clean.rows, "quarantined": rejected.height},
        )

    return [raw_events, cleaned]
