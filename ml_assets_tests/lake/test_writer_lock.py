"""One writer per lake: a second writer waits for the first, or gives up with one line naming it."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml_assets.app.cli import main
from ml_assets.lake import writer_lock
from ml_assets.lake.io_manager import DeltaLakeIOManager

HOLD = (
    "import sys, time; from pathlib import Path; from ml_assets.lake import writer_lock;"
    "writer_lock.acquire(Path(sys.argv[1]), 0, 'the test holder'); print('held', flush=True); time.sleep(120)"
)


def _holder(lock: Path) -> subprocess.Popen[str]:
    """Another process holding the lock (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_waits_then_gives_up_naming_the_holder(tmp_path):
    lock = tmp_path / "writer.lock"
    proc = _holder(lock)
    try:
        started = time.monotonic()
        with pytest.raises(writer_lock.LakeBusy, match=rf"pid {proc.pid} \(the test holder\)"):
            writer_lock.acquire(lock, 0.5, "second")
        assert time.monotonic() - started >= 0.5
    finally:
        proc.kill()
        proc.wait()
    # a killed holder leaves nothing locked: the kernel drops flock locks with the process
    writer_lock.acquire(lock, 0, "after the kill")
    writer_lock.acquire(lock, 0, "re-entrant")  # the same process may hold it twice
    writer_lock.release(lock)
    writer_lock.release(lock)


def test_a_waiting_writer_proceeds_when_the_holder_finishes(tmp_path):
    lock = tmp_path / "writer.lock"
    proc = _holder(lock)
    threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGTERM)).start()
    try:
        writer_lock.acquire(lock, 30, "waiter")
        writer_lock.release(lock)
    finally:
        proc.wait()


def test_a_run_and_a_cli_materialize_refuse_while_another_process_writes(tmp_path, capsys):
    home = tmp_path / "h"
    assert main(["--home", str(home), "simulate", "--players", "20", "--days", "3"]) == 0
    (home / "ml_assets.toml").write_text("[lake]\nwriter_wait_seconds = 0\n")
    capsys.readouterr()
    proc = _holder(home / "writer.lock")
    try:
        assert main(["--home", str(home), "materialize", "--select", "raw_events"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("ml-assets materialize: error: the lake is being written by pid")
        assert "(the test holder)" in err

        # a run launched any other way (the daemon, the UI) takes the lock in its IO manager
        @dg.asset
        def table() -> pl.DataFrame:
            return pl.DataFrame({"x": [1]})

        io = DeltaLakeIOManager(
            root_uri=str(tmp_path / "lake"), writer_lock=str(home / "writer.lock"), writer_wait_seconds=0
        )
        with pytest.raises(dg.DagsterResourceFunctionError) as failed:
            dg.materialize([table], resources={"io_manager": io})
        assert isinstance(failed.value.__cause__, writer_lock.LakeBusy)
    finally:
        proc.kill()
        proc.wait()
    assert main(["--home", str(home), "materialize", "--select", "raw_events"]) == 0
