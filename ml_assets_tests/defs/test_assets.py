"""Each asset on a small simulated lake, through Dagster, on an ephemeral instance."""

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from ml_assets.app.runner import change_stage
from ml_assets.core.events.landing import scan_landing, write_batch
from ml_assets.core.models.experiments import list_runs
from ml_assets.core.models.registry import Registry
from ml_assets.core.models.training import batch_scorer
from ml_assets.definitions import build_definitions
from ml_assets_tests.conftest import check_results, data_checks_passed, make_lake, read_table, run_graph

FIRST, LAST = "2025-01-01", "2025-02-14"
LAST2 = "2025-02-19"  # the 50-day lake


def test_events_assets_account_for_every_landed_row(small_lake, instance):
    result = run_graph(
        small_lake, instance, FIRST, LAST, ["raw_events", "clean_events", "quarantined_events"]
    )
    assert result.success
    assert data_checks_passed(result)
    landed = scan_landing(small_lake.landing_uri).collect()
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
    write_batch(small_lake.landing_uri, late, "late-batch", "late.csv")
    assert run_graph(small_lake, instance, "2025-01-10", "2025-01-10", ["raw_events", "clean_events"]).success
    clean = read_table(small_lake, "clean_events")
    assert clean.filter(pl.col("event_id") == "late-1")["event_date"].to_list() == [day]


def test_an_event_id_seen_on_an_earlier_day_is_a_duplicate_within_the_horizon(small_lake, instance):
    """A copy of an event id on a later day, in another batch and another 7-day cleaning piece, is
    quarantined as a duplicate within [cleaning] dedup_horizon_days (7); past it, it is new."""
    select = ["raw_events", "clean_events", "quarantined_events"]
    assert run_graph(small_lake, instance, FIRST, LAST, select).success
    original = read_table(small_lake, "clean_events").filter(pl.col("event_date") == date(2025, 1, 6)).head(1)
    event_id = original["event_id"][0]

    def copy_on(day: date, batch: str) -> None:
        moved = original.with_columns(
            event_time=pl.col("event_time") + pl.duration(days=(day - date(2025, 1, 6)).days),
            received_date=pl.lit(day),
        )
        write_batch(small_lake.landing_uri, moved, batch, f"{batch}.csv")

    copy_on(date(2025, 1, 9), "copy-in-horizon")  # 3 days later, across the 7-day piece boundary
    copy_on(date(2025, 1, 20), "copy-past-horizon")  # 14 days later
    result = run_graph(small_lake, instance, FIRST, LAST, select)
    assert result.success and check_results(result)["clean_events:unique_event_ids"]
    clean = read_table(small_lake, "clean_events").filter(pl.col("event_id") == event_id)
    assert sorted(clean["event_date"].to_list()) == [date(2025, 1, 6), date(2025, 1, 20)]
    dup = read_table(small_lake, "quarantined_events").filter(pl.col("event_id") == event_id)
    assert dup.select("partition_date", "reason").rows() == [(date(2025, 1, 9), "duplicate_event_id")]
    # rerunning only the copy's day: still a duplicate (the earlier days are read from the table)
    assert run_graph(small_lake, instance, "2025-01-09", "2025-01-09", select).success
    dup = read_table(small_lake, "quarantined_events").filter(pl.col("event_id") == event_id)
    assert dup["reason"].to_list() == ["duplicate_event_id"]


