"""Sensors, schedules and alerts through Dagster's own evaluation: new files start the pipeline,
schedules target the right work, everything is defined running, failed checks reach a webhook."""

import json
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl

from ml_assets.core.events.landing import write_batch
from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions
from ml_assets.defs import partitions
from ml_assets.defs.resources import LakeResource
from ml_assets_tests.conftest import make_lake, run_graph


def test_every_sensor_and_schedule_is_defined_running(small_lake):
    defs = build_definitions(small_lake)
    assert {s.name for s in defs.sensors} >= {
        "churn_drift_sensor",
        "churn_degradation_sensor",
        "new_landing_batches_sensor",
        "failed_check_alert_sensor",
        "default_automation_condition_sensor",
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)
    assert {s.name for s in defs.schedules} == {
        "daily_refresh",
        "weekly_retrain",
        "lake_maintenance_schedule",
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules)


def test_how_often_sensors_run_comes_from_settings(small_lake):
    defaults = {s.name: s.minimum_interval_seconds for s in build_definitions(small_lake).sensors}
    assert defaults["new_landing_batches_sensor"] == 60 and defaults["churn_drift_sensor"] == 600
    (small_lake.home / "ml_assets.toml").write_text(
        "[automation]\nlanding_sensor_seconds = 15\nmonitoring_sensor_seconds = 30\n"
        "alert_sensor_seconds = 45\n"
    )
    sensors = {
        s.name: s.minimum_interval_seconds for s in build_definitions(load_settings(small_lake.home)).sensors
    }
    assert sensors["new_landing_batches_sensor"] == 15
    assert sensors["churn_drift_sensor"] == sensors["first_purchase_degradation_sensor"] == 30
    assert sensors["failed_check_alert_sensor"] == 45


def test_new_batches_start_the_partitioned_graph_over_their_days(small_lake, instance):
    defs = build_definitions(small_lake)
    sensor = defs.get_sensor_def("new_landing_batches_sensor")
    lake = {"lake": LakeResource(home=str(small_lake.home))}
    first = sensor(dg.build_sensor_context(instance=instance, resources=lake))
    # the first tick records what had already landed as history: opening the UI re-runs nothing
    assert not first.run_requests and "baseline" in first.skip_reason.skip_message
    quiet = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=lake))
    assert isinstance(quiet, dg.SkipReason)
    late = pl.DataFrame(
        {"event_id": ["late"], "player_id": ["p0000001"], "event_type": ["purchase"], "value": [1.0]}
    ).with_columns(
        event_time=pl.lit("2025-01-20T10:00:00").str.to_datetime(time_zone="UTC"),
        received_date=pl.lit(date(2025, 1, 21)),
    )
    write_batch(small_lake.landing_uri, late, "late-batch", "late.csv")
    result = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=lake))
    (request,) = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2025-01-20"
    assert request.tags["dagster/asset_partition_range_end"] == "2025-01-20"
    assert dg.AssetKey("churn_predictions") in request.asset_selection
    assert request.tags["ml_assets/trigger"] == "new_files"


def _batch(day: str, event_id: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"event_id": [event_id], "player_id": ["p0000001"], "event_type": ["purchase"], "value": [1.0]}
    ).with_columns(
        event_time=pl.lit(f"{day}T10:00:00").str.to_datetime(time_zone="UTC"),
        received_date=pl.lit(date.fromisoformat(day)),
    )


def _tick(defs, settings, instance, cursor):
    sensor = defs.get_sensor_def("new_landing_batches_sensor")
    lake = {"lake": LakeResource(home=str(settings.home))}
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=lake))


def test_an_archive_lake_keeps_days_past_its_end_until_they_are_partitions(small_lake, instance):
    # a 2025 lake is an archive: its partitions end at the newest landed day, 2025-02-14
    loaded = build_definitions(small_lake)
    baseline = _tick(loaded, small_lake, instance, None)
    write_batch(small_lake.landing_uri, _batch("2025-02-16", "after"), "after-end", "after.csv")
    waiting = _tick(loaded, small_lake, instance, baseline.cursor)
    assert not waiting.run_requests and "1 landed days wait" in waiting.skip_reason.skip_message
    assert json.loads(waiting.cursor)["pending"] == ["2025-02-16"]
    # the next code load (the daemon reloads the location) sees the widened window: requested once
    reloaded_defs = build_definitions(load_settings(small_lake.home))
    reloaded = _tick(reloaded_defs, small_lake, instance, waiting.cursor)
    (request,) = reloaded.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2025-02-16"
    assert request.tags["dagster/asset_partition_range_end"] == "2025-02-16"
    assert json.loads(reloaded.cursor)["pending"] == []
    assert isinstance(_tick(reloaded_defs, small_lake, instance, reloaded.cursor), dg.SkipReason)


