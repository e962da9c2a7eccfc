"""The newest batch score of each player, from a model's predictions table: the fallback when the
online store is down, and the answer for versions that cannot score online vectors."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from ml_assets.lake.tables import delta_version, open_table


@dataclass(frozen=True)
class BatchScore:
    probability: float
    version: str
    as_of: date
    reasons: list[dict[str, Any]]


class BatchScores:
    """Each player's score on the newest snapshot day of `<model>_predictions`, reloaded when the
    table gets a new Delta version."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._version: int | None = None
        self._scores: dict[str, BatchScore] = {}
        self.as_of: date | None = None
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Reload when the table changed; True when it did."""
        with self._lock:
            version = delta_version(self.uri)
            if version is None or version == self._version:
                return False
            table = open_table(self.uri)
            assert table is not None
            scan = pl.scan_delta(table)
            newest = scan.select(pl.col("snapshot_date").max()).collect().item()
            rows = scan.filter(pl.col("snapshot_date") == newest).collect()
            reason_columns = sorted(
                c for c in rows.columns if c.startswith("reason_") and not c.endswith("_contribution")
            )
            scores: dict[str, BatchScore] = {}
            for row in rows.iter_rows(named=True):
                reasons = [
                    {"feature": row[c], "contribution": row[f"{c}_contribution"]}
                    for c in reason_columns
                    if row[c] is not None
                ]
                scores[row["player_id"]] = BatchScore(
                    row["probability"], row["model_version"], row["snapshot_date"], reasons
                )
            self._scores, self._version, self.as_of = scores, version, newest
            return True

    def get(self, player_id: str) -> BatchScore | None:
        return self._scores.get(player_id)

    def __len__(self) -> int:
        return len(self._scores)
