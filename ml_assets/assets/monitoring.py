"""NAME_feature_drift and NAME_model_performance: how the production model's inputs and quality move."""

import fnmatch
from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import polars as pl

from ml_assets.core.drift import DriftThresholds, drift_summary, feature_drift
from ml_assets.core.features import KEY
from ml_assets.core.labels import LABEL, look_ahead_days, outcome_labels, scoring_columns, scoring_rows
from ml_assets.core.landing import read_window
from ml_assets.core.performance import (
    degradation,
    expected_metrics,
    largest_gap,
    realized_metrics,
    segment_metrics,
)
from ml_assets.core.plots import importance_png, markdown_image
from ml_assets.core.spec import ModelSpec
from ml_assets.core.training import TrainedModel
from ml_assets.partitions import day_chunks, window_days
from ml_assets.resources import LakeResource
from ml_assets.settings import Settings

SEGMENTS = ("platform", "country")


def drift_thresholds(settings: Settings) -> DriftThresholds:
    """The drift thresholds in force (`[drift]` settings)."""
    return DriftThresholds(
        psi=float(settings.get("drift", "psi")),
        wasserstein=float(settings.get("drift", "wasserstein")),
        jensen_shannon=float(settings.get("drift", "jensen_shannon")),
        share_drifted=float(settings.get("drift", "share_drifted")),
        min_rows=int(settings.get("drift", "min_rows")),
    )