def test_a_live_lake_grows_a_partition_each_midnight_without_a_reload(tmp_path, instance, monkeypatch):
    settings = make_lake(tmp_path / "live", players=60, days=20)
    (settings.home / "ml_assets.toml").write_text('[partitions]\nmode = "live"\n')
    settings = load_settings(settings.home)
    clock = {"now": datetime(2025, 1, 21, 12, tzinfo=UTC)}
    monkeypatch.setattr(partitions, "utc_now", lambda: clock["now"])
    defs = build_definitions(settings)  # loaded once: no reload below
    sensor = defs.get_sensor_def("new_landing_batches_sensor")
    lake = {"lake": LakeResource(home=str(settings.home))}

    def tick(cursor):
        return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=lake))

    baseline = tick(None)
    write_batch(settings.landing_uri, _batch("2025-01-21", "today"), "today", "today.csv")
    today = tick(baseline.cursor)  # 2025-01-21 is still going on: not a partition yet
    assert not today.run_requests and json.loads(today.cursor)["pending"] == ["2025-01-21"]
    clock["now"] = datetime(2025, 1, 22, 0, 5, tzinfo=UTC)
    (request,) = tick(today.cursor).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2025-01-21"
    # the daily schedule refreshes the day before its tick, once (its run key names the day)
    daily = defs.get_schedule_def("daily_refresh")
    tick_time = datetime(2025, 1, 22, 3, tzinfo=UTC)
    context = dg.build_schedule_context(
        scheduled_execution_time=tick_time, repository_def=defs.get_repository_def()
    )
    (refresh,) = daily.evaluate_tick(context).run_requests
    assert (refresh.partition_key, refresh.run_key) == ("2025-01-21", "daily-2025-01-21")


def test_schedules_refresh_the_newest_day_and_retrain_weekly(small_lake):
    defs = build_definitions(small_lake)
    daily = defs.get_schedule_def("daily_refresh")
    repository = defs.get_repository_def()
    at = datetime(2025, 2, 15, 3, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=at, repository_def=repository)
    (request,) = daily.evaluate_tick(context).run_requests
    assert request.partition_key == "2025-02-14"
    # an archive lake has no partition for later ticks: skipped with the reason, not failed
    later = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 3, 1, 3, tzinfo=UTC))
    skipped = daily.evaluate_tick(later)
    assert not skipped.run_requests and "not a partition" in skipped.skip_message
    weekly = defs.get_schedule_def("weekly_retrain")
    job = defs.resolve_job_def(weekly.job_name)
    selection = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    models = ("churn", "first_purchase")
    assert selection == {f"{m}_{p}" for m in models for p in ("training_set", "model", "production_model")}


def test_failed_checks_reach_the_webhook(tmp_path, receiver, monkeypatch):
    """On Dagster's default SQLite instance (a run-sharded event log), as a user runs it."""
    import ml_assets.defs.features as feature_assets

    url, received = receiver
    settings = make_lake(tmp_path / "h", players=150, days=30)
    (settings.home / "ml_assets.toml").write_text(
        (settings.home / "ml_assets.toml").read_text() + f'\n[alerts]\nwebhook_url = "{url}"\n'
    )
    settings = load_settings(settings.home)
    real = feature_assets.features_from_state

    def broken(*args, **kwargs):
        for piece in real(*args, **kwargs):
            yield piece.with_columns(events_7d=pl.lit(-1, pl.Int32))

    monkeypatch.setattr(feature_assets, "features_from_state", broken)
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
    assert "Sqlite" in type(instance.event_log_storage).__name__
    run_graph(
        settings,
        instance,
        "2025-01-01",
        "2025-01-30",
        ["raw_events", "clean_events", "event_type_counts", "player_state", "player_features"],
    )
    defs = build_definitions(settings)
    sensor = defs.get_sensor_def("failed_check_alert_sensor")
    lake = {"lake": LakeResource(home=str(settings.home))}
    repository = defs.get_repository_def()
    result = sensor(dg.build_sensor_context(instance=instance, resources=lake, repository_def=repository))
    titles = [r["title"] for r in received]
    assert "check schema failed on player_features" in titles
    assert all(r["kind"] == "check_failed" for r in received)
    again = sensor(
        dg.build_sensor_context(
            instance=instance, cursor=result.cursor, resources=lake, repository_def=repository
        )
    )
    assert not again.run_requests and len(received) == len(titles)  # each failure is sent once
    assert "no new failed checks" in again.skip_reason.skip_message
