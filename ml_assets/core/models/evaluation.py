"""Model evaluation beyond single numbers: calibration by bin, ROC and precision-recall curves."""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray

from ml_assets.core.models.metrics import classification_report

Array = NDArray[np.float64]


def _as_arrays(y: ArrayLike, p: ArrayLike) -> tuple[NDArray[np.bool_], Array]:
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"labels and scores differ in length: {y_arr.size} vs {p_arr.size}")
    return y_arr.astype(bool), p_arr


def calibration_table(y: ArrayLike, p: ArrayLike, bins: int = 10) -> pl.DataFrame:
    """Rows split into `bins` quantile bins of `p`: per bin its row count, mean predicted probability
    and observed positive rate. Bins left empty by tied probabilities are dropped."""
    y_arr, p_arr = _as_arrays(y, p)
    schema = pl.Schema(
        {"bin": pl.Int64, "rows": pl.Int64, "mean_predicted": pl.Float64, "observed_rate": pl.Float64}
    )
    if p_arr.size == 0:
        return pl.DataFrame(schema=schema)
    edges = np.quantile(p_arr, np.linspace(0.0, 1.0, bins + 1))
    # inner edges, right-closed: bin i holds edges[i] < p <= edges[i+1] (the lowest bin includes its floor)
    bin_of = np.searchsorted(edges[1:-1], p_arr, side="left")
    return (
        pl.DataFrame({"bin": bin_of.astype(np.int64), "y": y_arr.astype(np.float64), "p": p_arr})
        .group_by("bin")
        .agg(
            pl.len().cast(pl.Int64).alias("rows"),
            pl.col("p").mean().alias("mean_predicted"),
            pl.col("y").mean().alias("observed_rate"),
        )
        .sort("bin")
        .select(list(schema))
        .cast(schema)
    )


def expected_calibration_error(y: ArrayLike, p: ArrayLike, bins: int = 10) -> float:
    """Row-weighted mean of |observed rate - mean predicted| over the quantile bins of `p`."""
    table = calibration_table(y, p, bins)
    if table.height == 0:
        return float("nan")
    rows = table["rows"].to_numpy().astype(np.float64)
    gap = np.abs(table["observed_rate"].to_numpy() - table["mean_predicted"].to_numpy())
    return float((rows * gap).sum() / rows.sum())


def _cumulative_counts(y: NDArray[np.bool_], score: Array) -> tuple[Array, Array]:
    """True and false positives at each distinct threshold, highest score first (ties move together)."""
    order = np.argsort(-score, kind="mergesort")
    s, hits = score[order], y[order]
    # last index of each run of equal scores: all tied rows enter the prediction at once
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(hits, dtype=np.float64)[last]
    fps = (last + 1).astype(np.float64) - tps
    return tps, fps


def roc_curve(y: ArrayLike, score: ArrayLike) -> tuple[Array, Array]:
    """False and true positive rates from (0, 0) to (1, 1), one point per distinct score.

    Raises when `y` holds a single class: the curve is undefined.
    """
    y_arr, s = _as_arrays(y, score)
    pos = int(y_arr.sum())
    neg = y_arr.size - pos
    if pos == 0 or neg == 0:
        raise ValueError(f"ROC curve needs both classes: {pos} positive and {neg} negative rows")
    tps, fps = _cumulative_counts(y_arr, s)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def pr_curve(y: ArrayLike, score: ArrayLike) -> tuple[Array, Array]:
    """Recall (increasing from 0) and precision, one point per distinct score, starting at (0, 1).

    The step-wise area `sum(diff(recall) * precision[1:])` is the average precision.
    Raises when `y` has no positive row.
    """
    y_arr, s = _as_arrays(y, score)
    pos = int(y_arr.sum())
    if pos == 0:
        raise ValueError(f"precision-recall curve needs a positive row: 0 of {y_arr.size} are positive")
    tps, fps = _cumulative_counts(y_arr, s)
    return np.r_[0.0, tps / pos], np.r_[1.0, tps / (tps + fps)]


def evaluate(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """`metrics.classification_report` plus the expected calibration error (`ece`, 10 quantile bins)."""
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    return {**classification_report(y_arr, p_arr), "ece": expected_calibration_error(y_arr, p_arr)}
