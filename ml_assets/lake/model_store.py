"""The model store: each version as a JSON card plus LightGBM's text model, under `<home>/models`.

`<root>/<model>/<version>.txt` holds the trees in LightGBM's own text format and
`<root>/<model>/<version>.json` everything else (metrics, features, the drift reference). The card is
written last and atomically, so its presence marks a complete version. Nothing here is pickled:
reading a version parses JSON and LightGBM text, never code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ml_assets.core.models.training import TrainedModel


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ModelStore:
    """Model versions as files under `root`, one folder per model."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def card_path(self, model: str, version: str) -> Path:
        return self.root / model / f"{version}.json"

    def text_path(self, model: str, version: str) -> Path:
        return self.root / model / f"{version}.txt"

    def save(self, model: TrainedModel) -> Path:
        """Store `model` (the text model, then the card) unless that version is stored; its card path."""
        card = self.card_path(model.name, model.version)
        if not card.exists():
            write_atomic(self.text_path(model.name, model.version), model.model_text)
            write_atomic(card, json.dumps(model.card(), indent=2, sort_keys=True))
        return card

    def card(self, model: str, version: str) -> dict[str, Any] | None:
        """A stored version's card (metrics and all, without the trees), or None when it is not stored."""
        path = self.card_path(model, version)
        return _upgraded(json.loads(path.read_text()), path) if path.exists() else None

    def find(self, model: str, version: str) -> TrainedModel | None:
        """A stored version, or None when it is not stored."""
        card = self.card(model, version)
        if card is None:
            return None
        return TrainedModel.from_card(card, self.text_path(model, version).read_text())

    def load(self, model: str, version: str) -> TrainedModel:
        """A stored version; FileNotFoundError naming it when it is not stored."""
        found = self.find(model, version)
        if found is None:
            raise FileNotFoundError(f"{model} version {version} is not in the model store {self.root}")
        return found


def _upgraded(card: dict[str, Any], path: Path) -> dict[str, Any]:
    """A card written before the model store (ml-assets 0.1: the model file's path in the card, the
    drift profile in a file beside it) in today's shape, so lakes trained then keep serving."""
    if "reference_profile" in card:
        return card
    profile = path.with_name(f"{path.stem}.profile.json")
    extra = {k: v for k, v in card.get("extra", {}).items() if k != "profile_path"}
    upgraded = {k: v for k, v in card.items() if k != "path"}
    upgraded["reference_profile"] = json.loads(profile.read_text()) if profile.exists() else None
    upgraded["extra"] = extra
    return upgraded
