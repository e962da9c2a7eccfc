"""Benchmark of the whole asset graph: simulate, then materialize every asset in one Dagster run.

Each size runs in its own Python process with a fresh lake home (a temporary folder) and the project's
SQLite Dagster instance under it, exactly what `ml-assets --home H demo` does. Reported: simulate
time, run time, each step's duration from the run's STEP_SUCCESS events (with the assets it
materialized) and the process's peak RSS.

    /tmp/venv/bin/python benchmarks/bench_graph.py --sizes 1m,10m
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ml_assets import ALLOCATOR_CONF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    GIB,
    RESULTS_DIR,
    SIZES,
    ChildFailed,
    fmt_gib,
    fmt_s,
    log,
    machine,
    markdown_table,
    parse_sizes,
    peak_rss_bytes_self,
    run_child,
    simulation_params,
    text_table,
    write_results,
)

TARGET_S = 180.0  # goal for ~10M events (100k players x 90 days)
TARGET_RSS = 4 * GIB


class RssSampler:
    """This process's resident memory every `interval` seconds, on a thread, as (unix time, bytes)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as statm:
                self.samples.append((time.time(), int(statm.read().split()[1]) * page))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int | None:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else None


def step_timings(instance: Any, run_id: str, rss: RssSampler | None = None) -> list[dict[str, Any]]:
    """Per step of the run: duration (STEP_SUCCESS/FAILURE), outcome, the assets it materialized and
    (with `rss`) the process's peak resident memory while it ran."""
    from dagster import DagsterEventType

    wanted = {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
        DagsterEventType.ASSET_MATERIALIZATION,
    }
    steps: dict[str, dict[str, Any]] = {}
    for entry in instance.all_logs(run_id, of_type=wanted):
        ev = entry.dagster_event
        step = steps.setdefault(entry.step_key or "?", {"step": entry.step_key, "assets": []})
        if ev.event_type == DagsterEventType.STEP_START:
            step["started"] = entry.timestamp
        elif ev.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            key = ev.asset_key.to_user_string()
            if key not in step["assets"]:
                step["assets"].append(key)
        else:
            step["outcome"] = "success" if ev.event_type == DagsterEventType.STEP_SUCCESS else "failure"
            step["duration_s"] = round(ev.event_specific_data.duration_ms / 1000, 2)
            step["ended"] = entry.timestamp
    ordered = sorted(steps.values(), key=lambda s: s.get("started", 0.0))
    for s in ordered:
        if rss is not None and "started" in s and "ended" in s:
            s["peak_rss_bytes"] = rss.peak_between(s["started"], s["ended"])
    return [{k: v for k, v in s.items() if k not in ("started", "ended")} for s in ordered]


