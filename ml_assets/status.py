"""`ml-assets status`: each table's rows, partitions and Delta version, last checks, model versions."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from ml_assets.core.landing import list_batches, read_window
from ml_assets.lake_io import table_uri
from ml_assets.settings import Settings

# Each table and the column its partitions are stored by (None: unpartitioned).
TABLES: dict[str, str | None] = {
    "raw_events": "partition_date",
    "clean_events": "event_date",
    "quarantined_events": "partition_date",
    "player_features": "snapshot_date",
    "training_set": None,
    "churn_predictions": "snapshot_date",
}


def table_status(settings: Settings) -> list[dict[str, Any]]:
    """Rows, partitions and Delta version of each table; `exists` False for tables not written yet."""
    out = []
    for name, column in TABLES.items():
        uri = table_uri(settings.lake_uri, dg.AssetKey(name))
        try:
            version = DeltaTable(uri).version()
        except TableNotFoundError:
            out.append({"table": name, "exists": False})
            continue
        scan = pl.scan_delta(uri)
        stats = scan.select(
            pl.len().alias("rows"),
            *([pl.col(column).n_unique().alias("partitions")] if column else []),
        ).collect()
        out.append(
            {
                "table": name,
                "exists": True,
                "rows": int(stats["rows"][0]),
                "partitions": int(stats["partitions"][0]) if column else None,
                "delta_version": version,
            }
        )
    return out


def check_status(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]) -> list[dict[str, Any]]:
    """The latest result of every check, as recorded in the instance."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
    rows = []
    for key in check_keys:
        record = latest.get(key)
        rows.append(
            {
                "asset": key.asset_key.to_user_string(),
                "check": key.name,
                "status": record.status.value if record else "NEVER_RUN",
                "run_id": record.run_id if record else None,
            }
        )
    return rows


def model_status(settings: Settings) -> list[dict[str, Any]]:
    """Every trained model version with its test metrics, newest first."""
    cards = sorted(settings.models_dir.glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    models = []
    for card in cards:
        data = json.loads(card.read_text())
        models.append(
            {
                "model": data["name"],
                "version": data["version"],
                "path": data["path"],
                "roc_auc": data["metrics"].get("roc_auc"),
                "pr_auc": data["metrics"].get("pr_auc"),
                "log_loss": data["metrics"].get("log_loss"),
                "baseline_roc_auc": data["baseline_metrics"].get("roc_auc"),
                "trained_at": card.stat().st_mtime,
            }
        )
    return models


def lake_status(
    settings: Settings, instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]
) -> dict[str, Any]:
    """Everything `status` reports, as one JSON-ready mapping."""
    window = read_window(settings.landing_dir)
    return {
        "home": str(settings.home),
        "landing_batches": len(list_batches(settings.landing_dir)),
        "data_window": [window.first_day.isoformat(), window.last_day.isoformat()] if window else None,
        "tables": table_status(settings),
        "checks": check_status(instance, check_keys),
        "models": model_status(settings),
    }


def format_status(status: dict[str, Any]) -> str:
    """The status as text for people."""
    lines = [f"lake home: {status['home']}"]
    window = status["data_window"]
    lines.append(
        f"landing batches: {status['landing_batches']}; data window: {window[0]} .. {window[1]}"
        if window
        else "nothing landed yet"
    )
    lines.append("\ntables:")
    for t in status["tables"]:
        if not t["exists"]:
            lines.append(f"  {t['table']:<20} not materialized")
        else:
            parts = f"{t['partitions']} partitions" if t["partitions"] is not None else "unpartitioned"
            lines.append(f"  {t['table']:<20} {t['rows']:>12,} rows  {parts:<16} delta v{t['delta_version']}")
    lines.append("\nchecks (latest):")
    for c in status["checks"]:
        lines.append(f"  {c['asset'] + ':' + c['check']:<45} {c['status']}")
    lines.append("\nmodels:")
    if not status["models"]:
        lines.append("  none trained yet")
    for m in status["models"]:
        lines.append(
            f"  {m['model']} {m['version']}  test roc_auc {m['roc_auc']:.3f}"
            f" (baseline {m['baseline_roc_auc']:.3f})"
            f"  pr_auc {m['pr_auc']:.3f}  log_loss {m['log_loss']:.3f}  {Path(m['path']).name}"
        )
    return "\n".join(lines)
