"""The versions a prediction server serves, kept in step with the registry and the traffic splits.

`refresh` is cheap when nothing changed (the registry's Delta version and the override file's
modification time), so servers call it every second: a promotion, a rollback or a new split is
served within about a second, and each request reads one immutable snapshot, so a swap drops none.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_assets.core.models.registry import Registry
from ml_assets.lake.model_store import ModelStore
from ml_assets.serving.scoring import Loaded
from ml_assets.serving.traffic import Traffic, read_overrides, traffic_for

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    """One model's versions in force: production, the split arms, the shadow."""

    name: str
    production: Loaded | None
    arms: dict[str, Loaded] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    shadow: Loaded | None = None


class ModelBook:
    """Snapshots of what serves, per model, with the stage changes since the last look."""

    def __init__(
        self,
        models: list[str],
        registry: Registry,
        store: ModelStore,
        configured: dict[str, Traffic],
        overrides_path: Path,
    ) -> None:
        self.models = models
        self.registry = registry
        self.store = store
        self.configured = configured
        self.overrides_path = overrides_path
        self._serving: dict[str, Serving] = {m: Serving(m, None) for m in models}
        self._cache: dict[tuple[str, str], Loaded] = {}
        self._seen: tuple[int | None, float | None] | None = None
        self._last_seq = 0
        self._missing: set[tuple[str, str]] = set()  # versions named but not stored: looked for again
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def serving(self, model: str) -> Serving:
        """The snapshot that serves `model` now; KeyError for a model this server does not serve."""
        return self._serving[model]

    def _load(self, model: str, version: str | None) -> Loaded | None:
        """A stored version, parsed once; None (logged once) when the store lacks it."""
        if not version:
            return None
        key = (model, version)
        if key not in self._cache:
            found = self.store.find(model, version)
            if found is None:
                if key not in self._warned:
                    self._warned.add(key)
                    LOG.error("%s version %s is not in the model store %s", model, version, self.store.root)
                self._missing.add(key)
                return None
            self._cache[key] = Loaded.of(found)
        return self._cache[key]

    def refresh(self) -> list[dict[str, Any]]:
        """Reload what changed; the stage changes since the previous call ({model, version, stage,
        previous_stage, at, reason}), none on the first call."""
        with self._lock:
            mtime = self.overrides_path.stat().st_mtime if self.overrides_path.exists() else None
            marker = (self.registry.table_version(), mtime)
            if marker == self._seen and not self._missing:
                return []
            self._missing = set()
            history = self.registry.history()
            overrides = read_overrides(self.overrides_path)
            for model in self.models:
                traffic = traffic_for(model, self.configured, overrides)
                wanted = self.registry.current(model, "production")
                production = self._load(model, wanted)
                if production is None and wanted:  # not stored (yet): keep serving what served
                    production = self._serving[model].production
                self._serving[model] = Serving(
                    name=model,
                    production=production,
                    # an arm or shadow the store lacks is left out (logged) and retried each look
                    arms={v: loaded for v in traffic.arms if (loaded := self._load(model, v))},
                    traffic=traffic,
                    shadow=self._load(model, traffic.shadow),
                )
            changes: list[dict[str, Any]] = []
            if self._seen is not None:
                fresh = history.filter(history["seq"] > self._last_seq)
                changes = [
                    {k: row[k] for k in ("model", "version", "stage", "previous_stage", "reason")}
                    | {"at": row["at"].isoformat()}
                    for row in fresh.iter_rows(named=True)
                ]
            if history.height:
                self._last_seq = int(history["seq"].max())  # type: ignore[arg-type]
            self._seen = marker
            return changes
