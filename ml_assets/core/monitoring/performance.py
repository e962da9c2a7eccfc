"""Model performance before labels mature (estimated from calibrated probabilities) and after (realized).

The estimate follows confidence-based performance estimation (CBPE, as in NannyML): if the model is
calibrated, a row scored `p` is a positive with weight `p` and a negative with weight `1 - p`, so the
expected value of a metric can be computed from the scores alone. It is only as good as the calibration:
compare it with the realized metrics once labels arrive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray

from ml_assets.core.days import day_chunks, each_day
from ml_assets.core.models.evaluation import evaluate
from ml_assets.core.models.labels import LABEL, look_ahead_days, outcome_labels
from ml_assets.core.models.metrics import log_loss, lower_is_better, roc_auc
from ml_assets.core.models.spec import ModelSpec

Array = NDArray[np.float64]

OTHER = "(other)"
MISSING = "(null)"
_EPS = 1e-15  # the same clipping as metrics.log_loss


def _probabilities(p: ArrayLike) -> Array:
    arr = np.asarray(p, dtype=np.float64).ravel()
    if arr.size and (np.isnan(arr).any() or arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return arr


def _expected_auc(p: Array) -> float:
    """Weighted rank AUC over the doubled rows: (score p, positive, weight p) and (score p, negative,
    weight 1 - p). Ties, including a row's own positive and negative halves, count one half."""
    scores, group = np.unique(p, return_inverse=True)
    pos = np.bincount(group, weights=p, minlength=scores.size)
    neg = np.bincount(group, weights=1.0 - p, minlength=scores.size)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0.0 or total_neg <= 0.0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (total_pos * total_neg))


def expected_metrics(p: ArrayLike) -> dict[str, float]:
    """Expected ROC AUC, log loss (mean entropy), Brier (mean p(1-p)) and positive rate (mean p) of
    calibrated probabilities `p`, with no labels. Keys: roc_auc, log_loss, brier, positive_rate, rows.

    Raises on probabilities outside [0, 1] or NaN; an empty array gives NaN metrics and 0 rows.
    """
    arr = _probabilities(p)
    if arr.size == 0:
        nan = float("nan")
        return {"roc_auc": nan, "log_loss": nan, "brier": nan, "positive_rate": nan, "rows": 0.0}
    clipped = np.clip(arr, _EPS, 1.0 - _EPS)
    entropy = -(arr * np.log(clipped) + (1.0 - arr) * np.log(1.0 - clipped))
    return {
        "roc_auc": _expected_auc(arr),
        "log_loss": float(entropy.mean()),
        "brier": float((arr * (1.0 - arr)).mean()),
        "positive_rate": float(arr.mean()),
        "rows": float(arr.size),
    }


def realized_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """Metrics against matured labels: `evaluation.evaluate` (AUC, PR AUC, log loss, Brier, ECE, ...)."""
    return evaluate(y, p)


@dataclass(frozen=True)
class Degradation:
    """Outcome of comparing one metric between a reference window and the current one."""

    degraded: bool
    metric: str
    reference: float
    current: float
    relative_drop: float  # positive when worse: a fall for higher-is-better, a rise for lower-is-better
    reason: str


def degradation(
    reference: dict[str, float],
    current: dict[str, float],
    metric: str = "roc_auc",
    threshold: float = 0.05,
) -> Degradation:
    """Whether `metric` got worse by more than `threshold` (relative) from `reference` to `current`.

    log_loss, brier and ece are lower-is-better (a rise is a drop in quality). A NaN value or a zero
    reference cannot be compared: the result is not degraded and `reason` says why. A metric missing
    from either dict raises KeyError.
    """
    ref, cur = float(reference[metric]), float(current[metric])
    lower_better = lower_is_better(metric)
    if math.isnan(cur) or math.isnan(ref):
        which = "current" if math.isnan(cur) else "reference"
        reason = f"{metric}: {which} value is NaN (too few rows or a single class?), not compared"
        return Degradation(False, metric, ref, cur, float("nan"), reason)
    if ref == 0.0:
        reason = f"{metric}: reference is 0, a relative change is undefined (current {cur:.4f})"
        return Degradation(False, metric, ref, cur, float("nan"), reason)
    drop = (cur - ref) / abs(ref) if lower_better else (ref - cur) / abs(ref)
    degraded = drop > threshold
    direction = "rose" if cur > ref else "fell" if cur < ref else "held"
    verdict = "degraded" if degraded else "within tolerance"
    sense = "lower" if lower_better else "higher"
    reason = (
        f"{metric} ({sense} is better) {direction} from {ref:.4f} to {cur:.4f}: "
        f"relative drop {drop:+.1%} vs threshold {threshold:.1%}, {verdict}"
    )
    return Degradation(degraded, metric, ref, cur, float(drop), reason)