def test_model_assets_train_gate_score_and_record_the_version(small_lake, instance):
    result = run_graph(small_lake, instance, FIRST, LAST)
    assert result.success, check_results(result)
    assert data_checks_passed(result)
    for name in ("churn", "first_purchase"):
        meta = result.asset_materializations_for_node(f"{name}_model")[0].metadata
        assert 0.5 < meta["test/roc_auc"].value <= 1.0
        for key in (
            "baseline/roc_auc",
            "test/ece",
            "importance_gain",
            "plots",
            "input_delta_versions",
            "gate",
        ):
            assert key in meta, key
        assert meta["plots"].value.count("data:image/png;base64,") == 4
        predictions = read_table(small_lake, f"{name}_predictions")
        served = result.asset_materializations_for_node(f"{name}_production_model")[0].metadata
        assert set(predictions["model_version"]) == {served["model_version"].value}
        scored = result.asset_materializations_for_node(f"{name}_predictions")[-1].metadata
        assert scored["scorer"].value == batch_scorer()
        assert predictions["probability"].is_between(0, 1).all()
        # the top quarter of the newest day carries its top reasons, named after the model's
        # features; older days and lower scores are scored without them
        explained = predictions.filter(pl.col("reason_1").is_not_null())
        newest = predictions["snapshot_date"].max()
        assert explained["snapshot_date"].unique().to_list() == [newest]
        for _, day in explained.group_by("snapshot_date"):
            rows = predictions.filter(pl.col("snapshot_date") == day["snapshot_date"][0])
            assert day.height == -(-rows.height // 4)
            assert day["probability"].min() >= rows.filter(pl.col("reason_1").is_null())["probability"].max()
        assert set(explained["reason_1"]) <= set(read_table(small_lake, f"{name}_training_set").columns)
    assert meta["stage"].value in {"production", "staging"}
    churn_meta = result.asset_materializations_for_node("churn_model")[0].metadata
    assert churn_meta["tuning_trials"].value == 2
    features = read_table(small_lake, "player_features")
    churn_predictions = read_table(small_lake, "churn_predictions")
    assert churn_predictions.height == features.height
    # first_purchase scores only players who have not bought yet
    payers = features.filter(pl.col("ev_purchase_count_total") > 0).select("player_id", "snapshot_date")
    assert (
        read_table(small_lake, "first_purchase_predictions")
        .join(payers, on=["player_id", "snapshot_date"])
        .height
        == 0
    )
    training = read_table(small_lake, "churn_training_set")
    # only matured snapshots: the label horizon (14 days) must fit before the last day
    assert training["snapshot_date"].max() <= date(2025, 2, 14) - timedelta(days=14)


def test_retraining_on_the_same_inputs_is_the_same_version(small_lake, instance):
    first = run_graph(small_lake, instance, FIRST, LAST)
    version = first.asset_materializations_for_node("churn_model")[0].metadata["model_version"].value
    # the training set is rewritten (a new Delta version) with the same rows: the same version, no
    # retraining, no second experiment
    again = run_graph(small_lake, instance, FIRST, LAST, ["churn_training_set", "churn_model"])
    assert again.asset_materializations_for_node("churn_model")[0].metadata["model_version"].value == version
    assert DeltaTable(f"{small_lake.lake_uri}/churn_training_set").version() >= 1
    assert [p.stem for p in (Path(small_lake.models_uri) / "churn").glob("*.txt")] == [version]
    runs = list_runs(f"{small_lake.lake_uri}/experiments", "churn")
    assert runs["version"].to_list() == [version]
    assert json.loads(runs["input_versions"][0])["churn_training_set"] >= 0


def test_gate_refuses_a_worse_model_then_promote_and_rollback(tmp_path, instance):
    from ml_assets.core.settings import load_settings
    from ml_assets_tests.conftest import TEST_SETTINGS, make_lake

    settings = make_lake(tmp_path / "h", players=1000, days=50)
    assert run_graph(settings, instance, FIRST, LAST2).success
    registry = Registry(f"{settings.lake_uri}/model_registry")
    v1 = registry.current("churn")
    assert v1 is not None
    # a model that sees only the player's platform cannot beat v1 on the same test rows
    (settings.home / "ml_assets.toml").write_text(
        TEST_SETTINGS.replace("tuning_trials = 2", 'include = ["platform"]')
    )
    worse = load_settings(settings.home)
    result = run_graph(
        worse, instance, FIRST, LAST, ["churn_training_set", "churn_model", "churn_production_model"]
    )
    assert result.success
    meta = result.asset_materializations_for_node("churn_model")[0].metadata
    v2 = meta["model_version"].value
    assert v2 != v1 and meta["stage"].value == "staging"
    assert "production" in meta["gate"].value
    assert registry.current("churn") == v1 and registry.stage_of("churn", v2) == "staging"

    # promote as the CLI does it: the churn_stage_change job over every landed day
    promoted = change_stage(worse, instance, "churn", "promote", v2, "better on the new days", "test")
    assert promoted.success and promoted.dagster_run.job_name == "churn_stage_change"
    assert registry.current("churn") == v2 and registry.stage_of("churn", v1) == "archived"
    assert set(read_table(worse, "churn_predictions")["model_version"]) == {v2}
    # roll back as the UI does it: the same job, launched from the Launchpad with config and days
    job = build_definitions(worse).resolve_job_def("churn_stage_change")
    config = {
        "ops": {"churn_production_model": {"config": {"action": "rollback", "actor": "test", "reason": "ui"}}}
    }
    days = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST2}
    rolled = job.execute_in_process(run_config=config, instance=instance, tags=days)
    assert rolled.success
    assert registry.current("churn") == v1 and registry.stage_of("churn", v2) == "archived"
    # the job re-scored the predictions itself: nothing else ran in between
    assert {e.asset_key.to_user_string() for e in rolled.get_asset_materialization_events()} == {
        "churn_production_model",
        "churn_predictions",
    }
    assert set(read_table(worse, "churn_predictions")["model_version"]) == {v1}
    audit = registry.history("churn")
    assert audit.filter(pl.col("actor") == "test")["stage"].to_list() == [
        "archived",
        "production",
        "archived",
        "production",
    ]


