"""How long one drift sensor tick takes at 100k players x 60 features (target: under 2 s).

Builds reference and daily feature frames of 100k rows x 60 features (numeric and categorical),
computes each day's drift with ml_assets' own `feature_drift` (timed too: that is the asset's work
per day), stores the days as the `churn_feature_drift` Delta table of a temporary lake, then
evaluates the real `churn_drift_sensor` through Dagster repeatedly and reports its tick times.
Usage: python benchmarks/bench_sensor.py [--rows 100000 --features 60 --days 30 --ticks 20]
"""

import argparse
import json
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ml_assets.core.events.landing import DataWindow, extend_window
from ml_assets.core.monitoring.drift import build_profile, feature_drift
from ml_assets.core.settings import load_settings
from ml_assets.definitions import build_definitions
from ml_assets.defs.resources import LakeResource

RESULTS = Path(__file__).parent / "results"


def frame(rows: int, features: int, rng: np.random.Generator, shift: float = 0.0) -> pl.DataFrame:
    cols: dict[str, object] = {}
    for i in range(features - 2):
        kind = i % 3
        if kind == 0:
            cols[f"f{i}"] = rng.lognormal(1.0 + shift, 1.0, rows)
        elif kind == 1:
            cols[f"f{i}"] = rng.poisson(2.0 * (1 + shift), rows).astype(np.float64)
        else:
            cols[f"f{i}"] = rng.normal(shift, 1.0, rows)
    cols["platform"] = rng.choice(["ios", "android", "web"], rows, p=[0.45, 0.45, 0.1])
    cols["country"] = rng.choice([f"c{i}" for i in range(12)], rows)
    return pl.DataFrame(cols)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--features", type=int, default=60)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--ticks", type=int, default=20)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    reference = frame(args.rows, args.features, rng)
    names = reference.columns
    scores = rng.beta(2, 5, args.rows)
    profile = build_profile(reference, names, ["platform", "country"], scores=scores)
    home = Path(tempfile.mkdtemp()) / "home"
    (home / "landing").mkdir(parents=True)
    start = date(2025, 1, 1)
    extend_window(home / "landing", DataWindow(start, start + timedelta(days=args.days - 1)))
    (home / "ml_assets.toml").write_text('[models.churn]\nlabel = "rolling"\n')
    settings = load_settings(home)
    drift_times, days = [], []
    for d in range(args.days):
        current = frame(args.rows, args.features, rng, shift=0.3 if d >= args.days - 3 else 0.0)
        started = time.perf_counter()
        stats = feature_drift(profile, current, rng.beta(2, 5, args.rows))
        drift_times.append(time.perf_counter() - started)
        days.append(
            stats.with_columns(snapshot_date=pl.lit(start + timedelta(days=d)), model_version=pl.lit("v1"))
        )
    pl.concat(days, how="diagonal_relaxed").write_delta(
        f"{settings.lake_uri}/churn_feature_drift", delta_write_options={"partition_by": ["snapshot_date"]}
    )
    defs = build_definitions(settings)
    sensor = defs.get_sensor_def("churn_drift_sensor")
    ticks, fired = [], 0
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(args.ticks):
            context = dg.build_sensor_context(
                instance=instance, resources={"lake": LakeResource(home=str(home))}
            )
            started = time.perf_counter()
            result = sensor(context)
            ticks.append(time.perf_counter() - started)
            fired += bool(isinstance(result, dg.SensorResult) and result.run_requests)
    out = {
        "rows": args.rows,
        "features": args.features,
        "days_stored": args.days,
        "feature_drift_per_day_s_median": statistics.median(drift_times),
        "sensor_tick_s_median": statistics.median(ticks),
        "sensor_tick_s_max": max(ticks),
        "ticks": args.ticks,
        "ticks_that_requested_a_retrain": fired,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sensor.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
