"""Project settings: the lake home, thresholds and model options, from `ml_assets.toml` and the environment.

The file is parsed once, into typed and range-checked tables (`load_settings`); every key is
optional and its default is the field's default below. A wrong type, an out-of-range value or an
unknown key fails at load with one line naming it. The file lives in the lake home
(`$ML_ASSETS_HOME/ml_assets.toml`) unless a path is given.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field

from ml_assets.core.config import (
    Day,
    Fraction,
    Globs,
    MonitoredMetric,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SettingsError,
    Table,
    Text,
    parse,
)
from ml_assets.core.events.cleaning import FieldLimits
from ml_assets.core.events.landing import TimeBounds
from ml_assets.core.features.behaviour import FAMILIES, BehaviourConfig
from ml_assets.core.models.spec import ModelSpec, TrainingTable, specs_from_settings
from ml_assets.core.monitoring.drift import DriftThresholds

TableT = TypeVar("TableT", bound=Table)
HOME_ENV = "ML_ASSETS_HOME"
CONFIG_ENV = "ML_ASSETS_CONFIG"
POSTGRES_URL_ENV = "ML_ASSETS_POSTGRES_URL"
DEFAULT_HOME = ".ml_assets"


class LakeSettings(Table):
    # empty: <home>/lake on local disk; or s3://bucket/prefix (`pip install -e ".[s3]"`), with the landing
    # batches and the model store under it; credentials and endpoint from the AWS_* environment
    uri: Text = ""
    # a run waits this long for the run writing the lake to finish (one writer at a time), then fails
    writer_wait_seconds: NonNegativeFloat = 600
    # lake_maintenance (daily, and `ml-assets maintain`): compaction, checkpoints, and VACUUM of
    # files no version younger than this needs (Delta's own default: 7 days of time travel)
    vacuum_retention_hours: NonNegativeInt = 168
    maintenance_cron: Text = "0 5 * * *"  # when the lake_maintenance schedule runs (UTC)


class CleaningSettings(Table):
    watermark_days: NonNegativeInt = 3  # events arriving more than this many days late are quarantined
    # an event id clean on one of this many earlier days is a duplicate (Amplitude's insert_id
    # window; Segment keeps about one day): redeliveries and re-exports come within a week
    dedup_horizon_days: NonNegativeInt = 7
    # rows with a longer field are quarantined as field_too_long (characters)
    max_field_chars: PositiveInt = 1_000  # ids, event type, platform, country, app version
    max_properties_chars: PositiveInt = 100_000  # the JSON properties
    # plausible event times: from this day on, and at most this long after the row reached the
    # lake; any other time is quarantined and does not widen the lake's days
    earliest_event_date: Day = date(1990, 1, 1)
    max_future_skew_hours: NonNegativeFloat = 24

    def time_bounds(self) -> TimeBounds:
        """The plausible-time window landing and cleaning apply."""
        return TimeBounds(earliest=self.earliest_event_date, future_skew_hours=self.max_future_skew_hours)

    def limits(self) -> FieldLimits:
        """The field limits cleaning applies."""
        return FieldLimits(text=self.max_field_chars, properties=self.max_properties_chars)


class FeatureSettings(Table):
    # trailing windows in days, inclusive of the snapshot day
    windows: Annotated[
        list[Annotated[int, Field(ge=1)]],
        Field(min_length=1, description="a non-empty list of whole numbers >= 1"),
    ] = [1, 7, 28]
    max_event_types: NonNegativeInt = 40  # generic features for at most this many event types (most frequent)
    # days cleaned and scored per piece: bounds memory on long backfills; a piece spans more days while
    # it holds at most chunk_rows rows, so a long log of thin days is a few pieces (core/days.py)
    chunk_days: PositiveInt = 7
    chunk_rows: PositiveInt = 500_000  # feature rows (whole players) computed and written per piece
    # behaviour features of the rows a model trains on and scores (core/features/behaviour.py); off
    # by default: on the small simulated test lake they cost first_purchase 0.88 -> 0.56 test ROC AUC
    families: Annotated[
        list[Literal[FAMILIES]],  # type: ignore[valid-type]
        Field(description=f"a list of {list(FAMILIES)}"),
    ] = []
    behaviour_days: PositiveInt = 7  # the trailing window of models other than new-player ones
    session_idle_minutes: PositiveFloat = 30  # a longer gap between events starts a new session
    behaviour_types: NonNegativeInt = 5  # per-type behaviour for this many most frequent types

    def behaviour(self) -> BehaviourConfig:
        """The behaviour families in force (event types are chosen from the training events)."""
        return BehaviourConfig(
            families=tuple(self.families),
            window_days=self.behaviour_days,
            session_idle_minutes=float(self.session_idle_minutes),
            max_types=self.behaviour_types,
            windows=tuple(self.windows),
        )


class DriftSettings(Table):
    # a feature drifts when PSI > psi AND its effect size passes too (normalised Wasserstein for
    # numbers, Jensen-Shannon for categories): p-values flag everything at 100k rows, these do not
    # (these are floors: each row also clears the noise at its sample sizes, see monitoring/drift.py)
    psi: PositiveFloat = 0.02
    wasserstein: PositiveFloat = 0.1
    jensen_shannon: Fraction = 0.07
    # the drift sensor fires when this share of watched features drifts, or the score and one feature
    share_drifted: Fraction = 0.3
    min_rows: PositiveInt = 1000
    cooldown_hours: NonNegativeFloat = 24  # at most one drift-triggered retrain per model in this time
    # Left out of the alarm (still measured and stored): features that move with the calendar in any
    # growing game by construction - age, lifetime totals and maxima, days since, app version.
    ignore: Globs = [
        "tenure_days",
        "events_total",
        "app_version",
        "*_recency_days",
        "*_count_total",
        "*_value_total",
        "*_value_max",
        "game_level_max",
    ]

    def thresholds(self) -> DriftThresholds:
        """The thresholds `feature_drift` and the alarm use."""
        return DriftThresholds(
            psi=self.psi,
            wasserstein=self.wasserstein,
            jensen_shannon=self.jensen_shannon,
            share_drifted=self.share_drifted,
            min_rows=self.min_rows,
        )


class PerformanceSettings(Table):
    degradation_threshold: Fraction = 0.05  # relative drop vs the model's own test figure
    metric: MonitoredMetric = "roc_auc"
    cooldown_hours: NonNegativeFloat = 24


class FreshnessSettings(Table):
    # hours after which a table counts as stale (newest event time and last update); 0 = no SLA
    raw_events: NonNegativeFloat = 36
    clean_events: NonNegativeFloat = 36
    player_features: NonNegativeFloat = 36
    predictions: NonNegativeFloat = 36


class PartitionSettings(Table):
    # live: daily partitions grow with the UTC clock (a new one each midnight, no reload); archive:
    # they end at the newest landed day (a finished log, e.g. CDNOW 1997-1998, gets no decades of
    # empty days). auto: live when the newest landed day is within live_within_days of today.
    mode: Annotated[
        Literal["auto", "live", "archive"], Field(description="one of ['auto', 'live', 'archive']")
    ] = "auto"
    live_within_days: PositiveInt = 30


class AutomationSettings(Table):
    # how often the daemon evaluates each sensor, in seconds (Dagster's minimum_interval_seconds)
    landing_sensor_seconds: PositiveInt = 60  # new landing batches -> the daily graph over their days
    monitoring_sensor_seconds: PositiveInt = 600  # drift and degradation -> retrain
    alert_sensor_seconds: PositiveInt = 60  # failed checks -> the alert hook


def _owner(value: str) -> str:
    if not (value.startswith("team:") and len(value) > 5) and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
        raise ValueError(f"not an owner: {value!r}")
    return value


Owner = Annotated[str, AfterValidator(_owner)]


class CatalogSettings(Table):
    # who answers for the assets, shown on each asset in the UI: emails or team:NAME
    owners: Annotated[list[Owner], Field(description='a list of owners, each an email or "team:NAME"')] = [
        "team:analytics"
    ]


class AlertSettings(Table):
    webhook_url: Text = ""  # POSTed JSON for failed checks, drift and degradation; always logged too


class TrafficTable(Table):
    # A/B and canary: versions that get a share of players (a stable hash of model and player_id); the
    # rest get the production version. A shadow version scores every request, unserved.
    arms: dict[str, Fraction] = {}
    shadow: Text = ""


class ServingSettings(Table):
    # `ml-assets serve`: the collector, online features and predictions (serving/app.py)
    host: Text = "127.0.0.1"
    port: PositiveInt = 8000
    # API keys of this lake's game; more from $ML_ASSETS_API_KEYS (comma-separated). None: 401s.
    api_keys: list[Text] = []
    max_batch_events: PositiveInt = 2000  # Amplitude's HTTP API limits: 2,000 events, 1 MB a batch
    max_batch_bytes: PositiveInt = 1_000_000
    roll_seconds: PositiveFloat = 10  # collected events land as one landing batch this often
    online_store: Annotated[Literal["sqlite", "redis"], Field(description="one of ['sqlite', 'redis']")] = (
        "sqlite"
    )
    redis_url: Text = ""  # else $ML_ASSETS_REDIS_URL, else redis://127.0.0.1:6379/0
    online_ttl_hours: PositiveFloat = 72  # an online vector older than this is not served
    warm_seconds: PositiveFloat = 10  # the warm path applies collected events this often
    reload_seconds: PositiveFloat = 1  # how often the server looks for stage and traffic changes
    log_flush_seconds: PositiveFloat = 5  # served predictions are appended to Delta this often
    log_flush_rows: PositiveInt = 10_000  # ... or once this many are waiting
    reasons: NonNegativeInt = 3  # top features by SHAP contribution returned with each prediction
    breaker_failures: PositiveInt = 3  # online store errors in a row that open the circuit
    breaker_reset_seconds: PositiveFloat = 15  # then batch scores are served this long before a retry
    traffic: dict[Text, TrafficTable] = {}


class EngineSettings(Table):
    # where player_state, player_features and batch scoring run: "local" in this process (the
    # default: no service), or "ray": Ray tasks over `shards` player shards (`pip install -e '.[ray]'`)
    kind: Annotated[Literal["local", "ray"], Field(description="one of ['local', 'ray']")] = "local"
    # ray only: the cluster, by Ray's own rules ("": $RAY_ADDRESS, else a new local Ray; "auto":
    # the cluster this machine runs; "ray://host:10001": a remote cluster's client port)
    address: Text = ""
    # ray only: player shards (a stable hash of player_id), one Ray task each per step
    shards: PositiveInt = 2


class InstanceSettings(Table):
    # Dagster's instance (runs, events, sensor and schedule state): SQLite files under <home>/dagster,
    # or PostgreSQL (the `postgres` extra) for a webserver, daemon and run workers on several machines
    storage: Annotated[Literal["sqlite", "postgres"], Field(description="one of ['sqlite', 'postgres']")] = (
        "sqlite"
    )
    # empty: $ML_ASSETS_POSTGRES_URL, which dagster.yaml then names instead of holding its password
    postgres_url: Text = ""
    # runs the daemon's queue lets run at once; unset: dagster.yaml's own value, else 1 (runs that
    # write the lake take turns on its writer lock either way)
    max_concurrent_runs: PositiveInt | None = None


SECTIONS: dict[str, type[Table]] = {
    "lake": LakeSettings,
    "engine": EngineSettings,
    "cleaning": CleaningSettings,
    "features": FeatureSettings,
    "drift": DriftSettings,
    "performance": PerformanceSettings,
    "freshness": FreshnessSettings,
    "partitions": PartitionSettings,
    "catalog": CatalogSettings,
    "automation": AutomationSettings,
    "alerts": AlertSettings,
    "serving": ServingSettings,
    "instance": InstanceSettings,
    # defaults for every model; a [models.NAME] table can set any of these for itself
    "training": TrainingTable,
}


@dataclass(frozen=True)
class Settings:
    """Resolved, validated settings for one lake home."""

    home: Path
    lake: LakeSettings = field(default_factory=LakeSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    cleaning: CleaningSettings = field(default_factory=CleaningSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    performance: PerformanceSettings = field(default_factory=PerformanceSettings)
    freshness: FreshnessSettings = field(default_factory=FreshnessSettings)
    partitions: PartitionSettings = field(default_factory=PartitionSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    instance: InstanceSettings = field(default_factory=InstanceSettings)
    specs: tuple[ModelSpec, ...] = ()

    @property
    def lake_uri(self) -> str:
        """Root of the Delta tables: a local folder by default, or an object-store URI."""
        return self.lake.uri or str(self.home / "lake")

    @property
    def on_object_store(self) -> bool:
        """Whether the lake is on an object store (then landing and models move there with it)."""
        return "://" in self.lake_uri and not self.lake_uri.startswith("file://")

    @property
    def landing_uri(self) -> str:
        """Landing batches: `<home>/landing`, or `<lake>/_landing` on an object store."""
        return f"{self.lake_uri.rstrip('/')}/_landing" if self.on_object_store else str(self.home / "landing")

    @property
    def models_uri(self) -> str:
        """The model store: `<home>/models`, or `<lake>/_models` on an object store."""
        return f"{self.lake_uri.rstrip('/')}/_models" if self.on_object_store else str(self.home / "models")

    @property
    def writer_lock(self) -> Path:
        """The lock every run that writes the lake holds (`lake/writer_lock.py`)."""
        return self.home / "writer.lock"

    @property
    def serving_dir(self) -> Path:
        """The online half's local files: the collector's spool, the SQLite online store, traffic."""
        return self.home / "serving"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def webhook_url(self) -> str | None:
        return self.alerts.webhook_url or None

    def spec(self, name: str) -> ModelSpec:
        """One model's spec by name; ValueError naming the known models when absent."""
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise ValueError(f"no model named {name!r}; known: {[s.name for s in self.specs]}")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The lake home as an absolute path: the argument, else $ML_ASSETS_HOME, else ./.ml_assets."""
    raw = home if home is not None else os.environ.get(HOME_ENV, DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


def config_path(home: Path, config: str | os.PathLike[str] | None = None) -> Path:
    """The settings file in force: `config`, else $ML_ASSETS_CONFIG, else `<home>/ml_assets.toml`."""
    return Path(config or os.environ.get(CONFIG_ENV) or home / "ml_assets.toml")


def load_settings(
    home: str | os.PathLike[str] | None = None, config: str | os.PathLike[str] | None = None
) -> Settings:
    """Read and validate `ml_assets.toml` (from `config`, $ML_ASSETS_CONFIG or the home), once.

    Raises SettingsError (a ValueError) with one line per unknown key, wrong type or out-of-range value.
    """
    root = resolve_home(home)
    path = config_path(root, config)
    raw: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as fh:
            try:
                raw = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - set(SECTIONS) - {"models"})
    if unknown:
        raise SettingsError(
            f"{path}: unknown section(s) {[f'[{s}]' for s in unknown]}; known: {sorted(SECTIONS)} "
            "and [models.NAME]"
        )

    def section(name: str, model: type[TableT]) -> TableT:
        return parse(model, raw.get(name, {}), f"{path}: {name}")

    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise SettingsError(f"{path}: models must be tables [models.NAME]")
    return Settings(
        home=root,
        lake=section("lake", LakeSettings),
        engine=section("engine", EngineSettings),
        cleaning=section("cleaning", CleaningSettings),
        features=section("features", FeatureSettings),
        drift=section("drift", DriftSettings),
        performance=section("performance", PerformanceSettings),
        freshness=section("freshness", FreshnessSettings),
        partitions=section("partitions", PartitionSettings),
        catalog=section("catalog", CatalogSettings),
        automation=section("automation", AutomationSettings),
        alerts=section("alerts", AlertSettings),
        serving=section("serving", ServingSettings),
        instance=section("instance", InstanceSettings),
        specs=specs_from_settings(models, raw.get("training"), str(path)),
    )