def test_one_class_training_set_fails_with_a_reason(tmp_path, instance):
    from ml_assets_tests.conftest import make_lake

    settings = make_lake(tmp_path / "h", players=40, days=16)  # no snapshot matures before the last day
    result = run_graph(settings, instance, "2025-01-01", "2025-01-16")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert failed <= {"churn_model", "first_purchase_model"} and failure.step_key in failed
    reason = failure.event_specific_data.error.to_string()
    assert "split needs more days" in reason or "need rows of both classes" in reason
    # the other assets of the run still materialized
    assert {"player_features", "churn_training_set"} <= {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }


def test_definitions_use_the_given_home_even_when_the_environment_names_another(small_lake, monkeypatch):

    monkeypatch.setenv("ML_ASSETS_HOME", "/somewhere/else")
    defs = build_definitions(small_lake)
    assert defs.resources["lake"].home == str(small_lake.home)


BEHAVIOUR_SETTINGS = """
[features]
families = ["values", "gaps", "sessions", "window_ratios", "per_type"]
behaviour_types = 2

[models.churn]
label = "rolling"
horizon_days = 14
tuning_trials = 0
"""


def test_behaviour_features_flow_from_training_to_scoring_drift_and_the_experiment(tmp_path, instance):
    settings = make_lake(tmp_path / "home", settings=BEHAVIOUR_SETTINGS)
    result = run_graph(settings, instance, FIRST, LAST)
    assert result.success, check_results(result)
    training = read_table(settings, "churn_training_set")
    behaviour = [c for c in training.columns if c.startswith("bh_")]
    assert "bh_gap_median_h" in behaviour and "bh_events_ratio_7d_28d" in behaviour
    assert not any("tenure" in c or "share_" in c for c in behaviour)  # families not listed stay out
    meta = result.asset_materializations_for_node("churn_model")[0].metadata
    assert 0.5 < meta["test/roc_auc"].value <= 1.0
    # the served model reads behaviour columns; predictions and drift computed them from the events
    runs = list_runs(settings.lake_uri + "/experiments", "churn")
    kept = json.loads(runs["features"][0])
    selection = json.loads(runs["selection"][0])
    assert set(kept) == set(selection["kept"]) and set(kept) < set(selection["candidates"])
    assert any(f.startswith("bh_") for f in selection["candidates"])
    assert json.loads(runs["tuning"][0])["trials"] == 0
    predictions = read_table(settings, "churn_predictions")
    assert predictions.height and predictions["probability"].is_between(0, 1).all()
    drift = read_table(settings, "churn_feature_drift")
    used = {f for f in kept if f.startswith("bh_")}
    assert used and used <= set(drift["feature"])
