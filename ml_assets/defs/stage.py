"""What every stage's Definitions get: owners from settings, and freshness SLAs where set."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from ml_assets.core.settings import Settings
from ml_assets.defs.freshness import freshness_checks, sla_tables, with_freshness_policies


def stage_defs(settings: Settings, assets: Sequence[dg.AssetsDefinition], **rest: Any) -> dg.Definitions:
    """A stage's Definitions: its `assets` with `[catalog] owners`, each table with an SLA given a
    FreshnessPolicy and a `freshness` check, plus the `rest` (sensors, jobs, ...)."""
    owners = list(settings.catalog.owners)
    owned = [a.map_asset_specs(lambda spec: spec.replace_attributes(owners=owners)) for a in assets]
    keys = {k.to_user_string() for a in assets for k in a.keys}
    slas = {t: sla for t, sla in sla_tables(settings).items() if t in keys}
    return dg.Definitions(
        assets=with_freshness_policies(owned, slas), asset_checks=freshness_checks(slas), **rest
    )
