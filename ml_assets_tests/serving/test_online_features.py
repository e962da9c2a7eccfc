"""online_batch stores what the per-row path stored: the same JSON once decoded, for every dtype.

The reference is the per-row path the online_features asset used before: `online_rows` then
`encode_features` (json.dumps) per player.
"""

import json
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl
import pytest

from ml_assets.serving.online_features import online_batch, online_rows
from ml_assets.serving.online_store import EncodedRows

NOW = datetime(2025, 6, 2, 12, 30, 15, 123456, tzinfo=UTC)
DAY = date(2025, 6, 2)
F32 = [1 / 3, 1.1, math.nan, math.inf, None, 3.4e38, 1e-45, -0.0]


def _reference(frame: pl.DataFrame, source: str = "batch") -> EncodedRows:
    return EncodedRows.from_rows(online_rows(frame, NOW, source))


def _same_json(old: str, new: str) -> None:
    """Equal decoded objects, key order, value types, and the sign of zeros."""
    a, b = json.loads(old), json.loads(new)
    assert a == b
    assert list(a) == list(b)
    for key, value in a.items():
        assert type(value) is type(b[key]), key
        if isinstance(value, float):
            assert math.copysign(1.0, value) == math.copysign(1.0, b[key]), key


def _assert_batch_matches_per_row(frame: pl.DataFrame, source: str = "batch") -> EncodedRows:
    old, new = _reference(frame, source), online_batch(frame, NOW, source)
    assert new.player_ids == old.player_ids
    assert new.as_of == old.as_of
    assert new.updated_at == old.updated_at
    assert new.sources == old.sources
    assert len(new.features) == len(old.features)
    for a, b in zip(old.features, new.features, strict=True):
        _same_json(a, b)
    return new


def _mixed_frame() -> pl.DataFrame:
    floats = [math.nan, math.inf, -math.inf, None, 0.1 + 0.2, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308]
    floats += [2.0**53, 1e16, 1e-7, 1e-5, 123.0, 0.0]
    n = len(floats)
    players = [f"p{i:02d}" for i in range(n)]
    strings = ['say "hi"', "back\\slash", "é ü 中文 😀", "tab\tnew\nline\x00\x1f", "</script>", None]
    frame = pl.DataFrame(
        {
            "player_id": players,
            "snapshot_date": [DAY] * n,
            "f64": floats,
            "f32": pl.Series(F32 * 2, dtype=pl.Float32)[:n],
            "i64": [2**63 - 1, -(2**63), None, 0, 7] * 3,
            "i32": pl.Series([1, None, -5] * 5, dtype=pl.Int32),
            "u64": pl.Series([2**64 - 1, 0, None] * 5, dtype=pl.UInt64),
            "payer": [True, False, None] * 5,
            "name": (strings * 3)[:n],
            "first_day": [DAY - timedelta(days=i) if i % 4 else None for i in range(n)],
            "last_seen": [datetime(2025, 6, 1, 23, 59, 59, 999999) + timedelta(hours=i) for i in range(n)],
            "seen_utc": [NOW - timedelta(minutes=i) for i in range(n)],
            "platform": pl.Series(["ios", "android", None] * 5, dtype=pl.Categorical),
            "tier": pl.Series(["a", "b", "c"] * 5, dtype=pl.Enum(["a", "b", "c"])),
            "nothing": pl.Series([None] * n, dtype=pl.Null),
            'odd "key" é': list(range(n)),
        }
    )
    # an older snapshot of some players: only the newest row per player is stored
    older = frame.head(5).with_columns(
        pl.lit(DAY - timedelta(days=1)).alias("snapshot_date"), pl.lit(-1.5).alias("f64")
    )
    return pl.concat([older, frame]).sample(fraction=1.0, shuffle=True, seed=1)


