"""Player shards: a stable hash of player_id, and what a shard's step hands back to the driver."""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pandera.polars as pa
import polars as pl

from ml_assets.core.schemas import validate_frame
from ml_assets.lake.window_writer import write_piece_files


def shard_of(player_id: str, shards: int) -> int:
    """The shard of a player: CRC-32 of its UTF-8 bytes mod `shards`. CRC-32 is a fixed standard, so a
    player lands in the same shard whatever the Python, Polars or machine (polars' `hash` is not)."""
    return zlib.crc32(player_id.encode()) % shards


def in_shard(frame: pl.LazyFrame, shard: int, shards: int) -> pl.LazyFrame:
    """The rows of `frame` whose player is in `shard`, in their order. Only the distinct players
    are hashed in Python: a few hundred thousand a step, not one per event."""
    if shards == 1:
        return frame
    players = frame.select(pl.col("player_id").unique()).collect().to_series()
    mine = [p for p in players.to_list() if p is not None and shard_of(p, shards) == shard]
    return frame.filter(pl.col("player_id").is_in(pl.Series(mine, dtype=pl.String).implode()))


@dataclass
class ShardFiles:
    """A shard's written files (add actions as plain dicts), rows per partition value, the pieces'
    schema, its schema-check outcome and how long it took: everything small, nothing of the rows."""

    shard: int
    actions: list[dict[str, Any]] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)
    schema: pl.Schema | None = None
    checked_rows: int = 0
    failures: list[pl.DataFrame] = field(default_factory=list)
    seconds: float = 0.0


def write_shard(
    shard: int,
    pieces: Iterable[pl.DataFrame],
    table_uri: str,
    column: str,
    check: type[pa.DataFrameModel] | None = None,
) -> ShardFiles:
    """Write every piece into the table folder (`write_piece_files`), each cast to the first's
    schema and validated against `check` on the way, as the local IO manager does."""
    started = time.perf_counter()
    out = ShardFiles(shard)
    for piece in pieces:
        if out.schema is None:
            out.schema = piece.schema
        piece = piece.select(list(out.schema)).cast(out.schema)
        if check is not None:
            passed, cases = validate_frame(piece, check)
            out.checked_rows += piece.height
            if not passed:
                out.failures.append(cases.cast(pl.String))
        for value, n in piece.group_by(column).len().iter_rows():
            out.rows[value.isoformat() if isinstance(value, date) else str(value)] += n
        others = [c for c in piece.columns if c != column]
        out.actions += write_piece_files(table_uri, column, piece.select(column, *others))
    out.seconds = time.perf_counter() - started
    return out
