"""What one new day's features cost as a game ages: the same game and the same newest day, with 45
and with 360 days of history before it; the feature steps of the newest day timed in each.

The simulator plays 361 days once (seeded); a lake with H days of history lands only its last
H + 1 days, so the newest day has the same events and players in every lake and only the history
differs. Per history length, in a fresh process and lake home: materialize the event and feature
assets (raw_events .. player_features) of the history in one run (not timed). Then `--repeat`
rounds run the newest day alone on each lake in turn (a rerun replaces the day), each run in a
fresh process as the daemon launches one, so a machine whose speed drifts weighs on both lakes
alike; the median per lake is kept. Reported: each step's duration (player_state and
player_features are what history could make grow) and every run's feature steps. Target: 360
days / 45 days <= 1.2 for the feature steps.

    .venv/bin/python benchmarks/bench_history.py                 # 45 and 360 days, ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_history.py --players 400 --histories 45,360
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import step_timings
from common import fmt_s, log, machine, markdown_table, run_child, text_table, write_results

SELECT = ["raw_events", "clean_events", "event_type_counts", "player_state", "player_features"]
FEATURE_STEPS = ("event_type_counts", "player_state", "player_features")
TARGET = 1.2


def build(history: int, players: int, longest: int) -> dict[str, Any]:
    """A fresh home with `history` days before the newest, materialized up to the day before it."""
    home = Path(tempfile.mkdtemp(prefix=f"ml_assets_history_{history}_"))
    os.environ["ML_ASSETS_HOME"] = str(home)
    from ml_assets.app.runner import execute, instance_for
    from ml_assets.core.events.landing import write_batch
    from ml_assets.core.settings import load_settings
    from ml_assets.simulator.game import SimulationParams, simulate_days

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
    assert backfill.success
    return {
        "history_days": history,
        "home": str(home),
        "newest": newest.isoformat(),
        "landed_rows": landed,
        "backfill_s": round(time.perf_counter() - started, 2),
    }


def run_newest(home: str, newest: str) -> dict[str, Any]:
    """The newest day's run in this (fresh) process, as the daemon launches one: its figures."""
    os.environ["ML_ASSETS_HOME"] = home
    import polars as pl

    from ml_assets.app.runner import execute, instance_for
    from ml_assets.core.settings import load_settings

    settings = load_settings(Path(home))
    instance = instance_for(settings)
    started = time.perf_counter()
    result = execute(settings, instance, SELECT, newest, newest)
    wall = time.perf_counter() - started
    assert result.success
    steps = {s["step"]: s["duration_s"] for s in step_timings(instance, result.run_id)}

    def rows_of(table: str, column: str) -> int:
        scan = pl.scan_delta(f"{settings.lake_uri}/{table}").filter(
            pl.col(column) == date.fromisoformat(newest)
        )
        return int(scan.select(pl.len()).collect().item())

    return {
        "wall_s": round(wall, 3),
        "steps": steps,
        "feature_steps_s": round(sum(steps[s] for s in FEATURE_STEPS), 3),
        "newest_day_events": rows_of("clean_events", "event_date"),
        "newest_day_feature_rows": rows_of("player_features", "snapshot_date"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--histories", default="45,360", help="comma separated days of history (default 45,360)")
    p.add_argument("--players", type=int, default=1000, help="players on day 0 (+ players // 40 a day)")
    p.add_argument("--repeat", type=int, default=5, help="rounds of newest-day runs (the median is kept)")
    p.add_argument("--build", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run", nargs=2, metavar=("HOME", "DAY"), help=argparse.SUPPRESS)
    args = p.parse_args()
    histories = [int(h) for h in args.histories.split(",")]
    if args.build is not None:
        print(json.dumps(build(args.build, args.players, max(histories))))
        return 0
    if args.run is not None:
        print(json.dumps(run_newest(*args.run)))
        return 0
    lakes = []
    try:
        for history in histories:
            log(f"[history] building {history} days, {args.players} players ...")
            child = [str(Path(__file__)), "--build", str(history), "--players", str(args.players)]
            lakes.append(run_child([*child, "--histories", args.histories]))
        # the lakes' runs alternate, so a machine that speeds up or slows down meanwhile (seen:
        # +-20% within minutes) weighs on both alike; each run is a fresh process, as under the daemon
        runs: dict[int, list[dict[str, Any]]] = {lake["history_days"]: [] for lake in lakes}
        for round_ in range(args.repeat):
            for lake in lakes:
                r = run_child([str(Path(__file__)), "--run", lake["home"], lake["newest"]])
                runs[lake["history_days"]].append(r)
                log(
                    f"          round {round_ + 1}: {lake['history_days']} days, "
                    f"feature steps {r['feature_steps_s']:.2f}s"
                )
    finally:
        for lake in lakes:
            shutil.rmtree(lake["home"], ignore_errors=True)
    results = []
    for lake in lakes:
        mine = runs[lake["history_days"]]
        median = statistics.median(r["feature_steps_s"] for r in mine)
        typical = min(mine, key=lambda r: abs(r["feature_steps_s"] - median))
        results.append({**lake, "median_feature_steps_s": median, "typical": typical, "runs": mine})
    base = results[0]
    headers = ["history days", "landed rows", "new day events", "feature rows", *FEATURE_STEPS]
    headers += ["feature steps s (median)", "each run s", "vs first"]
    rows = [
        [
            r["history_days"],
            f"{r['landed_rows']:,}",
            f"{r['typical']['newest_day_events']:,}",
            f"{r['typical']['newest_day_feature_rows']:,}",
            *[fmt_s(r["typical"]["steps"][s]) for s in FEATURE_STEPS],
            fmt_s(r["median_feature_steps_s"]),
            " ".join(f"{x['feature_steps_s']:.2f}" for x in r["runs"]),
            f"{r['median_feature_steps_s'] / base['median_feature_steps_s']:.2f}x",
        ]
        for r in results
    ]
    ratio = results[-1]["median_feature_steps_s"] / base["median_feature_steps_s"]
    verdict = (
        f"- feature steps of one new day (median of {args.repeat} alternating runs), "
        f"{results[-1]['history_days']} vs {base['history_days']} days of history: {ratio:.2f}x "
        f"(target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'})"
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
