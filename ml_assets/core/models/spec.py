"""Model specs: what to predict, from which features, how to train, tune and promote. Declared once.

A spec comes from code (`DEFAULT_SPECS`) or from the `[models.NAME]` tables of `ml_assets.toml`;
a settings file that declares any model replaces the shipped defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from ml_assets.core.config import (
    AnyInt,
    Fraction,
    Globs,
    MetricName,
    Name,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
    Table,
    parse,
)

LabelKind = Literal["rolling", "new_player", "first_purchase"]
LABEL_KINDS: tuple[str, ...] = get_args(LabelKind)


@dataclass(frozen=True)
class LabelSpec:
    """How a training row is labelled.

    - rolling: players active at snapshot D; label = no activity in D+1..D+horizon_days (churn).
    - new_player: each player observed `observation_days` from their first day; features as of the
      last observed day; label = no activity in the `churn_days` after (churn); split by first-day cohort.
    - first_purchase: players who never bought by D; label = a `purchase_event` in D+1..D+horizon_days.
    """

    kind: LabelKind = "rolling"
    horizon_days: int = 14
    observation_days: int = 7
    churn_days: int = 14
    purchase_event: str = "purchase"

    @property
    def gap_days(self) -> int:
        """Days a label looks ahead of its features: the gap kept between train and test."""
        if self.kind == "new_player":
            return self.observation_days + self.churn_days
        return self.horizon_days


@dataclass(frozen=True)
class TuningSpec:
    """Optuna search budget: at most `trials` trials, no new one after `timeout_s` seconds; trials = 0
    trains once with the spec's params. On by default, within a budget that keeps a daily retrain cheap."""

    trials: int = 12
    timeout_s: float = 20.0


@dataclass(frozen=True)
class PromotionRule:
    """A candidate replaces production when it beats it on `metric` by at least `min_improvement`
    (absolute, on the same out-of-time test rows); the first version must beat the baseline."""

    metric: str = "roc_auc"
    min_improvement: float = 0.002


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model; its assets are NAME_training_set, NAME_model,
    NAME_production_model and NAME_predictions."""

    name: str
    label: LabelSpec = field(default_factory=LabelSpec)
    include: tuple[str, ...] = ()  # feature name globs to use; empty = every feature
    exclude: tuple[str, ...] = ()  # feature name globs to leave out
    params: dict[str, Any] = field(default_factory=dict)  # LightGBM params over the defaults
    tuning: TuningSpec = field(default_factory=TuningSpec)
    promotion: PromotionRule = field(default_factory=PromotionRule)
    snapshot_every_days: int = 3
    max_rows: int = 200_000
    test_fraction: float = 0.2
    seed: int = 42
    num_boost_round: int = 150
    early_stopping_rounds: int = 30
    # at most this many features, the highest gains of a probe model on the train rows (0: no limit;
    # the default, since a budget changes the shipped models)
    max_features: int = 0
    # blend the trees with an L2 logistic regression on the same features (`core/models/linear.py`),
    # penalty and weight chosen on the validation rows (weight 1: the trees alone); off by default
    linear_blend: bool = False
    # top reasons per prediction from TreeSHAP (pred_contrib); 0 turns explanations off, which is most
    # of the scoring time on large backfills
    explain_top: int = 3
    # Reasons cost about 35 predictions each, so by default only what a user acts on gets them: rows
    # of the partitions' newest `explain_days` days (0: none, so a historical backfill scores
    # without reasons), and of those each day's `explain_share` with the highest scores (1: all).
    # One day: the daily run explains its day, and a backfill explains only today's list (a week
    # of 100k players at 25% was 175k SHAP rows, ~45 s of a 10M-event graph run)
    explain_days: int = 1
    explain_share: float = 0.25

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description, stable across runs (used in the version hash)."""
        return asdict(self)


DEFAULT_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="churn",
        label=LabelSpec(kind="rolling", horizon_days=14),
    ),
    ModelSpec(
        name="first_purchase",
        label=LabelSpec(kind="first_purchase", horizon_days=14),
        # whether a non-payer buys: spend features are all zero for them, so they carry nothing
        exclude=("ev_purchase_*", "game_is_payer", "bh_purchase_*"),
    ),
)