def worker(
    size_name: str, keep: bool, explain_top: int | None = None, families: str | None = None
) -> dict[str, Any]:
    """Simulate and materialize one size in a fresh home; the figures as a dict."""
    home = Path(tempfile.mkdtemp(prefix=f"ml_assets_bench_{size_name}_"))
    os.environ["ML_ASSETS_HOME"] = str(home)  # before any ml_assets import reads it
    from ml_assets.app.runner import instance_for, materialize
    from ml_assets.core.settings import load_settings
    from ml_assets.simulator.game import simulate

    load_before = os.getloadavg()[0]
    size = SIZES[size_name]
    params = simulation_params(size)
    toml = f"[training]\nexplain_top = {explain_top}\n" if explain_top is not None else ""
    if families:
        toml += f"[features]\nfamilies = {json.dumps(families.split(','))}\n"
    if toml:
        (home / "ml_assets.toml").write_text(toml)
    settings = load_settings(home)
    try:
        started = time.perf_counter()
        report = simulate(settings.landing_uri, params)
        simulate_s = time.perf_counter() - started
        rss_after_simulate = peak_rss_bytes_self()
        instance = instance_for(settings)
        started = time.perf_counter()
        with RssSampler() as rss:
            summary = materialize(settings, instance)
        run_s = time.perf_counter() - started
        steps = step_timings(instance, summary.run_id, rss)
        clean_rows = pl.scan_delta(f"{settings.lake_uri}/clean_events").select(pl.len()).collect().item()
        return {
            "explain_top": explain_top if explain_top is not None else 3,
            "size": size_name,
            "players_start": params.players,
            "days": params.days,
            "landed_rows": report.rows,
            "clean_events": clean_rows,
            "simulate_s": round(simulate_s, 2),
            "run_s": round(run_s, 2),
            "total_s": round(simulate_s + run_s, 2),
            "success": summary.success,
            "failed_checks": summary.failed_checks,
            "materialized": summary.materialized,
            "steps": steps,
            "peak_rss_after_simulate_bytes": rss_after_simulate,
            "peak_rss_bytes": peak_rss_bytes_self(),
            "home": str(home) if keep else None,
            "loadavg_1m_before": round(load_before, 2),
        }
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def render(results: list[dict[str, Any]], command: str, info: dict[str, Any]) -> tuple[str, str]:
    headers = ["size", "landed rows", "clean events", "simulate s", "run s", "total s", "peak RSS GiB", "ok"]
    done = [r for r in results if "failed" not in r]
    rows = [
        [
            r["size"],
            f"{r['landed_rows']:,}",
            f"{r['clean_events']:,}",
            fmt_s(r["simulate_s"]),
            fmt_s(r["run_s"]),
            fmt_s(r["total_s"]),
            fmt_gib(r["peak_rss_bytes"]),
            "yes" if r["success"] else "FAILED",
        ]
        for r in done
    ]
    rows += [
        [r["size"], "-", "-", "-", "-", "-", fmt_gib(r["polled_peak_rss_bytes"]), r["failed"]]
        for r in results
        if "failed" in r
    ]
    step_names = [s["step"] for s in done[0]["steps"]] if done else []
    step_headers = ["step (assets)", *[h for r in done for h in (f"{r['size']} s", f"{r['size']} peak GiB")]]
    step_rows = []
    for name in step_names:
        assets = next(s["assets"] for s in done[0]["steps"] if s["step"] == name)
        label = name if assets == [name] or not assets else f"{name} ({', '.join(assets)})"
        cells = []
        for r in done:
            match = [s for s in r["steps"] if s["step"] == name]
            cells.append(fmt_s(match[0]["duration_s"]) if match and "duration_s" in match[0] else "-")
            peak = match[0].get("peak_rss_bytes") if match else None
            cells.append(fmt_gib(peak) if peak else "-")
        step_rows.append([label, *cells])
    verdicts = []
    for r in results:
        if r["size"] != "10m":
            continue
        if "failed" in r:
            verdicts.append(
                f"- {r['size']}: did not finish ({r['failed']}); goals of {TARGET_S:.0f}s and 4 GiB: NOT met"
            )
            continue
        time_ok, mem_ok = r["run_s"] <= TARGET_S, r["peak_rss_bytes"] <= TARGET_RSS
        verdicts.append(
            f"- {r['size']}: run {r['run_s']:.0f}s (simulate {r['simulate_s']:.0f}s more) vs goal "
            f"{TARGET_S:.0f}s: {'met' if time_ok else 'NOT met'}; total with simulate "
            f"{r['total_s']:.0f}s: {'met' if r['total_s'] <= TARGET_S else 'NOT met'}; peak RSS "
            f"{fmt_gib(r['peak_rss_bytes'])} GiB vs 4 GiB: {'met' if mem_ok else 'NOT met'}"
        )
        if r["failed_checks"]:
            verdicts.append(f"  - failed checks: {', '.join(r['failed_checks'])}")
    notes = (
        "Run s is `ml_assets.app.runner.materialize` (one in-process run on the SQLite instance, every "
        "asset, every landed day); step durations are Dagster's STEP_SUCCESS durations (IO manager "
        "writes to Delta included). Peak RSS is the whole process (simulation included); a step's "
        "peak GiB is the process's resident memory sampled every 0.1 s while the step ran."
    )
    md = "\n\n".join(
        [
            "# Whole-graph benchmark",
            f"Command: `{command}`  \nMachine: {info['cpu']}, {info['cores']} cores, "
            f"{info['memory_gib']} GiB RAM; Python {info['python']}, Polars {info['polars']}.",
            markdown_table(headers, rows),
            "Step durations:",
            markdown_table(step_headers, step_rows),
            "\n".join(verdicts) or "(no 10m run)",
            notes,
        ]
    )
    text = "\n\n".join([text_table(headers, rows), text_table(step_headers, step_rows), "\n".join(verdicts)])
    return md, text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1m,10m", help="comma separated: 1m, 3m, 10m (default 1m,10m)")
    p.add_argument("--keep", action="store_true", help="keep each size's lake home (path in the JSON)")
    p.add_argument("--render", action="store_true", help="only rewrite results/graph.md from graph.json")
    p.add_argument("--explain-top", type=int, help="reasons per prediction (0: no pred_contrib); default 3")
    p.add_argument("--families", help="behaviour families to turn on, comma separated (default: none)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads((RESULTS_DIR / "graph.json").read_text())
        md, text = render(saved["runs"], saved["command"], saved["machine"])
        write_results("graph", saved, md)
        print(text)
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.keep, args.explain_top, args.families)))
        return 0
    results = []
    for size in parse_sizes(args.sizes):
        log(f"[graph] {size.name}: {size.players:,} players x {size.days} days")
        child = [str(Path(__file__)), "--worker", size.name] + (["--keep"] if args.keep else [])
        if args.explain_top is not None:
            child += ["--explain-top", str(args.explain_top)]
        if args.families:
            child += ["--families", args.families]
        try:
            # the allocator setting the CLI gets by importing ml_assets before Polars (ml_assets/__init__)
            allocator = os.environ.get("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)
            r = run_child(child, env={"_RJEM_MALLOC_CONF": allocator})
        except ChildFailed as exc:
            # recorded, not swallowed: the table and the exit code show it
            log(f"        FAILED: {exc}")
            results.append(
                {
                    "size": size.name,
                    "players_start": size.players,
                    "failed": str(exc),
                    "polled_peak_rss_bytes": exc.polled_peak_rss,
                }
            )
            continue
        log(f"        run {r['run_s']:.1f}s, peak {fmt_gib(r['peak_rss_bytes'])} GiB, success={r['success']}")
        results.append(r)
    info = machine()
    command = "python benchmarks/bench_graph.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md, text = render(results, command.strip(), info)
    print(text)
    json_path, md_path = write_results(
        "graph", {"command": command.strip(), "machine": info, "runs": results}, md
    )
    log(f"saved {json_path} and {md_path}")
    return 0 if all(r.get("success") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
