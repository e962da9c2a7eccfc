"""NAME_feature_drift and NAME_model_performance: how the production model's inputs and quality move.

Built by `defs.model.model_defs` for each spec; the statistics are `core.monitoring` functions.
"""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import polars as pl

from ml_assets.core.events.landing import read_window
from ml_assets.core.models.labels import look_ahead_days, with_behaviour
from ml_assets.core.models.plots import importance_png, markdown_image
from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.models.training import TrainedModel
from ml_assets.core.monitoring.drift import alarm_rows, drift_by_day, drift_summary
from ml_assets.core.monitoring.performance import SEGMENTS, performance_by_day
from ml_assets.core.schemas import FeatureDrift, ModelPerformance
from ml_assets.core.settings import Settings
from ml_assets.defs.behaviour import behaviour_events, behaviour_inputs
from ml_assets.defs.checks import schema_check_result, schema_check_spec
from ml_assets.defs.partitions import run_window
from ml_assets.defs.resources import LakeResource
from ml_assets.lake.tables import CLEAN_EVENTS, PLAYER_FEATURES, SNAPSHOT_COLUMN, model_assets


def monitoring_assets(
    spec: ModelSpec, settings: Settings, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    """Drift and performance of one model's production version, per daily partition."""
    names = model_assets(spec.name)
    n = spec.name

    @dg.asset(
        name=names.feature_drift,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            PLAYER_FEATURES: dg.AssetIn(),
            **behaviour_events(spec, settings),
            # the scores whose drift is measured are the ones served, not a second scoring pass
            "predictions": dg.AssetIn(names.predictions),
            "production_model": dg.AssetIn(names.production_model),
        },
        metadata={"partition_expr": SNAPSHOT_COLUMN},
        group_name=names.group,
        kinds={"polars", "delta"},
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=[schema_check_spec(names.feature_drift, blocking=False)],
        description=f"Per day: each feature of {n}'s production model and its score vs the training profile.",
    )
    def drift(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        player_features: pl.LazyFrame,
        predictions: pl.LazyFrame,
        production_model: TrainedModel,
        **events: pl.LazyFrame,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        clean_events = events.get(CLEAN_EVENTS)
        settings = lake.settings()
        thresholds = settings.drift.thresholds()
        first, last = run_window(context)
        served = predictions.filter(pl.col("model_version") == production_model.version)
        recorded = production_model.extra.get("behaviour")

        def enrich(rows: pl.DataFrame) -> pl.DataFrame:
            return with_behaviour(spec, production_model.features, recorded, rows, clean_events)

        frame = drift_by_day(
            spec,
            production_model.profile(),
            player_features,
            served,
            first,
            last,
            lake.piece_days(PLAYER_FEATURES, first, last),
            thresholds,
            enrich,
            behaviour_inputs(recorded),
        ).with_columns(model_version=pl.lit(production_model.version))
        latest = frame.filter(pl.col("snapshot_date") == last)
        summary = drift_summary(alarm_rows(latest, settings.drift.ignore), thresholds)
        psi = {r["feature"]: float(r["psi"] or 0.0) for r in latest.iter_rows(named=True)}
        yield dg.Output(
            frame,
            metadata={
                "model_version": production_model.version,
                "latest_day": str(last),
                "share_drifted": float(summary["share_drifted"]),
                "drifted_features": dg.MetadataValue.json(summary.get("drifted_features", [])),
                "score_psi": float(summary["score_psi"] or 0.0)
                if summary.get("score_psi") is not None
                else 0.0,
                "alarm": bool(summary["alarm"]),
                "psi_latest_day": dg.MetadataValue.md(
                    markdown_image(importance_png(psi, top=15), "PSI by feature")
                ),
            },
        )
        yield schema_check_result(frame, FeatureDrift, names.feature_drift)

    @dg.asset(
        name=names.model_performance,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            "predictions": dg.AssetIn(names.predictions),
            PLAYER_FEATURES: dg.AssetIn(),
            # outcomes come from the days after each prediction; the window starts at the day itself
            # so that the newest day, which has no later day yet, still maps to an upstream partition
            CLEAN_EVENTS: dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=0,
                    end_offset=look_ahead_days(spec),
                    allow_nonexistent_upstream_partitions=True,
                )
            ),
            "production_model": dg.AssetIn(names.production_model),
        },
        metadata={"partition_expr": SNAPSHOT_COLUMN},
        group_name=names.group,
        kinds={"polars", "delta"},
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=[schema_check_spec(names.model_performance, blocking=False)],
        description=f"Per day: {n}'s estimated (CBPE) and, once labels mature, realized quality, by segment.",
    )
    def performance(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        predictions: pl.LazyFrame,
        player_features: pl.LazyFrame,
        clean_events: pl.LazyFrame,
        production_model: TrainedModel,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        settings = lake.settings()
        metric = settings.performance.metric
        window = read_window(lake.landing_uri)
        first, last = run_window(context)
        attributes = player_features.select("player_id", "snapshot_date", *SEGMENTS)
        scored = predictions.join(attributes, on=["player_id", "snapshot_date"], how="left")
        frame = performance_by_day(
            spec,
            production_model.metrics,
            scored,
            clean_events,
            first,
            last,
            window.last_day if window else date.min,
            lake.piece_days(names.predictions, first, last),
            metric,
            settings.performance.degradation_threshold,
        )
        overall = frame.filter(pl.col("segment_column") == "all").sort("snapshot_date")
        metadata: dict[str, dg.RawMetadataValue] = {"days": overall.height}
        if overall.height:
            row = overall.row(-1, named=True)
            metadata.update(
                {
                    "latest_day": str(row["snapshot_date"]),
                    "estimated": bool(row["estimated"]),
                    metric: float(row[metric]) if row.get(metric) is not None else float("nan"),
                    "degraded": bool(row["degraded"]),
                    "reason": row["reason"],
                }
            )
        yield dg.Output(frame, metadata=metadata)
        yield schema_check_result(frame, ModelPerformance, names.model_performance)

    return [drift, performance]
