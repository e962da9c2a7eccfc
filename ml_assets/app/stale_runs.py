"""Runs whose process died: Dagster keeps them STARTED for ever; each command start marks them failed.

A run killed with its process (kill -9, a crash, a reboot) never reports its end. Dagster's run
monitoring would notice for run launchers that can check their workers, which the default launcher
cannot, and never for runs executed in the CLI's own process. So every `ml-assets` command first
looks at the runs still marked in progress that ran on this machine, and marks failed those whose
process is gone: in-process runs carry their pid in a tag, daemon runs in their first engine event.
"""

from __future__ import annotations

import os
import socket

import dagster as dg
from dagster._core.events import DagsterEventType

PID_TAG = "ml_assets/pid"
HOST_TAG = "ml_assets/host"
_IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run here (for in-process runs)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the process executing `run`: its tag, else the run worker's engine event."""
    if PID_TAG in run.tags:
        return int(run.tags[PID_TAG])
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        data = event.engine_event_data if event else None
        pid = data.metadata.get("pid") if data else None
        if pid is not None:
            return int(pid.value)  # type: ignore[arg-type]
    return None


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every in-progress run of this machine whose process no longer exists; their ids."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS)):
        if run.tags.get(HOST_TAG, host) != host:
            continue
        pid = _run_pid(instance, run)
        if pid is None or _alive(pid):
            continue
        instance.report_run_failed(
            run, f"the process that ran it (pid {pid}) is gone: killed or crashed; rerun its days"
        )
        failed.append(run.run_id)
    return failed
