"""Binary classification metrics on numpy arrays (no scikit-learn needed for these few)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

# The one table of metric directions: the promotion gate, degradation and segment gaps all read it.
# Every metric a model reports is here; anything not lower-is-better is higher-is-better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier", "ece"})
HIGHER_IS_BETTER: frozenset[str] = frozenset({"roc_auc", "pr_auc", "lift_top_decile"})
# Metrics a gate or a degradation rule may compare (both directions are known for these).
COMPARABLE: tuple[str, ...] = tuple(sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER))
# Metrics that confidence-based estimation (monitoring.performance) gives before labels mature.
ESTIMABLE: tuple[str, ...] = ("brier", "log_loss", "roc_auc")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better; ValueError for a metric of unknown direction."""
    if metric in LOWER_IS_BETTER:
        return True
    if metric in HIGHER_IS_BETTER:
        return False
    raise ValueError(f"metric {metric!r} has no known direction; comparable metrics: {list(COMPARABLE)}")


def roc_auc(y: Array, score: Array) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get average ranks)."""
    positive = np.asarray(y, dtype=bool)
    pos, neg = int(positive.sum()), int(positive.size - positive.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = np.asarray(score)[order]
    # average ranks over ties so a constant score gives exactly 0.5
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(y: Array, score: Array) -> float:
    """Area under the precision-recall curve as average precision (step-wise, as sklearn computes it)."""
    y = np.asarray(y, dtype=bool)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="mergesort")
    hits = y[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def log_loss(y: Array, p: Array) -> float:
    """Mean negative log likelihood, probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: Array, p: Array) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def lift_at_top(y: Array, score: Array, share: float = 0.1) -> float:
    """Positive rate in the top `share` of scores divided by the overall positive rate."""
    y = np.asarray(y, dtype=np.float64)
    if y.mean() == 0:
        return float("nan")
    k = max(1, int(round(len(y) * share)))
    top = np.argsort(-np.asarray(score), kind="mergesort")[:k]
    return float(y[top].mean() / y.mean())


def classification_report(y: Array, p: Array) -> dict[str, float]:
    """The metrics a reviewer expects, for probabilities `p` of the positive class."""
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "lift_top_decile": lift_at_top(y, p),
        "positive_rate": float(np.mean(y)),
        "rows": float(len(y)),
    }
