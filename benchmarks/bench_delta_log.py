"""Table open time after many small commits, without and with the checkpoints maintenance writes.

One Delta table receives 1,000 one-row commits (a rerun or a late batch is a commit). Opening it
replays the log from the newest checkpoint. delta-rs writes one every 100 commits by itself (its
post-commit hook), and `ml-assets maintain` / the daily lake_maintenance job adds one per run, so
the open time must stay flat. Figures are the median of 5 opens at 10, 100 and 1,000 commits, and
after an explicit checkpoint. Last run: 8.7, 10.2 and 8.9 ms; 8.9 ms checkpointed.

    .venv/bin/python benchmarks/bench_delta_log.py          # ~1 min on 2 cores
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, write_results

COMMITS = 1_000
MARKS = (10, 100, 1_000)


def open_ms(uri: str) -> float:
    """Median milliseconds to open the table and read its version, over 5 opens."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        DeltaTable(uri).version()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"{tmp}/t"
        for i in range(1, COMMITS + 1):
            write_deltalake(uri, pl.DataFrame({"i": [i]}).to_arrow(), mode="append")
            if i in MARKS:
                figures[f"{i} commits"] = open_ms(uri)
        DeltaTable(uri).create_checkpoint()
        figures[f"{COMMITS} commits, checkpointed"] = open_ms(uri)
    for name, ms in figures.items():
        rows.append([name, f"{ms:.1f} ms"])
    ratio = figures[f"{COMMITS} commits"] / figures[f"{COMMITS} commits, checkpointed"]
    rows.append(["without / with checkpoint at 1,000", f"{ratio:.1f}x"])
    table = markdown_table(["table", "open time (median of 5)"], rows)
    print(table)
    paths = write_results("delta_log", {"machine": machine(), "open_ms": figures, "ratio": ratio}, table)
    print(f"saved {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