def test_batch_json_decodes_as_the_per_row_json_dumps():
    frame = _mixed_frame()
    new = _assert_batch_matches_per_row(frame)
    got = {p: json.loads(f) for p, f in zip(new.player_ids, new.features, strict=True)}
    assert len(got) == 15  # one row per player, the newest
    assert got["p00"]["f64"] is None and got["p01"]["f64"] is None and got["p02"]["f64"] is None  # NaN, ±inf
    assert got["p02"]["f32"] is None and got["p03"]["f32"] is None
    assert got["p04"]["f64"] == 0.30000000000000004 and got["p13"]["f64"] == 123.0
    assert type(got["p13"]["f64"]) is float and type(got["p00"]["i64"]) is int
    assert got["p00"]["f32"] == float(np.float32(1 / 3))  # the float32's value, as to_dicts() widens it
    assert got["p00"]["i64"] == 2**63 - 1 and got["p00"]["u64"] == 2**64 - 1
    assert got["p02"]["name"] == "é ü 中文 😀" and got["p00"]["name"] == 'say "hi"'
    assert got["p01"]["first_day"] == "2025-06-01" and got["p00"]["first_day"] is None
    assert got["p00"]['odd "key" é'] == 0
    assert new.as_of == ["2025-06-02"] * 15 and set(new.sources) == {"batch"}
    # polars wrote it, not json.dumps: that escapes non-ASCII text (ensure_ascii)
    assert "中文 😀" in new.features[new.player_ids.index("p02")]


def test_random_floats_round_trip_to_the_same_float64_as_json_dumps():
    rng = np.random.default_rng(7)
    f64 = rng.integers(0, 2**64, size=20_000, dtype=np.uint64).view(np.float64)
    f32 = rng.integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    whole = rng.integers(-(2**60), 2**60, size=20_000).astype(np.float64)
    frame = pl.DataFrame(
        {
            "player_id": [f"p{i}" for i in range(20_000)],
            "snapshot_date": [DAY] * 20_000,
            "f64": f64,
            "f32": f32,
            "whole": whole,
            "cents": np.round(rng.random(20_000) * 1000, 2),
        }
    )
    _assert_batch_matches_per_row(frame, source="warm")


def _frame(**columns: Any) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    return pl.DataFrame({"player_id": [f"p{i}" for i in range(n)], "snapshot_date": [DAY] * n, **columns})


def test_values_json_cannot_hold_raise_naming_the_player():
    frame = _frame(price=pl.Series([None, Decimal("1.5")], dtype=pl.Decimal(10, 2)))
    with pytest.raises(TypeError, match="'p1'"):
        _reference(frame)
    with pytest.raises(TypeError, match="'p1'"):
        online_batch(frame, NOW, "batch")
    blob = _frame(blob=pl.Series([b"\x00"], dtype=pl.Binary))
    with pytest.raises(TypeError, match="'p0'"):
        online_batch(blob, NOW, "batch")


def test_types_only_the_per_row_path_encodes_are_stored_as_before():
    # nested values and a Decimal column holding only nulls go through json.dumps, as before
    frame = _frame(
        levels=[[1.5, 2.0], None, []],
        info=[{"a": 1, "b": "x"}, {"a": None, "b": None}, None],
        price=pl.Series([None, None, None], dtype=pl.Decimal(10, 2)),
        x=[0.5, math.nan, None],
    )
    new = _assert_batch_matches_per_row(frame)
    second = {"levels": None, "info": {"a": None, "b": None}, "price": None, "x": None}
    assert json.loads(new.features[1]) == second


def test_only_keys_empty_frames_and_row_checks():
    assert _assert_batch_matches_per_row(_frame(snapshot_date=[DAY, DAY])).features == ["{}", "{}"]
    empty = online_batch(_mixed_frame().clear(), NOW, "batch")
    assert len(empty) == 0 and empty.features == []
    with pytest.raises(ValueError, match="tz-aware"):
        online_batch(_frame(x=[1]), datetime(2025, 6, 2), "batch")
    with pytest.raises(ValueError, match="source"):
        online_batch(_frame(x=[1]), NOW, "stream")
    with pytest.raises(ValueError, match="snapshot_date"):
        online_batch(_frame(x=[1]).with_columns(pl.col("snapshot_date").cast(pl.Datetime)), NOW, "batch")
    with pytest.raises(ValueError, match="one value per player"):
        EncodedRows(["p0"], [], [], [], [])