def _segment_row(key: str, p: NDArray[np.float64], y: NDArray[np.float64] | None) -> dict[str, Any]:
    if y is not None and not np.isnan(y).any() and 0.0 < y.mean() < 1.0:
        return {
            "segment": key,
            "rows": p.size,
            "roc_auc": roc_auc(y, p),
            "log_loss": log_loss(y, p),
            "positive_rate": float(y.mean()),
            "estimated": False,
        }
    est = expected_metrics(p)
    return {
        "segment": key,
        "rows": p.size,
        "roc_auc": est["roc_auc"],
        "log_loss": est["log_loss"],
        "positive_rate": est["positive_rate"],
        "estimated": True,
    }


def segment_metrics(
    frame: pl.DataFrame,
    segment: str,
    label: str | None = "label",
    prob: str = "probability",
    min_rows: int = 200,
) -> pl.DataFrame:
    """Per value of `segment`: rows, roc_auc, log_loss, positive_rate and `estimated`.

    Realized metrics when `label` is given, is a column, has no null in the segment and holds both
    classes; otherwise the expected (CBPE) metrics from `prob` alone, with `estimated` true. Values
    with fewer than `min_rows` rows are pooled as "(other)"; a null segment value is "(null)".
    The first column is named after `segment` (string); rows are sorted by size, largest first.
    """
    schema = pl.Schema(
        {
            segment: pl.String,
            "rows": pl.Int64,
            "roc_auc": pl.Float64,
            "log_loss": pl.Float64,
            "positive_rate": pl.Float64,
            "estimated": pl.Boolean,
        }
    )
    for column in (segment, prob):
        if column not in frame.columns:
            raise ValueError(f"column {column!r} not in frame (columns: {frame.columns})")
    has_label = label is not None and label in frame.columns
    # numpy grouping: a long log's performance step calls this twice for each of hundreds of days
    labels = frame[label].cast(pl.Float64).to_numpy() if label is not None and has_label else None
    probs = frame[prob].cast(pl.Float64).to_numpy()
    keys = frame[segment].cast(pl.String).fill_null(MISSING).to_numpy().astype(object)
    values, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    named = np.where(counts < min_rows, OTHER, values).astype(object)[inverse]
    rows = []
    for key in np.unique(named):
        mask = named == key
        rows.append(_segment_row(str(key), probs[mask], None if labels is None else labels[mask]))
    if not rows:
        return pl.DataFrame(schema=schema)
    out = pl.DataFrame(rows).rename({"segment": segment}).select(list(schema)).cast(schema)
    return out.sort(["rows", segment], descending=[True, False])


def largest_gap(segments: pl.DataFrame, metric: str = "roc_auc") -> dict[str, Any]:
    """Best and worst segment of a `segment_metrics` frame by `metric`, ignoring NaN values.

    Returns segment_column, metric, best, worst (segment values), best_metric, worst_metric and gap,
    the absolute difference (>= 0; for log_loss/brier/ece the best is the lowest). With no comparable
    segment, best and worst are None and the figures NaN.
    """
    column = segments.columns[0]
    valid = segments.filter(pl.col(metric).is_not_nan() & pl.col(metric).is_not_null())
    if valid.height == 0:
        nan = float("nan")
        return {
            "segment_column": column,
            "metric": metric,
            "best": None,
            "worst": None,
            "best_metric": nan,
            "worst_metric": nan,
            "gap": nan,
        }
    values = valid[metric].to_numpy()
    lower_better = lower_is_better(metric)
    best_i = int(values.argmin() if lower_better else values.argmax())
    worst_i = int(values.argmax() if lower_better else values.argmin())
    best_metric, worst_metric = float(values[best_i]), float(values[worst_i])
    return {
        "segment_column": column,
        "metric": metric,
        "best": valid[column][best_i],
        "worst": valid[column][worst_i],
        "best_metric": best_metric,
        "worst_metric": worst_metric,
        "gap": abs(best_metric - worst_metric),
    }


