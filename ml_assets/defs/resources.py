"""Typed Dagster resources and what every stage shares: the lake, IO managers, loggers, executor."""

from __future__ import annotations

import os
from datetime import date
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from ml_assets.core.days import piece_days
from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import HOME_ENV, Settings, load_settings, resolve_home
from ml_assets.defs.progress import step_progress_logger
from ml_assets.engine.engines import Engine, engine_for
from ml_assets.lake.io_manager import DeltaLakeIOManager
from ml_assets.lake.model_io import ModelStoreIOManager
from ml_assets.lake.model_store import ModelStore
from ml_assets.lake.tables import (
    EVENT_TABLES,
    EXPERIMENTS,
    MODEL_REGISTRY,
    SNAPSHOT_COLUMN,
    rows_per_day,
    table_uri,
)

MODEL_IO = "model_io_manager"


class LakeResource(dg.ConfigurableResource):
    """The lake home: landing batches, the model store and the `ml_assets.toml` settings."""

    home: str
    config_path: str = ""
    _settings: Settings | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        """The settings in force, parsed and validated once per resource (so once per run or tick:
        an edited `ml_assets.toml` applies from the next one)."""
        if self._settings is None:
            self._settings = load_settings(self.home, self.config_path or None)
        return self._settings

    @property
    def landing_uri(self) -> str:
        """Where landing batches are (a folder, or a prefix of the object store the lake is on)."""
        return self.settings().landing_uri

    def table_uri(self, name: str) -> str:
        """Where a table of the lake lives."""
        return table_uri(self.settings().lake_uri, name)

    def piece_days(self, table: str, first: date, last: date) -> int:
        """Days per piece of a run over days [first, last] that reads day-partitioned `table`:
        `[features] chunk_days`, or more while a piece holds at most `chunk_rows` of its rows."""
        options = self.settings().features
        if (last - first).days < options.chunk_days:
            return options.chunk_days  # one piece whatever the rows: no need to read the log
        column = EVENT_TABLES.get(table) or SNAPSHOT_COLUMN  # a model's tables: by snapshot day
        counts = rows_per_day(self.table_uri(table), column, first, last)
        return piece_days(counts, options.chunk_days, options.chunk_rows)

    def engine(self) -> Engine:
        """Where the per-player steps run (`[engine]`): this process, or Ray tasks over player shards."""
        return engine_for(self.settings().engine)

    def registry(self) -> Registry:
        """The model registry: an append-only Delta log of every version's stage changes."""
        return Registry(self.table_uri(MODEL_REGISTRY))

    @property
    def experiments_uri(self) -> str:
        return self.table_uri(EXPERIMENTS)

    def model_store(self) -> ModelStore:
        """Every trained version: JSON card plus LightGBM text model."""
        return ModelStore(self.settings().models_uri)


def resource_defs(settings: Settings) -> dg.Definitions:
    """The resources, loggers and executor of every run on the lake at `settings.home`."""
    # EnvVar keeps the resolved value out of the stored run config when the home comes from the environment
    from_env = os.environ.get(HOME_ENV)
    home: str | dg.EnvVar = (
        dg.EnvVar(HOME_ENV) if from_env and resolve_home(from_env) == settings.home else str(settings.home)
    )
    # the writer lock: every run that writes the lake holds it, whoever launched the run
    lock: dict[str, Any] = {
        "writer_lock": str(settings.writer_lock),
        "writer_wait_seconds": settings.lake.writer_wait_seconds,
    }
    return dg.Definitions(
        resources={
            "lake": LakeResource(home=home),
            "io_manager": DeltaLakeIOManager(root_uri=settings.lake_uri, **lock),
            MODEL_IO: ModelStoreIOManager(models_dir=settings.models_uri, **lock),
        },
        loggers={"console": dg.colored_console_logger, "progress": step_progress_logger},
        # one process for every step: a process per step costs seconds each on a laptop
        executor=dg.in_process_executor,
    )
