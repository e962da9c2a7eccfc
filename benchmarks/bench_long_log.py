"""What a long, thin log costs through the whole graph: many days, few events a day.

Two logs, each in a fresh process and lake home, materialized as `ml-assets materialize` does (one
run, every asset, every day) on the project's SQLite instance:
- `cdnow`: the real CDNOW purchase log shipped in examples/ (69,659 rows over 546 days);
- `sim480`: the simulator over 480 days at about 150k events.
Reported: the run's wall time, the sum of its steps' durations (STEP_SUCCESS events), the time
outside the steps (run creation, planning, events, the instance), and every step. Targets on 2
cores: sim480 through the graph in <= 30 s, time outside the steps <= 10% of the run.

    .venv/bin/python benchmarks/bench_long_log.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import step_timings
from common import fmt_s, log, machine, markdown_table, run_child, text_table, write_results

REPO = Path(__file__).resolve().parent.parent
LOGS = ("cdnow", "sim480")
TARGET_S, TARGET_OUTSIDE = 30.0, 0.10


def land(name: str, landing: Path) -> int:
    """Land log `name` in `landing`; the landed row count."""
    if name == "cdnow":
        from ml_assets.core.events.ingest import ingest

        example = REPO / "examples" / "cdnow"
        return ingest(example / "CDNOW_master.txt", example / "cdnow.toml", landing).rows
    from ml_assets.simulator.game import SimulationParams, simulate

    return simulate(landing, SimulationParams(players=50, days=480, seed=7, new_players_per_day=2)).rows


def worker(name: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"ml_assets_long_{name}_"))
    os.environ["ML_ASSETS_HOME"] = str(home)
    from ml_assets.app.runner import instance_for, materialize
    from ml_assets.core.settings import load_settings

    try:
        if name == "cdnow":
            shutil.copy(REPO / "examples" / "cdnow" / "ml_assets.toml", home / "ml_assets.toml")
        settings = load_settings(home)
        rows = land(name, settings.landing_uri)
        instance = instance_for(settings)
        started = time.perf_counter()
        summary = materialize(settings, instance)
        wall = time.perf_counter() - started
        steps = step_timings(instance, summary.run_id)
        in_steps = sum(s.get("duration_s", 0.0) for s in steps)
        import polars as pl

        clean = pl.scan_delta(f"{settings.lake_uri}/clean_events")
        days = clean.select(pl.col("event_date").n_unique()).collect().item()
        return {
            "log": name,
            "landed_rows": rows,
            "clean_events": clean.select(pl.len()).collect().item(),
            "days": days,
            "success": summary.success,
            "run_s": round(wall, 2),
            "steps_s": round(in_steps, 2),
            "outside_s": round(wall - in_steps, 2),
            "outside_share": round((wall - in_steps) / wall, 3),
            "steps": steps,
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logs", default=",".join(LOGS), help=f"comma separated, of {', '.join(LOGS)}")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    results = []
    for name in args.logs.split(","):
        log(f"[long log] {name} ...")
        results.append(run_child([str(Path(__file__)), "--worker", name]))
        r = results[-1]
        log(f"           run {r['run_s']:.1f}s, steps {r['steps_s']:.1f}s, outside {r['outside_share']:.0%}")
    headers = ["log", "landed rows", "days", "run s", "in steps s", "outside steps s", "outside share", "ok"]
    rows = [
        [
            r["log"],
            f"{r['landed_rows']:,}",
            r["days"],
            fmt_s(r["run_s"]),
            fmt_s(r["steps_s"]),
            fmt_s(r["outside_s"]),
            f"{r['outside_share']:.0%}",
            "yes" if r["success"] else "FAILED",
        ]
        for r in results
    ]
    step_names = [s["step"] for s in results[0]["steps"]]
    step_rows = [
        [
            name,
            *[
                fmt_s(next((s.get("duration_s", 0) for s in r["steps"] if s["step"] == name), 0))
                for r in results
            ],
        ]
        for name in step_names
    ]
    verdicts = [
        f"- {r['log']}: {r['run_s']:.1f} s through the graph (target <= {TARGET_S:g} s: "
        f"{'met' if r['run_s'] <= TARGET_S else 'NOT met'}), {r['outside_share']:.0%} outside the steps "
        f"(target <= {TARGET_OUTSIDE:.0%}: {'met' if r['outside_share'] <= TARGET_OUTSIDE else 'NOT met'})"
        for r in results
    ]
    print(text_table(headers, rows))
    print(text_table(["step", *[r["log"] + " s" for r in results]], step_rows))
    print("\n".join(verdicts))
    info = machine()
    command = "python benchmarks/bench_long_log.py " + " ".join(sys.argv[1:])
    md = "\n\n".join(
        [
            "# Long logs through the whole graph",
            f"`{command.strip()}` on {info['cpu']}, {info['cores']} cores",
            markdown_table(headers, rows),
            markdown_table(["step", *[r["log"] + " s" for r in results]], step_rows),
            "\n".join(verdicts),
        ]
    )
    paths = write_results("long_log", {"command": command, "machine": info, "results": results}, md)
    print(f"saved {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
