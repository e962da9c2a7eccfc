"""Maintenance keeps the lake's size flat however often days are rerun, from the CLI and as a job."""

from pathlib import Path

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from ml_assets.app.cli import main
from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions

SELECT = ["--select", "raw_events,clean_events"]


def _bytes(folder: Path, data_only: bool = False) -> int:
    """Bytes under `folder`; with `data_only`, of the tables' data files (not their logs)."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files if not data_only or "_delta_log" not in f.parts)


def test_ten_reruns_then_maintenance_leave_the_lake_its_first_size(tmp_path, capsys):
    home = tmp_path / "h"
    assert main(["--home", str(home), "simulate", "--players", "150", "--days", "6"]) == 0
    (home / "ml_assets.toml").write_text("[lake]\nvacuum_retention_hours = 0\n")
    assert main(["--home", str(home), "materialize", *SELECT]) == 0
    first, first_data = _bytes(home / "lake"), _bytes(home / "lake", data_only=True)
    rows = pl.read_delta(str(home / "lake" / "clean_events")).height
    for _ in range(10):
        assert main(["--home", str(home), "materialize", *SELECT]) == 0
    grown = _bytes(home / "lake")
    assert grown > 5 * first  # each rerun left its files for time travel
    capsys.readouterr()
    assert main(["--home", str(home), "maintain"]) == 0
    assert "tables maintained" in capsys.readouterr().out
    after, after_data = _bytes(home / "lake"), _bytes(home / "lake", data_only=True)
    # the data files once again; the logs keep their commits (Delta's 30-day log retention) plus a
    # checkpoint, a few kB per rerun
    assert after_data < 1.1 * first_data, (first_data, after_data)
    assert after < grown / 3, (first, grown, after)
    table = DeltaTable(str(home / "lake" / "clean_events"))
    assert pl.read_delta(table).height == rows and len(table.file_uris()) <= 6


def test_the_lake_maintenance_job_runs_under_dagster_with_the_lock(tmp_path):
    home = tmp_path / "h"
    assert main(["--home", str(home), "simulate", "--players", "50", "--days", "3"]) == 0
    assert main(["--home", str(home), "materialize", *SELECT]) == 0
    settings = load_settings(home)
    defs = build_definitions(settings)
    assert defs.get_schedule_def("lake_maintenance_schedule").cron_schedule == "0 5 * * *"
    result = defs.resolve_job_def("lake_maintenance").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    assert (home / "lake" / "clean_events" / "_delta_log" / "_last_checkpoint").exists()


def test_a_never_committed_table_folder_is_ignored_then_written_over(tmp_path, capsys):
    """What a kill during a table's first commit leaves: data files and a half-written log entry."""
    home = tmp_path / "h"
    assert main(["--home", str(home), "simulate", "--players", "50", "--days", "3"]) == 0
    stray = home / "lake" / "clean_events"
    (stray / "_delta_log").mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(stray / "part-00000-stray.parquet")
    (stray / "_delta_log" / "_commit_0123.json.tmp").write_text("{")
    assert main(["--home", str(home), "status"]) == 0
    assert "clean_events         not materialized" in capsys.readouterr().out
    assert main(["--home", str(home), "materialize", *SELECT]) == 0
    assert pl.read_delta(str(stray)).columns[0] == "event_id"
