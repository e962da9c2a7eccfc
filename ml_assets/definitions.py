"""The one place that wires assets, checks, jobs, schedules, sensors and resources into Definitions."""

from __future__ import annotations

import os

import dagster as dg

from ml_assets.assets.events import build_event_assets
from ml_assets.assets.features import build_feature_assets
from ml_assets.assets.models import MODEL_IO, build_model_assets
from ml_assets.assets.monitoring import build_monitoring_assets
from ml_assets.automation import (
    automation_sensor,
    check_alert_sensor,
    degradation_sensor,
    drift_sensor,
    new_files_sensor,
    schedules,
)
from ml_assets.core.landing import read_window
from ml_assets.freshness import freshness_checks, sla_tables, with_freshness_policies
from ml_assets.lake_io import DeltaLakeIOManager
from ml_assets.partitions import daily_partitions
from ml_assets.progress import step_progress_logger
from ml_assets.resources import LakeResource
from ml_assets.settings import HOME_ENV, Settings, load_settings, resolve_home

ALL_ASSETS_JOB = "all_assets"


def build_definitions(settings: Settings) -> dg.Definitions:
    """Definitions for the lake at `settings.home`; partitions span its landed data window."""
    partitions = daily_partitions(read_window(settings.landing_dir))
    specs = settings.specs()
    slas = sla_tables(settings, [s.name for s in specs])
    assets = with_freshness_policies(
        [
            *build_event_assets(partitions),
            *build_feature_assets(partitions),
            *[a for spec in specs for a in build_model_assets(spec, partitions)],
            *[a for spec in specs for a in build_monitoring_assets(spec, partitions)],
        ],
        slas,
    )
    # EnvVar keeps the resolved value out of the stored run config when the home comes from the environment
    from_env = os.environ.get(HOME_ENV)
    home: str | dg.EnvVar = (
        dg.EnvVar(HOME_ENV) if from_env and resolve_home(from_env) == settings.home else str(settings.home)
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=freshness_checks(slas),
        sensors=[
            *[drift_sensor(spec) for spec in specs],
            *[degradation_sensor(spec) for spec in specs],
            new_files_sensor(specs, partitions),
            check_alert_sensor(),
            automation_sensor(),
        ],
        schedules=schedules(specs, partitions),
        jobs=[
            dg.define_asset_job(ALL_ASSETS_JOB, selection=dg.AssetSelection.all()),
            *[
                # promote / roll back from the UI: launch with config {action, version, reason}
                dg.define_asset_job(
                    f"{spec.name}_stage_change",
                    selection=dg.AssetSelection.assets(f"{spec.name}_production_model"),
                    description=f"Set {spec.name}'s production version: config action promote|rollback|sync.",
                )
                for spec in specs
            ],
        ],
        resources={
            "lake": LakeResource(home=home),
            "io_manager": DeltaLakeIOManager(root_uri=settings.lake_uri),
            MODEL_IO: dg.FilesystemIOManager(base_dir=str(settings.home / "dagster_storage")),
        },
        loggers={"console": dg.colored_console_logger, "progress": step_progress_logger},
        # one process for every step: a process per step costs seconds each on a laptop
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_settings())
