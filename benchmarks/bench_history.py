"""What one new day's features cost as a game ages: the same game and the same newest day, with 45
and with 360 days of history before it; the feature steps of the newest day timed in each.

The simulator plays 361 days once (seeded); a lake with H days of history lands only its last
H + 1 days, so the newest day has the same events and players in every lake and only the history
differs. Per history length, in a fresh process and lake home: materialize the event and feature
assets (raw_events .. player_features) of the history in one run (not timed), then run the newest
day alone `--repeat` times (a rerun replaces the day) and keep the fastest.
Reported per run: the wall time and each step's duration (player_state and player_features are
what history could make grow). Target: 360 days / 45 days <= 1.2 for the feature steps.

    .venv/bin/python benchmarks/bench_history.py                 # 45 and 360 days, ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_history.py --players 400 --histories 45,360
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import step_timings
from common import fmt_s, log, machine, markdown_table, run_child, text_table, write_results

SELECT = ["raw_events", "clean_events", "event_type_counts", "player_state", "player_features"]
FEATURE_STEPS = ("event_type_counts", "player_state", "player_features")
TARGET = 1.2


def worker(history: int, players: int, repeat: int, longest: int) -> dict[str, Any]:
    """One history length in a fresh home: figures as a dict."""
    home = Path(tempfile.mkdtemp(prefix=f"ml_assets_history_{history}_"))
    os.environ["ML_ASSETS_HOME"] = str(home)
    from ml_assets.app.runner import execute, instance_for
    from ml_assets.core.events.landing import write_batch
    from ml_assets.core.settings import load_settings
    from ml_assets.simulator.game import SimulationParams, simulate_days

    try:
        settings = load_settings(home)
        params = SimulationParams(players=players, days=longest + 1, seed=7)
        newest = params.last_day
        first = newest - timedelta(days=history)
        landed = 0
        for day, frame in simulate_days(params, params.start, newest):
            if day >= first:
                write_batch(settings.landing_uri, frame, f"sim-{day:%Y%m%d}", "simulator")
                landed += frame.height
        instance = instance_for(settings)
        started = time.perf_counter()
        # from the first partition: late rows of the first batch belong to the day before `first`
        backfill = execute(settings, instance, SELECT, None, (newest - timedelta(days=1)).isoformat())
        backfill_s = time.perf_counter() - started
        assert backfill.success
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = execute(settings, instance, SELECT, newest.isoformat(), newest.isoformat())
            wall = time.perf_counter() - started
            assert result.success
            steps = {s["step"]: s["duration_s"] for s in step_timings(instance, result.run_id)}
            runs.append({"wall_s": round(wall, 3), "steps": steps})
        best = min(runs, key=lambda r: sum(r["steps"][s] for s in FEATURE_STEPS))
        import polars as pl

        def rows_of(table: str, column: str) -> int:
            scan = pl.scan_delta(f"{settings.lake_uri}/{table}").filter(pl.col(column) == newest)
            return scan.select(pl.len()).collect().item()

        day_events, features = (
            rows_of("clean_events", "event_date"),
            rows_of("player_features", "snapshot_date"),
        )
        return {
            "history_days": history,
            "players_start": players,
            "landed_rows": landed,
            "newest_day_events": day_events,
            "newest_day_feature_rows": features,
            "backfill_s": round(backfill_s, 2),
            "best": best,
            "feature_steps_s": round(sum(best["steps"][s] for s in FEATURE_STEPS), 3),
            "runs": runs,
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--histories", default="45,360", help="comma separated days of history (default 45,360)")
    p.add_argument("--players", type=int, default=1000, help="players on day 0 (+ players // 40 a day)")
    p.add_argument("--repeat", type=int, default=3, help="runs of the newest day (fastest kept)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        longest = max(int(h) for h in args.histories.split(","))
        print(json.dumps(worker(args.worker, args.players, args.repeat, longest)))
        return 0
    results = []
    for history in [int(h) for h in args.histories.split(",")]:
        log(f"[history] {history} days, {args.players} players ...")
        child = [str(Path(__file__)), "--worker", str(history), "--players", str(args.players)]
        child += ["--histories", args.histories]
        results.append(run_child([*child, "--repeat", str(args.repeat)]))
        r = results[-1]
        log(f"          feature steps {r['feature_steps_s']:.2f}s, run {r['best']['wall_s']:.2f}s")
    base = results[0]
    headers = [
        "history days",
        "landed rows",
        "new day events",
        "feature rows",
        *FEATURE_STEPS,
        "feature steps s",
    ]
    headers += ["run wall s", "vs first"]
    rows = [
        [
            r["history_days"],
            f"{r['landed_rows']:,}",
            f"{r['newest_day_events']:,}",
            f"{r['newest_day_feature_rows']:,}",
            *[fmt_s(r["best"]["steps"][s]) for s in FEATURE_STEPS],
            fmt_s(r["feature_steps_s"]),
            fmt_s(r["best"]["wall_s"]),
            f"{r['feature_steps_s'] / base['feature_steps_s']:.2f}x",
        ]
        for r in results
    ]
    ratio = results[-1]["feature_steps_s"] / base["feature_steps_s"]
    verdict = (
        f"- feature steps of one new day, {results[-1]['history_days']} vs {base['history_days']} days "
        f"of history: {ratio:.2f}x (target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'})"
    )
    print(text_table(headers, rows))
    print(verdict)
    command = "python benchmarks/bench_history.py " + " ".join(sys.argv[1:])
    info = machine()
    md = "\n".join(
        [
            "# One new day's features against history length",
            "",
            f"`{command.strip()}` on {info.get('cpu', '?')}, {info.get('cores', '?')} cores",
            "",
            markdown_table(headers, rows),
            "",
            verdict,
        ]
    )
    paths = write_results(
        "history", {"command": command, "machine": info, "ratio": ratio, "results": results}, md
    )
    print(f"saved {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
