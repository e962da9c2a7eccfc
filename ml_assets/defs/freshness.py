"""Freshness SLAs per key table, shown both ways Dagster users look: a `FreshnessPolicy` on the asset
and an asset check that compares the newest event time and the last update with the SLA."""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ml_assets.core.settings import Settings
from ml_assets.defs.resources import LakeResource
from ml_assets.lake.tables import (
    CLEAN_EVENTS,
    EVENT_TABLES,
    PLAYER_FEATURES,
    RAW_EVENTS,
    SNAPSHOT_COLUMN,
    latest_table,
    model_assets,
    newest_value,
)

# The column that says how recent a table's data is.
TIME_COLUMNS = {RAW_EVENTS: "event_time", CLEAN_EVENTS: "event_time", PLAYER_FEATURES: "snapshot_date"}
PREDICTIONS_TIME_COLUMN = "snapshot_date"


def sla_tables(settings: Settings) -> dict[str, tuple[str, float]]:
    """Table -> (time column, SLA hours) for every table with an SLA (> 0) in `[freshness]`."""
    sla = settings.freshness
    hours = {RAW_EVENTS: sla.raw_events, CLEAN_EVENTS: sla.clean_events, PLAYER_FEATURES: sla.player_features}
    out = {table: (TIME_COLUMNS[table], h) for table, h in hours.items()}
    for spec in settings.specs:
        out[model_assets(spec.name).predictions] = (PREDICTIONS_TIME_COLUMN, sla.predictions)
    return {table: (column, float(h)) for table, (column, h) in out.items() if h > 0}


def with_freshness_policies(
    assets: Sequence[dg.AssetsDefinition], slas: dict[str, tuple[str, float]]
) -> list[dg.AssetsDefinition]:
    """`assets` with a time-window FreshnessPolicy on each table that has an SLA."""

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        sla = slas.get(spec.key.to_user_string())
        if sla is None:
            return spec
        return spec.replace_attributes(
            freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=sla[1]))
        )

    return [a.map_asset_specs(attach) for a in assets]


def staleness(
    newest: datetime | None, updated: datetime | None, sla_hours: float, now: datetime
) -> tuple[bool, str]:
    """Whether data with this newest time and last update meets the SLA at `now`, and why."""
    if newest is None or updated is None:
        return False, "no data yet"
    data_lag = (now - newest).total_seconds() / 3600
    update_lag = (now - updated).total_seconds() / 3600
    fresh = data_lag <= sla_hours and update_lag <= sla_hours
    return fresh, f"newest data {data_lag:.1f} h old, last update {update_lag:.1f} h ago, SLA {sla_hours:g} h"


def freshness_checks(slas: dict[str, tuple[str, float]]) -> list[dg.AssetChecksDefinition]:
    """A `freshness` check per table with an SLA: a stale table shows as a failed (warning) check."""
    return [_freshness_check(table, column, hours) for table, (column, hours) in slas.items()]


def _freshness_check(table: str, column: str, hours: float) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table,
        name="freshness",
        blocking=False,
        description=f"newest {column} and last update within {hours:g} h",
    )
    def check(lake: LakeResource) -> dg.AssetCheckResult:
        uri = lake.table_uri(table)
        delta = latest_table(uri)
        if delta is None:
            return dg.AssetCheckResult(passed=False, metadata={"reason": "table not written yet"})
        history = delta.history(1)
        updated = datetime.fromtimestamp(history[0]["timestamp"] / 1000, UTC)
        newest = newest_value(delta, column, EVENT_TABLES.get(table) or SNAPSHOT_COLUMN)
        if isinstance(newest, date) and not isinstance(newest, datetime):
            # a day's data is complete at the end of that day
            newest = datetime(newest.year, newest.month, newest.day, tzinfo=UTC) + timedelta(days=1)
        fresh, reason = staleness(newest, updated, hours, datetime.now(UTC))
        return dg.AssetCheckResult(
            passed=fresh,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"reason": reason, "newest": str(newest), "last_update": updated.isoformat()},
        )

    return check
