"""Scoring online feature vectors with a stored model version: probability and top reasons.

The same matrix as batch scoring (`training.to_matrix`: float32, categories coded by their
training levels, unknown levels and absent features missing) and the same reasons (LightGBM's
own SHAP values, `pred_contrib`), so a player scored online and in the batch gets the same number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from ml_assets.core.models.training import TrainedModel


@dataclass(frozen=True)
class Reason:
    feature: str
    contribution: float


@dataclass(frozen=True)
class Loaded:
    """A stored version ready to score: its booster parsed once, and whether online vectors suffice."""

    model: TrainedModel
    booster: lgb.Booster

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def online(self) -> bool:
        """False for a version trained with behaviour features: they come from event windows that
        the online vector does not hold, so such a version is served from its batch scores."""
        return not self.model.extra.get("behaviour")

    @staticmethod
    def of(model: TrainedModel) -> Loaded:
        return Loaded(model, model.booster())


def vector_matrix(vectors: Sequence[dict[str, Any]], model: TrainedModel) -> np.ndarray:
    """The float32 matrix of `vectors` (feature name -> value) in the model's feature order."""
    x = np.full((len(vectors), len(model.features)), np.nan, dtype=np.float32)
    codes = {c: {level: i for i, level in enumerate(levels)} for c, levels in model.categories.items()}
    for j, name in enumerate(model.features):
        levels = codes.get(name)
        for i, vector in enumerate(vectors):
            value = vector.get(name)
            if value is None:
                continue
            if levels is not None:
                code = levels.get(value)
                if code is not None:
                    x[i, j] = code
            elif isinstance(value, int | float):
                x[i, j] = value
    return x


def score_vectors(
    loaded: Loaded, vectors: Sequence[dict[str, Any]], reasons: int
) -> tuple[np.ndarray, list[list[Reason]]]:
    """Probabilities of `vectors` and, per row, the `reasons` features that pushed it up the most."""
    model = loaded.model
    x = vector_matrix(vectors, model)
    # one thread: a request is a few rows, and OpenMP's idle workers spin (measured: 3.4 -> 1.6 ms of
    # server CPU per request at 500 requests/s); requests, not rows, are what run in parallel
    # the model's own scoring (the trees, or their blend with a linear model), as in the batch
    p = model.predict_matrix(x, num_threads=1)
    k = min(reasons, len(model.features))
    if not k:
        return p, [[] for _ in vectors]
    shap = model.contributions(x, num_threads=1)
    top = np.argsort(-shap, axis=1, kind="stable")[:, :k]
    out = [[Reason(model.features[j], float(shap[i, j])) for j in top[i]] for i in range(len(vectors))]
    return p, out
