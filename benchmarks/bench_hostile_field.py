"""Peak memory of the event steps with and without one hostile row: a 1 MB event type.

Two lakes of the same simulated game (2,000 players, 30 days); the second also lands one event
whose event_type is 1,000,000 characters. Each materializes raw_events, clean_events and
player_features in a fresh child process that reports its own peak RSS; the figure is the
difference between the two, run side by side on the same machine. Cleaning quarantines the row
(field_too_long), so the features never see it.

    .venv/bin/python benchmarks/bench_hostile_field.py            # ~1 min on 2 cores
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, machine, markdown_table, run_child, write_results

FIELD_CHARS = 1_000_000
SELECT = ["raw_events", "clean_events", "event_type_counts", "player_state", "player_features"]
CHILD = """
import json, resource, sys
from ml_assets.app.runner import instance_for, materialize
from ml_assets.core.settings import load_settings
settings = load_settings(sys.argv[1])
summary = materialize(settings, instance_for(settings), {select})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"success": summary.success, "peak_rss_bytes": peak}}))
"""


def lake(home: Path, hostile: bool) -> None:
    """A simulated lake; with `hostile`, one more batch holding a 1 MB event type."""
    import polars as pl

    from ml_assets.core.events.landing import write_batch
    from ml_assets.simulator.game import SimulationParams, simulate

    simulate(home / "landing", SimulationParams(players=2000, days=30, start=date(2025, 1, 1), seed=7))
    if hostile:
        row = pl.DataFrame(
            {
                "event_id": ["hostile-1"],
                "player_id": ["p-hostile"],
                "event_time": [datetime(2025, 1, 20, 12, tzinfo=UTC)],
                "event_type": ["x" * FIELD_CHARS],
                "received_date": [date(2025, 1, 20)],
            }
        )
        write_batch(home / "landing", row, "hostile-field", "bench_hostile_field")


def main() -> None:
    rows, result = [], {"machine": machine(), "field_chars": FIELD_CHARS, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, hostile in (("baseline", False), ("1 MB event_type", True)):
            home = Path(tmp) / name.replace(" ", "_")
            lake(home, hostile)
            log(f"materializing {', '.join(SELECT)} on the {name} lake")
            child = run_child(["-c", CHILD.format(select=SELECT), str(home)])
            assert child["success"], child
            result["runs"][name] = child
            rows.append([name, f"{child['peak_rss_bytes'] / 2**20:,.0f} MB"])
    base = result["runs"]["baseline"]["peak_rss_bytes"]
    hostile = result["runs"]["1 MB event_type"]["peak_rss_bytes"]
    result["extra_peak_mb"] = (hostile - base) / 2**20
    result["ratio"] = hostile / base
    rows.append(["difference", f"{result['extra_peak_mb']:+,.0f} MB ({result['ratio']:.2f}x)"])
    table = markdown_table(["lake", "peak RSS of raw, clean and features"], rows)
    print(table)
    paths = write_results("hostile_field", result, table)
    print(f"saved {', '.join(str(p) for p in paths)}")
    print(json.dumps({"extra_peak_mb": round(result["extra_peak_mb"], 1)}))


if __name__ == "__main__":
    main()
