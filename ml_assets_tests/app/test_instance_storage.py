"""The home's event log storage: Dagster's SQLite files, written through pooled connections, readable
by Dagster's own class, with a bounded number of run shards kept open."""

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from ml_assets.app import instance_storage
from ml_assets.app.instance_config import event_log_config, write_instance_config
from ml_assets.app.instance_storage import PooledSqliteEventLogStorage
from ml_assets.core.settings import load_settings

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def daily(context: dg.AssetExecutionContext) -> dg.Output[None]:
    return dg.Output(None, metadata={"days": len(context.partition_keys)})


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ML_ASSETS_HOME", str(tmp_path))
    settings = load_settings(tmp_path)
    write_instance_config(settings)
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    return settings.dagster_home


def _range_tags() -> dict[str, str]:
    keys = DAYS.get_partition_keys()
    return {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}


def _range_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    keys = DAYS.get_partition_keys()
    return dg.materialize(
        [daily],
        instance=instance,
        resources={"io_manager": dg.mem_io_manager},
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )


def test_a_new_home_uses_the_pooled_storage_and_dagsters_class_reads_what_it_wrote(dagster_home):
    assert event_log_config(dagster_home) in (dagster_home / "dagster.yaml").read_text()
    # opened from its folder, without $DAGSTER_HOME, the instance still uses the home's own files
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.event_log_storage._base_dir == os.path.join(dagster_home, "history", "runs")
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.event_log_storage._base_dir == os.path.join(dagster_home, "history", "runs")
        result = _range_run(instance)
        assert result.success
        run_id = result.run_id
        written = instance.all_logs(run_id)

    plain = SqliteEventLogStorage(str(dagster_home / "history" / "runs"))
    materialized = plain.get_materialized_partitions(dg.AssetKey("daily"))
    assert materialized == set(DAYS.get_partition_keys())
    assert [e.message for e in plain.get_logs_for_run(run_id)] == [e.message for e in written]
    assert len(result.get_asset_materialization_events()) == len(DAYS.get_partition_keys())
    plain.dispose()


def test_run_shards_kept_open_are_bounded_and_each_run_reads_back(dagster_home, monkeypatch):
    monkeypatch.setattr(instance_storage, "OPEN_RUN_SHARDS", 2)
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        run_ids = [_range_run(instance).run_id for _ in range(4)]
        open_runs = [shard for shard in storage._engines if shard != instance_storage.INDEX_SHARD]
        assert len(open_runs) <= 2
        # a run whose engine was let go opens again and reads its events
        assert all(storage.get_logs_for_run(run_id) for run_id in run_ids)
        materialized = storage.get_materialized_partitions(dg.AssetKey("daily"))
        assert materialized == set(DAYS.get_partition_keys())


def test_connections_sync_at_checkpoints_and_new_run_files_are_wal(dagster_home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        run_id = _range_run(instance).run_id
        for shard in (instance_storage.INDEX_SHARD, run_id):
            with storage._connect(shard) as conn:
                # 1 = NORMAL: commits are not synced to disk one by one (2 = FULL, SQLite's default)
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        # the setting is per connection; the journal mode is the file's own, as Dagster's class reads it
        with sqlite3.connect(Path(storage._base_dir) / f"{run_id}.db") as plain:
            assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert plain.execute("PRAGMA synchronous").fetchone() == (2,)


def test_existing_homes_get_the_storage_unless_they_configure_their_own(tmp_path):
    settings = load_settings(tmp_path)
    config = settings.dagster_home / "dagster.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("telemetry:\n  enabled: false\n")
    write_instance_config(settings)
    assert event_log_config(settings.dagster_home) in config.read_text()
    # a moved home: the block follows it, once
    config.write_text(config.read_text().replace(str(tmp_path), "/elsewhere"))
    write_instance_config(settings)
    assert config.read_text().count("event_log_storage:") == 1
    assert event_log_config(settings.dagster_home) in config.read_text()

    own = "storage:\n  postgres:\n    postgres_url: postgresql://x\n"
    config.write_text(own)
    write_instance_config(settings)
    assert "event_log_storage" not in config.read_text()
    assert config.read_text().startswith(own)


def test_a_range_runs_asset_events_are_stored_as_one_batch_with_the_same_index(dagster_home, monkeypatch):
    monkeypatch.delenv(instance_storage.BATCH_SIZE_VARIABLE, raising=False)
    batches: list[tuple[str, int]] = []
    store_batch = PooledSqliteEventLogStorage.store_event_batch

    def counted(self, events):
        batches.append((events[0].dagster_event_type.value, len(events)))
        store_batch(self, events)

    monkeypatch.setattr(PooledSqliteEventLogStorage, "store_event_batch", counted)
    days = DAYS.get_partition_keys()
    with dg.DagsterInstance.get() as instance:
        assert os.environ[instance_storage.BATCH_SIZE_VARIABLE] == instance_storage.EVENT_BATCH_SIZE
        result = _range_run(instance)
        assert result.success
        # the run's planned and its done materializations of every day, each in one batch, indexed
        # as one by one: per partition, the latest, the partition status
        assert batches == [("ASSET_MATERIALIZATION_PLANNED", len(days)), ("ASSET_MATERIALIZATION", len(days))]
        records = instance.fetch_materializations(dg.AssetKey("daily"), limit=1000).records
        assert sorted(r.partition_key for r in records) == days
        latest = instance.get_latest_materialization_event(dg.AssetKey("daily"))
        assert latest is not None and latest.asset_materialization.partition == days[-1]
        status = instance.get_status_by_partition(dg.AssetKey("daily"), days, DAYS)
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}


@dg.asset(
    partitions_def=DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("complete", asset="checked_daily")],
)
def checked_daily() -> Iterator[dg.Output | dg.AssetCheckResult]:
    yield dg.Output(None)
    yield dg.AssetCheckResult(check_name="complete", passed=True)


def test_a_range_runs_planned_check_has_one_row_per_day(dagster_home):
    days = DAYS.get_partition_keys()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [checked_daily],
            instance=instance,
            resources={"io_manager": dg.mem_io_manager},
            tags={
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[-1],
            },
        )
        assert result.success
        key = dg.AssetCheckKey(dg.AssetKey("checked_daily"), "complete")
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)
    planned = [r for r in history if r.status.value == "PLANNED"]
    assert sorted(str(r.partition) for r in planned) == days
    assert all(r.run_id == result.run_id and r.event is not None for r in planned)
