"""Schedules, sensors and automation: keep the graph fresh, retrain when inputs drift or quality drops.

Every sensor and schedule here is defined running (`default_status`): Dagster defines them stopped
unless told, which would leave a fresh deployment doing nothing.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from ml_assets.core.events.landing import (
    LANDING_SCHEMA,
    LandingCursor,
    list_batches,
    newer_batches,
    partition_day,
)
from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.monitoring.alerts import Alert, send_alert
from ml_assets.core.monitoring.drift import alarm_reason, alarm_rows, drift_summary
from ml_assets.core.settings import Settings
from ml_assets.defs.partitions import partition_days, utc_now
from ml_assets.defs.resources import LakeResource
from ml_assets.lake.tables import EVENT_TABLES, model_assets, open_table

RUNNING = dg.DefaultSensorStatus.RUNNING
TRIGGER_TAG = "ml_assets/trigger"
REASON_TAG = "ml_assets/reason"
ALL_ASSETS_JOB = "all_assets"
FAILED = AssetCheckExecutionRecordStatus.FAILED
CHECK_HISTORY = 100  # failed executions read per check and tick (a tick is a minute)


def retrain_selection(spec: ModelSpec) -> list[dg.AssetKey]:
    """The assets a retrain of one model materializes."""
    return [dg.AssetKey(name) for name in model_assets(spec.name).retrain]


def partitioned_selection(specs: tuple[ModelSpec, ...]) -> list[dg.AssetKey]:
    """Every daily-partitioned asset: what a refresh of new days materializes."""
    per_model = [name for s in specs for name in model_assets(s.name).daily]
    return [dg.AssetKey(k) for k in [*EVENT_TABLES, *per_model]]


def _read_latest(uri: str) -> pl.DataFrame | None:
    """Rows of the newest snapshot day of a monitoring table, or None when it does not exist yet."""
    if open_table(uri) is None:
        return None
    table = pl.scan_delta(uri)
    newest = table.select(pl.col("snapshot_date").max()).collect().item()
    return table.filter(pl.col("snapshot_date") == newest).collect() if newest else None


def _cooling_down(cursor: str | None, hours: float, now: datetime) -> bool:
    if not cursor:
        return False
    last = datetime.fromisoformat(json.loads(cursor)["requested_at"])
    return now - last < timedelta(hours=hours)


def _request_retrain(
    context: dg.SensorEvaluationContext,
    spec: ModelSpec,
    lake: LakeResource,
    trigger: str,
    day: object,
    version: str,
    reason: str,
    alert: Alert,
    tags: dict[str, str] | None = None,
) -> dg.SensorResult | dg.SkipReason:
    """Alert and request a retrain of `spec`'s model, once per day and version and not within the
    trigger's cooldown (`[drift]` / `[performance]` cooldown_hours)."""
    settings = lake.settings()
    cooldown = settings.drift.cooldown_hours if trigger == "drift" else settings.performance.cooldown_hours
    now = datetime.now(UTC)
    if _cooling_down(context.cursor, cooldown, now):
        return dg.SkipReason(
            f"{spec.name}: {trigger} on {day}, but a retrain was requested within the cooldown"
        )
    send_alert(alert, settings.webhook_url, context.log)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{spec.name}-{trigger}-{day}-{version}",
                asset_selection=retrain_selection(spec),
                tags={TRIGGER_TAG: trigger, REASON_TAG: reason[:250], **(tags or {})},
            )
        ],
        cursor=json.dumps({"requested_at": now.isoformat(), "day": str(day)}),
    )


def drift_sensor(spec: ModelSpec, interval_s: int = 600) -> dg.SensorDefinition:
    """Requests a retrain of `spec`'s model when its stored drift for the newest day raises the alarm."""
    n, names = spec.name, model_assets(spec.name)

    @dg.sensor(
        name=names.drift_sensor,
        asset_selection=retrain_selection(spec),
        minimum_interval_seconds=interval_s,
        default_status=RUNNING,
        description=f"Retrain {n} when the share of drifted features (or the score) passes [drift] limits.",
    )
    def sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult | dg.SkipReason:
        settings = lake.settings()
        latest = _read_latest(lake.table_uri(names.feature_drift))
        if latest is None or latest.height == 0:
            return dg.SkipReason(f"no {names.feature_drift} results yet")
        day, version = latest["snapshot_date"][0], latest["model_version"][0]
        watched = alarm_rows(latest, settings.drift.ignore)
        summary = drift_summary(watched, settings.drift.thresholds())
        if not summary["alarm"]:
            return dg.SkipReason(
                f"{n} {version} on {day}: {summary['drifted']}/{summary['features']} drifted, no alarm"
            )
        return _request_retrain(
            context,
            spec,
            lake,
            trigger="drift",
            day=day,
            version=version,
            reason=f"{day}: {alarm_reason(watched, settings.drift.thresholds())}",
            alert=Alert(
                kind="drift",
                model=n,
                title=f"{n}: input drift on {day}",
                details={**summary, "version": version},
            ),
            tags={"ml_assets/drifted_features": ",".join(summary.get("drifted_features", [])[:10])},
        )

    return sensor


