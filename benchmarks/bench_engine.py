"""Benchmark of the engine setting: the local engine against the Ray engine on the same lake.

Each size runs in its own Python process with a fresh lake home: the simulator lands the data, one
local run builds everything the sharded steps read (clean events, counts, state, features, a churn
model in production), then player_state, player_features (incremental, every day in one run) and
churn_predictions (batch scoring, explanations by the default policy) run once with
`[engine] kind = "local"` and once with `kind = "ray"` over `--shards` player shards, side by side
in that process, on a local Ray (`ray.init(num_cpus=<cores>)`, started and its worker processes
warmed before the timed runs).

Reported: each step's Dagster duration per engine and their ratio (goal <= 1.3x), each Ray shard's
own seconds and rows (from the step's metadata), and a shard-scaling projection from those
measured per-shard times (a projection, not a measurement: see `projection`). At 1M the two
engines' tables are also compared row for row.

    .venv/bin/python benchmarks/bench_engine.py --sizes 1m,10m
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import step_timings
from common import (
    RESULTS_DIR,
    SIZES,
    ChildFailed,
    fmt_s,
    log,
    machine,
    markdown_table,
    parse_sizes,
    run_child,
    simulation_params,
    text_table,
    write_results,
)

GOAL = 1.3
STEPS = ["player_state", "player_features", "churn_predictions"]
SETUP = ["raw_events", "clean_events", "event_type_counts", *STEPS[:2]]
MODEL = ["churn_training_set", "churn_model", "churn_production_model"]
TABLES = {
    "player_state": "state_date",
    "player_features": "snapshot_date",
    "churn_predictions": "snapshot_date",
}
SETTINGS = '[models.churn]\nlabel = "rolling"\nhorizon_days = 14\ntuning_trials = 0\n'
PROJECTED_SHARDS = (1, 2, 4, 8, 16, 32)


def _shard_metadata(instance: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The engine metadata (shard_seconds, shard_rows) each sharded step recorded, by asset."""
    from dagster import DagsterEventType

    out: dict[str, dict[str, Any]] = {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.ASSET_MATERIALIZATION}):
        mat = entry.dagster_event.event_specific_data.materialization
        meta = {k: v.value for k, v in mat.metadata.items()}
        if "shard_seconds" in meta:
            out[mat.asset_key.to_user_string()] = {
                k: meta[k] for k in ("shards", "shard_seconds", "shard_rows")
            }
    return out


def _tables(settings: Any) -> dict[str, Any]:
    import polars as pl

    out = {}
    for name, column in TABLES.items():
        frame = pl.read_delta(f"{settings.lake_uri}/{name}")
        out[name] = frame.select(sorted(frame.columns)).sort(column, "player_id")
    return out


