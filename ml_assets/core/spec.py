"""Model specs: what to predict, from which features, how to train, tune and promote. Declared once.

A spec comes from code (`DEFAULT_SPECS`) or from the `[models.NAME]` tables of `ml_assets.toml`;
a settings file that declares any model replaces the shipped defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

LabelKind = Literal["rolling", "new_player", "first_purchase"]
LABEL_KINDS: tuple[str, ...] = ("rolling", "new_player", "first_purchase")


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
    """Optuna search budget; trials = 0 trains once with the spec's params."""

    trials: int = 0
    timeout_s: float = 60.0


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
    # top reasons per prediction from TreeSHAP (pred_contrib); 0 turns explanations off, which is most
    # of the scoring time on large backfills
    explain_top: int = 3

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description, stable across runs (used in the version hash)."""
        from dataclasses import asdict

        return asdict(self)


DEFAULT_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="churn",
        label=LabelSpec(kind="rolling", horizon_days=14),
        tuning=TuningSpec(trials=8, timeout_s=60),
    ),
    ModelSpec(
        name="first_purchase",
        label=LabelSpec(kind="first_purchase", horizon_days=14),
        # whether a non-payer buys: spend features are all zero for them, so they carry nothing
        exclude=("ev_purchase_*", "game_is_payer"),
        tuning=TuningSpec(trials=0),
    ),
)

_LABEL_KEYS = {f.name for f in fields(LabelSpec)} | {"label"}
_TUNING_KEYS = {"tuning_trials", "tuning_timeout_s"}
_PROMOTION_KEYS = {"promotion_metric", "promotion_min_improvement"}
_SPEC_KEYS = {f.name for f in fields(ModelSpec)} - {"name", "label", "tuning", "promotion"}


def spec_from_table(name: str, table: dict[str, Any], base: ModelSpec | None = None) -> ModelSpec:
    """A spec from one `[models.NAME]` TOML table; unknown keys are an error naming the key.

    Keys: label (rolling | new_player | first_purchase), horizon_days, observation_days, churn_days,
    purchase_event, include, exclude, params (a table), tuning_trials, tuning_timeout_s,
    promotion_metric, promotion_min_improvement, snapshot_every_days, max_rows, test_fraction, seed,
    num_boost_round, early_stopping_rounds, explain_top.
    """
    known = (_LABEL_KEYS | _TUNING_KEYS | _PROMOTION_KEYS | _SPEC_KEYS) - {"kind"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"[models.{name}]: unknown key(s) {unknown}; known: {sorted(known)}")
    spec = base or ModelSpec(name=name)
    kind = table.get("label", spec.label.kind)
    if kind not in LABEL_KINDS:
        raise ValueError(f"[models.{name}] label = {kind!r}: must be one of {list(LABEL_KINDS)}")
    label = replace(
        spec.label,
        kind=kind,
        **{
            k: table[k]
            for k in ("horizon_days", "observation_days", "churn_days", "purchase_event")
            if k in table
        },
    )
    tuning = TuningSpec(
        trials=int(table.get("tuning_trials", spec.tuning.trials)),
        timeout_s=float(table.get("tuning_timeout_s", spec.tuning.timeout_s)),
    )
    promotion = PromotionRule(
        metric=str(table.get("promotion_metric", spec.promotion.metric)),
        min_improvement=float(table.get("promotion_min_improvement", spec.promotion.min_improvement)),
    )
    rest: dict[str, Any] = {k: table[k] for k in _SPEC_KEYS if k in table}
    for key in ("include", "exclude"):
        if key in rest:
            rest[key] = tuple(rest[key])
    return replace(spec, name=name, label=label, tuning=tuning, promotion=promotion, **rest)


def specs_from_settings(
    models: dict[str, dict[str, Any]], defaults: dict[str, Any] | None = None
) -> tuple[ModelSpec, ...]:
    """The specs in force: the `[models.*]` tables when any are declared, else `DEFAULT_SPECS`.

    `defaults` (the `[training]` table) applies to every spec first; a model's own table wins over
    it. A declared name that matches a shipped spec starts from it, so `[models.churn]
    horizon_days = 7` changes only the horizon.
    """
    shipped = {s.name: spec_from_table(s.name, dict(defaults or {}), s) for s in DEFAULT_SPECS}
    if not models:
        return tuple(shipped.values())
    return tuple(
        spec_from_table(name, {**(defaults or {}), **table}, shipped.get(name))
        for name, table in models.items()
    )