def degradation_sensor(spec: ModelSpec, interval_s: int = 600) -> dg.SensorDefinition:
    """Requests a retrain of `spec`'s model when its stored performance for the newest day is degraded."""
    n, names = spec.name, model_assets(spec.name)

    @dg.sensor(
        name=names.degradation_sensor,
        asset_selection=retrain_selection(spec),
        minimum_interval_seconds=interval_s,
        default_status=RUNNING,
        description=f"Retrain {n} when its estimated or realized quality drops past [performance] threshold.",
    )
    def sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult | dg.SkipReason:
        latest = _read_latest(lake.table_uri(names.model_performance))
        overall = latest.filter(pl.col("segment_column") == "all") if latest is not None else None
        if overall is None or overall.height == 0:
            return dg.SkipReason(f"no {names.model_performance} results yet")
        row = overall.row(0, named=True)
        if not row["degraded"]:
            return dg.SkipReason(f"{n} on {row['snapshot_date']}: {row['reason']}")
        kind = "estimated" if row["estimated"] else "realized"
        return _request_retrain(
            context,
            spec,
            lake,
            trigger="degradation",
            day=row["snapshot_date"],
            version=row["model_version"],
            reason=f"{kind}: {row['reason']}",
            alert=Alert(kind="degradation", model=n, title=f"{n}: {kind} quality dropped", details=row),
        )

    return sensor


def _cursor(seen: LandingCursor, pending: set[str]) -> str:
    return json.dumps({"after": seen.after, "recent": sorted(seen.recent), "pending": sorted(pending)})


def new_files_sensor(
    specs: tuple[ModelSpec, ...], partitions: dg.TimeWindowPartitionsDefinition, interval_s: int = 60
) -> dg.SensorDefinition:
    """Starts the partitioned pipeline over the days that newly landed batches touch.

    A day that is not a partition yet (today's, in a live lake, until midnight; a day past an
    archive's end until the code location reloads) is kept in the cursor as pending and requested
    on the first tick that finds it a partition: no landed day is ever dropped.
    """

    @dg.sensor(
        name="new_landing_batches_sensor",
        asset_selection=partitioned_selection(specs),
        minimum_interval_seconds=interval_s,
        default_status=RUNNING,
        description="Materialize the days of newly landed batches (ingest / simulate) through the graph.",
    )
    def sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult | dg.SkipReason:
        batches = list_batches(lake.landing_uri)
        if context.cursor is None:
            # first tick: what landed before the sensor ran is history, not news (materialize it
            # with `ml-assets materialize`); only batches that land from now on start runs
            _, seen = newer_batches(batches, LandingCursor())
            return dg.SensorResult(
                skip_reason=f"baseline: {len(batches)} batches already landed",
                cursor=_cursor(seen, set()),
            )
        state = json.loads(context.cursor)
        if isinstance(state, list):  # the cursor of ml-assets 0.1: the batches seen
            state = {"seen": state, "pending": []}
        # cursors before 0.3 listed every batch seen; now an mtime watermark and an hour of names
        before = LandingCursor(state.get("after", 0.0), frozenset(state.get("recent", state.get("seen", []))))
        pending = set(state["pending"])
        new, seen = newer_batches(batches, before)
        if new:
            bounds = lake.settings().cleaning.time_bounds()
            landed = pl.scan_parquet([b.uri for b in new], schema=LANDING_SCHEMA, missing_columns="insert")
            days = landed.select(partition_day(bounds)).unique().collect()
            pending |= {d.isoformat() for d in days["partition_date"]}
        keys = set(partition_days(partitions))
        ready = sorted(pending & keys)
        cursor = _cursor(seen, pending - keys)
        if not ready:
            waiting = f"; {len(pending)} landed days wait to become partitions" if pending else ""
            if not new:
                return dg.SkipReason(f"no new landing batches{waiting}")
            return dg.SensorResult(skip_reason=f"{len(new)} new landing batches{waiting}", cursor=cursor)
        first, last = ready[0], ready[-1]
        digest = hashlib.sha256(",".join([*sorted(b.name for b in new), *ready]).encode()).hexdigest()[:16]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"landing-{digest}",
                    asset_selection=partitioned_selection(specs),
                    tags={
                        "dagster/asset_partition_range_start": first,
                        "dagster/asset_partition_range_end": last,
                        TRIGGER_TAG: "new_files",
                        REASON_TAG: f"{len(new)} new landing batches; landed days {first}..{last}",
                    },
                )
            ],
            cursor=cursor,
        )

    return sensor


