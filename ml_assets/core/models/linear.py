"""A regularised logistic regression on a model's selected features, and its blend with the trees.

On small or low-signal data a linear model often ranks rows as well as boosted trees, and a blend
of the two in log-odds ranks them better than either. The linear part is built for that role, not as
a model of its own: numeric features only (categorical codes have no order), each through a signed
log (`sign(x) * log1p(|x|)`, which tames counts and sums with long tails), missing values imputed
with the train median plus one missing-value indicator per feature that has any, standardised on
the train rows and clipped to +-5, then an L2-penalised logistic regression fitted by Newton's
method. Its contribution per feature (coefficient x standardised value, plus the indicator's part)
is exact: the contributions and the intercept sum to the row's log-odds.

Which penalty and which blend weight are chosen on the validation rows only (ROC AUC), so a linear
part that does not help gets weight 0 and the trees score alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml_assets.core.models.metrics import roc_auc

PENALTIES: tuple[float, ...] = (1.0, 10.0, 100.0)
# weight of the trees' log-odds in the blend; the rest goes to the linear model's
TREE_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
CLIP = 5.0
MAX_NEWTON_STEPS = 50


@dataclass(frozen=True)
class LinearModel:
    """A fitted logistic regression over the model's features (`columns`: their indices in the
    model's feature order). JSON-ready lists only, so it travels in the model card."""

    columns: list[int]
    median: list[float]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    # features with a missing-value indicator: index into `columns`, coefficient, train share missing
    missing: list[int]
    missing_coef: list[float]
    missing_share: list[float]
    intercept: float
    l2: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(raw: dict[str, Any]) -> LinearModel:
        return LinearModel(**raw)

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sub = _signed_log(np.asarray(x, dtype=np.float64)[:, self.columns])
        absent = np.isnan(sub)
        filled = np.where(absent, np.asarray(self.median), sub)
        z = np.clip((filled - np.asarray(self.mean)) / np.asarray(self.scale), -CLIP, CLIP)
        return z, absent[:, self.missing].astype(np.float64)

    def contributions(self, x: np.ndarray, n_features: int) -> np.ndarray:
        """Log-odds contribution of each of the model's `n_features` features per row of `x` (0 for
        features the linear model does not read); with `base`, they sum to `margin`."""
        z, ind = self._parts(x)
        out = np.zeros((len(x), n_features))
        out[:, self.columns] = z * np.asarray(self.coef)
        if self.missing:
            cols = np.asarray(self.columns)[self.missing]
            out[:, cols] += (ind - np.asarray(self.missing_share)) * np.asarray(self.missing_coef)
        return out

    @property
    def base(self) -> float:
        """The log-odds of a row at the train means: `margin` minus the sum of `contributions`."""
        return float(self.intercept + np.dot(self.missing_coef, self.missing_share))

    def margin(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of the positive label per row of `x` (the model's feature matrix)."""
        z, ind = self._parts(x)
        return self.intercept + z @ np.asarray(self.coef) + ind @ np.asarray(self.missing_coef)


def _signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|), with infinities as missing values (NaN)."""
    with np.errstate(invalid="ignore"):
        out = np.sign(x) * np.log1p(np.abs(x))
    return np.where(np.isfinite(out), out, np.nan)


def fit_linear(x: np.ndarray, y: np.ndarray, columns: Sequence[int], l2: float) -> LinearModel:
    """The logistic regression of `y` (0/1) on the `columns` of `x`, penalty `l2` on the
    standardised coefficients (not the intercept)."""
    cols = list(columns)
    sub = _signed_log(np.asarray(x, dtype=np.float64)[:, cols])
    absent = np.isnan(sub)
    median = np.nanmedian(np.where(absent.all(axis=0), 0.0, sub), axis=0) if cols else np.zeros(0)
    filled = np.where(absent, median, sub)
    mean, scale = filled.mean(axis=0), filled.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.clip((filled - mean) / scale, -CLIP, CLIP)
    missing = [j for j in range(len(cols)) if absent[:, j].any() and not absent[:, j].all()]
    share = absent[:, missing].mean(axis=0) if missing else np.zeros(0)
    ind = absent[:, missing].astype(np.float64)
    a = np.hstack([np.ones((len(z), 1)), z, ind - share])
    penalty = np.full(a.shape[1], float(l2))
    penalty[0] = 0.0
    w = np.zeros(a.shape[1])
    y = np.asarray(y, dtype=np.float64)
    for _ in range(MAX_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1.0 - p))[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    k = len(cols)
    missing_coef = w[1 + k :]
    return LinearModel(
        columns=cols,
        median=[float(v) for v in median],
        mean=[float(v) for v in mean],
        scale=[float(v) for v in scale],
        coef=[float(v) for v in w[1 : 1 + k]],
        missing=missing,
        missing_coef=[float(v) for v in missing_coef],
        missing_share=[float(v) for v in share],
        # the indicators were centred in the fit: move their means into the intercept
        intercept=float(w[0] - np.dot(missing_coef, share)),
        l2=float(l2),
    )


@dataclass(frozen=True)
class Blend:
    """The chosen blend: log-odds = tree_weight x trees + (1 - tree_weight) x linear."""

    tree_weight: float
    linear: LinearModel | None
    record: dict[str, Any]


def choose_blend(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    trees_valid: np.ndarray,
    columns: Sequence[int],
) -> Blend:
    """Fit the linear model on the train rows for each of `PENALTIES`, keep the one with the best
    validation ROC AUC, then the `TREE_WEIGHTS` weight whose blend with the trees' validation
    log-odds (`trees_valid`) ranks the validation rows best. Ties go to the larger tree weight, so
    the trees alone win unless the blend is better. The test rows are never looked at."""
    if not columns:
        return Blend(1.0, None, {"tree_weight": 1.0, "reason": "no numeric features"})
    fits = [fit_linear(x_train, y_train, columns, l2) for l2 in PENALTIES]
    linear_auc = [roc_auc(y_valid, f.margin(x_valid)) for f in fits]
    best = int(np.argmax(linear_auc))  # first of equals: the weakest penalty that does as well
    linear = fits[best]
    lin_valid = linear.margin(x_valid)
    blend_auc = {w: roc_auc(y_valid, w * trees_valid + (1 - w) * lin_valid) for w in TREE_WEIGHTS}
    weight = max(TREE_WEIGHTS, key=lambda w: (round(blend_auc[w], 10), w))
    record = {
        "tree_weight": weight,
        "linear_l2": linear.l2,
        "linear_features": len(columns),
        "valid_roc_auc_by_l2": {str(f.l2): a for f, a in zip(fits, linear_auc, strict=True)},
        "valid_roc_auc_by_tree_weight": {str(w): a for w, a in blend_auc.items()},
        "on": "linear fitted on the train rows; penalty and weight chosen on the validation rows",
    }
    return Blend(weight, linear if weight < 1.0 else None, record)
