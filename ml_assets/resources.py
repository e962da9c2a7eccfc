"""Typed Dagster resources: where the lake lives and how it is tuned."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ml_assets.core.registry import Registry
from ml_assets.settings import Settings, load_settings

REGISTRY_TABLE = "model_registry"
EXPERIMENTS_TABLE = "experiments"


class LakeResource(dg.ConfigurableResource):
    """The lake home: landing batches, model files and `ml_assets.toml` settings."""

    home: str
    config_path: str = ""

    def settings(self) -> Settings:
        """The settings in force, read fresh so an edited `ml_assets.toml` applies to the next run."""
        return load_settings(self.home, self.config_path or None)

    @property
    def landing_dir(self) -> Path:
        return self.settings().landing_dir

    def model_dir(self, name: str) -> Path:
        """Folder of one model's files, named by version."""
        return self.settings().models_dir / name

    def table_uri(self, name: str) -> str:
        """Where a table of the lake lives."""
        return f"{self.settings().lake_uri.rstrip('/')}/{name}"

    def registry(self) -> Registry:
        """The model registry: an append-only Delta log of every version's stage changes."""
        return Registry(self.table_uri(REGISTRY_TABLE))

    @property
    def experiments_uri(self) -> str:
        return self.table_uri(EXPERIMENTS_TABLE)
