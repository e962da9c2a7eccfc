"""Feature rows as online vectors: each player's newest snapshot, ready for the online store."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from ml_assets.core.features.player import KEY
from ml_assets.serving.online_store import OnlineRow


def newest_per_player(features: pl.DataFrame) -> pl.DataFrame:
    """Each player's row of their newest snapshot day."""
    return features.sort("player_id", "snapshot_date").unique("player_id", keep="last", maintain_order=True)


def online_rows(features: pl.DataFrame, updated_at: datetime, source: str) -> list[OnlineRow]:
    """One online row per player of `features` (their newest snapshot), feature columns as values."""
    if features.is_empty():
        return []
    newest = newest_per_player(features)
    # dates and times travel as ISO text: the store holds JSON, and no model feature is temporal
    temporal = [c for c, t in newest.schema.items() if t.is_temporal() and c not in KEY]
    values = newest.drop(KEY).with_columns(pl.col(temporal).dt.to_string()).to_dicts()
    return [
        OnlineRow(player, as_of, updated_at, source, vector)
        for player, as_of, vector in zip(newest["player_id"], newest["snapshot_date"], values, strict=True)
    ]
