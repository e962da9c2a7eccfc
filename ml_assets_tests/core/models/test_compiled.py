import importlib.util
import sys
from dataclasses import replace
from types import ModuleType

import lightgbm as lgb
import numpy as np
import pytest

from ml_assets.core.models import training
from ml_assets.core.models.training import TrainedModel, to_matrix, train_model
from ml_assets_tests.conftest import require
from ml_assets_tests.core.models.test_linear_blend import SPEC as BLEND_SPEC
from ml_assets_tests.core.models.test_linear_blend import _linear_rows
from ml_assets_tests.core.models.test_training import SPEC, _training_set

LLEAVES = importlib.util.find_spec("lleaves") is not None


@pytest.fixture
def compiled(tmp_path, monkeypatch) -> ModuleType:
    """The compiled-trees module with a cache of this test's own (needs the `compiled` extra)."""
    require(LLEAVES, "lleaves (the `compiled` extra)", "pip install -e '.[compiled]'")
    from ml_assets.core.models import compiled

    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path / "compiled"))
    monkeypatch.setattr(compiled, "_compiled", {})
    assert training.batch_scorer() == "lleaves"
    return compiled


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[rng.random(n) < 0.2, 1] = np.nan  # missing values
    x[:, 2] = rng.integers(0, 7, n)  # a categorical feature (codes)
    x[rng.random(n) < 0.1, 2] = np.nan  # an unknown level
    return x


def test_compiled_trees_score_as_lightgbm_with_nans_categories_and_fewer_iterations(
    compiled, tmp_path, monkeypatch
):
    monkeypatch.setattr(compiled, "BLOCK_ROWS", 1000)  # the 3000 rows in blocks
    x = _rows(4000, 0)
    rng = np.random.default_rng(1)
    logit = x[:, 0] + np.nan_to_num(x[:, 1], nan=2.0) + np.isin(x[:, 2], [1, 4]) - 1
    y = rng.random(len(x)) < 1 / (1 + np.exp(-logit))
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "min_data_per_group": 5}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[2]), num_boost_round=40)
    test = _rows(3000, 2).astype(np.float32)  # as `to_matrix` builds it
    for raw in (False, True):
        trees = compiled.compiled_trees("v1", booster.model_to_string(num_iteration=25), raw_score=raw)
        want = booster.predict(test, num_iteration=25, raw_score=raw)
        np.testing.assert_allclose(compiled.predict_compiled(trees, test), want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            compiled.predict_compiled(trees, test, num_threads=1), want, rtol=0, atol=1e-12
        )
    assert not np.allclose(booster.predict(test), booster.predict(test, num_iteration=25))  # 25 of 40 count
    # the object files are on disk: a fresh process (here: an emptied in-process cache) loads them
    assert len(list((tmp_path / "compiled").glob("*.o"))) == 2
    compiled._compiled.clear()
    again = compiled.compiled_trees("v1", booster.model_to_string(num_iteration=25))
    np.testing.assert_allclose(
        again.predict(test), booster.predict(test, num_iteration=25), rtol=0, atol=1e-12
    )
    assert len(list((tmp_path / "compiled").glob("*.o"))) == 2
    assert compiled.predict_compiled(again, test[:0]).shape == (0,)


def test_batch_predict_equals_predict_matrix_with_best_iteration_and_a_blend(compiled, monkeypatch):
    monkeypatch.setattr(training, "COMPILE_AFTER_ROWS", 0)  # compiled from the first row
    frame = _training_set()
    model = train_model(SPEC, frame)
    assert "platform" in model.categories
    # fewer iterations than trees: scoring must use only the first ones
    model = replace(model, best_iteration=model.booster().num_trees() // 2)
    assert model.best_iteration < model.booster().num_trees()
    x = to_matrix(frame, model.features, model.categories)
    x[::5, 0] = np.nan
    np.testing.assert_allclose(model.batch_predict(x), model.predict_matrix(x), rtol=0, atol=1e-12)

    rows = _linear_rows()
    blend = train_model(BLEND_SPEC, rows)
    assert blend.extra["blend"]["linear"] is not None
    loaded = TrainedModel.from_card(blend.card(), blend.model_text)
    x = to_matrix(rows, loaded.features, loaded.categories)
    np.testing.assert_allclose(loaded.batch_predict(x), loaded.predict_matrix(x), rtol=0, atol=1e-12)


def test_a_model_that_cannot_be_compiled_fails_loudly(compiled, tmp_path):
    x = _rows(500, 3)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(x, x[:, 0] > 0), num_boost_round=2
    )
    text = booster.model_to_string()
    assert "objective=binary sigmoid:1" in text
    with pytest.raises(ValueError, match="Sigmoid"):
        compiled.compiled_trees(
            "broken", text.replace("objective=binary sigmoid:1", "objective=binary sigmoid:0")
        )
    assert not list((tmp_path / "compiled").glob("*.o"))


def test_without_the_extra_batch_scoring_is_lightgbms_predict(monkeypatch):
    monkeypatch.setattr(training, "batch_scorer", lambda: "lightgbm")
    # an import of the compiled-trees module would raise: batch scoring must not reach for it
    monkeypatch.setitem(sys.modules, "ml_assets.core.models.compiled", None)
    frame = _training_set()
    model = train_model(SPEC, frame)
    x = to_matrix(frame, model.features, model.categories)
    np.testing.assert_array_equal(model.batch_predict(x), model.predict_matrix(x))


def test_the_trees_are_compiled_once_a_model_has_scored_enough_rows(compiled, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "COMPILE_AFTER_ROWS", 150)
    frame = _training_set()
    model = train_model(SPEC, frame)
    x = to_matrix(frame, model.features, model.categories)[:200]
    objects = tmp_path / "compiled"
    # 100 rows: below the threshold, LightGBM's predict and no compile
    np.testing.assert_array_equal(model.batch_predict(x[:100]), model.predict_matrix(x[:100]))
    assert not list(objects.glob("*.o"))
    # 100 more reach it: compiled, equal values
    np.testing.assert_allclose(
        model.batch_predict(x[100:]), model.predict_matrix(x[100:]), rtol=0, atol=1e-12
    )
    assert len(list(objects.glob("*.o"))) == 1
    # a model compiled before (its object file on disk) uses it from the first row
    compiled._compiled.clear()
    again = TrainedModel.from_card(model.card(), model.model_text)
    assert compiled.is_compiled(again.version, again._used_trees)
    np.testing.assert_allclose(again.batch_predict(x[:10]), model.predict_matrix(x[:10]), rtol=0, atol=1e-12)
    assert compiled._compiled  # loaded from its object file, not scored by LightGBM
