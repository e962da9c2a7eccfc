"""`ml-assets status`: each table's rows, partitions and Delta version, last checks, model versions."""

from typing import Any

import dagster as dg
import polars as pl

from ml_assets.core.events.cleaning import reason_counts
from ml_assets.core.events.landing import list_batches, read_window
from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import Settings
from ml_assets.lake.model_store import ModelStore
from ml_assets.lake.tables import (
    MODEL_REGISTRY,
    QUARANTINED_EVENTS,
    delta_version,
    lake_tables,
    open_table,
    table_uri,
)


def registry(settings: Settings) -> Registry:
    """The model registry of a lake."""
    return Registry(table_uri(settings.lake_uri, MODEL_REGISTRY))


def table_status(settings: Settings) -> list[dict[str, Any]]:
    """Rows, partitions and Delta version of each table; `exists` False for tables not written yet."""
    out: list[dict[str, Any]] = []
    for name, column in lake_tables([s.name for s in settings.specs]).items():
        uri = table_uri(settings.lake_uri, name)
        version = delta_version(uri)
        if version is None:
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
    store = ModelStore(settings.models_uri)
    models = []
    for spec in settings.specs:
        for row in (
            registry(settings)
            .versions(spec.name)
            .sort("registered_at", descending=True)
            .iter_rows(named=True)
        ):
            data = store.card(spec.name, row["version"]) or {"metrics": {}, "baseline_metrics": {}}
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


def quarantine_status(settings: Settings) -> dict[str, int]:
    """Quarantined rows per reason, every known reason listed (empty before the first cleaning)."""
    table = open_table(table_uri(settings.lake_uri, QUARANTINED_EVENTS))
    if table is None:
        return {}
    return reason_counts(pl.read_delta(table, columns=["reason"]))


def lake_status(
    settings: Settings, instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]
) -> dict[str, Any]:
    """Everything `status` reports, as one JSON-ready mapping."""
    window = read_window(settings.landing_uri)
    return {
        "home": str(settings.home),
        "landing_batches": len(list_batches(settings.landing_uri)),
        "data_window": [window.first_day.isoformat(), window.last_day.isoformat()] if window else None,
        "tables": table_status(settings),
        "quarantine": quarantine_status(settings),
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
    if status["quarantine"]:
        counts = ", ".join(f"{reason} {n:,}" for reason, n in status["quarantine"].items())
        lines.append(f"\nquarantined rows by reason: {counts}")
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
