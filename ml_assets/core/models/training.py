"""LightGBM training for a model spec: out-of-time split, feature selection, tuning, honest evaluation.

A version is named by what went in (the spec, the Delta versions of its inputs, the code version),
so training again on the same inputs finds that version's files and returns it unchanged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from functools import cache, cached_property
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from ml_assets.core.features.behaviour import BehaviourConfig
from ml_assets.core.features.player import ATTRIBUTES, KEY
from ml_assets.core.models.evaluation import calibration_table, evaluate
from ml_assets.core.models.labels import LABEL, SPLIT, scoring_rows, with_behaviour
from ml_assets.core.models.linear import LinearModel, choose_blend
from ml_assets.core.models.selection import select_features
from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.models.tuning import SEARCH_SPACE, tune
from ml_assets.core.monitoring.drift import Profile, build_profile

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    # Shallow trees: every prediction is explained with TreeSHAP (pred_contrib), whose cost per row
    # grows with leaves x depth^2; depth 4 matched depth-unlimited 31-leaf trees on the simulator's
    # test AUC (0.772 vs 0.765) at 1/20 of the explanation cost.
    "learning_rate": 0.15,
    "num_leaves": 15,
    "max_depth": 4,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    # same inputs, same trees: a retrain on unchanged data reproduces the model exactly
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
}
BASELINE_FEATURE = "recency_days"
PROBE_ROWS, PROBE_ROUNDS = 20_000, 30
LINEAR_ROWS = 50_000  # train rows the blend's linear model is fitted on (a seeded sample above it)


@dataclass(frozen=True)
class OutOfTimeSplit:
    """Split days of each part: test is the latest, after a gap as long as the label looks ahead."""

    train: list[date]
    valid: list[date]
    test: list[date]


@dataclass(frozen=True)
class TrainedModel:
    """A trained model version: its LightGBM text model, how to score with it, and how it did.

    It travels as one artifact: a JSON card (`card()`, every field but the model text) plus
    LightGBM's own text format (`model_text`). Nothing in it is pickled.
    """

    name: str
    version: str
    features: list[str]
    categories: dict[str, list[str]]
    best_iteration: int
    params: dict[str, Any]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    calibration: list[dict[str, float]]
    split: dict[str, list[str]]
    importance: dict[str, float]
    dropped_features: dict[str, str]
    input_versions: dict[str, int]
    code_version: str
    spec: dict[str, Any]
    train_rows: int
    test_rows: int
    tuning_trials: int
    trained_at: str
    duration_s: float
    # the reference for drift: the distribution of the out-of-time test rows and their scores
    reference_profile: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    model_text: str = field(default="", repr=False, compare=False)

    # Scores of the out-of-time test rows, kept from training for plots (never written to the card).
    test_scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    @cached_property
    def _parsed(self) -> lgb.Booster:
        # cached_property writes the instance dict directly, so it works on a frozen dataclass
        return lgb.Booster(model_str=self.model_text)

    def booster(self) -> lgb.Booster:
        """The LightGBM booster, parsed from the text model once per object."""
        return self._parsed

    @cached_property
    def _blend(self) -> tuple[float, LinearModel | None]:
        raw = self.extra.get("blend") or {}
        if raw.get("linear") is None:
            return 1.0, None
        return float(raw["tree_weight"]), LinearModel.from_json(raw["linear"])

    def predict_matrix(self, x: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Probabilities of the positive label for the rows of `x` (`to_matrix` of `features`): the
        trees', or with a linear blend (`[training] linear_blend`) the blend of both in log-odds.
        Online scoring and evaluation go through here; batch scoring through `batch_predict`, which
        computes the same values with the compiled trees."""
        weight, linear = self._blend
        return blended_predict(self.booster(), x, self.best_iteration, weight, linear, num_threads)

    @cached_property
    def _used_trees(self) -> str:
        # the text model of the iterations scoring uses (LightGBM's `num_iteration` of predict)
        return str(self.booster().model_to_string(num_iteration=self.best_iteration))

    @cached_property
    def _rows_before_compiling(self) -> list[int]:
        # rows this object scored with LightGBM while a compile would not have paid off yet
        return [0]

    def batch_predict(self, x: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """`predict_matrix`'s probabilities, by the trees compiled to machine code when the
        `compiled` extra (lleaves) is installed (`compiled.compiled_trees`): the same values (the
        used iterations' trees, LightGBM's NaN and categorical rules, the same blend) several times
        faster, after a compile of 2-3 s once per version per machine. The compile waits until this
        model has scored `COMPILE_AFTER_ROWS` rows (unless it is compiled already): below that,
        LightGBM's `predict` is faster end to end. Without the extra, always LightGBM's `predict`.
        Batch scoring (`score`) goes through here; `batch_scorer()` names what is installed."""
        if batch_scorer() == "lightgbm":
            return self.predict_matrix(x, num_threads)
        from ml_assets.core.models.compiled import compiled_trees, is_compiled, predict_compiled

        weight, linear = self._blend
        raw = linear is not None
        scored = self._rows_before_compiling
        if scored[0] + len(x) < COMPILE_AFTER_ROWS and not is_compiled(self.version, self._used_trees, raw):
            scored[0] += len(x)
            return self.predict_matrix(x, num_threads)
        trees = compiled_trees(self.version, self._used_trees, raw_score=raw)
        out = predict_compiled(trees, x, num_threads)
        return out if linear is None else blend_margins(out, x, weight, linear)

    def contributions(self, x: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Log-odds contribution of each feature per row of `x` (rows x features): the trees'
        SHAP values (`pred_contrib`), with a linear blend the same weighted sum of the trees' and
        the linear model's exact contributions as the score's."""
        kw: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
        shap = np.asarray(
            self.booster().predict(x, num_iteration=self.best_iteration, pred_contrib=True, **kw)
        )[:, :-1]  # the last column is the expected value
        weight, linear = self._blend
        if linear is None:
            return shap
        return weight * shap + (1.0 - weight) * linear.contributions(x, len(self.features))

    def profile(self) -> Profile:
        """The distribution of the test rows (features and scores), the reference for drift."""
        return Profile.from_json(self.reference_profile)

    def card(self) -> dict[str, Any]:
        """Every field but the model text, JSON-ready: what the model store writes as the card."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IN_CARD}
        return json.loads(json.dumps(out, sort_keys=True, default=str))

    @staticmethod
    def from_card(card: dict[str, Any], model_text: str) -> TrainedModel:
        """The model a card and its LightGBM text model describe; ValueError on a card of another shape."""
        names = {f.name for f in fields(TrainedModel)} - _NOT_IN_CARD
        missing, unknown = names - set(card) - {"extra"}, set(card) - names
        if missing or unknown:
            raise ValueError(f"not a model card: missing {sorted(missing)}, unknown {sorted(unknown)}")
        return TrainedModel(**card, model_text=model_text)


_NOT_IN_CARD = frozenset({"model_text", "test_scores"})


def data_fingerprint(frame: pl.DataFrame) -> str:
    """A hash of a frame's rows: Delta version numbers restart when a table is recreated, rows do not lie."""
    return hashlib.sha256(frame.hash_rows(seed=42).to_numpy().tobytes()).hexdigest()[:16]


def model_version(spec: ModelSpec, code_version: str, fingerprint: str) -> str:
    """The version a training on these rows produces: a hash of spec, code and the training rows'
    content. Not of the inputs' Delta versions: a rerun rewrites the tables, so their version
    numbers move although not one row changed, and the same rows must give the same version."""
    payload = json.dumps(
        {"spec": spec.as_dict(), "code": code_version, "rows": fingerprint},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def split_out_of_time(
    days: list[date], test_fraction: float, gap_days: int, valid_fraction: float = 0.2
) -> OutOfTimeSplit:
    """Latest `test_fraction` of split days as test; train and validation only from days whose labels
    (which look `gap_days` ahead) end before the first test day. Validation is the latest share of
    those, used for early stopping and tuning. Raises when too few days are left for any part."""
    ordered = sorted(set(days))
    n_test = max(1, int(np.ceil(len(ordered) * test_fraction)))
    test = ordered[-n_test:]
    before = [d for d in ordered if d + timedelta(days=gap_days) < test[0]]
    n_valid = max(1, int(np.ceil(len(before) * valid_fraction)))
    if len(before) <= n_valid:
        raise ValueError(
            f"out-of-time split needs more days: {len(ordered)} split days, {len(test)} for test, "
            f"{len(before)} before the {gap_days}-day gap (need at least {n_valid + 1}); "
            "simulate or ingest more days, or sample snapshots more often"
        )
    return OutOfTimeSplit(train=before[:-n_valid], valid=before[-n_valid:], test=test)


def candidate_features(frame: pl.DataFrame, spec: ModelSpec) -> list[str]:
    """Feature columns the spec allows: every non-key, non-label column, filtered by include/exclude globs."""
    columns = [c for c in frame.columns if c not in (*KEY, LABEL, SPLIT)]
    if spec.include:
        columns = [c for c in columns if any(fnmatch.fnmatch(c, g) for g in spec.include)]
    return [c for c in columns if not any(fnmatch.fnmatch(c, g) for g in spec.exclude)]


def to_matrix(frame: pl.DataFrame, features: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """A float32 matrix; categorical columns become codes of the training levels (unknown -> NaN)."""
    exprs = []
    for c in features:
        if c in categories:
            code = pl.col(c).replace_strict(categories[c], list(range(len(categories[c]))), default=None)
            exprs.append(code.cast(pl.Float32).alias(c))
        elif c in frame.columns:
            exprs.append(pl.col(c).cast(pl.Float32))
        else:
            exprs.append(pl.lit(None, pl.Float32).alias(c))  # a feature the scoring data lacks is missing
    return frame.select(exprs).to_numpy().astype(np.float32, copy=False)


def _datasets(
    parts: dict[str, pl.DataFrame], features: list[str], categories: dict[str, list[str]]
) -> tuple[lgb.Dataset, lgb.Dataset]:
    cat_idx = [features.index(c) for c in categories if c in features]

    def dataset(part: pl.DataFrame, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            to_matrix(part, features, categories),
            label=part[LABEL].cast(pl.Float32).to_numpy(),
            feature_name=features,
            categorical_feature=cat_idx,
            reference=reference,
            free_raw_data=False,
        )

    train = dataset(parts["train"])
    return train, dataset(parts["valid"], train)


def _fit(
    parts: dict[str, pl.DataFrame],
    features: list[str],
    categories: dict[str, list[str]],
    params: dict[str, Any],
    spec: ModelSpec,
) -> lgb.Booster:
    train, valid = _datasets(parts, features, categories)
    return lgb.train(
        params,
        train,
        num_boost_round=spec.num_boost_round,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)],
    )


def _probe_importance(
    train: pl.DataFrame, features: list[str], params: dict[str, Any], seed: int
) -> dict[str, float]:
    """Gain of each feature in a small, quick model on a sample of the train rows: features it never
    splits on carry no signal worth the main fit's time."""
    sample = train.sample(n=min(PROBE_ROWS, train.height), seed=seed)
    categories = {c: sorted(sample[c].drop_nulls().unique().to_list()) for c in features if c in ATTRIBUTES}
    data = lgb.Dataset(
        to_matrix(sample, features, categories),
        label=sample[LABEL].cast(pl.Float32).to_numpy(),
        feature_name=features,
        categorical_feature=[features.index(c) for c in categories],
    )
    probe = lgb.train({**params, "learning_rate": 0.2}, data, num_boost_round=PROBE_ROUNDS)
    return dict(zip(features, map(float, probe.feature_importance("gain")), strict=True))


def _predict(
    booster: lgb.Booster, frame: pl.DataFrame, features: list[str], categories: dict[str, list[str]]
) -> np.ndarray:
    return np.asarray(
        booster.predict(to_matrix(frame, features, categories), num_iteration=booster.best_iteration)
    )


def blended_predict(
    booster: lgb.Booster,
    x: np.ndarray,
    num_iteration: int,
    tree_weight: float = 1.0,
    linear: LinearModel | None = None,
    num_threads: int = 0,
) -> np.ndarray:
    """Probabilities of `x`: the trees', or sigmoid(tree_weight x trees' log-odds + (1 -
    tree_weight) x `linear`'s log-odds)."""
    kw: dict[str, Any] = {"num_threads": num_threads} if num_threads else {}
    if linear is None:
        return np.asarray(booster.predict(x, num_iteration=num_iteration, **kw))
    trees = np.asarray(booster.predict(x, num_iteration=num_iteration, raw_score=True, **kw))
    return blend_margins(trees, x, tree_weight, linear)


# Rows a model scores with LightGBM before its trees are compiled: a compile takes 2-3 s and then
# saves ~2.3 us a row (LightGBM ~330k rows/s, compiled ~1.3M on 2 cores), so it pays off from ~1M
# rows; a long log's 480-day backfill scores fewer and was 2 s slower with the compile
COMPILE_AFTER_ROWS = 1_000_000


@cache
def batch_scorer() -> str:
    """What batch scoring runs on: "lleaves" (the `compiled` extra is installed) or "lightgbm"."""
    # an optional extra: lleaves pins llvmlite < 0.45, which numba >= 0.62 in the same
    # environment would conflict with, so installing ml-assets alone never downgrades numba
    return "lleaves" if importlib.util.find_spec("lleaves") is not None else "lightgbm"


def blend_margins(trees: np.ndarray, x: np.ndarray, tree_weight: float, linear: LinearModel) -> np.ndarray:
    """sigmoid(tree_weight x `trees` (the trees' log-odds of `x`) + (1 - tree_weight) x `linear`'s)."""
    margin = tree_weight * trees + (1.0 - tree_weight) * linear.margin(x)
    return np.asarray(1.0 / (1.0 + np.exp(-margin)))


def _linear_blend(
    booster: lgb.Booster,
    parts: dict[str, pl.DataFrame],
    features: list[str],
    categories: dict[str, list[str]],
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The blend of the fitted trees with a logistic regression on the same (numeric) features,
    chosen on the validation rows (`linear.choose_blend`): what the model stores (`extra["blend"]`)
    and what the run records (the choice and the validation AUCs behind it)."""
    train = parts["train"]
    if train.height > LINEAR_ROWS:
        train = train.sample(n=LINEAR_ROWS, seed=seed)
    x_valid = to_matrix(parts["valid"], features, categories)
    trees_valid = np.asarray(booster.predict(x_valid, num_iteration=booster.best_iteration, raw_score=True))
    blend = choose_blend(
        to_matrix(train, features, categories),
        train[LABEL].cast(pl.Float64).to_numpy(),
        x_valid,
        parts["valid"][LABEL].cast(pl.Float64).to_numpy(),
        trees_valid,
        [i for i, f in enumerate(features) if f not in categories],
    )
    stored: dict[str, Any] = {
        "tree_weight": blend.tree_weight,
        "linear": blend.linear.to_json() if blend.linear is not None else None,
    }
    if blend.linear is not None:
        stored["score"] = "sigmoid(tree_weight * trees' log-odds + (1 - tree_weight) * linear log-odds)"
        stored["reasons"] = (
            "tree_weight * the trees' SHAP value (pred_contrib) + (1 - tree_weight) * the linear "
            "coefficient * the standardised value: the blend's own log-odds parts"
        )
    return stored, {**blend.record, "linear_rows": train.height}


def within_budget(
    features: list[str], gain: dict[str, float], budget: int
) -> tuple[list[str], dict[str, str]]:
    """At most `budget` of `features` (0: no limit): the highest probe gains, in input order, and the
    others with why ("over_budget: gain rank N of M")."""
    if budget <= 0 or len(features) <= budget:
        return features, {}
    ranked = sorted(features, key=lambda f: (-gain.get(f, 0.0), features.index(f)))
    kept = set(ranked[:budget])
    dropped = {f: f"over_budget: gain rank {ranked.index(f) + 1} of {len(features)}" for f in ranked[budget:]}
    return [f for f in features if f in kept], dropped


def train_model(
    spec: ModelSpec,
    training_set: pl.DataFrame,
    input_versions: dict[str, int] | None = None,
    code_version: str = "",
    find: Callable[[str, str], TrainedModel | None] | None = None,
    behaviour: BehaviourConfig | None = None,
) -> TrainedModel:
    """Train (or `find(name, version)`, when these inputs were trained before) one version of `spec`'s model.

    Older split days train, the next ones stop early and tune, the latest are the test, after a gap
    as long as the label's look-ahead. Features the spec allows are pruned of constant, empty and
    duplicate columns and of those a quick probe model never splits on; columns the final trees do
    not use are recorded. Test metrics come with those of a
    recency-only model on the same rows and a calibration table.
    """
    input_versions = input_versions or {}
    if training_set.height == 0 or training_set[LABEL].n_unique() < 2:
        classes = sorted(training_set[LABEL].unique().to_list()) if training_set.height else []
        raise ValueError(
            f"{spec.name}: training set has {training_set.height} rows and label values {classes}: "
            "need rows of both classes to train (more days of data, or a different horizon)"
        )
    version = model_version(spec, code_version, data_fingerprint(training_set))
    known = find(spec.name, version) if find else None
    if known is not None:
        return known

    started = time.perf_counter()
    split = split_out_of_time(training_set[SPLIT].unique().to_list(), spec.test_fraction, spec.label.gap_days)
    parts = {k: training_set.filter(pl.col(SPLIT).is_in(v)) for k, v in asdict(split).items()}
    for name, part in parts.items():
        if part[LABEL].n_unique() < 2:
            raise ValueError(f"{spec.name}: the {name} days {getattr(split, name)} hold one label class only")
    allowed = candidate_features(training_set, spec)
    if not allowed:
        raise ValueError(f"{spec.name}: include/exclude leave no features (columns: {training_set.columns})")
    params = {**DEFAULT_PARAMS, **spec.params, "seed": spec.seed}
    probe = _probe_importance(parts["train"], allowed, params, spec.seed)
    selection = select_features(parts["train"], allowed, label=LABEL, importance=probe)
    features, dropped = within_budget(selection.kept, probe, spec.max_features)
    dropped = {**selection.dropped, **dropped}
    categories = {
        c: sorted(parts["train"][c].drop_nulls().unique().to_list()) for c in features if c in ATTRIBUTES
    }

    trials = 0
    tuning_record: dict[str, Any] = {"trials": spec.tuning.trials, "timeout_s": spec.tuning.timeout_s}
    if spec.tuning.trials > 0:
        train_ds, valid_ds = _datasets(parts, features, categories)
        tuned = tune(
            train_ds,
            valid_ds,
            params,
            trials=spec.tuning.trials,
            timeout_s=spec.tuning.timeout_s,
            seed=spec.seed,
            num_boost_round=spec.num_boost_round,
            early_stopping_rounds=spec.early_stopping_rounds,
        )
        params, trials = tuned.params, tuned.trials_run
        tuning_record |= {
            "trials_run": tuned.trials_run,
            "pruned": tuned.pruned,
            "best_valid_logloss": tuned.best_score,
            "best_params": {k: tuned.params[k] for k in sorted(tuned.params) if k in SEARCH_SPACE},
        }
    booster = _fit(parts, features, categories, params, spec)
    gain = dict(
        zip(features, booster.feature_importance("gain", iteration=booster.best_iteration), strict=True)
    )
    # Features no tree splits on change no prediction: recorded for the next feature set rather than
    # refitted away, which would double the training time for the same model.
    unused = sorted(f for f, g in gain.items() if g <= 0)

    blend: dict[str, Any] = {}
    if spec.linear_blend:
        blend, tuning_record["blend"] = _linear_blend(booster, parts, features, categories, spec.seed)

    test = parts["test"]
    y = test[LABEL].cast(pl.Float64).to_numpy()
    p = blended_predict(
        booster,
        to_matrix(test, features, categories),
        booster.best_iteration,
        float(blend.get("tree_weight", 1.0)),
        LinearModel.from_json(blend["linear"]) if blend.get("linear") else None,
    )
    baseline = (
        _fit(parts, [BASELINE_FEATURE], {}, params, spec)
        if BASELINE_FEATURE in training_set.columns
        else None
    )
    p_base = (
        _predict(baseline, test, [BASELINE_FEATURE], {}) if baseline else np.full(len(y), float(y.mean()))
    )

    # The reference for drift: the latest rows the model was judged on (its out-of-time test), as
    # NannyML does. The oldest training days would make a growing game's ageing population drift.
    profile = build_profile(test, features, categories, scores=p)
    model = TrainedModel(
        name=spec.name,
        version=version,
        features=features,
        categories=categories,
        best_iteration=int(booster.best_iteration or booster.current_iteration()),
        params=params,
        metrics=evaluate(y, p),
        baseline_metrics=evaluate(y, p_base),
        calibration=calibration_table(y, p).to_dicts(),
        split={k: [d.isoformat() for d in v] for k, v in asdict(split).items()},
        importance=dict(sorted(gain.items(), key=lambda kv: -kv[1])),
        dropped_features=dropped,
        input_versions=input_versions,
        code_version=code_version,
        spec=spec.as_dict(),
        train_rows=parts["train"].height,
        test_rows=test.height,
        tuning_trials=trials,
        trained_at=datetime.now(UTC).isoformat(),
        duration_s=time.perf_counter() - started,
        reference_profile=profile.to_json(),
        extra={
            "unused_features": unused,
            "selection": {
                "candidates": allowed,
                "kept": features,
                "budget": spec.max_features,
                "on": "train rows (probe gain, correlation with the label); validation stops the trees",
            },
            "tuning": tuning_record,
            **({"blend": blend} if blend else {}),
            **({"behaviour": behaviour.as_dict()} if behaviour is not None and behaviour.families else {}),
        },
        model_text=booster.model_to_string(),
        test_scores=p,
    )
    return model


def test_rows(model: TrainedModel, training_set: pl.DataFrame) -> pl.DataFrame:
    """The rows of `training_set` that were `model`'s out-of-time test."""
    days = [date.fromisoformat(d) for d in model.split["test"]]
    return training_set.filter(pl.col(SPLIT).is_in(days))


def predict(model: TrainedModel, frame: pl.DataFrame) -> np.ndarray:
    """Probabilities of the positive label for each row of `frame`."""
    return model.predict_matrix(to_matrix(frame, model.features, model.categories))


def evaluate_on(model: TrainedModel, frame: pl.DataFrame) -> dict[str, float]:
    """`model`'s metrics on labelled rows (e.g. another version's test rows, for a fair comparison)."""
    return evaluate(frame[LABEL].cast(pl.Float64).to_numpy(), predict(model, frame))


def score(
    features: pl.DataFrame,
    model: TrainedModel,
    reasons: int = 3,
    explain: Callable[[pl.DataFrame], np.ndarray] | None = None,
) -> pl.DataFrame:
    """Probability per (player, snapshot) row with the model version and its top `reasons` features.

    Reasons come from LightGBM's own SHAP values (`pred_contrib`): the features that pushed this
    row's score up the most, with their contributions in log-odds. Only the rows `explain` picks
    (given snapshot_date, player_id and probability, a boolean mask; None: every row) get them, the others
    have nulls: SHAP costs far more than the prediction.
    """
    n = features.height
    x = to_matrix(features, model.features, model.categories) if n else None
    p = model.batch_predict(x) if x is not None else np.empty(0)
    columns: dict[str, Any] = {
        "probability": pl.Series(p, dtype=pl.Float64),
        "model_version": pl.lit(model.version),
    }
    k = min(reasons, len(model.features))
    if k:
        picked = features.select("snapshot_date", "player_id").with_columns(
            probability=pl.Series(p, dtype=pl.Float64)
        )
        rows = np.flatnonzero(np.ones(n, dtype=bool) if explain is None else explain(picked))
        shap = np.empty((0, len(model.features)))
        if rows.size:
            shap = model.contributions(x[rows])  # type: ignore[index]
        top = np.argsort(-shap, axis=1, kind="stable")[:, :k]
        names = np.asarray(model.features, dtype=object)
        for i in range(k):
            name = np.full(n, None, dtype=object)
            value = np.full(n, np.nan)
            name[rows] = names[top[:, i]]
            value[rows] = np.take_along_axis(shap, top[:, i : i + 1], axis=1)[:, 0]
            columns[f"reason_{i + 1}"] = pl.Series(name.tolist(), dtype=pl.String)
            columns[f"reason_{i + 1}_contribution"] = pl.Series(value, dtype=pl.Float64, nan_to_null=True)
    return features.select(KEY).with_columns(**columns)


def score_features(
    spec: ModelSpec,
    model: TrainedModel,
    features: pl.DataFrame,
    events: pl.LazyFrame | None,
    reasons: int,
    explain: Callable[[pl.DataFrame], np.ndarray] | None = None,
) -> pl.DataFrame:
    """`score` of the rows of `features` that `spec` scores (`scoring_rows`), with the behaviour
    columns the model reads computed from `events` (`with_behaviour`)."""
    rows = scoring_rows(spec, features)
    rows = with_behaviour(spec, model.features, model.extra.get("behaviour"), rows, events)
    return score(rows, model, reasons, explain)


def explain_mask(scored: pl.DataFrame, newest: date, days: int, share: float) -> np.ndarray:
    """Which rows of `scored` (snapshot_date, player_id, probability) get reasons: rows of the `days`
    days up to `newest`, and of each such day the `share` with the highest probability (at least one
    row; ties go to the smaller player_id, so the pick never depends on the rows' order)."""
    return within_cutoffs(scored, explain_cutoffs(scored, newest, days, share))


def explain_cutoffs(scored: pl.DataFrame, newest: date, days: int, share: float) -> pl.DataFrame:
    """Per day of the `days` up to `newest` in `scored` (snapshot_date, player_id, probability): its
    last explained row (`cut_probability`, `cut_player`) under `explain_mask`'s order. Computed from
    whole days' rows, so shards of the players can be scored apart and explained alike."""
    recent = scored.select("snapshot_date", "player_id", "probability").filter(
        pl.col("snapshot_date") > newest - timedelta(days=days)
    )
    ranked = recent.sort(
        ["snapshot_date", "probability", "player_id"], descending=[False, True, False]
    ).with_columns(
        (pl.int_range(pl.len()) + 1).over("snapshot_date").alias("_rank"),
        # share 1 (or a float's excess over it) still names the day's last row
        (pl.len().over("snapshot_date") * share)
        .ceil()
        .clip(upper_bound=pl.len().over("snapshot_date"))
        .alias("_wanted"),
    )
    return ranked.filter(pl.col("_rank") == pl.col("_wanted")).select(
        "snapshot_date",
        pl.col("probability").alias("cut_probability"),
        pl.col("player_id").alias("cut_player"),
    )


def within_cutoffs(scored: pl.DataFrame, cutoffs: pl.DataFrame) -> np.ndarray:
    """Which rows of `scored` (snapshot_date, player_id, probability) rank at or above their day's
    cutoff (`explain_cutoffs`); rows of days without one get none."""
    cut = scored.select("snapshot_date", "player_id", "probability").join(
        cutoffs, on="snapshot_date", how="left", maintain_order="left"
    )
    above = (pl.col("probability") > pl.col("cut_probability")) | (
        (pl.col("probability") == pl.col("cut_probability")) & (pl.col("player_id") <= pl.col("cut_player"))
    )
    return cut.select(above.fill_null(False)).to_series().to_numpy()


def test_scores(model: TrainedModel, training_set: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of `model`'s out-of-time test rows: the scores kept from training when the
    model was trained in this process, else scored now (once)."""
    test = test_rows(model, training_set)
    y = test[LABEL].cast(pl.Float64).to_numpy()
    kept = model.test_scores
    return y, kept if kept is not None and len(kept) == len(y) else predict(model, test)
