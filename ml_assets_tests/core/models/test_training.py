from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml_assets.core.models.spec import ModelSpec, TuningSpec
from ml_assets.core.models.training import explain_mask, score, split_out_of_time, train_model
from ml_assets.lake.model_store import ModelStore

SPEC = ModelSpec(name="churn", tuning=TuningSpec(trials=0), num_boost_round=40)


def _training_set(seed: int = 0, days: int = 30, per_day: int = 150) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    recency = rng.integers(0, 20, n)
    sessions = rng.poisson(3, n)
    logit = 0.25 * recency - 0.5 * sessions + rng.normal(0, 1, n)
    split = [date(2025, 1, 1) + timedelta(days=d) for d in range(days) for _ in range(per_day)]
    return pl.DataFrame(
        {
            "player_id": [f"p{i % per_day}" for i in range(n)],
            "snapshot_date": split,
            "recency_days": recency.astype(np.int32),
            "sessions_7d": sessions.astype(np.int32),
            "noise": rng.normal(0, 1, n),
            "constant": np.ones(n),
            "platform": rng.choice(["ios", "android"], n),
            "label": logit > 1.0,
            "split_date": split,
        }
    )


def test_split_keeps_a_gap_as_long_as_the_label_looks_ahead():
    days = [date(2025, 1, 1) + timedelta(days=d) for d in range(40)]
    split = split_out_of_time(days, 0.2, gap_days=14)
    assert split.test == days[-8:]
    assert max(split.valid) + timedelta(days=14) < min(split.test)
    assert max(split.train) < min(split.valid)
    with pytest.raises(ValueError, match="needs more days"):
        split_out_of_time(days[:10], 0.2, gap_days=14)


def test_same_rows_same_version_without_retraining_and_new_rows_a_new_version(tmp_path):
    frame = _training_set()
    store = ModelStore(tmp_path)
    first = train_model(SPEC, frame, {"churn_training_set": 3}, "code-1", find=store.find)
    card = store.save(first)
    mtime = Path(card).stat().st_mtime_ns
    again = train_model(SPEC, frame, {"churn_training_set": 3}, "code-1", find=store.find)
    # found in the store, not trained again: no test scores kept from a training in this process
    assert again.version == first.version and again.test_scores is None and first.test_scores is not None
    assert store.save(again) == card and Path(card).stat().st_mtime_ns == mtime
    assert again.metrics == first.metrics and again.features == first.features
    # same Delta version numbers (a recreated table restarts them), different rows: a new version
    changed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(~pl.col("label")).otherwise(pl.col("label"))
    )
    assert (
        train_model(SPEC, changed, {"churn_training_set": 3}, "code-1", find=store.find).version
        != first.version
    )
    assert (
        train_model(
            replace(SPEC, seed=7), frame, {"churn_training_set": 3}, "code-1", find=store.find
        ).version
        != first.version
    )


def test_model_learns_drops_useless_features_and_explains_every_row(tmp_path):
    model = train_model(SPEC, _training_set())
    assert model.metrics["roc_auc"] > 0.75
    assert model.dropped_features["constant"] == "constant"
    assert {"recency_days", "sessions_7d"} <= set(model.features)
    assert model.baseline_metrics["roc_auc"] < model.metrics["roc_auc"]
    assert len(model.calibration) >= 5
    scored = score(_training_set(seed=1, days=2), model)
    assert scored["probability"].is_between(0, 1).all()
    assert scored["reason_1"].null_count() == 0 and set(scored["reason_1"]) <= set(model.features)
    assert (scored["reason_1_contribution"] >= scored["reason_2_contribution"]).all()


def test_one_class_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ValueError, match="need rows of both classes"):
        train_model(SPEC, _training_set().with_columns(label=pl.lit(True)))


def test_explanations_can_be_turned_off(tmp_path):
    model = train_model(SPEC, _training_set())
    plain = score(_training_set(seed=1, days=1), model, reasons=0)
    explained = score(_training_set(seed=1, days=1), model)
    assert [c for c in plain.columns if c.startswith("reason")] == []
    assert plain["probability"].equals(explained["probability"])


def test_only_the_picked_rows_are_explained_and_with_the_same_values():
    model = train_model(SPEC, _training_set())
    rows = _training_set(seed=1, days=3)
    every = score(rows, model)
    newest = rows["snapshot_date"].max()
    picked = score(rows, model, explain=lambda s: explain_mask(s, newest, days=2, share=0.1))
    mask = picked["reason_1"].is_not_null()
    assert picked["probability"].equals(every["probability"])
    # rows of the newest 2 days only, a tenth of each (rounded up), the highest scores first
    assert set(picked.filter(mask)["snapshot_date"]) == {newest, newest - timedelta(days=1)}
    for day in (newest, newest - timedelta(days=1)):
        of_day = picked.filter(pl.col("snapshot_date") == day)
        chosen = of_day.filter(pl.col("reason_1").is_not_null())
        assert chosen.height == -(-of_day.height // 10)
        assert chosen["probability"].min() >= of_day.filter(pl.col("reason_1").is_null())["probability"].max()
    # an explained row has exactly the reasons it gets when every row is explained
    assert picked.filter(mask).equals(every.filter(mask))
    # a day with no row picked keeps typed (all-null) reason columns
    none = score(rows, model, explain=lambda s: np.zeros(s.height, dtype=bool))
    assert none.schema["reason_1"] == pl.String and none["reason_1"].null_count() == none.height
    assert none.schema["reason_1_contribution"] == pl.Float64
