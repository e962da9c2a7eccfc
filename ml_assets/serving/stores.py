"""The online store a lake's settings name: SQLite in the home (no service), or Redis."""

from __future__ import annotations

import hashlib
import os

from ml_assets.core.settings import Settings
from ml_assets.serving.online_store import OnlineStore, open_store

REDIS_URL_ENV = "ML_ASSETS_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def online_store(settings: Settings) -> OnlineStore:
    """The lake's online store: `[serving] online_store`; Redis at `redis_url` or $ML_ASSETS_REDIS_URL."""
    serving = settings.serving
    return open_store(
        serving.online_store,
        sqlite_path=settings.serving_dir / "online_features.sqlite",
        redis_url=serving.redis_url or os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL),
        ttl_seconds=serving.online_ttl_hours * 3600,
        # two lakes on one Redis must not share keys, whatever their folders are called
        prefix=f"ml_assets:{hashlib.sha256(str(settings.home).encode()).hexdigest()[:12]}",
    )
