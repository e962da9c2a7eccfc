"""One factory per model spec: its assets, checks, jobs and sensors, as one `dg.Definitions`.

NAME_training_set, NAME_model, NAME_production_model, NAME_predictions (here), NAME_feature_drift
and NAME_model_performance (`defs.monitoring`), the drift and degradation sensors that retrain it
(`defs.automation`) and the NAME_stage_change job, all named by `lake.tables.model_assets`.
"""

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta

import dagster as dg
import numpy as np
import polars as pl

from ml_assets.core.days import day_chunks
from ml_assets.core.features.player import KEY
from ml_assets.core.markdown import markdown_table
from ml_assets.core.models.evaluation import calibration_table
from ml_assets.core.models.experiments import code_version, record_run
from ml_assets.core.models.labels import (
    LABEL,
    SPLIT,
    build_training_set,
    scoring_columns,
)
from ml_assets.core.models.lifecycle import experiment_run, register_and_gate
from ml_assets.core.models.plots import calibration_png, importance_png, markdown_image, pr_png, roc_png
from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.models.training import (
    TrainedModel,
    batch_scorer,
    explain_cutoffs,
    explain_mask,
    score_features,
    test_scores,
    train_model,
)
from ml_assets.core.schemas import Predictions, TrainingSet
from ml_assets.core.settings import Settings
from ml_assets.defs.automation import model_sensors
from ml_assets.defs.behaviour import behaviour_events, behaviour_inputs
from ml_assets.defs.checks import ChunkedSchemaCheck, schema_check_result, schema_check_spec
from ml_assets.defs.engine import run_sharded
from ml_assets.defs.monitoring import monitoring_assets
from ml_assets.defs.partitions import run_window
from ml_assets.defs.resources import MODEL_IO, LakeResource
from ml_assets.defs.stage import stage_defs
from ml_assets.engine.steps import Output, ScoringJob, recent_scores, scoring_shard
from ml_assets.lake.io_manager import FrameChunks
from ml_assets.lake.tables import CLEAN_EVENTS, PLAYER_FEATURES, SNAPSHOT_COLUMN, delta_version, model_assets

UPSTREAM_TABLES = (CLEAN_EVENTS, PLAYER_FEATURES)


class StageChange(dg.Config):
    """Run config of NAME_production_model: `sync` reads the registry; promote and rollback change it."""

    action: str = "sync"
    version: str = ""
    reason: str = ""
    actor: str = ""


def _delta_version(lake: LakeResource, table: str) -> int:
    version = delta_version(lake.table_uri(table))
    if version is None:
        raise ValueError(f"{table} has not been written yet: materialize it first")
    return version


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
    return markdown_table(("metric (out-of-time test)", "candidate", "recency baseline", "production"), rows)


def _plots_md(model: TrainedModel, training_set: pl.DataFrame) -> str:
    y, p = test_scores(model, training_set)
    return "\n\n".join(
        [
            markdown_image(roc_png(y, p), "ROC curve"),
            markdown_image(pr_png(y, p), "precision-recall curve"),
            markdown_image(calibration_png(calibration_table(y, p)), "calibration"),
            markdown_image(importance_png(model.importance), "feature importance (gain)"),
        ]
    )