def check_alert_sensor(interval_s: int = 60) -> dg.SensorDefinition:
    """Sends every failed asset check to the alert hook once.

    It reads each check's execution history (`get_asset_check_execution_history`), which every
    instance storage answers, SQLite's run-sharded event log included; the cursor keeps, per
    check, the newest failed execution already sent.
    """

    @dg.sensor(name="failed_check_alert_sensor", minimum_interval_seconds=interval_s, default_status=RUNNING)
    def sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        if context.repository_def is None:
            raise ValueError("failed_check_alert_sensor needs its code location's definitions")
        sent: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        storage = context.instance.event_log_storage
        webhook = lake.settings().webhook_url
        alerts = 0
        for key in sorted(context.repository_def.asset_graph.asset_check_keys, key=str):
            name = key.to_user_string()
            failed = storage.get_asset_check_execution_history(key, limit=CHECK_HISTORY, status={FAILED})
            new = sorted((r for r in failed if r.id > sent.get(name, 0)), key=lambda r: r.id)
            for record in new:
                evaluation = record.event.dagster_event if record.event else None
                data = evaluation.asset_check_evaluation_data if evaluation else None
                send_alert(
                    Alert(
                        kind="check_failed",
                        model=None,
                        title=f"check {key.name} failed on {key.asset_key.to_user_string()}",
                        details={
                            "run_id": record.run_id,
                            "partition": record.partition,
                            "severity": str(data.severity) if data else "unknown",
                        },
                    ),
                    webhook,
                    context.log,
                )
                alerts += 1
            if new:
                sent[name] = new[-1].id
        return dg.SensorResult(
            cursor=json.dumps(sent, sort_keys=True),
            skip_reason=None if alerts else "no new failed checks",
        )

    return sensor


def schedules(
    specs: tuple[ModelSpec, ...], partitions: dg.TimeWindowPartitionsDefinition
) -> list[dg.ScheduleDefinition]:
    """A daily refresh of the newest partition and a weekly retrain of every model."""

    @dg.schedule(
        name="daily_refresh",
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        target=partitioned_selection(specs),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Materialize the day before each tick (the newest complete UTC day) through the graph.",
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        # the tick's own day, as a partitioned schedule does: a late or re-evaluated tick still
        # refreshes the day it was scheduled for, and the run key makes that once per day
        tick = context.scheduled_execution_time or utc_now()
        day = (tick.astimezone(UTC) - timedelta(days=1)).date().isoformat()
        if day not in partition_days(partitions, tick):
            return dg.SkipReason(f"{day} is not a partition (an archive lake ends at its newest landed day)")
        return dg.RunRequest(run_key=f"daily-{day}", partition_key=day, tags={TRIGGER_TAG: "daily_schedule"})

    weekly = dg.ScheduleDefinition(
        name="weekly_retrain",
        cron_schedule="0 4 * * 1",
        execution_timezone="UTC",
        target=dg.AssetSelection.assets(*[k for s in specs for k in retrain_selection(s)]),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={TRIGGER_TAG: "weekly_schedule"},
        description="Retrain every model on the newest data; each version still passes the promotion gate.",
    )
    return [daily, weekly]


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the assets' automation conditions (drift and performance follow new predictions)."""
    return dg.AutomationConditionSensorDefinition(
        "default_automation_condition_sensor", target=dg.AssetSelection.all(), default_status=RUNNING
    )


def model_sensors(spec: ModelSpec, settings: Settings) -> list[dg.SensorDefinition]:
    """The sensors that retrain one model: on drift, and on degraded quality."""
    every = settings.automation.monitoring_sensor_seconds
    return [drift_sensor(spec, every), degradation_sensor(spec, every)]


def automation_defs(settings: Settings, partitions: dg.TimeWindowPartitionsDefinition) -> dg.Definitions:
    """What runs the whole graph: the job of every asset, new-file and check-alert sensors, the
    automation-condition sensor, and the daily and weekly schedules."""
    return dg.Definitions(
        jobs=[dg.define_asset_job(ALL_ASSETS_JOB, selection=dg.AssetSelection.all())],
        sensors=[
            new_files_sensor(settings.specs, partitions, settings.automation.landing_sensor_seconds),
            check_alert_sensor(settings.automation.alert_sensor_seconds),
            automation_sensor(),
        ],
        schedules=schedules(settings.specs, partitions),
    )
