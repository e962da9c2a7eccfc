"""The canonical event schema: the one definition every source is mapped onto (a promise to users).

Mappings (`mapping.py`) name these columns, landing batches (`landing.py`) carry them, cleaning types
them, and the Pandera models of `core.schemas` check them (a test keeps those in step with this).
"""

from __future__ import annotations

import polars as pl

CANONICAL_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),  # unique; derived from a stable hash of the row when the source has none
    "player_id": pl.String(),  # strings: real logs mix numeric and hex ids
    "event_time": pl.Datetime("us", "UTC"),
    "event_type": pl.String(),  # open vocabulary: session_start, level_complete, purchase, ...
    "value": pl.Float64(),  # amount, score, seconds: meaning depends on event_type
    "platform": pl.String(),
    "country": pl.String(),
    "app_version": pl.String(),
    "properties": pl.String(),  # JSON text: anything else
}
CANONICAL_COLUMNS: tuple[str, ...] = tuple(CANONICAL_SCHEMA)
