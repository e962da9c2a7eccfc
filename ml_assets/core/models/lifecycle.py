"""A trained version's way into the registry: register it, gate it against production, record it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from ml_assets.core.models.experiments import ExperimentRun
from ml_assets.core.models.registry import GateDecision, Registry, gate
from ml_assets.core.models.spec import PromotionRule
from ml_assets.core.models.training import TrainedModel, evaluate_on, test_rows


@dataclass(frozen=True)
class GateOutcome:
    """The stage the gate gave a version, why, and production's metrics on the same test rows."""

    decision: GateDecision
    production_metrics: dict[str, float] | None


def own_checks_pass(model: TrainedModel) -> bool:
    """The candidate's own checks: finite metrics on a test set with both classes."""
    return all(math.isfinite(model.metrics.get(k, float("nan"))) for k in ("roc_auc", "log_loss", "brier"))


def register_and_gate(
    model: TrainedModel,
    training_set: pl.DataFrame,
    registry: Registry,
    load: Callable[[str, str], TrainedModel],
    rule: PromotionRule,
    actor: str,
) -> GateOutcome:
    """Register `model` and let the gate set its stage.

    Production, if any, is loaded with `load(name, version)` and scored on the candidate's own
    out-of-time test rows, so both are judged on the same data. A version that already serves stays
    where it is.
    """
    registry.register(model.name, model.version, actor, "trained")
    production = registry.current(model.name)
    if production == model.version:
        return GateOutcome(
            GateDecision(promote=False, stage="production", reason="already the production version"), None
        )
    prod_metrics = None
    if production:
        prod_metrics = evaluate_on(load(model.name, production), test_rows(model, training_set))
    decision = gate(model.metrics, prod_metrics, model.baseline_metrics, own_checks_pass(model), rule)
    registry.set_stage(model.name, model.version, decision.stage, actor, decision.reason)
    return GateOutcome(decision, prod_metrics)


def experiment_run(model: TrainedModel, decision: GateDecision) -> ExperimentRun:
    """The experiment-table row of a training: what went in, what came out, what the gate said."""
    return ExperimentRun(
        run_id=f"{model.name}-{model.version}",
        model=model.name,
        version=model.version,
        started_at=datetime.fromisoformat(model.trained_at),
        duration_s=model.duration_s,
        params=model.params,
        features=model.features,
        dropped_features=model.dropped_features,
        input_versions=model.input_versions,
        metrics=model.metrics,
        baseline_metrics=model.baseline_metrics,
        code_version=model.code_version,
        tuning_trials=model.tuning_trials,
        train_rows=model.train_rows,
        test_rows=model.test_rows,
        stage=decision.stage,
        gate_reason=decision.reason,
        selection=model.extra.get("selection", {}),
        tuning=model.extra.get("tuning", {}),
    )
