"""Feature rows as online vectors: each player's newest snapshot, ready for the online store."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from ml_assets.core.features.player import KEY
from ml_assets.serving.online_store import SOURCES, EncodedRows, OnlineRow, encode_features


def newest_per_player(features: pl.DataFrame) -> pl.DataFrame:
    """Each player's row of their newest snapshot day."""
    return features.sort("player_id", "snapshot_date").unique("player_id", keep="last", maintain_order=True)


def _feature_values(newest: pl.DataFrame) -> pl.DataFrame:
    # dates and times travel as ISO text: the store holds JSON, and no model feature is temporal
    temporal = [c for c, t in newest.schema.items() if t.is_temporal() and c not in KEY]
    return newest.drop(KEY).with_columns(pl.col(temporal).dt.to_string())


def online_rows(features: pl.DataFrame, updated_at: datetime, source: str) -> list[OnlineRow]:
    """One online row per player of `features` (their newest snapshot), feature columns as values."""
    if features.is_empty():
        return []
    newest = newest_per_player(features)
    values = _feature_values(newest).to_dicts()
    return [
        OnlineRow(player, as_of, updated_at, source, vector)
        for player, as_of, vector in zip(newest["player_id"], newest["snapshot_date"], values, strict=True)
    ]


def _json_expr(name: str, dtype: pl.DataType) -> pl.Expr | None:
    """`name` as polars' JSON encoder should see it, or None when only the per-row path may encode it."""
    col = pl.col(name)
    if dtype.is_float():
        # to_dicts() widens Float32 to the float64 of its value and json.dumps writes that float's
        # shortest repr; polars would write the float32's shorter digits, a different float64 read back.
        # Non-finite -> null as encode_features does (a null's is_finite is null: stays null).
        wide = col.cast(pl.Float64)
        return pl.when(wide.is_finite()).then(wide)
    if dtype.is_integer() or dtype in (pl.Boolean, pl.String, pl.Null):
        return col
    if dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        return col.cast(pl.String)
    # Decimal, Binary, Object and nested types: json.dumps raises on some of their values, or
    # cleans NaN differently inside lists; the per-row path keeps exactly that behaviour
    return None


def _encode(values: pl.DataFrame, players: list[str]) -> list[str]:
    """Each row of `values` as the JSON object `encode_features` would write (equal once decoded)."""
    if not values.width:
        return ["{}"] * values.height
    exprs = [_json_expr(name, dtype) for name, dtype in values.schema.items()]
    fast = [e.alias(name) for e, name in zip(exprs, values.columns, strict=True) if e is not None]
    if len(fast) < values.width:
        return [encode_features(p, v) for p, v in zip(players, values.iter_rows(named=True), strict=True)]
    # one vectorized step for every row; polars writes floats as their shortest round-trip text
    # (like repr), keeps ".0" on whole floats, and escapes keys and strings as JSON requires
    return values.select(pl.struct(fast).struct.json_encode()).to_series().to_list()


def online_batch(features: pl.DataFrame, updated_at: datetime, source: str) -> EncodedRows:
    """`online_rows` encoded for `OnlineStore.write_encoded`, as columns: the same stored values.

    Each player's newest snapshot; features as JSON text, non-finite floats as null and temporal
    values as ISO text. A value JSON cannot hold raises TypeError naming the player, as the per-row
    path does.
    """
    # the checks OnlineRow makes per row, made once
    if updated_at.tzinfo is None:
        raise ValueError("online rows: updated_at must be tz-aware")
    if source not in SOURCES:
        raise ValueError(f"online rows: source must be one of {SOURCES}")
    if features.is_empty():
        return EncodedRows([], [], [], [], [])
    if features.schema["snapshot_date"] != pl.Date or features["snapshot_date"].null_count():
        raise ValueError("online rows: snapshot_date must be a date on every row")
    newest = newest_per_player(features)
    players = newest["player_id"].to_list()
    n = newest.height
    return EncodedRows(
        player_ids=players,
        as_of=newest["snapshot_date"].dt.to_string().to_list(),  # %Y-%m-%d: date.isoformat()
        updated_at=[updated_at.timestamp()] * n,
        sources=[source] * n,
        features=_encode(_feature_values(newest), players),
    )
