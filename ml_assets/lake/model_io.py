"""The IO manager of the model assets: models go to and come from the model store, never a pickle.

Dagster's default IO managers pickle outputs; a planted pickle would then run code when a model is
loaded. Here an output is stored as its JSON card and LightGBM text model (`ModelStore`), and the
asset's latest version is one small JSON pointer per asset key, `<models>/_assets/<key>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from ml_assets.core.models.training import TrainedModel
from ml_assets.lake.io_base import LakeWriterIOManager
from ml_assets.lake.model_store import ModelStore, write_atomic


class ModelStoreIOManager(LakeWriterIOManager):
    """TrainedModel outputs as model-store versions; inputs read back the version an asset last wrote."""

    models_dir: str

    def _store(self) -> ModelStore:
        return ModelStore(Path(self.models_dir))

    def _pointer(self, key: dg.AssetKey) -> Path:
        return Path(self.models_dir) / "_assets" / f"{'__'.join(key.path)}.json"

    def handle_output(self, context: dg.OutputContext, obj: TrainedModel | None) -> None:
        if obj is None:  # no production version yet: nothing to store
            return
        if not isinstance(obj, TrainedModel):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a TrainedModel, got {type(obj)}")
        card = self._store().save(obj)
        write_atomic(
            self._pointer(context.asset_key), json.dumps({"model": obj.name, "version": obj.version})
        )
        context.add_output_metadata({"model_card": dg.MetadataValue.path(str(card))})

    def load_input(self, context: dg.InputContext) -> TrainedModel:
        key = context.asset_key
        pointer = self._pointer(key)
        if not pointer.exists():
            raise FileNotFoundError(
                f"{key.to_user_string()} has not been materialized in {self.models_dir}: materialize it first"
            )
        ref = json.loads(pointer.read_text())
        return self._store().load(str(ref["model"]), str(ref["version"]))
