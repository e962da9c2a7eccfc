"""Each asset on a small simulated lake, through Dagster, on an ephemeral instance."""

from datetime import date, timedelta

import polars as pl
from deltalake import DeltaTable

from ml_assets.core.landing import scan_landing, write_batch
from ml_assets_tests.conftest import check_results, read_table, run_graph

FIRST, LAST = "2025-01-01", "2025-02-14"


def test_events_assets_account_for_every_landed_row(small_lake, instance):
    result = run_graph(
        small_lake, instance, FIRST, LAST, ["raw_events", "clean_events", "quarantined_events"]
    )
    assert result.success
    assert all(check_results(result).values())
    landed = scan_landing(small_lake.landing_dir).collect()
    raw, clean, quarantined = (
        read_table(small_lake, t) for t in ("raw_events", "clean_events", "quarantined_events")
    )
    assert raw.height == landed.height
    assert clean.height + quarantined.height == raw.height
    assert clean["event_id"].is_unique().all()
    assert set(quarantined["reason"]) >= {"duplicate_event_id", "malformed_event_time", "missing_player_id"}
    mats = result.asset_materializations_for_node("cleaned")
    assert any("reason/duplicate_event_id" in m.metadata for m in mats)


def test_rerunning_a_partition_replaces_it(small_lake, instance):
    assert run_graph(
        small_lake, instance, FIRST, LAST, ["raw_events", "clean_events", "quarantined_events"]
    ).success
    before = read_table(small_lake, "clean_events")
    version = DeltaTable(f"{small_lake.lake_uri}/clean_events").version()
    one_day = "2025-01-20"
    result = run_graph(
        small_lake, instance, one_day, one_day, ["raw_events", "clean_events", "quarantined_events"]
    )
    assert result.success
    after = read_table(small_lake, "clean_events")
    assert DeltaTable(f"{small_lake.lake_uri}/clean_events").version() == version + 1
    assert after.height == before.height
    assert after.sort("event_id").equals(before.sort("event_id"))


def test_late_batch_lands_in_its_event_day_on_rerun(small_lake, instance):
    assert run_graph(
        small_lake, instance, FIRST, LAST, ["raw_events", "clean_events", "quarantined_events"]
    ).success
    day = date(2025, 1, 10)
    late = (
        read_table(small_lake, "clean_events")
        .filter(pl.col("event_date") == day)
        .head(1)
        .with_columns(event_id=pl.lit("late-1"), received_date=pl.lit(day + timedelta(days=2)))
    )
    write_batch(small_lake.landing_dir, late, "late-batch", "late.csv")
    assert run_graph(small_lake, instance, "2025-01-10", "2025-01-10", ["raw_events", "clean_events"]).success
    clean = read_table(small_lake, "clean_events")
    assert clean.filter(pl.col("event_id") == "late-1")["event_date"].to_list() == [day]


def test_model_assets_train_score_and_record_the_version(small_lake, instance):
    result = run_graph(small_lake, instance, FIRST, LAST)
    assert result.success, check_results(result)
    assert all(check_results(result).values())
    model_meta = result.asset_materializations_for_node("churn_model")[0].metadata
    version = model_meta["model_version"].value
    assert 0.5 < model_meta["test/roc_auc"].value <= 1.0
    assert "baseline/roc_auc" in model_meta and "importance_gain" in model_meta
    features = read_table(small_lake, "player_features")
    predictions = read_table(small_lake, "churn_predictions")
    assert predictions.height == features.height
    assert set(predictions["model_version"]) == {version}
    assert predictions["churn_probability"].is_between(0, 1).all()
    training = read_table(small_lake, "training_set")
    # only matured snapshots: the label horizon (14 days) must fit before the last day
    assert training["snapshot_date"].max() <= date(2025, 2, 14) - timedelta(days=14)
    # same inputs, same model version: retraining is idempotent
    again = run_graph(small_lake, instance, FIRST, LAST, ["training_set", "churn_model"])
    assert again.asset_materializations_for_node("churn_model")[0].metadata["model_version"].value == version
    assert len(list((small_lake.models_dir / "churn").glob("*.txt"))) == 1


def test_one_class_training_set_fails_with_a_reason(tmp_path, instance):
    from ml_assets_tests.conftest import make_lake

    settings = make_lake(tmp_path / "h", players=40, days=16)  # no snapshot matures before the last day
    result = run_graph(settings, instance, "2025-01-01", "2025-01-16")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "churn_model"
    reason = failure.event_specific_data.error.to_string()
    assert "split needs more snapshot days" in reason or "need both churned and retained" in reason


def test_definitions_use_the_given_home_even_when_the_environment_names_another(small_lake, monkeypatch):
    from ml_assets.definitions import build_definitions

    monkeypatch.setenv("ML_ASSETS_HOME", "/somewhere/else")
    defs = build_definitions(small_lake)
    assert defs.resources["lake"].home == str(small_lake.home)
