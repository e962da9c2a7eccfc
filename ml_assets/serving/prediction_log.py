"""Every served prediction, appended to the Delta table `served_predictions` in batches.

Requests add rows to a buffer; a flusher appends the buffer as one Delta commit every few seconds
(or sooner when it fills), so logging costs a request a list append, not a commit. The monitoring
assets join the table with matured labels to report realized performance per version and arm.
A hard crash loses at most the buffer of the last interval; a clean stop flushes it.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime
from typing import Any

import polars as pl

LOG = logging.getLogger(__name__)
SERVED_SCHEMA: dict[str, pl.DataType] = {
    "served_date": pl.Date(),
    "served_at": pl.Datetime("us", "UTC"),
    "request_id": pl.String(),
    "model": pl.String(),
    "version": pl.String(),
    "arm": pl.String(),  # production, candidate (an A/B or canary split) or shadow (not served)
    "player_id": pl.String(),
    "probability": pl.Float64(),
    "source": pl.String(),  # online (vector from the store), batch (newest batch score), batch_fallback
    "features_as_of": pl.Date(),
}


class PredictionLog:
    """A buffer of served predictions and its flusher thread, writing to the Delta table at `uri`."""

    def __init__(
        self,
        uri: str,
        flush_seconds: float,
        flush_rows: int,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.storage_options = storage_options
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._due = threading.Event()
        self._stop = threading.Event()
        self.written = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
        self._thread.start()

    def add(
        self,
        served_at: datetime,
        request_id: str,
        model: str,
        version: str,
        arm: str,
        player_id: str,
        probability: float,
        source: str,
        features_as_of: date | None,
    ) -> None:
        row = (served_at.date(), served_at, request_id, model, version, arm, player_id, probability, source)
        with self._lock:
            self._rows.append((*row, features_as_of))
            if len(self._rows) >= self.flush_rows:
                self._due.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self) -> int:
        """Append the buffered rows as one Delta commit; rows written (kept for a retry on failure)."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            frame = pl.DataFrame(rows, schema=SERVED_SCHEMA, orient="row")
            try:
                frame.write_delta(
                    self.uri,
                    mode="append",
                    storage_options=self.storage_options,
                    delta_write_options={"partition_by": ["served_date"]},
                )
            except Exception:
                with self._lock:
                    self._rows[:0] = rows
                self.failures += 1
                raise
            self.written += len(rows)
            return len(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._due.wait(self.flush_seconds)
            self._due.clear()
            try:
                self.flush()
            except Exception:  # kept in the buffer; the next interval retries
                LOG.exception("appending served predictions to %s failed; will retry", self.uri)

    def close(self) -> None:
        """Stop the flusher and write what is buffered."""
        self._stop.set()
        self._due.set()
        self._thread.join(timeout=30)
        self.flush()