def alarm_rows(drift: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The drift rows the alarm looks at: all but the features `[drift] ignore` names (globs)."""
    globs = list(settings.get("drift", "ignore"))
    ignored = [f for f in drift["feature"].to_list() if any(fnmatch.fnmatch(f, g) for g in globs)]
    return drift.filter(~pl.col("feature").is_in(ignored))


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def build_monitoring_assets(
    spec: ModelSpec, partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    """Drift and performance of one model's production version, per daily partition."""
    n = spec.name
    group = f"model_{n}"
    ahead = look_ahead_days(spec)

    @dg.asset(
        name=f"{n}_feature_drift",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            "player_features": dg.AssetIn(),
            # the scores whose drift is measured are the ones served, not a second scoring pass
            "predictions": dg.AssetIn(f"{n}_predictions"),
            "production_model": dg.AssetIn(f"{n}_production_model"),
        },
        metadata={"partition_expr": "snapshot_date"},
        group_name=group,
        kinds={"polars", "delta"},
        automation_condition=dg.AutomationCondition.eager(),
        description=f"Per day: each feature of {n}'s production model and its score vs the training profile.",
    )
    def drift(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        player_features: pl.LazyFrame,
        predictions: pl.LazyFrame,
        production_model: TrainedModel,
    ) -> pl.DataFrame:
        settings = lake.settings()
        thresholds = drift_thresholds(settings)
        profile = production_model.profile()
        first, last = window_days(*context.partition_time_window)
        needed = {*KEY, *profile.numeric, *profile.categorical, *scoring_columns(spec)}
        columns = [c for c in player_features.collect_schema().names() if c in needed]
        served = predictions.filter(pl.col("model_version") == production_model.version)
        days = []
        # a few days per read: one scan per day of a wide table costs more than the statistics
        for start, end in day_chunks(first, last, int(settings.get("features", "chunk_days"))):
            in_range = pl.col("snapshot_date").is_between(start, end)
            features = scoring_rows(spec, player_features.filter(in_range).select(columns).collect())
            scores = served.filter(in_range).select("snapshot_date", "probability").collect()
            for day in _days(start, end):
                rows = features.filter(pl.col("snapshot_date") == day)
                p = scores.filter(pl.col("snapshot_date") == day)["probability"].to_numpy()
                stats = feature_drift(profile, rows, p if p.size else None, thresholds)
                days.append(
                    stats.with_columns(
                        snapshot_date=pl.lit(day), model_version=pl.lit(production_model.version)
                    )
                )
        frame = pl.concat(days, how="diagonal_relaxed")
        latest = frame.filter(pl.col("snapshot_date") == last)
        summary = drift_summary(alarm_rows(latest, lake.settings()), thresholds)
        psi = {r["feature"]: float(r["psi"] or 0.0) for r in latest.iter_rows(named=True)}
        context.add_output_metadata(
            {
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
            }
        )
        return frame

    @dg.asset(
        name=f"{n}_model_performance",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            "predictions": dg.AssetIn(f"{n}_predictions"),
            "player_features": dg.AssetIn(),
            # outcomes come from the days after each prediction
            "clean_events": dg.AssetIn(
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=1, end_offset=ahead, allow_nonexistent_upstream_partitions=True
                )
            ),
            "production_model": dg.AssetIn(f"{n}_production_model"),
        },
        metadata={"partition_expr": "snapshot_date"},
        group_name=group,
        kinds={"polars", "delta"},
        automation_condition=dg.AutomationCondition.eager(),
        description=f"Per day: {n}'s estimated (CBPE) and, once labels mature, realized quality, by segment.",
    )
    def performance(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        predictions: pl.LazyFrame,
        player_features: pl.LazyFrame,
        clean_events: pl.LazyFrame,
        production_model: TrainedModel,
    ) -> pl.DataFrame:
        settings = lake.settings()
        metric = str(settings.get("performance", "metric"))
        threshold = float(settings.get("performance", "degradation_threshold"))
        window = read_window(lake.landing_dir)
        last_day = window.last_day if window else date.min
        first, last = window_days(*context.partition_time_window)
        attributes = player_features.select("player_id", "snapshot_date", *SEGMENTS)
        scored = predictions.join(attributes, on=["player_id", "snapshot_date"], how="left")

        def labelled_days() -> Iterator[tuple[date, pl.DataFrame]]:
            # a week of predictions at a time, with only the events their outcomes can depend on
            for start, end in day_chunks(first, last, int(settings.get("features", "chunk_days"))):
                rows = scored.filter(pl.col("snapshot_date").is_between(start, end)).collect()
                outcomes = clean_events.filter(
                    pl.col("event_date").is_between(start, end + timedelta(days=ahead), closed="right")
                )
                labelled = outcome_labels(spec, rows, outcomes, last_day)
                for day in _days(start, end):
                    yield day, labelled.filter(pl.col("snapshot_date") == day)

        out = []
        for day, rows in labelled_days():
            if rows.height == 0:
                continue
            p = rows["probability"].to_numpy()
            matured = rows[LABEL].null_count() == 0 and rows[LABEL].n_unique() == 2
            current = (
                realized_metrics(rows[LABEL].cast(pl.Float64).to_numpy(), p)
                if matured
                else expected_metrics(p)
            )
            verdict = degradation(production_model.metrics, current, metric, threshold)
            base = {"snapshot_date": day, "model_version": rows["model_version"][0]}
            out.append(
                {
                    **base,
                    "segment_column": "all",
                    "segment": "all",
                    "rows": rows.height,
                    "estimated": not matured,
                    "roc_auc": current.get("roc_auc"),
                    "log_loss": current.get("log_loss"),
                    "brier": current.get("brier"),
                    # calibration: expected calibration error once labels mature (estimates assume it)
                    "ece": current.get("ece"),
                    "expected_roc_auc": expected_metrics(p)["roc_auc"],
                    "reference_roc_auc": production_model.metrics.get("roc_auc"),
                    "relative_drop": verdict.relative_drop,
                    "degraded": verdict.degraded,
                    "reason": verdict.reason,
                }
            )
            for column in SEGMENTS:
                seg = segment_metrics(rows, column, label=LABEL if matured else None)
                gap = largest_gap(seg)
                for r in seg.iter_rows(named=True):
                    out.append(
                        {
                            **base,
                            "segment_column": column,
                            "segment": r[column],
                            "rows": r["rows"],
                            "estimated": r["estimated"],
                            "roc_auc": r["roc_auc"],
                            "log_loss": r["log_loss"],
                            "reason": f"largest {column} gap {gap['gap']:.3f}: {gap['best']}/{gap['worst']}",
                        }
                    )
        frame = pl.DataFrame(out, infer_schema_length=None) if out else pl.DataFrame({"snapshot_date": []})
        latest = frame.filter(
            (pl.col("segment_column") == "all") & (pl.col("snapshot_date") == frame["snapshot_date"].max())
        )
        if latest.height:
            row = latest.row(0, named=True)
            context.add_output_metadata(
                {
                    "latest_day": str(row["snapshot_date"]),
                    "estimated": bool(row["estimated"]),
                    metric: float(row["roc_auc"]) if row["roc_auc"] is not None else float("nan"),
                    "degraded": bool(row["degraded"]),
                    "reason": row["reason"],
                }
            )
        return frame

    return [drift, performance]
