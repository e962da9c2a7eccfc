"""The Dagster side of the engine: a sharded step's results as one output and its metadata."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dagster as dg

from ml_assets.defs.checks import ChunkedSchemaCheck
from ml_assets.engine.engines import Engine
from ml_assets.engine.shards import ShardFiles
from ml_assets.lake.io_manager import WrittenFiles

JobT = TypeVar("JobT")


def run_sharded(
    engine: Engine,
    step: Callable[[JobT, int], ShardFiles],
    job: JobT,
    metadata: dict[str, Any],
    check: ChunkedSchemaCheck | None = None,
) -> dg.Output:
    """`step` over every shard on `engine`, as the output of the files the IO manager commits at once,
    with each shard's time and rows as metadata; each shard's schema-check outcome goes to `check`."""
    shards = engine.map_shards(step, job)
    return dg.Output(written_files(shards, check), metadata={**metadata, **shard_metadata(engine, shards)})


def shard_metadata(engine: Engine, shards: Sequence[ShardFiles]) -> dict[str, Any]:
    """What the UI shows of a sharded step: the engine, each shard's seconds and rows."""
    return {
        "engine": type(engine).__name__,
        "shards": len(shards),
        "shard_seconds": [round(s.seconds, 3) for s in shards],
        "shard_rows": [s.rows.total() for s in shards],
    }


def written_files(shards: Sequence[ShardFiles], check: ChunkedSchemaCheck | None = None) -> WrittenFiles:
    """Every shard's files as one `WrittenFiles`; shards must agree on the pieces' schema."""
    schemas = {tuple(s.schema.items()) for s in shards if s.schema is not None}
    if len(schemas) > 1:
        raise ValueError(f"the shards wrote {len(schemas)} different schemas; they must write one")
    rows: Counter[str] = Counter()
    for s in shards:
        rows.update(s.rows)
        if check is not None:
            check.add(s.checked_rows, None)
            for cases in s.failures:
                check.add(0, cases)
    schema = next((s.schema for s in shards if s.schema is not None), None)
    return WrittenFiles([a for s in shards for a in s.actions], rows, schema)
