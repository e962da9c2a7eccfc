"""The model store: a version round-trips as JSON card + LightGBM text, and old cards still load."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml_assets.core.models.spec import ModelSpec, TuningSpec
from ml_assets.core.models.training import score, train_model
from ml_assets.lake.model_store import ModelStore
from ml_assets_tests.core.models.test_training import _training_set

SPEC = ModelSpec(name="churn", tuning=TuningSpec(trials=0), num_boost_round=20)


@pytest.fixture(scope="module")
def trained():
    return train_model(SPEC, _training_set(days=24, per_day=80))


def test_a_stored_version_scores_exactly_like_the_trained_one(tmp_path, trained):
    store = ModelStore(tmp_path)
    card = Path(store.save(trained))
    assert sorted(p.name for p in card.parent.iterdir()) == [
        f"{trained.version}.json",
        f"{trained.version}.txt",
    ]
    loaded = store.load("churn", trained.version)
    assert loaded.card() == trained.card()  # every field; the model text is compared through its scores
    rows = _training_set(seed=3, days=2, per_day=50)
    assert score(rows, loaded).equals(score(rows, trained))
    assert loaded.profile().numeric.keys() == trained.profile().numeric.keys()
    assert store.find("churn", "nope") is None
    with pytest.raises(FileNotFoundError, match="churn version nope is not in the model store"):
        store.load("churn", "nope")


def test_saving_a_stored_version_again_rewrites_nothing(tmp_path, trained):
    store = ModelStore(tmp_path)
    card = Path(store.save(trained))
    before = card.stat().st_mtime_ns
    store.save(replace(trained, metrics={"roc_auc": 0.0}))
    assert (
        card.stat().st_mtime_ns == before and store.load("churn", trained.version).metrics == trained.metrics
    )


def test_a_card_from_before_the_store_still_loads(tmp_path, trained):
    # ml-assets 0.1 wrote the model file's path into the card and the drift profile beside it
    folder = tmp_path / "churn"
    folder.mkdir()
    old = trained.card()
    profile = old.pop("reference_profile")
    old["path"] = str(folder / f"{trained.version}.txt")
    old["extra"] = {**old["extra"], "profile_path": str(folder / f"{trained.version}.profile.json")}
    (folder / f"{trained.version}.json").write_text(json.dumps(old))
    (folder / f"{trained.version}.profile.json").write_text(json.dumps(profile))
    (folder / f"{trained.version}.txt").write_text(trained.model_text)
    loaded = ModelStore(tmp_path).load("churn", trained.version)
    assert loaded.reference_profile == profile and loaded.extra == trained.extra
    rows = _training_set(seed=4, days=1, per_day=30)
    assert np.allclose(score(rows, loaded)["probability"], score(rows, trained)["probability"])