SEGMENTS = ("platform", "country")
# One row per day overall ("all") and per segment value; fixed types, so a day whose labels have
# not matured (no ece, estimated metrics) writes the same table as one whose labels have.
PERFORMANCE_SCHEMA = pl.Schema(
    {
        "snapshot_date": pl.Date,
        "model_version": pl.String,
        "segment_column": pl.String,
        "segment": pl.String,
        "rows": pl.Int64,
        "estimated": pl.Boolean,
        "roc_auc": pl.Float64,
        "log_loss": pl.Float64,
        "brier": pl.Float64,
        "ece": pl.Float64,
        "expected_roc_auc": pl.Float64,
        "reference_roc_auc": pl.Float64,
        "relative_drop": pl.Float64,
        "degraded": pl.Boolean,
        "reason": pl.String,
    }
)


def performance_by_day(
    spec: ModelSpec,
    reference: dict[str, float],
    scored: pl.LazyFrame,
    events: pl.LazyFrame,
    first: date,
    last: date,
    last_landed: date,
    chunk_days: int,
    metric: str = "roc_auc",
    threshold: float = 0.05,
) -> pl.DataFrame:
    """Per day in [first, last]: the served scores' quality overall and per segment.

    `scored` holds the predictions with their players' segment columns; `events` the clean events
    their outcomes come from. Days whose labels have matured (by `last_landed`) get realized
    metrics, others the expected (CBPE) ones; the overall row says whether `metric` dropped more
    than `threshold` (relative) from `reference`, the model's own test figures.
    """
    ahead = look_ahead_days(spec)
    out: list[dict[str, Any]] = []
    # a week of predictions at a time, with only the events their outcomes can depend on
    for start, end in day_chunks(first, last, chunk_days):
        rows_in_range = scored.filter(pl.col("snapshot_date").is_between(start, end)).collect()
        outcomes = events.filter(
            pl.col("event_date").is_between(start, end + timedelta(days=ahead), closed="right")
        )
        labelled = outcome_labels(spec, rows_in_range, outcomes, last_landed)
        by_day = labelled.partition_by("snapshot_date", as_dict=True)
        for day in each_day(start, end):
            rows = by_day.get((day,))
            if rows is not None and rows.height:
                out.extend(_day_rows(day, rows, reference, metric, threshold))
    return pl.DataFrame(out, schema=PERFORMANCE_SCHEMA)


def _day_rows(
    day: date, rows: pl.DataFrame, reference: dict[str, float], metric: str, threshold: float
) -> list[dict[str, Any]]:
    p = rows["probability"].to_numpy()
    matured = rows[LABEL].null_count() == 0 and rows[LABEL].n_unique() == 2
    current = realized_metrics(rows[LABEL].cast(pl.Float64).to_numpy(), p) if matured else expected_metrics(p)
    verdict = degradation(reference, current, metric, threshold)
    base = {"snapshot_date": day, "model_version": rows["model_version"][0]}
    out = [
        {
            **base,
            "segment_column": "all",
            "segment": "all",
            "rows": rows.height,
            "estimated": not matured,
            "roc_auc": current.get("roc_auc"),
            "log_loss": current.get("log_loss"),
            "brier": current.get("brier"),
            # calibration: expected calibration error once labels mature (estimates assume it)
            "ece": current.get("ece"),
            "expected_roc_auc": expected_metrics(p)["roc_auc"],
            "reference_roc_auc": reference.get("roc_auc"),
            "relative_drop": verdict.relative_drop,
            "degraded": verdict.degraded,
            "reason": verdict.reason,
        }
    ]
    for column in SEGMENTS:
        seg = segment_metrics(rows, column, label=LABEL if matured else None)
        gap = largest_gap(seg)
        for r in seg.iter_rows(named=True):
            out.append(
                {
                    **base,
                    "segment_column": column,
                    "segment": r[column],
                    "rows": r["rows"],
                    "estimated": r["estimated"],
                    "roc_auc": r["roc_auc"],
                    "log_loss": r["log_loss"],
                    "reason": f"largest {column} gap {gap['gap']:.3f}: {gap['best']}/{gap['worst']}",
                }
            )
    return out
