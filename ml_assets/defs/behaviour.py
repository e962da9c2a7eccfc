"""What a model's behaviour features need from the graph: a window of clean events, a few columns."""

from typing import Any

import dagster as dg
import polars as pl

from ml_assets.core.features.behaviour import BehaviourConfig, ratio_inputs
from ml_assets.core.models.labels import behaviour_days
from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.settings import Settings
from ml_assets.lake.tables import CLEAN_EVENTS


def behaviour_events(spec: ModelSpec, settings: Settings) -> dict[str, dg.AssetIn]:
    """The clean events a model's behaviour features read, each day and the window's days before it,
    as an asset input; none when `[features] families` is empty (nothing reads them then)."""
    if not settings.features.families:
        return {}
    days = behaviour_days(spec, settings.features.behaviour())
    mapping = dg.TimeWindowPartitionMapping(
        start_offset=-(days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
    )
    # typed, so the IO manager hands over a lazy scan (the function takes it through **kwargs)
    return {CLEAN_EVENTS: dg.AssetIn(partition_mapping=mapping, dagster_type=pl.LazyFrame)}


def behaviour_inputs(recorded: dict[str, Any] | None) -> list[str]:
    """Feature-table columns a model's behaviour features read besides its own features (`recorded`:
    the model's behaviour config; None for a model without)."""
    return ratio_inputs(BehaviourConfig.from_dict(recorded)) if recorded else []
