"""A circuit breaker for the online store: after repeated failures, stop asking for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed until `failures` errors in a row; then open for `reset_seconds` (callers use their
    fallback without waiting on a dead store), then one trial call decides (half-open)."""

    def __init__(
        self, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._errors = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self._clock() - self._opened_at >= self.reset_seconds else "open"

    def allow(self) -> bool:
        """Whether to call the store now (one trial call at a time once the open period ends)."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_seconds or self._trial:
                return False
            self._trial = True
            return True

    def success(self) -> None:
        with self._lock:
            self._errors, self._opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._errors += 1
            self._trial = False
            if self._opened_at is not None or self._errors >= self.failures:
                self._opened_at = self._clock()
