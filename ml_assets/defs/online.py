"""The online half in the graph: online_features after player_features, and what the server logs.

`served_predictions` is written by `ml-assets serve`, not by a run, so it is an external asset:
the lineage shows where each model's served performance comes from.
"""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from ml_assets.core.monitoring.served import served_performance
from ml_assets.core.settings import Settings
from ml_assets.defs.resources import LakeResource
from ml_assets.defs.stage import stage_defs
from ml_assets.lake.tables import (
    CLEAN_EVENTS,
    PLAYER_FEATURES,
    SERVED_PREDICTIONS,
    model_assets,
    open_table,
)
from ml_assets.serving.online_features import online_batch
from ml_assets.serving.prediction_log import SERVED_SCHEMA
from ml_assets.serving.stores import online_store

ONLINE_FEATURES = "online_features"
# Dagster's eager() less its "no dependency missing" clause: an unpartitioned asset of a daily
# table depends on every day, and a live lake always has a day not materialized yet (today's)
AFTER_ANY_UPDATE = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after any dependency updates")


def online_defs(settings: Settings) -> dg.Definitions:
    """online_features, the served_predictions log, and each model's served performance per arm."""

    @dg.asset(
        name=ONLINE_FEATURES,
        deps=[PLAYER_FEATURES],
        group_name="serving",
        kinds={settings.serving.online_store},
        automation_condition=AFTER_ANY_UPDATE,
        description="Each player's newest feature vector in the online store, for `ml-assets serve`.",
    )
    def online_features(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        table = open_table(lake.table_uri(PLAYER_FEATURES))
        if table is None:
            raise ValueError(f"{PLAYER_FEATURES} has no table yet: materialize it first")
        scan = pl.scan_delta(table)
        newest = scan.select(pl.col("snapshot_date").max()).collect().item()
        rows = scan.filter(pl.col("snapshot_date") == newest).collect()
        store = online_store(lake.settings())
        try:
            # encoded as columns in a few vectorized steps, not one OnlineRow and json.dumps per player
            written = store.write_encoded(online_batch(rows, datetime.now(UTC), "batch"))
            purged = store.purge_expired()
            status = store.status()
        finally:
            store.close()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows.height,
                "snapshot_date": str(newest),
                "written": written,
                "expired_purged": purged,
                "store": status.kind,
                "store_rows": status.rows,
                "ttl_hours": status.ttl_seconds / 3600,
            }
        )

    served = dg.AssetSpec(
        SERVED_PREDICTIONS,
        group_name="serving",
        kinds={"delta"},
        owners=list(settings.catalog.owners),
        description="Every prediction `ml-assets serve` answered, with version and arm (server-written).",
    )
    performance = [_served_performance(spec.name, settings) for spec in settings.specs]
    return dg.Definitions.merge(
        stage_defs(settings, [online_features, *performance]), dg.Definitions(assets=[served])
    )


def _served_performance(model: str, settings: Settings) -> dg.AssetsDefinition:
    names = model_assets(model)

    @dg.asset(
        name=names.served_performance,
        deps=[SERVED_PREDICTIONS, CLEAN_EVENTS],
        group_name=names.group,
        kinds={"polars", "delta"},
        # new clean events mature labels; the server's log is not an asset run, so never "updates"
        automation_condition=AFTER_ANY_UPDATE,
        description=f"Realized performance of {model}'s served predictions per version and A/B arm.",
    )
    def performance(context: dg.AssetExecutionContext, lake: LakeResource) -> pl.DataFrame:
        spec = lake.settings().spec(model)
        log = open_table(lake.table_uri(SERVED_PREDICTIONS))
        served = pl.read_delta(log) if log is not None else pl.DataFrame(schema=SERVED_SCHEMA)
        events_table = open_table(lake.table_uri(CLEAN_EVENTS))
        if events_table is None:
            raise ValueError(f"{CLEAN_EVENTS} has no table yet: materialize it first")
        events = pl.scan_delta(events_table)
        last_day = events.select(pl.col("event_date").max()).collect().item()
        frame = served_performance(spec, served, events, last_day)
        context.add_output_metadata(
            {
                "dagster/row_count": frame.height,
                "labels_through": str(last_day),
                "per_arm": dg.MetadataValue.md(_markdown(frame)),
            }
        )
        return frame

    return performance


def _markdown(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "No served predictions yet."
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join(
        "| "
        + " | ".join("" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row)
        + " |\n"
        for row in frame.iter_rows()
    )
    return head + body
