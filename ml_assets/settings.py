"""Project settings: the lake home, thresholds and model options, from `ml_assets.toml` and the environment.

Every key is optional; `DEFAULTS` documents the default of each. The file lives in the lake home
(`$ML_ASSETS_HOME/ml_assets.toml`) unless a path is given.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_assets.core.spec import ModelSpec, specs_from_settings

HOME_ENV = "ML_ASSETS_HOME"
CONFIG_ENV = "ML_ASSETS_CONFIG"
DEFAULT_HOME = ".ml_assets"

# The documented defaults of ml_assets.toml, section by section.
DEFAULTS: dict[str, dict[str, Any]] = {
    "lake": {
        "uri": "",  # empty: <home>/lake on local disk; else e.g. s3://bucket/prefix
    },
    "cleaning": {
        "watermark_days": 3,  # events arriving more than this many days late are quarantined
    },
    "features": {
        "windows": [1, 7, 28],  # trailing windows in days, inclusive of the snapshot day
        "max_event_types": 40,  # generic features for at most this many event types (most frequent first)
        "chunk_days": 7,  # days cleaned and scored per piece: bounds memory on long backfills
        "chunk_rows": 500_000,  # feature rows (whole players) computed and written per piece
    },
    "drift": {
        # a feature drifts when PSI > psi AND its effect size passes too (normalised Wasserstein for
        # numbers, Jensen-Shannon for categories): p-values flag everything at 100k rows, these do not
        "psi": 0.02,
        "wasserstein": 0.1,
        "jensen_shannon": 0.07,
        "share_drifted": 0.3,  # the drift sensor fires when this share of features drifts (or the score)
        "min_rows": 1000,
        "cooldown_hours": 24,  # at most one drift-triggered retrain per model in this time
        # Left out of the alarm (still measured and stored): features that move with the calendar in
        # any growing game by construction - age, lifetime totals and maxima, days since, app version.
        "ignore": [
            "tenure_days",
            "events_total",
            "app_version",
            "*_recency_days",
            "*_count_total",
            "*_value_total",
            "*_value_max",
            "game_level_max",
        ],
    },
    "performance": {
        "degradation_threshold": 0.05,  # relative drop of ROC AUC vs the model's own test figure
        "metric": "roc_auc",
        "cooldown_hours": 24,
    },
    "freshness": {
        # hours after which a table counts as stale (newest event time and last update); 0 = no SLA
        "raw_events": 36,
        "clean_events": 36,
        "player_features": 36,
        "predictions": 36,
    },
    "alerts": {
        "webhook_url": "",  # POSTed JSON for failed checks, drift and degradation; always logged too
    },
    # defaults for every model; a [models.NAME] table can set any of these for itself
    "training": {
        "snapshot_every_days": 3,  # sample training snapshots this far apart (the row cap bounds the size)
        "max_rows": 200_000,  # row cap of the training set (seeded sample)
        "test_fraction": 0.2,  # latest share of snapshots held out as the out-of-time test
        "seed": 42,
        "num_boost_round": 150,
        "early_stopping_rounds": 30,
        "explain_top": 3,  # top reasons per prediction (pred_contrib); 0 = no explanations
    },
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one lake home."""

    home: Path
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, section: str, key: str) -> Any:
        """The value of `section.key`, falling back to the documented default."""
        return self.values.get(section, {}).get(key, DEFAULTS[section][key])

    @property
    def lake_uri(self) -> str:
        """Root of the Delta tables: a local folder by default, or an object-store URI."""
        uri = str(self.get("lake", "uri"))
        return uri or str(self.home / "lake")

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def specs(self) -> tuple[ModelSpec, ...]:
        """The model specs in force: `[models.*]` tables if any are declared, else the shipped ones."""
        return specs_from_settings(self.models, self.values.get("training"))

    def spec(self, name: str) -> ModelSpec:
        """One model's spec by name; ValueError naming the known models when absent."""
        for spec in self.specs():
            if spec.name == name:
                return spec
        raise ValueError(f"no model named {name!r}; known: {[s.name for s in self.specs()]}")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The lake home as an absolute path: the argument, else $ML_ASSETS_HOME, else ./.ml_assets."""
    raw = home if home is not None else os.environ.get(HOME_ENV, DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


def load_settings(
    home: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None
) -> Settings:
    """Read `ml_assets.toml` (from `config`, $ML_ASSETS_CONFIG or the home) and validate its keys."""
    root = resolve_home(home)
    path = Path(config or os.environ.get(CONFIG_ENV) or root / "ml_assets.toml")
    raw: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as fh:
            try:
                raw = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    values: dict[str, dict[str, Any]] = {}
    for section, table in raw.items():
        if section == "models":
            continue
        if section not in DEFAULTS:
            raise ValueError(
                f"{path}: unknown section [{section}]; known: {sorted(DEFAULTS)} and [models.NAME]"
            )
        for key in table:
            if key not in DEFAULTS[section]:
                raise ValueError(f"{path}: unknown key {section}.{key}; known: {sorted(DEFAULTS[section])}")
        values[section] = dict(table)
    models = {str(name): dict(table) for name, table in raw.get("models", {}).items()}
    settings = Settings(home=root, values=values, models=models)
    settings.specs()  # validate the model tables now, with the file's name in the message
    return settings
