"""The home's dagster.yaml from `[instance]`: SQLite by default as before, PostgreSQL on request (a
real server, ml_assets_tests/pg.py), the run queue's limit, and one-line errors."""

import importlib.util
import json

import dagster as dg
import pytest
from dagster._core.run_coordinator import QueuedRunCoordinator

from ml_assets.app import instance_config
from ml_assets.app.cli import main
from ml_assets.app.instance_config import event_log_config, write_instance_config
from ml_assets.app.postgres_storage import with_psycopg2
from ml_assets.core.config import SettingsError
from ml_assets.core.settings import POSTGRES_URL_ENV, load_settings
from ml_assets_tests.pg import PASSWORD

POSTGRES = '[instance]\nstorage = "postgres"\n'


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    # the CLI exports its home and instance to the environment for child processes; undo that after
    for name in ("DAGSTER_HOME", "ML_ASSETS_HOME", "ML_ASSETS_CONFIG", POSTGRES_URL_ENV):
        monkeypatch.delenv(name, raising=False)


def _settings(home, toml: str = ""):
    home.mkdir(parents=True, exist_ok=True)
    (home / "ml_assets.toml").write_text(toml)
    return load_settings(home)


def test_a_new_home_is_sqlite_with_one_run_at_a_time_as_before(tmp_path):
    settings = _settings(tmp_path / "home")
    config = write_instance_config(settings)
    assert config.read_text() == (
        "telemetry:\n  enabled: false\n"
        "concurrency:\n  runs:\n    max_concurrent_runs: 1\n" + event_log_config(settings.dagster_home)
    )


def test_postgres_from_the_environment_keeps_the_password_out_of_the_file(
    tmp_path, postgres_url, monkeypatch
):
    monkeypatch.setenv(POSTGRES_URL_ENV, postgres_url)
    settings = _settings(tmp_path / "home", POSTGRES + "max_concurrent_runs = 3\n")
    text = write_instance_config(settings).read_text()
    assert PASSWORD not in text and "event_log_storage" not in text
    assert f"      postgres_url:\n        env: {POSTGRES_URL_ENV}\n" in text
    assert "max_concurrent_runs: 3\n" in text
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        # the daemon's queue reads its limit from the instance's concurrency config
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 3


def test_postgres_url_in_the_settings_is_written_as_given(tmp_path):
    url = "postgresql://dagster:pw@db.internal:5432/dagster"
    settings = _settings(tmp_path / "home", POSTGRES + f'postgres_url = "{url}"\n')
    assert f"      postgres_url: {json.dumps(url)}\n" in write_instance_config(settings).read_text()


def test_a_url_without_a_driver_gets_psycopg2_the_one_dagster_postgres_installs():
    # SQLAlchemy 2.1 would open these with psycopg 3, on which dagster-postgres fails its first event
    assert with_psycopg2("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    assert with_psycopg2("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert with_psycopg2("postgresql+pg8000://u@h/d") == "postgresql+pg8000://u@h/d"


def test_switching_storage_replaces_our_block_and_keeps_the_users_own(tmp_path, monkeypatch):
    home = tmp_path / "home"
    sqlite = _settings(home)
    config = write_instance_config(sqlite)
    monkeypatch.setenv(POSTGRES_URL_ENV, "postgresql://u:p@127.0.0.1:1/x")
    postgres = _settings(home, POSTGRES + "max_concurrent_runs = 2\n")
    write_instance_config(postgres)
    text = config.read_text()
    assert "event_log_storage" not in text and text.count("storage:") == 1
    assert "max_concurrent_runs: 2\n" in text and text.count("max_concurrent_runs") == 1
    write_instance_config(_settings(home))  # back to SQLite: the limit set last stays
    assert config.read_text() == (
        "telemetry:\n  enabled: false\n"
        "concurrency:\n  runs:\n    max_concurrent_runs: 2\n" + event_log_config(sqlite.dagster_home)
    )
    # a file with storage of its own: kept for SQLite, refused for PostgreSQL (it would be ignored)
    own = "run_storage:\n  module: dagster._core.storage.runs\n  class: SqliteRunStorage\n"
    config.write_text(own)
    with pytest.raises(SettingsError, match="configures its own storage"):
        write_instance_config(postgres)
    config.write_text("run_queue:\n  max_concurrent_runs: 4\n")
    with pytest.raises(SettingsError, match="limits runs its own way"):
        write_instance_config(postgres)


def test_postgres_without_a_url_or_the_package_fails_in_one_line(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    _settings(home, POSTGRES)
    assert main(["--home", str(home), "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and POSTGRES_URL_ENV in err, err
    monkeypatch.setenv(POSTGRES_URL_ENV, "postgresql://u:p@127.0.0.1:1/x")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        instance_config.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "dagster_postgres" else find_spec(name, *a),
    )
    assert main(["--home", str(home), "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install -e '.[postgres]'" in err, err
    assert not (home / "dagster" / "dagster.yaml").exists()


def test_a_cli_run_is_recorded_on_postgres(tmp_path, postgres_url, monkeypatch, capsys):
    monkeypatch.setenv(POSTGRES_URL_ENV, postgres_url)
    home = tmp_path / "home"
    _settings(home, POSTGRES)
    assert main(["--home", str(home), "simulate", "--players", "100", "--days", "10"]) == 0
    assert main(["--home", str(home), "materialize", "--select", "raw_events"]) == 0
    capsys.readouterr()
    assert main(["--home", str(home), "status", "--json"]) == 0
    tables = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert tables["raw_events"]["partitions"] == 10
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "all_assets"
        materialized = instance.get_materialized_partitions(dg.AssetKey("raw_events"))
        assert len(materialized) == 10
    # nothing went to SQLite: Dagster's SQLite storage would have made <home>/dagster/history
    assert not (home / "dagster" / "history").exists()
