import lightgbm as lgb
import numpy as np
import pytest

from ml_assets.core.models.tuning import FIXED_PARAMS, SEARCH_SPACE, tune

BASE = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,  # 2 OpenMP threads stall badly on a loaded 2-core CI box
}


def _datasets(seed: int = 3) -> tuple[lgb.Dataset, lgb.Dataset]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 6))
    logit = x @ np.array([1.5, -1.0, 0.7, 0.0, 0.3, -0.5]) + 0.8 * x[:, 0] * x[:, 1] - 0.5
    y = (rng.random(3000) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    train = lgb.Dataset(x[:2000], y[:2000], free_raw_data=False)
    valid = lgb.Dataset(x[2000:], y[2000:], reference=train, free_raw_data=False)
    return train, valid


def _base_logloss(train: lgb.Dataset, valid: lgb.Dataset) -> float:
    booster = lgb.train(
        {**BASE, **FIXED_PARAMS, "metric": "binary_logloss", "seed": 11},
        train,
        num_boost_round=150,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(20, verbose=False)],
    )
    return float(booster.best_score["valid"]["binary_logloss"])


@pytest.fixture(scope="module")
def first_run():
    train, valid = _datasets()
    result = tune(
        train, valid, BASE, trials=5, timeout_s=60, seed=11, num_boost_round=150, early_stopping_rounds=20
    )
    return result, _base_logloss(train, valid)


def test_tune_finds_params_within_bounds_and_no_worse_than_base(first_run):
    result, base_logloss = first_run
    assert 1 <= result.trials_run <= 5
    assert len(result.history) == result.trials_run
    assert 0 <= result.pruned < result.trials_run
    for name, (low, high, integer, _) in SEARCH_SPACE.items():
        value = result.params[name]
        assert low <= value <= high, name
        assert isinstance(value, int) == integer, name
    # untouched base params survive; the first trial is the base point
    assert {k: result.params[k] for k in ("objective", "bagging_freq", "deterministic")} == {
        "objective": "binary",
        "bagging_freq": 1,
        "deterministic": True,
    }
    assert result.history[0]["params"] == {k: BASE[k] for k in SEARCH_SPACE}
    assert result.history[0]["value"] == pytest.approx(base_logloss, abs=1e-12)
    assert result.best_score <= base_logloss + 1e-12
    assert 0.3 < result.best_score < 0.69
    completed = [h for h in result.history if h["state"] == "COMPLETE"]
    assert result.best_score == min(h["value"] for h in completed)
    assert {"number", "value", "state", "params"} <= set(result.history[0])


def test_tune_same_seed_same_result(first_run):
    result, _ = first_run
    train, valid = _datasets()
    again = tune(
        train, valid, BASE, trials=5, timeout_s=60, seed=11, num_boost_round=150, early_stopping_rounds=20
    )
    assert again.params == result.params
    assert again.best_score == result.best_score
    assert [h["state"] for h in again.history] == [h["state"] for h in result.history]


def test_tune_zero_trials_is_a_no_op():
    train, valid = _datasets()
    result = tune(train, valid, BASE, trials=0, timeout_s=60, seed=11)
    assert result.params == BASE and result.params is not BASE
    assert result.trials_run == 0 and result.pruned == 0 and result.history == []
    assert np.isnan(result.best_score)


def test_tune_tiny_timeout_stops_after_first_trial():
    train, valid = _datasets()
    result = tune(train, valid, BASE, trials=50, timeout_s=0.01, seed=11, num_boost_round=150)
    assert result.trials_run == 1
    assert result.history[0]["state"] == "COMPLETE"
    assert result.params["learning_rate"] == BASE["learning_rate"]


def test_tuned_params_reproduce_best_score_on_fresh_datasets(first_run):
    result, _ = first_run
    assert result.pruned == sum(h["state"] == "PRUNED" for h in result.history)
    # a pruned trial keeps the last log loss it reported, and is never the best
    assert all(h["best_iteration"] is None for h in result.history if h["state"] == "PRUNED")
    train, valid = _datasets()  # never used by a trial: what the caller's final training sees
    booster = lgb.train(
        {**result.params, "metric": "binary_logloss", "seed": 11},
        train,
        num_boost_round=150,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(20, verbose=False)],
    )
    assert booster.best_score["valid"]["binary_logloss"] == pytest.approx(result.best_score, abs=1e-12)