def worker(size_name: str, shards: int, compare: bool) -> dict[str, Any]:
    """Land one size in a fresh home, build it locally, then time the sharded steps on each engine."""
    home = Path(tempfile.mkdtemp(prefix=f"ml_assets_bench_engine_{size_name}_"))
    os.environ["ML_ASSETS_HOME"] = str(home)
    # token auth with a token of this run's own, in the environment (read when Ray is imported): a
    # new local Ray otherwise writes one to ~/.ray/auth_token, which later clusters then require
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    import polars as pl
    import ray

    from ml_assets.app.runner import instance_for, materialize
    from ml_assets.core.settings import load_settings
    from ml_assets.simulator.game import simulate

    size = SIZES[size_name]
    config = home / "ml_assets.toml"
    config.write_text(SETTINGS)
    settings = load_settings(home)
    try:
        started = time.perf_counter()
        report = simulate(settings.landing_uri, simulation_params(size))
        simulate_s = time.perf_counter() - started
        instance = instance_for(settings)
        started = time.perf_counter()
        for select in (SETUP, MODEL):
            if not materialize(settings, instance, select).success:
                raise RuntimeError(f"the setup run of {select} failed")
        setup_s = time.perf_counter() - started
        # the cluster starts before the timed runs: a long-lived cluster is what a studio runs
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)

        @ray.remote(num_cpus=1)
        def warm() -> int:
            import ml_assets.engine.steps  # noqa: F401  (what a task imports first)

            return os.getpid()

        # ... and so do its worker processes (a long-lived cluster's are; a cold one's start costs
        # seconds of imports in the first sharded step)
        ray.get([warm.remote() for _ in range(os.cpu_count() or 1)])
        runs: dict[str, Any] = {}
        tables: dict[str, Any] = {}
        for kind in ("local", "ray"):
            engine = f'\n[engine]\nkind = "{kind}"\nshards = {shards}\n'
            config.write_text(SETTINGS + engine)
            settings = load_settings(home)
            started = time.perf_counter()
            summary = materialize(settings, instance, STEPS)
            wall = time.perf_counter() - started
            if not summary.success:
                raise RuntimeError(f"the {kind} run failed")
            steps = {s["step"]: s["duration_s"] for s in step_timings(instance, summary.run_id)}
            runs[kind] = {"run_s": round(wall, 2), "steps": steps}
            if kind == "ray":
                runs[kind]["shards"] = _shard_metadata(instance, summary.run_id)
            if compare:
                tables[kind] = _tables(settings)
        identical = None
        if compare:
            identical = all(tables["local"][n].equals(tables["ray"][n]) for n in TABLES)
        clean = pl.scan_delta(f"{settings.lake_uri}/clean_events").select(pl.len()).collect().item()
        rows = {
            n: pl.scan_delta(f"{settings.lake_uri}/{n}").select(pl.len()).collect().item() for n in TABLES
        }
        return {
            "size": size_name,
            "clean_events": clean,
            "landed_rows": report.rows,
            "table_rows": rows,
            "simulate_s": round(simulate_s, 2),
            "setup_s": round(setup_s, 2),
            "shards": shards,
            "runs": runs,
            "tables_identical": identical,
        }
    finally:
        ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)


def projection(step_s: float, shard_s: Sequence[float], nodes: int) -> float:
    """Projected step time with the shards' work spread over `nodes` nodes like one of this run's
    (one shard per CPU here): the driver's part of the step (its duration minus the slowest shard)
    plus the shards' summed seconds over `nodes`. A projection from measured per-shard times: it
    assumes the work splits evenly by players, and it ignores that each shard still scans the
    step's whole input to find its players (that part does not shrink with more nodes)."""
    driver = max(0.0, step_s - max(shard_s))
    return driver + sum(shard_s) / nodes


