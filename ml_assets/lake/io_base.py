"""The base of the lake's IO managers: a run that writes the lake holds its writer lock throughout."""

from pathlib import Path

import dagster as dg

from ml_assets.lake import writer_lock


class LakeWriterIOManager(dg.ConfigurableIOManager):
    """Takes the lake's writer lock (`writer_lock.py`) when a run starts, gives it back at its end.

    `writer_lock` empty: no lock (an IO manager built by hand, as in unit tests).
    """

    writer_lock: str = ""
    writer_wait_seconds: float = 600.0

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.writer_lock:
            run = context.run_id or "a run"
            writer_lock.acquire(Path(self.writer_lock), self.writer_wait_seconds, f"dagster run {run}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self.writer_lock:
            writer_lock.release(Path(self.writer_lock))
