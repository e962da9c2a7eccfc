"""The asset factory of a model spec: NAME_training_set, NAME_model, NAME_production_model, NAME_predictions
(all flat keys, one group per model)."""

from collections.abc import Iterator

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from ml_assets.checks import ChunkedSchemaCheck, schema_check_result, schema_check_spec
from ml_assets.core.evaluation import calibration_table
from ml_assets.core.experiments import code_version, record_run
from ml_assets.core.features import KEY
from ml_assets.core.labels import LABEL, SPLIT, build_training_set, scoring_columns, scoring_rows
from ml_assets.core.lifecycle import experiment_run, register_and_gate
from ml_assets.core.plots import calibration_png, importance_png, markdown_image, pr_png, roc_png
from ml_assets.core.spec import ModelSpec
from ml_assets.core.training import (
    TrainedModel,
    load_model,
    predict,
    score,
    test_rows,
    train_model,
)
from ml_assets.lake_io import FrameChunks
from ml_assets.partitions import day_chunks, window_days
from ml_assets.resources import LakeResource
from ml_assets.schemas import Predictions, TrainingSet

MODEL_IO = "model_io_manager"
UPSTREAM_TABLES = ("clean_events", "player_features")


class StageChange(dg.Config):
    """Run config of NAME_production_model: `sync` reads the registry; promote and rollback change it."""

    action: str = "sync"
    version: str = ""
    reason: str = ""
    actor: str = ""


def _delta_version(lake: LakeResource, table: str) -> int:
    return DeltaTable(lake.table_uri(table)).version()


def _md_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _metrics_md(model: TrainedModel, production: dict[str, float] | None) -> str:
    rows = []
    for k, v in model.metrics.items():
        base = model.baseline_metrics.get(k)
        prod = production.get(k) if production else None
        rows.append(
            (
                k,
                f"{v:.4f}",
                f"{base:.4f}" if base is not None else "",
                f"{prod:.4f}" if prod is not None else "",
            )
        )
    return _md_table(rows, ("metric (out-of-time test)", "candidate", "recency baseline", "production"))


def _plots_md(model: TrainedModel, training_set: pl.DataFrame) -> str:
    test = test_rows(model, training_set)
    y = test[LABEL].cast(pl.Float64).to_numpy()
    p = predict(model, test)
    return "\n\n".join(
        [
            markdown_image(roc_png(y, p), "ROC curve"),
            markdown_image(pr_png(y, p), "precision-recall curve"),
            markdown_image(calibration_png(calibration_table(y, p)), "calibration"),
            markdown_image(importance_png(model.importance), "feature importance (gain)"),
        ]
    )


