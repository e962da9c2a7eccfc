"""A run killed with its process is marked failed at the next command; its lake stays readable and a
rerun converges to the counts of a run that was never killed."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl

from ml_assets.app.cli import main
from ml_assets.app.stale_runs import HOST_TAG, PID_TAG, fail_dead_runs
from ml_assets.core.settings import HOME_ENV

STARTED = dg.DagsterRunStatus.STARTED


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_runs_of_dead_processes_on_this_host_are_failed(tmp_path):
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    here = socket.gethostname()
    dead = dg.DagsterRun(
        job_name="j", run_id="dead", status=STARTED, tags={PID_TAG: str(_dead_pid()), HOST_TAG: here}
    )
    alive = dg.DagsterRun(
        job_name="j", run_id="alive", status=STARTED, tags={PID_TAG: str(os.getpid()), HOST_TAG: here}
    )
    elsewhere = dg.DagsterRun(
        job_name="j",
        run_id="elsewhere",
        status=STARTED,
        tags={PID_TAG: str(_dead_pid()), HOST_TAG: "other-host"},
    )
    for run in (dead, alive, elsewhere):
        instance.add_run(run)
    assert fail_dead_runs(instance) == ["dead"]
    assert instance.get_run_by_id("dead").status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id("alive").status == STARTED
    assert instance.get_run_by_id("elsewhere").status == STARTED


def _counts(home: Path) -> dict[str, int]:
    return {
        t: pl.read_delta(str(home / "lake" / t)).height
        for t in ("raw_events", "clean_events", "quarantined_events")
    }


def test_kill_9_mid_run_then_status_and_a_rerun_converge(tmp_path, capsys):
    killed, clean = tmp_path / "killed", tmp_path / "never_killed"
    for home in (killed, clean):
        assert main(["--home", str(home), "simulate", "--players", "300", "--days", "20", "--seed", "3"]) == 0
    assert main(["--home", str(clean), "materialize", "--select", "raw_events,clean_events"]) == 0
    expected = _counts(clean)
    assert expected["raw_events"] == expected["clean_events"] + expected["quarantined_events"]

    env = {**os.environ, HOME_ENV: str(killed)}
    script = Path(sys.executable).with_name("ml-assets")
    proc = subprocess.Popen(
        [str(script), "--home", str(killed), "materialize"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    # kill as soon as clean events are being written: the run is in the middle of its graph
    for line in proc.stderr:
        if "[done ] cleaned" in line or "[start] player_features" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    capsys.readouterr()

    assert main(["--home", str(killed), "status"]) == 0
    assert "left in progress by a dead process: marked failed" in capsys.readouterr().err
    instance = dg.DagsterInstance.from_config(str(killed / "dagster"))
    assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.FAILURE]
    for table in ("raw_events", "clean_events", "quarantined_events"):
        pl.read_delta(str(killed / "lake" / table))  # every committed table opens
    assert main(["--home", str(killed), "materialize", "--select", "raw_events,clean_events"]) == 0
    assert _counts(killed) == expected
