"""LightGBM churn training with an out-of-time split, and scoring with a trained model."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from ml_assets.core.features import ATTRIBUTES, KEY
from ml_assets.core.labels import LABEL
from ml_assets.core.metrics import classification_report, roc_auc

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    # same inputs, same trees: the version hash of a retrain on unchanged data stays the same
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
}


@dataclass(frozen=True)
class OutOfTimeSplit:
    """Snapshot days of each part; the test days are the latest, after a gap as long as the label horizon."""

    train: list[date]
    valid: list[date]
    test: list[date]


@dataclass(frozen=True)
class TrainedModel:
    """A trained model file and what is needed to score with it and to judge it."""

    name: str
    version: str
    path: str
    features: list[str]
    categories: dict[str, list[str]]
    horizon_days: int
    best_iteration: int
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    split: dict[str, list[str]]
    importance: dict[str, float] = field(default_factory=dict)

    def booster(self) -> lgb.Booster:
        """The LightGBM booster, read from the model file."""
        return lgb.Booster(model_file=self.path)


def split_out_of_time(
    days: list[date], test_fraction: float, gap_days: int, valid_fraction: float = 0.2
) -> OutOfTimeSplit:
    """Latest `test_fraction` of snapshot days as test; train and validation only from days whose
    label window (D+1..D+gap) ends before the first test day. Validation is the latest share of those,
    used for early stopping. Raises when too few days are left for any part."""
    ordered = sorted(set(days))
    n_test = max(1, int(np.ceil(len(ordered) * test_fraction)))
    test = ordered[-n_test:]
    before = [d for d in ordered if d + timedelta(days=gap_days) < test[0]]
    n_valid = max(1, int(np.ceil(len(before) * valid_fraction)))
    if len(before) <= n_valid:
        raise ValueError(
            f"out-of-time split needs more snapshot days: {len(ordered)} days, {len(test)} for test, "
            f"{len(before)} before the {gap_days}-day gap (need at least {n_valid + 1}); "
            "simulate or ingest more days, or sample snapshots more often"
        )
    return OutOfTimeSplit(train=before[:-n_valid], valid=before[-n_valid:], test=test)


def feature_columns(frame: pl.DataFrame) -> list[str]:
    """Model inputs: every column but the keys and the label."""
    return [c for c in frame.columns if c not in (*KEY, LABEL)]


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


def _save_atomic(booster: lgb.Booster, out_dir: Path) -> tuple[str, Path]:
    text = booster.model_to_string()
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{version}.txt"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)
    return version, target


def train_churn_model(
    training_set: pl.DataFrame,
    out_dir: Path,
    name: str = "churn",
    horizon_days: int = 14,
    test_fraction: float = 0.2,
    seed: int = 42,
    num_boost_round: int = 400,
    early_stopping_rounds: int = 30,
    params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Train on the older snapshots, stop early on validation, report metrics on the latest ones.

    The model file is named by a hash of its content, so retraining on the same data yields the
    same version. Metrics come with a recency-only baseline on the same test rows.
    """
    labels = training_set[LABEL]
    if training_set.height == 0 or labels.n_unique() < 2:
        raise ValueError(
            f"training set has {training_set.height} rows and labels {sorted(labels.unique().to_list())}: "
            "need both churned and retained players to train"
        )
    split = split_out_of_time(training_set["snapshot_date"].unique().to_list(), test_fraction, horizon_days)
    features = feature_columns(training_set)
    categories = {
        c: sorted(training_set[c].drop_nulls().unique().to_list()) for c in features if c in ATTRIBUTES
    }
    parts = {k: training_set.filter(pl.col("snapshot_date").is_in(v)) for k, v in asdict(split).items()}
    cat_idx = [features.index(c) for c in categories]
    datasets = {
        k: lgb.Dataset(
            to_matrix(parts[k], features, categories),
            label=parts[k][LABEL].cast(pl.Float32).to_numpy(),
            feature_name=features,
            categorical_feature=cat_idx,
            free_raw_data=False,
        )
        for k in ("train", "valid")
    }
    datasets["valid"].reference = datasets["train"]
    booster = lgb.train(
        {**DEFAULT_PARAMS, **(params or {}), "seed": seed},
        datasets["train"],
        num_boost_round=num_boost_round,
        valid_sets=[datasets["valid"]],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    test = parts["test"]
    y = test[LABEL].cast(pl.Float64).to_numpy()
    p = booster.predict(to_matrix(test, features, categories), num_iteration=booster.best_iteration)
    metrics = classification_report(y, p)
    baseline = {"roc_auc": roc_auc(y, test["recency_days"].cast(pl.Float64).fill_null(1e9).to_numpy())}
    version, path = _save_atomic(booster, out_dir)
    gain = booster.feature_importance("gain", iteration=booster.best_iteration)
    importance = {f: float(g) for f, g in sorted(zip(features, gain, strict=True), key=lambda x: -x[1])}
    model = TrainedModel(
        name=name,
        version=version,
        path=str(path),
        features=features,
        categories=categories,
        horizon_days=horizon_days,
        best_iteration=int(booster.best_iteration or booster.current_iteration()),
        metrics=metrics,
        baseline_metrics=baseline,
        split={k: [d.isoformat() for d in v] for k, v in asdict(split).items()},
        importance=importance,
    )
    card = out_dir / f"{version}.json"
    card.write_text(json.dumps(asdict(model), indent=2, sort_keys=True))
    return model


def score(features: pl.DataFrame, model: TrainedModel) -> pl.DataFrame:
    """Churn probability for each (player, snapshot) row, with the model version that produced it."""
    booster = model.booster()
    p = (
        booster.predict(
            to_matrix(features, model.features, model.categories), num_iteration=model.best_iteration
        )
        if features.height
        else np.empty(0)
    )
    return features.select(KEY).with_columns(
        churn_probability=pl.Series(p, dtype=pl.Float64),
        model_version=pl.lit(model.version),
    )