def model_defs(spec: ModelSpec, settings: Settings, partitions: dg.PartitionsDefinition) -> dg.Definitions:
    """Everything of one model spec; its daily assets are partitioned like the features they score."""
    names = model_assets(spec.name)
    n, group = spec.name, names.group

    @dg.asset(
        name=names.training_set,
        check_specs=[schema_check_spec(names.training_set, blocking=True)],
        group_name=group,
        kinds={"polars", "delta"},
        description=f"Point-in-time rows for {n}: {spec.label.kind} label, features as of each row's day.",
    )
    def training_set(
        lake: LakeResource, player_features: pl.LazyFrame, clean_events: pl.LazyFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        behaviour = lake.settings().features.behaviour()
        frame = build_training_set(spec, player_features, clean_events, behaviour)
        yield dg.Output(
            frame,
            metadata={
                "split_days": frame[SPLIT].n_unique() if frame.height else 0,
                "positive_rate": float(frame[LABEL].cast(pl.Float64).to_numpy().mean())
                if frame.height
                else 0.0,
                "label": spec.label.kind,
            },
        )
        yield schema_check_result(frame, TrainingSet, names.training_set)

    @dg.asset(
        name=names.trained,
        ins={"training_set": dg.AssetIn(names.training_set)},
        deps=list(UPSTREAM_TABLES),
        io_manager_key=MODEL_IO,
        group_name=group,
        kinds={"lightgbm"},
        check_specs=[
            dg.AssetCheckSpec(
                "beats_baseline",
                asset=names.trained,
                description="test ROC AUC above the recency-only model's",
            )
        ],
        description=f"A {n} model version: tuned, evaluated out of time, registered, gated.",
    )
    def model(
        context: dg.AssetExecutionContext, lake: LakeResource, training_set: pl.DataFrame
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        store = lake.model_store()
        inputs = {t: _delta_version(lake, t) for t in (names.training_set, *UPSTREAM_TABLES)}
        behaviour = lake.settings().features.behaviour()
        trained = train_model(
            spec, training_set, inputs, code_version(), find=store.find, behaviour=behaviour
        )
        # stored before it is registered, so every version the registry names can be loaded
        store.save(trained)
        outcome = register_and_gate(
            trained,
            training_set,
            lake.registry(),
            store.load,
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
                "best_iteration": trained.best_iteration,
                "tuning_trials": trained.tuning_trials,
                **{f"test/{k}": float(v) for k, v in trained.metrics.items()},
                **{f"baseline/{k}": float(v) for k, v in trained.baseline_metrics.items()},
                "metrics": dg.MetadataValue.md(_metrics_md(trained, prod_metrics)),
                "plots": dg.MetadataValue.md(_plots_md(trained, training_set)),
                "importance_gain": dg.MetadataValue.md(
                    markdown_table(("feature", "gain"), [(f, f"{g:.1f}") for f, g in top])
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
            asset_key=names.trained,
            passed=bool(auc > base),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"roc_auc": float(auc), "baseline_roc_auc": float(base)},
        )

    @dg.asset(
        name=names.production_model,
        ins={"candidate": dg.AssetIn(names.trained)},
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
        served = candidate if version == candidate.version else lake.model_store().load(n, version)
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
        name=names.predictions,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        ins={
            PLAYER_FEATURES: dg.AssetIn(),
            # behaviour features read each row's window of events (when families are on)
            **behaviour_events(spec, settings),
            "production_model": dg.AssetIn(names.production_model),
        },
        metadata={"partition_expr": SNAPSHOT_COLUMN},
        check_specs=[schema_check_spec(names.predictions, blocking=False)],
        group_name=group,
        kinds={"polars", "delta"},
        description=(
            f"{n} probability per player and day, by the production version; the top-scored rows of the "
            "newest days also carry their top reasons (explain_days, explain_share)"
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        player_features: pl.LazyFrame,
        production_model: TrainedModel,
        **events: pl.LazyFrame,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        first, last = run_window(context)
        clean_events = events.get(CLEAN_EVENTS)
        chunk_days = lake.piece_days(PLAYER_FEATURES, first, last)
        recorded = production_model.extra.get("behaviour")
        needed = {*KEY, *production_model.features, *scoring_columns(spec), *behaviour_inputs(recorded)}
        columns = [c for c in player_features.collect_schema().names() if c in needed]

        # reasons for what a user acts on: the partitions' newest days, their highest scores
        newest = date.fromisoformat(partitions.get_last_partition_key() or last.isoformat())

        def explain(scored: pl.DataFrame) -> np.ndarray:
            return explain_mask(scored, newest, spec.explain_days, spec.explain_share)

        check = ChunkedSchemaCheck(Predictions, names.predictions)
        engine = lake.engine()
        if engine.distributed:
            out = Output(lake.table_uri(names.predictions), SNAPSHOT_COLUMN, Predictions)
            since = newest - timedelta(days=spec.explain_days - 1)
            job = ScoringJob(
                out,
                engine.shards,
                spec,
                production_model,
                player_features.select(columns),
                clean_events,
                first,
                last,
                chunk_days,
                since,
            )
            # which rows get reasons ranks each day's rows of every shard together: scores of the
            # explained days first (no reasons), then every shard scores and explains its rows
            cutoffs = None
            if spec.explain_top and spec.explain_days:
                recent = pl.concat(engine.map_shards(recent_scores, job))
                cutoffs = explain_cutoffs(recent, newest, spec.explain_days, spec.explain_share)
            job = replace(job, cutoffs=cutoffs)
            meta = {"model_version": production_model.version, "scorer": batch_scorer()}
            yield run_sharded(engine, scoring_shard, job, meta, check)
            yield check.result()
            return

        def pieces() -> Iterator[pl.DataFrame]:
            # a few days at a time: explaining rows (pred_contrib) is the heaviest step at scale
            for start, end in day_chunks(first, last, chunk_days):
                rows = player_features.filter(pl.col("snapshot_date").is_between(start, end)).select(columns)
                yield score_features(
                    spec, production_model, rows.collect(), clean_events, spec.explain_top, explain
                )

        yield dg.Output(
            FrameChunks(pieces(), on_chunk=check),
            # what batch scoring may use: lleaves (the `compiled` extra; compiled once a model
            # has scored COMPILE_AFTER_ROWS rows) or LightGBM's predict
            metadata={"model_version": production_model.version, "scorer": batch_scorer()},
        )
        yield check.result()

    # promote / roll back, from the UI's Launchpad or the CLI (which launches this same job): the
    # production model changes, then the predictions of the chosen days are re-scored by it
    stage_change = dg.define_asset_job(
        names.stage_change_job,
        selection=dg.AssetSelection.assets(names.production_model, names.predictions),
        partitions_def=partitions,
        description=(
            f"Set {n}'s production version (config: action promote|rollback|sync, version, reason) "
            "and re-score the predictions of the chosen days with it."
        ),
    )
    return stage_defs(
        settings,
        [training_set, model, production_model, predictions, *monitoring_assets(spec, settings, partitions)],
        sensors=model_sensors(spec, settings),
        jobs=[stage_change],
    )