class TrainingTable(Table):
    """The `[training]` table, and the training keys of a `[models.NAME]` table; None = not set."""

    snapshot_every_days: PositiveInt | None = None
    max_rows: PositiveInt | None = None
    test_fraction: OpenFraction | None = None
    seed: AnyInt | None = None
    num_boost_round: PositiveInt | None = None
    early_stopping_rounds: PositiveInt | None = None
    max_features: NonNegativeInt | None = None
    linear_blend: bool | None = None
    explain_top: NonNegativeInt | None = None
    explain_days: NonNegativeInt | None = None
    explain_share: Fraction | None = None


class ModelTable(TrainingTable):
    """A `[models.NAME]` table; every key is optional (None: the shipped spec's or the default value)."""

    label: Annotated[LabelKind | None, Field(description=f"one of {list(LABEL_KINDS)}")] = None
    horizon_days: PositiveInt | None = None
    observation_days: PositiveInt | None = None
    churn_days: PositiveInt | None = None
    purchase_event: Name | None = None
    include: Globs | None = None
    exclude: Globs | None = None
    params: Annotated[dict[str, Any] | None, Field(description="a table of LightGBM parameters")] = None
    tuning_trials: NonNegativeInt | None = None
    tuning_timeout_s: PositiveFloat | None = None
    promotion_metric: MetricName | None = None
    promotion_min_improvement: NonNegativeFloat | None = None


_LABEL_FIELDS = ("horizon_days", "observation_days", "churn_days", "purchase_event")
_SPEC_FIELDS = (*TrainingTable.model_fields, "include", "exclude", "params")


def spec_from_table(name: str, table: ModelTable, base: ModelSpec | None = None) -> ModelSpec:
    """A spec from one parsed `[models.NAME]` table over `base` (or the defaults): keys not set keep
    the base's value."""
    spec = base or ModelSpec(name=name)
    label = replace(
        spec.label,
        kind=table.label or spec.label.kind,
        **{k: getattr(table, k) for k in _LABEL_FIELDS if getattr(table, k) is not None},
    )
    tuning = TuningSpec(
        trials=spec.tuning.trials if table.tuning_trials is None else table.tuning_trials,
        timeout_s=spec.tuning.timeout_s if table.tuning_timeout_s is None else float(table.tuning_timeout_s),
    )
    promotion = PromotionRule(
        metric=table.promotion_metric or spec.promotion.metric,
        min_improvement=spec.promotion.min_improvement
        if table.promotion_min_improvement is None
        else float(table.promotion_min_improvement),
    )
    rest: dict[str, Any] = {k: getattr(table, k) for k in _SPEC_FIELDS if getattr(table, k) is not None}
    for key in ("include", "exclude"):
        if key in rest:
            rest[key] = tuple(rest[key])
    for key in ("test_fraction", "explain_share"):
        if key in rest:
            rest[key] = float(rest[key])
    return replace(spec, name=name, label=label, tuning=tuning, promotion=promotion, **rest)


def specs_from_settings(
    models: dict[str, Any], defaults: dict[str, Any] | None = None, where: str = "ml_assets.toml"
) -> tuple[ModelSpec, ...]:
    """The specs in force: the `[models.*]` tables when any are declared, else `DEFAULT_SPECS`.

    `defaults` (the `[training]` table) applies to every spec first; a model's own table wins over
    it. A declared name that matches a shipped spec starts from it, so `[models.churn]
    horizon_days = 7` changes only the horizon. Raises SettingsError naming any bad key or value.
    """
    training = parse(TrainingTable, defaults or {}, f"{where}: training")
    base = ModelTable(**training.model_dump())
    shipped = {s.name: spec_from_table(s.name, base, s) for s in DEFAULT_SPECS}
    if not models:
        return tuple(shipped.values())
    out = []
    for name, raw in models.items():
        table = parse(ModelTable, raw, f"{where}: models.{name}")
        merged = ModelTable(
            **{**training.model_dump(exclude_none=True), **table.model_dump(exclude_none=True)}
        )
        out.append(spec_from_table(name, merged, shipped.get(name)))
    return tuple(out)