def render(results: list[dict[str, Any]], command: str, info: dict[str, Any]) -> tuple[str, str]:
    done = [r for r in results if "failed" not in r]
    headers = ["size", "clean events", "step", "local s", "ray s", "ray / local", f"<= {GOAL}x"]
    rows = []
    for r in done:
        local, ray_ = r["runs"]["local"]["steps"], r["runs"]["ray"]["steps"]
        for step in [*STEPS, "total"]:
            a = sum(local[s] for s in STEPS) if step == "total" else local[step]
            b = sum(ray_[s] for s in STEPS) if step == "total" else ray_[step]
            rows.append(
                [r["size"], f"{r['clean_events']:,}", step, fmt_s(a), fmt_s(b), f"{b / a:.2f}x",
                 "met" if b / a <= GOAL else "NOT met"]
            )  # fmt: skip
    shard_headers = ["size", "step", "shard seconds", "shard rows"]
    shard_rows = [
        [
            r["size"],
            step,
            ", ".join(fmt_s(s) for s in m["shard_seconds"]),
            ", ".join(f"{n:,}" for n in m["shard_rows"]),
        ]
        for r in done
        for step, m in r["runs"]["ray"]["shards"].items()
    ]
    proj_headers = ["size", "step", *[f"{n} nodes s" for n in PROJECTED_SHARDS]]
    proj_rows = []
    for r in done:
        for step, m in r["runs"]["ray"]["shards"].items():
            measured = r["runs"]["ray"]["steps"][step]
            projected = [fmt_s(projection(measured, m["shard_seconds"], n)) for n in PROJECTED_SHARDS]
            proj_rows.append([r["size"], step, *projected])
    failed = [f"- {r['size']}: did not finish ({r['failed']})" for r in results if "failed" in r]
    same = [
        f"- {r['size']}: local and ray tables, row for row: "
        + ("identical" if r["tables_identical"] else "DIFFERENT")
        for r in done
        if r["tables_identical"] is not None
    ]
    notes = (
        "Step seconds are Dagster's STEP_SUCCESS durations of one run of the three steps over every day "
        "(IO manager commit included), local and ray in the same process one after the other on the same "
        "lake, a local Ray started with ray.init(num_cpus=cores) and its worker processes warmed before them "
        "(cluster and worker start not counted). "
        "Shard seconds are each Ray task's own time (reading its rows, the core functions, writing its "
        "files). churn_predictions on Ray also scores the explained days once more (no reasons) to rank "
        "every shard's rows of a day together. The machine is shared: figures are noisy, ratios are "
        "measured side by side."
    )
    proj_note = (
        "**Projection, not a measurement**: a step's time with its shards' work spread over N nodes like "
        "one CPU of this machine = (measured step time - slowest shard) + (sum of measured shard seconds) / "
        "N. It assumes players split the work evenly and ignores that every shard still scans the step's "
        "whole input window to find its players, a part that does not shrink with N."
    )
    md = "\n\n".join(
        [
            "# Engine benchmark: local vs Ray",
            f"Command: `{command}`  \nMachine: {info['cpu']}, {info['cores']} cores, "
            f"{info['memory_gib']} GiB RAM; Python {info['python']}, Polars {info['polars']}.",
            markdown_table(headers, rows),
            "Per shard (Ray run):",
            markdown_table(shard_headers, shard_rows),
            "Shard-scaling projection:",
            markdown_table(proj_headers, proj_rows),
            proj_note,
            "\n".join(same + failed),
            notes,
        ]
    )
    text = "\n\n".join(
        [
            text_table(headers, rows),
            text_table(shard_headers, shard_rows),
            "projection (not measured):\n" + text_table(proj_headers, proj_rows),
            "\n".join(same + failed),
        ]
    )
    return md, text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1m,10m", help="comma separated: 1m, 3m, 10m (default 1m,10m)")
    p.add_argument("--shards", type=int, default=os.cpu_count() or 2, help="player shards (default: cores)")
    p.add_argument("--render", action="store_true", help="only rewrite results/engine.md from engine.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads((RESULTS_DIR / "engine.json").read_text())
        md, text = render(saved["runs"], saved["command"], saved["machine"])
        write_results("engine", saved, md)
        print(text)
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.shards, compare=args.worker == "1m")))
        return 0
    results: list[dict[str, Any]] = []
    for size in parse_sizes(args.sizes):
        log(f"[engine] {size.name}: {size.players:,} players x {size.days} days, {args.shards} shards")
        started = time.perf_counter()
        try:
            r = run_child([str(Path(__file__)), "--worker", size.name, "--shards", str(args.shards)])
        except ChildFailed as exc:
            log(f"        FAILED: {exc}")
            results.append({"size": size.name, "failed": str(exc)})
            continue
        log(f"        done in {time.perf_counter() - started:.0f}s")
        results.append(r)
    info = machine()
    command = "python benchmarks/bench_engine.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md, text = render(results, command.strip(), info)
    print(text)
    payload = {"command": command.strip(), "machine": info, "runs": results}
    json_path, md_path = write_results("engine", payload, md)
    log(f"saved {json_path} and {md_path}")
    return 0 if all("failed" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
