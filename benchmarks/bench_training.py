"""Training wrapper overhead: `ml_assets.core.models.training.train_model` vs a bare `lightgbm.train`.

Three timings on the same rows, final parameters, features and early stopping:
- bare: `lgb.train` on a prebuilt numpy matrix;
- fit path: ml_assets' own fitting path (Polars frame -> matrix -> Datasets -> lgb.train), the
  wrapper overhead proper; target within 1.1x of bare;
- train_model: everything a version costs (out-of-time split, importance probe, feature selection,
  the recency baseline model, evaluation, drift profile, files), reported for context.
Usage: python benchmarks/bench_training.py [--players N --days D --repeats R]
"""

import argparse
import json
import statistics
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import lightgbm as lgb
import polars as pl

from ml_assets.core.events.cleaning import clean_events
from ml_assets.core.events.landing import conform
from ml_assets.core.features.snapshots import player_features
from ml_assets.core.models.labels import LABEL, SPLIT, build_training_set
from ml_assets.core.models.spec import DEFAULT_SPECS, TuningSpec
from ml_assets.core.models.training import _fit, to_matrix, train_model
from ml_assets.simulator.game import SimulationParams, simulate_days

RESULTS = Path(__file__).parent / "results"


def training_set(players: int, days: int) -> pl.DataFrame:
    params = SimulationParams(players=players, days=days, dirty_rate=0.0)
    landed = pl.concat(
        conform(frame, "b", "sim")
        for _, frame in simulate_days(params, params.start, params.start + timedelta(days - 1))
    )
    landed = landed.with_columns(partition_date=pl.col("event_time").dt.date())
    clean = clean_events(landed.lazy(), 3).clean.lazy()
    last = params.start + timedelta(days=days - 1)
    features = player_features(clean, params.start, last)
    return build_training_set(DEFAULT_SPECS[0], features, clean)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--players", type=int, default=20_000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    frame = training_set(args.players, args.days)
    spec = replace(DEFAULT_SPECS[0], tuning=TuningSpec(trials=0))
    wrapper, bare, fit_path = [], [], []
    for i in range(args.repeats):
        started = time.perf_counter()
        model = train_model(replace(spec, seed=spec.seed + i), frame)
        wrapper.append(time.perf_counter() - started)
        days = {k: [d for d in v] for k, v in model.split.items()}
        parts = {k: frame.filter(pl.col(SPLIT).cast(pl.String).is_in(v)) for k, v in days.items()}
        x_train = to_matrix(parts["train"], model.features, model.categories)
        x_valid = to_matrix(parts["valid"], model.features, model.categories)
        cats = [model.features.index(c) for c in model.categories]
        started = time.perf_counter()
        train = lgb.Dataset(x_train, label=parts["train"][LABEL].to_numpy(), categorical_feature=cats)
        valid = lgb.Dataset(x_valid, label=parts["valid"][LABEL].to_numpy(), reference=train)
        lgb.train(
            model.params,
            train,
            num_boost_round=spec.num_boost_round,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(spec.early_stopping_rounds, verbose=False)],
        )
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        _fit(parts, model.features, model.categories, model.params, spec)
        fit_path.append(time.perf_counter() - started)
    result = {
        "rows": frame.height,
        "features": len(model.features),
        "bare_lgb_train_s": statistics.median(bare),
        "fit_path_s": statistics.median(fit_path),
        "fit_path_ratio": statistics.median(fit_path) / statistics.median(bare),
        "train_model_s": statistics.median(wrapper),
        "train_model_ratio": statistics.median(wrapper) / statistics.median(bare),
        "repeats": args.repeats,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
