"""What explaining predictions costs: `score` with and without `pred_contrib` reasons on one day.

Runs on an existing lake home (e.g. one kept by `bench_graph.py --keep`) with production models:
for each model spec, one snapshot day's scoring rows are scored without reasons and with the top 3,
and the per-row TreeSHAP cost is projected onto every scoring row of the feature table.

    /tmp/venv/bin/python benchmarks/bench_explain.py --home /tmp/lake10m --day 2025-03-01
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine


def measure(home: Path, day: date) -> list[dict[str, Any]]:
    """Per model: rows on `day`, seconds without and with reasons, and the projected backfill cost."""
    from ml_assets.core.features.player import KEY
    from ml_assets.core.models.labels import scoring_columns, scoring_rows
    from ml_assets.core.models.registry import Registry
    from ml_assets.core.models.spec import DEFAULT_SPECS
    from ml_assets.core.models.training import score
    from ml_assets.core.settings import load_settings
    from ml_assets.lake.model_store import ModelStore
    from ml_assets.lake.tables import MODEL_REGISTRY, table_uri

    settings = load_settings(home)
    registry = Registry(table_uri(settings.lake_uri, MODEL_REGISTRY))
    features = pl.scan_delta(f"{settings.lake_uri}/player_features")
    out = []
    for spec in DEFAULT_SPECS:
        version = registry.current(spec.name)
        if version is None:
            continue
        model = ModelStore(settings.models_uri).load(spec.name, version)
        needed = {*KEY, *model.features, *scoring_columns(spec)}
        columns = [c for c in features.collect_schema().names() if c in needed]
        rows = scoring_rows(spec, features.filter(pl.col("snapshot_date") == day).select(columns).collect())
        started = time.perf_counter()
        score(rows, model, reasons=0)
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        score(rows, model, reasons=3)
        explained_s = time.perf_counter() - started
        every_row = scoring_rows(spec, features.select(columns).collect()).height
        per_row = (explained_s - plain_s) / rows.height
        out.append(
            {
                "model": spec.name,
                "day": day.isoformat(),
                "rows_on_day": rows.height,
                "score_s": round(plain_s, 2),
                "score_with_reasons_s": round(explained_s, 2),
                "pred_contrib_us_per_row": round(per_row * 1e6, 1),
                "rows_in_table": every_row,
                "projected_backfill_min": round(per_row * every_row / 60, 1),
            }
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, required=True, help="lake home with production models")
    p.add_argument("--day", type=date.fromisoformat, required=True, help="snapshot day to score")
    args = p.parse_args()
    results = measure(args.home, args.day)
    for r in results:
        print(
            f"{r['model']}: {r['rows_on_day']:,} rows on {r['day']}: score {r['score_s']} s, with reasons "
            f"{r['score_with_reasons_s']} s; pred_contrib {r['pred_contrib_us_per_row']} us/row; "
            f"{r['rows_in_table']:,} rows in the table -> {r['projected_backfill_min']} min"
        )
    command = "python benchmarks/bench_explain.py " + " ".join(sys.argv[1:])
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "explain.json").write_text(
        json.dumps({"command": command, "machine": machine(), "models": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
