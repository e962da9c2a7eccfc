"""Each table's schema check passes on good data and fails, with counts and cases, on bad data."""

from datetime import UTC, date, datetime

import polars as pl
import pytest

import ml_assets.defs.features as feature_assets
from ml_assets.core import schemas
from ml_assets.core.events.cleaning import clean_events
from ml_assets.core.events.landing import scan_landing
from ml_assets.core.features.snapshots import player_features
from ml_assets.defs.checks import schema_check_result
from ml_assets_tests.conftest import check_results, read_table, run_graph


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, pl.DataFrame]:
    from ml_assets_tests.conftest import make_lake

    settings = make_lake(tmp_path_factory.mktemp("checks"), players=150, days=20)
    raw = scan_landing(settings.landing_uri).collect()
    result = clean_events(raw.lazy(), 3)
    features = player_features(result.clean.lazy(), date(2025, 1, 1), date(2025, 1, 20)).collect()
    predictions = features.select("player_id", "snapshot_date").with_columns(
        probability=pl.lit(0.3),
        model_version=pl.lit("abc"),
        reason_1=pl.lit("recency_days"),
        reason_1_contribution=pl.lit(0.2),
    )
    return {
        "raw": raw,
        "clean": result.clean,
        "quarantined": result.quarantined,
        "features": features,
        "training": features.with_columns(label=pl.lit(True), split_date=pl.col("snapshot_date")),
        "predictions": predictions,
    }


BREAKS = {
    "raw": (schemas.RawEvents, lambda f: f.with_columns(batch_id=pl.lit(None, pl.String))),
    "clean": (schemas.CleanEvents, lambda f: pl.concat([f, f.head(2)])),  # duplicate event ids
    "quarantined": (schemas.QuarantinedEvents, lambda f: f.with_columns(reason=pl.lit("because"))),
    "features": (schemas.PlayerFeatures, lambda f: f.with_columns(events_7d=pl.lit(-1, pl.Int32))),
    "training": (
        schemas.TrainingSet,
        lambda f: f.with_columns(split_date=pl.col("snapshot_date") + pl.duration(days=1)),
    ),
    "predictions": (schemas.Predictions, lambda f: f.with_columns(probability=pl.lit(1.5))),
}


@pytest.mark.parametrize("table", sorted(BREAKS))
def test_schema_check_passes_on_good_and_fails_on_bad(tables, table):
    model, breaker = BREAKS[table]
    good = schema_check_result(tables[table], model, table)
    assert good.passed, good.metadata
    assert good.metadata["failure_count"].value == 0
    bad = schema_check_result(breaker(tables[table]), model, table)
    assert not bad.passed
    assert bad.metadata["failure_count"].value >= 1
    assert "failure_cases" in bad.metadata


def test_feature_recency_beyond_tenure_fails(tables):
    bad = tables["features"].with_columns(recency_days=pl.col("tenure_days") + 1)
    result = schema_check_result(bad, schemas.PlayerFeatures, "player_features")
    assert not result.passed
    assert "recency_within_tenure" in result.metadata["failures_by_check"].value


def test_clean_event_date_must_match_time(tables):
    bad = tables["clean"].with_columns(event_time=pl.lit(datetime(2000, 1, 1, tzinfo=UTC)))
    assert not schema_check_result(bad, schemas.CleanEvents).passed


def test_a_failing_blocking_check_stops_downstream_assets(small_lake, instance, monkeypatch):
    real = feature_assets.features_from_state

    def broken(*args, **kwargs):
        for piece in real(*args, **kwargs):
            yield piece.with_columns(events_7d=pl.lit(-5, pl.Int32))

    monkeypatch.setattr(feature_assets, "features_from_state", broken)
    result = run_graph(small_lake, instance, "2025-01-01", "2025-02-14")
    checks = check_results(result)
    assert checks["player_features:schema"] is False
    assert checks["clean_events:schema"] is True
    assert not result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "player_features" in materialized
    assert "churn_training_set" not in materialized and "churn_predictions" not in materialized
    assert read_table(small_lake, "player_features")["events_7d"].min() == -5
