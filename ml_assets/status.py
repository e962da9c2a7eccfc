"""`ml-assets status`: each table's rows, partitions and Delta version, last checks, model versions."""

import json
from typing import Any

import dagster as dg
import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from ml_assets.core.landing import list_batches, read_window
from ml_assets.core.registry import Registry
from ml_assets.lake_io import table_uri
from ml_assets.resources import EXPERIMENTS_TABLE, REGISTRY_TABLE
from ml_assets.settings import Settings

# Each event table and the column its partitions are stored by (None: unpartitioned).
EVENT_TABLES: dict[str, str | None] = {
    "raw_events": "partition_date",
    "clean_events": "event_date",
    "quarantined_events": "partition_date",
    "player_features": "snapshot_date",
}


def tables(settings: Settings) -> dict[str, str | None]:
    """Every table of the lake with its partition column: event tables, then each model's."""
    out = dict(EVENT_TABLES)
    for spec in settings.specs():
        out[f"{spec.name}_training_set"] = None
        out[f"{spec.name}_predictions"] = "snapshot_date"
    out[REGISTRY_TABLE] = None
    out[EXPERIMENTS_TABLE] = None
    return out


def table_status(settings: Settings) -> list[dict[str, Any]]:
    """Rows, partitions and Delta version of each table; `exists` False for tables not written yet."""
    out = []
    for name, column in tables(settings).items():
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
    """Every registered model version with its stage and test metrics, newest first per model."""
    registry = Registry(f"{settings.lake_uri}/{REGISTRY_TABLE}")
    models = []
    for spec in settings.specs():
        for row in registry.versions(spec.name).sort("registered_at", descending=True).iter_rows(named=True):
            card = settings.models_dir / spec.name / f"{row['version']}.json"
            data = json.loads(card.read_text()) if card.exists() else {"metrics": {}, "baseline_metrics": {}}
            models.append(
                {
                    "model": spec.name,
                    "version": row["version"],
                    "stage": row["stage"],
                    "roc_auc": data["metrics"].get("roc_auc"),
                    "pr_auc": data["metrics"].get("pr_auc"),
                    "log_loss": data["metrics"].get("log_loss"),
                    "baseline_roc_auc": data["baseline_metrics"].get("roc_auc"),
                    "registered_at": str(row["registered_at"]),
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


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
            f"  {m['model']:<16} {m['version']}  {m['stage']:<12} test roc_auc {_f(m['roc_auc'])}"
            f" (baseline {_f(m['baseline_roc_auc'])})  pr_auc {_f(m['pr_auc'])}  log_loss {_f(m['log_loss'])}"
        )
    return "\n".join(lines)
