"""The IO manager of the model assets: models go to and come from the model store, never a pickle.

Dagster's default IO managers pickle outputs; a planted pickle would then run code when a model is
loaded. Here an output is stored as its JSON card and LightGBM text model (`ModelStore`), and the
asset's latest version is one small JSON pointer per asset key, `<models>/_assets/<key>.json`.
The store may be a local folder or an object-store URI (`lake/files.py`).
"""

from __future__ import annotations

import json

import dagster as dg

from ml_assets.core.models.training import TrainedModel
from ml_assets.lake.files import join
from ml_assets.lake.io_base import LakeWriterIOManager
from ml_assets.lake.model_store import ModelStore


class ModelStoreIOManager(LakeWriterIOManager):
    """TrainedModel outputs as model-store versions; inputs read back the version an asset last wrote."""

    models_dir: str

    def _store(self) -> ModelStore:
        return ModelStore(self.models_dir)

    @staticmethod
    def _pointer(key: dg.AssetKey) -> str:
        return f"_assets/{'__'.join(key.path)}.json"

    def handle_output(self, context: dg.OutputContext, obj: TrainedModel | None) -> None:
        if obj is None:  # no production version yet: nothing to store
            return
        if not isinstance(obj, TrainedModel):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a TrainedModel, got {type(obj)}")
        store = self._store()
        card = store.save(obj)
        pointer = json.dumps({"model": obj.name, "version": obj.version})
        store.files.write(self._pointer(context.asset_key), pointer.encode())
        context.add_output_metadata({"model_card": dg.MetadataValue.path(card)})

    def load_input(self, context: dg.InputContext) -> TrainedModel:
        key = context.asset_key
        store = self._store()
        pointer = store.files.read(self._pointer(key))
        if pointer is None:
            where = join(self.models_dir, self._pointer(key))
            raise FileNotFoundError(
                f"{key.to_user_string()} has not been materialized ({where}): materialize it first"
            )
        ref = json.loads(pointer)
        return store.load(str(ref["model"]), str(ref["version"]))
