"""A/B, canary and shadow traffic: which version scores which player, stable across requests.

A player's arm comes from a hash of (model, player_id) in [0, 1): the arms take consecutive
slices of that range in version order, the rest goes to production. The same player always gets
the same arm while the split stands, on every server, in every process (a keyed BLAKE2 hash, not
Python's per-process `hash`). Splits come from `[serving.traffic.NAME]` in the settings, and
`ml-assets traffic` overrides them in `<home>/serving/traffic.json`, which servers watch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_assets.lake.files import write_atomic

PRODUCTION, CANDIDATE, SHADOW = "production", "candidate", "shadow"


@dataclass(frozen=True)
class Traffic:
    """One model's split: version -> share of players, and a shadow version scoring every request."""

    arms: dict[str, float] = field(default_factory=dict)
    shadow: str | None = None

    def __post_init__(self) -> None:
        bad = {v: s for v, s in self.arms.items() if not 0 < s <= 1}
        if bad:
            raise ValueError(f"traffic shares must be in (0, 1]: {bad}")
        if sum(self.arms.values()) > 1 + 1e-9:
            raise ValueError(f"traffic shares add up to {sum(self.arms.values()):.3f} > 1: {self.arms}")

    def as_json(self) -> dict[str, Any]:
        return {"arms": dict(sorted(self.arms.items())), "shadow": self.shadow}


def bucket(model: str, player_id: str) -> float:
    """The player's stable position in [0, 1) for `model`'s splits."""
    digest = hashlib.blake2b(player_id.encode(), digest_size=8, key=model.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm_version(model: str, player_id: str, traffic: Traffic) -> str | None:
    """The split version that serves this player, or None for production."""
    if not traffic.arms:
        return None
    position, start = bucket(model, player_id), 0.0
    for version, share in sorted(traffic.arms.items()):
        if start <= position < start + share:
            return version
        start += share
    return None


def read_overrides(path: Path) -> dict[str, Traffic]:
    """Splits set from the CLI, by model (none when the file is absent)."""
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {m: Traffic(arms=dict(t.get("arms", {})), shadow=t.get("shadow")) for m, t in raw.items()}


def write_override(path: Path, model: str, traffic: Traffic | None) -> dict[str, Traffic]:
    """Set (or with None, clear) one model's split in the override file; all overrides after it."""
    overrides = read_overrides(path)
    if traffic is None:
        overrides.pop(model, None)
    else:
        overrides[model] = traffic
    write_atomic(path, json.dumps({m: t.as_json() for m, t in sorted(overrides.items())}, indent=2))
    return overrides


def traffic_for(model: str, configured: dict[str, Traffic], overrides: dict[str, Traffic]) -> Traffic:
    """The split in force: the CLI's override, else the settings', else production only."""
    return overrides.get(model) or configured.get(model) or Traffic()
