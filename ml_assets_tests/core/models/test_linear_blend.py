from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import polars as pl

from ml_assets.core.models import training
from ml_assets.core.models.linear import TREE_WEIGHTS, fit_linear
from ml_assets.core.models.spec import ModelSpec, TuningSpec, specs_from_settings
from ml_assets.core.models.training import TrainedModel, predict, score, to_matrix, train_model
from ml_assets.serving.scoring import Loaded, score_vectors

SPEC = ModelSpec(name="churn", tuning=TuningSpec(trials=0), num_boost_round=40, linear_blend=True)


def _linear_rows(seed: int = 0, days: int = 24, per_day: int = 120) -> pl.DataFrame:
    """A label that is a weak logistic function of many long-tailed counts: where trees struggle."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    x = rng.poisson(rng.gamma(1.0, 3.0, (n, 6)))
    logit = 0.25 * np.log1p(x).sum(axis=1) - 2.5 + rng.logistic(0, 1, n)
    split = [date(2025, 1, 1) + timedelta(days=d) for d in range(days) for _ in range(per_day)]
    spend = np.where(rng.random(n) < 0.2, np.nan, x[:, 0] * 2.5)  # missing for a fifth of rows
    return pl.DataFrame(
        {
            "player_id": [f"p{i}" for i in range(n)],
            "snapshot_date": split,
            **{f"count_{j}": x[:, j].astype(np.int32) for j in range(6)},
            "spend": pl.Series(spend).fill_nan(None),
            "platform": rng.choice(["ios", "android"], n),
            "label": logit > 0,
            "split_date": split,
        }
    )


def test_linear_parts_add_up_to_the_log_odds():
    rng = np.random.default_rng(1)
    x = np.c_[rng.poisson(3, 500), rng.normal(0, 1, 500), np.where(rng.random(500) < 0.3, np.nan, 1.0)]
    y = (x[:, 0] + rng.normal(0, 2, 500) > 3).astype(float)
    linear = fit_linear(x, y, [0, 1, 2], l2=1.0)
    assert linear.missing == [2]  # the column with gaps gets an indicator
    parts = linear.contributions(x, 4)
    assert np.allclose(parts.sum(axis=1) + linear.base, linear.margin(x))
    assert (parts[:, 3] == 0).all()  # a feature it does not read contributes nothing
    # an infinity is a missing value, not a NaN score
    x[0, 2] = np.inf
    assert np.isfinite(linear.margin(x)).all()


def test_blend_is_chosen_on_validation_recorded_and_scored_alike_everywhere():
    rows = _linear_rows()
    model = train_model(SPEC, rows)
    record = model.extra["tuning"]["blend"]
    assert record["tree_weight"] in TREE_WEIGHTS
    by_weight = record["valid_roc_auc_by_tree_weight"]
    assert by_weight[str(record["tree_weight"])] == max(by_weight.values())
    # on this label the linear model helps, so the stored model is a blend
    assert record["tree_weight"] < 1.0 and model.extra["blend"]["linear"] is not None
    assert record["linear_features"] == len(model.features) - ("platform" in model.features)

    # the stored card scores exactly as training did: batch, online and the test scores
    loaded = TrainedModel.from_card(model.card(), model.model_text)
    test = training.test_rows(model, rows)
    assert np.allclose(predict(loaded, test), model.test_scores)
    scored = score(test.head(40), loaded, reasons=2)
    vectors = test.head(40).drop("label", "split_date").to_dicts()
    online, reasons = score_vectors(Loaded.of(loaded), vectors, reasons=2)
    assert np.allclose(online, scored["probability"].to_numpy())
    assert [r[0].feature for r in reasons] == scored["reason_1"].to_list()
    # reasons are the blend's own log-odds parts: what they leave over is the same for every row
    m = to_matrix(test.head(40), loaded.features, loaded.categories)
    p = loaded.predict_matrix(m)
    rest = np.log(p / (1 - p)) - loaded.contributions(m).sum(axis=1)
    assert np.allclose(rest, rest[0], atol=1e-6)


def test_blend_is_off_by_default_and_a_setting_turns_it_on():
    plain = train_model(replace(SPEC, linear_blend=False), _linear_rows())
    assert "blend" not in plain.extra and "blend" not in plain.extra["tuning"]
    (spec,) = specs_from_settings({"m": {"label": "rolling"}}, {"linear_blend": True})
    assert spec.linear_blend and not ModelSpec(name="m").linear_blend