def build_model_assets(spec: ModelSpec, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The four assets of one model spec; predictions are partitioned like the features they score."""
    n = spec.name
    group = f"model_{n}"

    @dg.asset(
        name=f"{n}_training_set",
        check_specs=[schema_check_spec(f"{n}_training_set", blocking=True)],
        group_name=group,
        kinds={"polars", "delta"},
        description=f"Point-in-time rows for {n}: {spec.label.kind} label, features as of each row's day.",
    )
    def training_set(
        player_features: pl.LazyFrame, clean_events: pl.LazyFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        frame = build_training_set(spec, player_features, clean_events)
        yield dg.Output(
            frame,
            metadata={
                "split_days": frame[SPLIT].n_unique() if frame.height else 0,
                "positive_rate": float(frame[LABEL].mean() or 0.0) if frame.height else 0.0,
                "label": spec.label.kind,
            },
        )
        yield schema_check_result(frame, TrainingSet, f"{n}_training_set")

    @dg.asset(
        name=f"{n}_model",
        ins={"training_set": dg.AssetIn(f"{n}_training_set")},
        deps=list(UPSTREAM_TABLES),
        io_manager_key=MODEL_IO,
        group_name=group,
        kinds={"lightgbm"},
        check_specs=[
            dg.AssetCheckSpec(
                "beats_baseline",
                asset=f"{n}_model",
                description="test ROC AUC above the recency-only model's",
            )
        ],
        description=f"A {n} model version: tuned, evaluated out of time, registered, gated.",
    )
    def model(
        context: dg.AssetExecutionContext, lake: LakeResource, training_set: pl.DataFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        inputs = {t: _delta_version(lake, t) for t in (f"{n}_training_set", *UPSTREAM_TABLES)}
        trained = train_model(spec, training_set, lake.model_dir(n), inputs, code_version())
        outcome = register_and_gate(
            trained,
            training_set,
            lake.registry(),
            lake.model_dir(n),
            spec.promotion,
            f"dagster run {context.run_id}",
        )
        decision, prod_metrics = outcome.decision, outcome.production_metrics
        record_run(lake.experiments_uri, experiment_run(trained, decision))
        top = list(trained.importance.items())[:15]
        yield dg.Output(
            trained,
            metadata={
                "model_version": trained.version,
                "stage": decision.stage,
                "gate": decision.reason,
                "model_file": dg.MetadataValue.path(trained.path),
                "best_iteration": trained.best_iteration,
                "tuning_trials": trained.tuning_trials,
                **{f"test/{k}": float(v) for k, v in trained.metrics.items()},
                **{f"baseline/{k}": float(v) for k, v in trained.baseline_metrics.items()},
                "metrics": dg.MetadataValue.md(_metrics_md(trained, prod_metrics)),
                "plots": dg.MetadataValue.md(_plots_md(trained, training_set)),
                "importance_gain": dg.MetadataValue.md(
                    _md_table([(f, f"{g:.1f}") for f, g in top], ("feature", "gain"))
                ),
                "dropped_features": dg.MetadataValue.json(trained.dropped_features),
                "unused_by_trees": dg.MetadataValue.json(trained.extra.get("unused_features", [])),
                "input_delta_versions": dg.MetadataValue.json(trained.input_versions),
                "test_days": f"{trained.split['test'][0]} .. {trained.split['test'][-1]}",
                "features": len(trained.features),
            },
        )
        auc, base = trained.metrics["roc_auc"], trained.baseline_metrics["roc_auc"]
        yield dg.AssetCheckResult(
            check_name="beats_baseline",
            asset_key=f"{n}_model",
            passed=bool(auc > base),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"roc_auc": float(auc), "baseline_roc_auc": float(base)},
        )

    @dg.asset(
        name=f"{n}_production_model",
        ins={"candidate": dg.AssetIn(f"{n}_model")},
        io_manager_key=MODEL_IO,
        # no production version yet: no output, so the predictions are skipped rather than failed
        output_required=False,
        group_name=group,
        kinds={"lightgbm"},
        description=f"The {n} version that serves: set by the gate, by promote and by rollback.",
    )
    def production_model(
        context: dg.AssetExecutionContext, config: StageChange, lake: LakeResource, candidate: TrainedModel
    ) -> Iterator[dg.Output]:
        registry = lake.registry()
        actor = config.actor or f"dagster run {context.run_id}"
        if config.action == "promote":
            registry.set_stage(
                n, config.version or candidate.version, "production", actor, config.reason or "promoted"
            )
        elif config.action == "rollback":
            registry.rollback(n, actor, config.reason or "rolled back")
        elif config.action != "sync":
            raise ValueError(f"action must be sync, promote or rollback, not {config.action!r}")
        version = registry.current(n)
        if version is None:
            context.log.warning(
                f"{n}: no production version yet, so no predictions; candidate {candidate.version} is in "
                f"{registry.stage_of(n, candidate.version)}. Promote it with `ml-assets models promote {n} "
                f"{candidate.version}` or train a better one."
            )
            return
        served = load_model(lake.model_dir(n) / f"{version}.json")
        yield dg.Output(
            served,
            metadata={
                "model_version": served.version,
                "candidate_version": candidate.version,
                **{f"test/{k}": float(v) for k, v in served.metrics.items()},
                "trained_at": served.trained_at,
            },
        )

    @dg.asset(
        name=f"{n}_predictions",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={"player_features": dg.AssetIn(), "production_model": dg.AssetIn(f"{n}_production_model")},
        metadata={"partition_expr": "snapshot_date"},
        check_specs=[schema_check_spec(f"{n}_predictions", blocking=False)],
        group_name=group,
        kinds={"polars", "delta"},
        description=f"{n} probability per player and day, by the production version, with its top 3 reasons.",
    )
    def predictions(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        player_features: pl.LazyFrame,
        production_model: TrainedModel,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        first, last = window_days(*context.partition_time_window)
        chunk_days = int(lake.settings().get("features", "chunk_days"))
        needed = {*KEY, *production_model.features, *scoring_columns(spec)}
        columns = [c for c in player_features.collect_schema().names() if c in needed]

        def pieces() -> Iterator[pl.DataFrame]:
            # a few days at a time: explaining every row (pred_contrib) is the heaviest step at scale
            for start, end in day_chunks(first, last, chunk_days):
                rows = player_features.filter(pl.col("snapshot_date").is_between(start, end)).select(columns)
                yield score(scoring_rows(spec, rows.collect()), production_model, reasons=spec.explain_top)

        check = ChunkedSchemaCheck(Predictions, f"{n}_predictions")
        yield dg.Output(
            FrameChunks(pieces(), on_chunk=check), metadata={"model_version": production_model.version}
        )
        yield check.result()

    return [training_set, model, production_model, predictions]
