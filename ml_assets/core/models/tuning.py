"""Hyperparameter search for binary LightGBM with Optuna: seeded TPE, median pruning, trial/time budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import optuna

METRIC = "binary_logloss"
VALID_NAME = "valid"

# name -> (low, high, integer, log scale)
SEARCH_SPACE: dict[str, tuple[float, float, bool, bool]] = {
    "learning_rate": (0.02, 0.2, False, True),
    "num_leaves": (8, 128, True, True),
    "min_data_in_leaf": (10, 200, True, True),
    "feature_fraction": (0.5, 1.0, False, False),
    "bagging_fraction": (0.5, 1.0, False, False),
    "lambda_l2": (1e-3, 10.0, False, True),
}

# Trials change min_data_in_leaf on the same Dataset; with LightGBM's default feature pre-filtering the
# features kept would depend on the trials that came before, so every trial (and the result) turns it off.
FIXED_PARAMS: dict[str, Any] = {"feature_pre_filter": False}


@dataclass(frozen=True)
class TuningResult:
    """The best parameters found and how the search went.

    `params` is the base params updated with the best trial's values (and `FIXED_PARAMS`);
    `best_score` is that trial's validation log loss; `history` has one dict per trial with
    number, value (for a pruned trial its last reported log loss), state, params and best_iteration.
    """

    params: dict[str, Any]
    best_score: float
    trials_run: int
    pruned: int
    history: list[dict[str, Any]]


class _PruningCallback:
    """Reports validation log loss to the trial each iteration; stops the trial when the pruner says so."""

    order = 40  # after lightgbm's early stopping (30), which is also an after-iteration callback
    before_iteration = False

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        for item in env.evaluation_result_list or []:
            if item[0] == VALID_NAME and item[1] == METRIC:
                self.trial.report(float(item[2]), step=env.iteration)
                if self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at iteration {env.iteration}")
                return


def _suggest(trial: optuna.Trial) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (low, high, integer, log) in SEARCH_SPACE.items():
        if integer:
            out[name] = trial.suggest_int(name, int(low), int(high), log=log)
        else:
            out[name] = trial.suggest_float(name, low, high, log=log)
    return out


def _base_point(base_params: dict[str, Any]) -> dict[str, Any]:
    """The base params' values for the searched names, clipped into the search space."""
    point: dict[str, Any] = {}
    for name, (low, high, integer, _) in SEARCH_SPACE.items():
        if name in base_params:
            value = min(max(float(base_params[name]), low), high)
            point[name] = int(round(value)) if integer else value
    return point


def tune(
    train: lgb.Dataset,
    valid: lgb.Dataset,
    base_params: dict[str, Any],
    trials: int,
    timeout_s: float,
    seed: int,
    num_boost_round: int = 400,
    early_stopping_rounds: int = 30,
) -> TuningResult:
    """Search `SEARCH_SPACE` for the lowest validation log loss at the early-stopped best iteration.

    The first trial is the base params themselves (clipped into the space), so the result is never
    worse on validation than not tuning. Runs at most `trials` trials and stops starting new ones
    after `timeout_s` seconds (a running trial finishes; at least one runs). Same inputs and seed,
    same result. `trials=0` returns `base_params` unchanged. Both Datasets must keep their raw data
    (`free_raw_data=False`): LightGBM rebuilds them when a trial changes a Dataset parameter.
    """
    if trials <= 0:
        return TuningResult(params=dict(base_params), best_score=math.nan, trials_run=0, pruned=0, history=[])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 2))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=20),
    )
    base_point = _base_point(base_params)
    if base_point:
        study.enqueue_trial(base_point)

    def objective(trial: optuna.Trial) -> float:
        params = {
            **base_params,
            **_suggest(trial),
            **FIXED_PARAMS,
            "metric": METRIC,
            "seed": seed,
            "verbose": -1,
        }
        booster = lgb.train(
            params,
            train,
            num_boost_round=num_boost_round,
            valid_sets=[valid],
            valid_names=[VALID_NAME],
            callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False), _PruningCallback(trial)],
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        return float(booster.best_score[VALID_NAME][METRIC])

    study.optimize(objective, n_trials=trials, timeout=timeout_s, gc_after_trial=False)

    history = [
        {
            "number": t.number,
            "value": t.value,
            "state": t.state.name,
            "params": dict(t.params),
            "best_iteration": t.user_attrs.get("best_iteration"),
        }
        for t in study.trials
    ]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"hyperparameter search finished no trial ({len(study.trials)} run, {pruned} pruned); "
            "raise tuning timeout_s or trials"
        )
    best = study.best_trial
    return TuningResult(
        params={**base_params, **FIXED_PARAMS, **best.params},
        best_score=float(best.value if best.value is not None else float("nan")),
        trials_run=len(study.trials),
        pruned=pruned,
        history=history,
    )
