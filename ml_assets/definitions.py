"""The code location: the Definitions of each stage, merged. Nothing else lives here."""

from __future__ import annotations

import dagster as dg

from ml_assets.core.events.landing import read_window
from ml_assets.core.settings import Settings, load_settings
from ml_assets.defs.automation import automation_defs
from ml_assets.defs.events import event_defs
from ml_assets.defs.features import feature_defs
from ml_assets.defs.maintenance import maintenance_defs
from ml_assets.defs.model import model_defs
from ml_assets.defs.online import online_defs
from ml_assets.defs.partitions import daily_partitions
from ml_assets.defs.resources import resource_defs


def build_definitions(settings: Settings) -> dg.Definitions:
    """Definitions for the lake at `settings.home`; partitions span its landed data window."""
    partitions = daily_partitions(read_window(settings.landing_uri), settings.partitions)
    return dg.Definitions.merge(
        resource_defs(settings),
        event_defs(settings, partitions),
        feature_defs(settings, partitions),
        *[model_defs(spec, settings, partitions) for spec in settings.specs],
        automation_defs(settings, partitions),
        maintenance_defs(settings),
        online_defs(settings),
    )


defs = build_definitions(load_settings())
