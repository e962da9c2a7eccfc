"""training_set, churn_model and churn_predictions."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.checks import schema_check_result, schema_check_spec
from ml_assets.core.labels import LABEL, build_training_set
from ml_assets.core.training import TrainedModel, score, train_churn_model
from ml_assets.resources import LakeResource
from ml_assets.schemas import ChurnPredictions, TrainingSet

MODEL_IO = "model_io_manager"


def _metrics_table(metrics: dict[str, float], baseline: dict[str, float]) -> str:
    rows = [
        f"| {k} | {v:.4f} | {baseline[k]:.4f} |" if k in baseline else f"| {k} | {v:.4f} | |"
        for k, v in metrics.items()
    ]
    return "\n".join(["| metric | model (test) | recency baseline |", "|---|---|---|", *rows])


def build_model_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The model-stage assets; predictions are partitioned like the features they score."""

    @dg.asset(
        check_specs=[schema_check_spec("training_set", blocking=True)],
        group_name="models",
        kinds={"polars", "delta"},
    )
    def training_set(
        lake: LakeResource, player_features: pl.LazyFrame, clean_events: pl.LazyFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Point-in-time rows: features as of sampled days D, label = no activity in D+1..D+horizon."""
        settings = lake.settings()
        frame = build_training_set(
            player_features,
            clean_events,
            horizon_days=settings.churn.horizon_days,
            every_days=int(settings.get("training", "snapshot_every_days")),
            max_rows=int(settings.get("training", "max_rows")),
            seed=int(settings.get("training", "seed")),
        )
        yield dg.Output(
            frame,
            metadata={
                "snapshot_days": frame["snapshot_date"].n_unique(),
                "churn_rate": float(frame[LABEL].mean() or 0.0),
                "horizon_days": settings.churn.horizon_days,
            },
        )
        yield schema_check_result(frame, TrainingSet, "training_set")

    @dg.asset(io_manager_key=MODEL_IO, group_name="models", kinds={"lightgbm"})
    def churn_model(
        context: dg.AssetExecutionContext, lake: LakeResource, training_set: pl.DataFrame
    ) -> TrainedModel:
        """LightGBM trained out of time: older snapshots train, the latest are the test."""
        settings = lake.settings()
        model = train_churn_model(
            training_set,
            lake.model_dir("churn"),
            name="churn",
            horizon_days=settings.churn.horizon_days,
            test_fraction=float(settings.get("training", "test_fraction")),
            seed=int(settings.get("training", "seed")),
            num_boost_round=int(settings.get("training", "num_boost_round")),
            early_stopping_rounds=int(settings.get("training", "early_stopping_rounds")),
        )
        top = list(model.importance.items())[:15]
        context.add_output_metadata(
            {
                "model_version": model.version,
                "model_file": dg.MetadataValue.path(model.path),
                "best_iteration": model.best_iteration,
                **{f"test/{k}": float(v) for k, v in model.metrics.items()},
                "baseline/roc_auc": float(model.baseline_metrics["roc_auc"]),
                "metrics": dg.MetadataValue.md(_metrics_table(model.metrics, model.baseline_metrics)),
                "importance_gain": dg.MetadataValue.md(
                    "\n".join(["| feature | gain |", "|---|---|", *[f"| {f} | {g:.1f} |" for f, g in top]])
                ),
                "test_days": f"{model.split['test'][0]} .. {model.split['test'][-1]}",
                "features": len(model.features),
            }
        )
        return model

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_expr": "snapshot_date"},
        check_specs=[schema_check_spec("churn_predictions", blocking=False)],
        group_name="models",
        kinds={"polars", "delta"},
    )
    def churn_predictions(
        player_features: pl.DataFrame, churn_model: TrainedModel
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Churn probability per player and snapshot day, scored by the declared model input."""
        scored = score(player_features, churn_model)
        yield dg.Output(
            scored,
            metadata={
                "model_version": churn_model.version,
                "mean_probability": float(scored["churn_probability"].mean() or 0.0),
            },
        )
        yield schema_check_result(scored, ChurnPredictions, "churn_predictions")

    return [training_set, churn_model, churn_predictions]
