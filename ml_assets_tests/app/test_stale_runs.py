"""A run killed with its process is marked failed at the next command; its lake stays readable and a
rerun converges to the counts of a run that was never killed."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

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


TABLES = ("raw_events", "clean_events", "quarantined_events", "player_features")
SELECT = "raw_events,clean_events,event_type_counts,player_state,player_features"
SIMULATE = ["simulate", "--players", "300", "--days", "20", "--seed", "3"]


def _counts(home: Path) -> dict[str, int]:
    out = {}
    for table in TABLES:
        path = home / "lake" / table
        out[table] = pl.read_delta(str(path)).height if (path / "_delta_log").exists() else 0
    return out


@pytest.fixture(scope="module")
def never_killed(tmp_path_factory) -> dict[str, int]:
    home = tmp_path_factory.mktemp("never_killed") / "h"
    assert main(["--home", str(home), *SIMULATE]) == 0
    assert main(["--home", str(home), "materialize", "--select", SELECT]) == 0
    counts = _counts(home)
    assert counts["raw_events"] == counts["clean_events"] + counts["quarantined_events"]
    return counts


# kill -9 points: at a step's start (the one before committed, this one not begun), and a fraction
# of a second into a step (in the middle of its reads, pieces or commits)
KILL_POINTS = [("[start] cleaned", 0.0), ("[start] cleaned", 0.4), ("[start] player_features", 0.3)]


@pytest.mark.parametrize(("marker", "delay_s"), KILL_POINTS)
def test_kill_9_mid_run_then_status_and_a_rerun_converge(tmp_path, capsys, never_killed, marker, delay_s):
    killed = tmp_path / "killed"
    assert main(["--home", str(killed), *SIMULATE]) == 0
    env = {**os.environ, HOME_ENV: str(killed)}
    script = Path(sys.executable).with_name("ml-assets")
    proc = subprocess.Popen(
        [str(script), "--home", str(killed), "materialize", "--select", SELECT],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if marker in line:
            break
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    capsys.readouterr()

    assert main(["--home", str(killed), "status"]) == 0
    assert "left in progress by a dead process: marked failed" in capsys.readouterr().err
    instance = dg.DagsterInstance.from_config(str(killed / "dagster"))
    assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.FAILURE]
    _counts(killed)  # every committed table opens
    assert main(["--home", str(killed), "materialize", "--select", SELECT]) == 0
    assert _counts(killed) == never_killed
