"""The model store: each version as a JSON card plus LightGBM's text model, under `<home>/models`
(or `<lake>/_models` on an object store).

`<root>/<model>/<version>.txt` holds the trees in LightGBM's own text format and
`<root>/<model>/<version>.json` everything else (metrics, features, the drift reference). The card is
written last and atomically, so its presence marks a complete version. Nothing here is pickled:
reading a version parses JSON and LightGBM text, never code.
"""

from __future__ import annotations

import json
from typing import Any

from ml_assets.core.models.training import TrainedModel
from ml_assets.lake.files import Folder, Location, folder, join


class ModelStore:
    """Model versions as files under `root` (a folder or an object-store URI), one folder per model."""

    def __init__(self, root: Location) -> None:
        self.files: Folder = folder(root)
        self.root = self.files.uri

    @staticmethod
    def card_name(model: str, version: str) -> str:
        return f"{model}/{version}.json"

    @staticmethod
    def text_name(model: str, version: str) -> str:
        return f"{model}/{version}.txt"

    def card_uri(self, model: str, version: str) -> str:
        """Where a version's card lives (shown in the UI and the CLI)."""
        return join(self.root, self.card_name(model, version))

    def has(self, model: str, version: str) -> bool:
        """Whether the version is stored (its card, written last, is there)."""
        return self.files.exists(self.card_name(model, version))

    def save(self, model: TrainedModel) -> str:
        """Store `model` (the text model, then the card) unless that version is stored; its card's URI."""
        if not self.has(model.name, model.version):
            self.files.write(self.text_name(model.name, model.version), model.model_text.encode())
            card = json.dumps(model.card(), indent=2, sort_keys=True)
            self.files.write(self.card_name(model.name, model.version), card.encode())
        return self.card_uri(model.name, model.version)

    def card(self, model: str, version: str) -> dict[str, Any] | None:
        """A stored version's card (metrics and all, without the trees), or None when it is not stored."""
        raw = self.files.read(self.card_name(model, version))
        return None if raw is None else self._upgraded(json.loads(raw), model, version)

    def find(self, model: str, version: str) -> TrainedModel | None:
        """A stored version, or None when it is not stored."""
        card = self.card(model, version)
        text = None if card is None else self.files.read(self.text_name(model, version))
        if card is None or text is None:
            return None
        return TrainedModel.from_card(card, text.decode())

    def load(self, model: str, version: str) -> TrainedModel:
        """A stored version; FileNotFoundError naming it when it is not stored."""
        found = self.find(model, version)
        if found is None:
            raise FileNotFoundError(f"{model} version {version} is not in the model store {self.root}")
        return found

    def _upgraded(self, card: dict[str, Any], model: str, version: str) -> dict[str, Any]:
        """A card written before the model store (ml-assets 0.1: the model file's path in the card, the
        drift profile in a file beside it) in today's shape, so lakes trained then keep serving."""
        if "reference_profile" in card:
            return card
        profile = self.files.read(f"{model}/{version}.profile.json")
        extra = {k: v for k, v in card.get("extra", {}).items() if k != "profile_path"}
        upgraded = {k: v for k, v in card.items() if k != "path"}
        upgraded["reference_profile"] = json.loads(profile) if profile is not None else None
        upgraded["extra"] = extra
        return upgraded
