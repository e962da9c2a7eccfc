"""One writer per lake: an exclusive lock on a file in the lake home, held for the length of a run.

Two runs writing one Delta table at once make one of them fail its commit, and two runs writing
clean and quarantined events in turn can interleave. Every run that writes the lake (a CLI run, a
run the daemon launches, a UI launch) takes this lock first; a second one waits up to
`[lake] writer_wait_seconds`, then gives up with one line naming the holder.

The lock is `flock(2)` on `<home>/writer.lock`: the kernel drops it when its process dies, so a
killed run never leaves the lake locked. It is re-entrant within a process (a CLI run takes it,
then the run's IO managers take it again). It guards one home's writers. Writers on other machines
sharing a lake on an object store are kept apart by Delta itself: each commit is a conditional put,
so a commit is never lost; a run that conflicts with another's commit fails and says so.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

_POLL_S = 0.2
_guard = threading.Lock()
_held: dict[str, list[int]] = {}  # lock path -> [file descriptor, holds by this process]


class LakeBusy(BlockingIOError):
    """Another process is writing the lake and did not finish within the wait."""

    def __init__(self, holder: str, wait_s: float) -> None:
        super().__init__(
            f"the lake is being written by {holder}; waited {wait_s:g} s ([lake] writer_wait_seconds)"
        )
        self.holder = holder


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 500).decode(errors="replace").strip()
    return text or "another process"


def acquire(path: Path, wait_s: float, what: str) -> None:
    """Hold the lock at `path` (re-entrant in this process); LakeBusy after `wait_s` seconds."""
    key = str(path)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    raise LakeBusy(holder, wait_s) from None
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} ({what}) since {since}".encode(), 0)
        _held[key] = [fd, 1]


def release(path: Path) -> None:
    """Give back one hold of the lock at `path`; the last one unlocks it."""
    key = str(path)
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.ftruncate(entry[0], 0)
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])


@contextmanager
def holding(path: Path, wait_s: float, what: str) -> Iterator[None]:
    """The lock at `path` for the length of a `with` block."""
    acquire(path, wait_s, what)
    try:
        yield
    finally:
        release(path)
