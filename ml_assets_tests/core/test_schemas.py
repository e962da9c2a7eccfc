"""The Pandera models check the canonical event columns that `core.events.canonical` defines."""

from ml_assets.core.events.canonical import CANONICAL_COLUMNS
from ml_assets.core.events.landing import LANDING_SCHEMA
from ml_assets.core.schemas import CleanEvents, RawEvents


def test_clean_events_schema_has_every_canonical_column():
    assert set(CANONICAL_COLUMNS) <= set(CleanEvents.to_schema().columns)


def test_raw_events_schema_checks_only_landed_columns():
    assert set(RawEvents.to_schema().columns) - {"partition_date"} <= set(LANDING_SCHEMA)
