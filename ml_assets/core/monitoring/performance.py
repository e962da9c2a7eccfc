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

from ml_assets.core.days import day_chunks
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
    than `threshold` (relative) from `reference`, the model's own test figures. Predictions are
    read `chunk_days` days at a time and every day of a chunk is computed at once; the result does
    not depend on `chunk_days`.
    """
    ahead = look_ahead_days(spec)
    # only what the labels and metrics read: the served explanations (reason_*) would be read,
    # joined with the labels and dropped for nothing
    needed = {"player_id", "snapshot_date", "model_version", "probability", *SEGMENTS}
    columns = [c for c in scored.collect_schema().names() if c in needed]
    parts: list[pl.DataFrame] = []
    for start, end in day_chunks(first, last, chunk_days):
        in_range = pl.col("snapshot_date").is_between(start, end)
        rows_in_range = scored.filter(in_range).select(columns).collect()
        # only the events the outcomes of these predictions can depend on
        outcomes = events.filter(
            pl.col("event_date").is_between(start, end + timedelta(days=ahead), closed="right")
        )
        if rows_in_range.height:
            labelled = outcome_labels(spec, rows_in_range, outcomes, last_landed)
            parts.append(_chunk_performance(labelled, reference, metric, threshold))
    if not parts:
        return pl.DataFrame(schema=PERFORMANCE_SCHEMA)
    return pl.concat(parts)


# Metrics the chunk computation produces for every day; other metrics take the per-day path.
_VECTORISED = frozenset({"roc_auc", "log_loss", "brier"})


@dataclass(frozen=True)
class _Groups:
    """Rows sorted by (group, probability), with their tie blocks: what the grouped metrics share."""

    count: int
    codes: NDArray[np.int64]  # group of each row, in row order
    order: NDArray[np.int64]  # row positions in sorted order
    group: NDArray[np.int64]  # group of each sorted row
    p: Array  # sorted probabilities
    block: NDArray[np.int64]  # tie block (same group, same probability) of each sorted row
    block_start: NDArray[np.int64]  # first sorted position of each block
    block_group: NDArray[np.int64]
    group_start: NDArray[np.int64]  # first sorted position of each group
    rows: NDArray[np.int64]  # rows per group

    @staticmethod
    def of(group: NDArray[np.int64], count: int, p: Array, by_p: NDArray[np.int64]) -> _Groups:
        """Groups `group` (codes 0..count-1, each present) of probabilities `p`; `by_p` is
        `np.argsort(p)`, shared by the groupings of a chunk."""
        # a stable sort of small integer codes is a radix sort: one sort by p serves every grouping
        codes = group[by_p].astype(np.uint16) if count <= np.iinfo(np.uint16).max else group[by_p]
        order = by_p[np.argsort(codes, kind="stable")]
        g, ps = group[order], p[order]
        new_group = np.r_[True, g[1:] != g[:-1]] if g.size else np.zeros(0, dtype=bool)
        new_block = new_group | np.r_[True, ps[1:] != ps[:-1]] if g.size else new_group
        block_start = np.flatnonzero(new_block)
        group_start = np.zeros(count, dtype=np.int64)
        group_start[g[new_group]] = np.flatnonzero(new_group)
        return _Groups(
            count=count,
            codes=group,
            order=order,
            group=g,
            p=ps,
            block=np.cumsum(new_block) - 1,
            block_start=block_start,
            block_group=g[block_start],
            group_start=group_start,
            rows=np.bincount(g, minlength=count),
        )

    def sum(self, values: Array) -> Array:
        """Per group: the sum of `values` (given in sorted order)."""
        return np.asarray(np.bincount(self.group, weights=values, minlength=self.count), dtype=np.float64)

    def mean(self, values: Array) -> Array:
        """Per group: the mean of `values` (given in row order)."""
        return np.bincount(self.codes, weights=values, minlength=self.count) / self.rows

    def auc(self, y: Array) -> Array:
        """Rank-sum ROC AUC per group of labels `y` (sorted order), ties at average ranks; NaN
        for a group with a single class (as metrics.roc_auc)."""
        counts = np.diff(np.r_[self.block_start, self.p.size])
        # 1-based rank within the group, averaged over the block's ties
        rank = (self.block_start - self.group_start[self.block_group]) + (counts + 1) / 2.0
        positives = np.bincount(self.block, weights=y, minlength=counts.size)
        rank_sum = np.bincount(self.block_group, weights=positives * rank, minlength=self.count)
        pos = self.sum(y)
        neg = self.rows - pos
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)
        return np.where((pos > 0) & (neg > 0), auc, np.nan)

    def expected_auc(self) -> Array:
        """`_expected_auc` of each group's probabilities."""
        pos = np.bincount(self.block, weights=self.p)
        neg = np.bincount(self.block, weights=1.0 - self.p)
        below = np.cumsum(neg) - neg
        # the cumulative sum restarts at each group: subtract what the groups before it hold
        first_block = self.block[self.group_start]
        below -= (np.cumsum(neg) - neg)[first_block][self.block_group]
        total_pos = np.bincount(self.block_group, weights=pos, minlength=self.count)
        total_neg = np.bincount(self.block_group, weights=neg, minlength=self.count)
        numerator = np.bincount(self.block_group, weights=pos * (below + 0.5 * neg), minlength=self.count)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = numerator / (total_pos * total_neg)
        return np.where((total_pos > 0.0) & (total_neg > 0.0), auc, np.nan)

    def ece(self, y: Array, group: int) -> float:
        """evaluation.expected_calibration_error of one group (10 quantile bins)."""
        lo = int(self.group_start[group])
        p, labels = self.p[lo : lo + int(self.rows[group])], y[lo : lo + int(self.rows[group])]
        edges = np.quantile(p, np.linspace(0.0, 1.0, 11))
        bins = np.searchsorted(edges[1:-1], p, side="left")
        gap = np.abs(np.bincount(bins, weights=labels) - np.bincount(bins, weights=p))
        return float(gap.sum() / p.size)


def _chunk_performance(
    labelled: pl.DataFrame, reference: dict[str, float], metric: str, threshold: float
) -> pl.DataFrame:
    """The PERFORMANCE_SCHEMA rows of every day in `labelled` (scored rows with `label`), computed
    for all days at once: a long log has hundreds of days of few rows each."""
    for column in SEGMENTS:
        if column not in labelled.columns:
            raise ValueError(f"column {column!r} not in frame (columns: {labelled.columns})")
    p = _probabilities(labelled["probability"].cast(pl.Float64).to_numpy())
    days = (
        labelled.select("snapshot_date", "model_version", LABEL)
        .with_row_index("_row")
        .group_by("snapshot_date")
        .agg(
            pl.col("model_version").sort_by("_row").first(),
            pl.len().alias("rows"),
            pl.col(LABEL).null_count().alias("nulls"),
            pl.col(LABEL).cast(pl.Int64).sum().alias("positives"),
        )
        .sort("snapshot_date")
    )
    day_index = np.searchsorted(
        days["snapshot_date"].to_physical().to_numpy(), labelled["snapshot_date"].to_physical().to_numpy()
    ).astype(np.int64)
    rows = days["rows"].to_numpy().astype(np.int64)
    positives = days["positives"].to_numpy()
    matured_day = (days["nulls"].to_numpy() == 0) & (positives > 0) & (positives < rows)
    matured_row = matured_day[day_index]
    # labels only count on matured days; elsewhere 0, never read
    y = np.where(matured_row, labelled[LABEL].cast(pl.Float64).fill_null(0.0).to_numpy(), 0.0)

    by_p = np.argsort(p)
    clipped = np.clip(p, _EPS, 1.0 - _EPS)
    log_p, log_q = np.log(clipped), np.log(1.0 - clipped)
    # per row: the realized loss, and the expected one (the label's weight is the probability)
    loss = {"realized": -(y * log_p + (1.0 - y) * log_q), "expected": -(p * log_p + (1.0 - p) * log_q)}
    overall = _Groups.of(day_index, days.height, p, by_p)
    ys = y[overall.order]
    expected_auc = overall.expected_auc()
    realized = {
        "roc_auc": overall.auc(ys),
        "log_loss": overall.mean(loss["realized"]),
        "brier": overall.mean((p - y) ** 2),
    }
    expected = {
        "roc_auc": expected_auc,
        "log_loss": overall.mean(loss["expected"]),
        "brier": overall.mean(p * (1.0 - p)),
    }
    current = {k: np.where(matured_day, realized[k], expected[k]) for k in realized}
    whole_day = {**current, "rows": rows, "estimated": ~matured_day}
    ece = [overall.ece(ys, d) if matured_day[d] else None for d in range(days.height)]
    verdicts = []
    for d in range(days.height):
        if metric in _VECTORISED:
            figures = {metric: float(current[metric][d])}
        else:  # a metric only the per-day functions give (or refuse) keeps their behaviour
            rows_d = overall.order[overall.group == d]
            ps = p[rows_d]
            figures = realized_metrics(y[rows_d], ps) if matured_day[d] else expected_metrics(ps)
        verdicts.append(degradation(reference, figures, metric, threshold))
    all_rows = pl.DataFrame(
        {
            "snapshot_date": days["snapshot_date"],
            "model_version": days["model_version"],
            "segment_column": "all",
            "segment": "all",
            "rows": rows,
            "estimated": ~matured_day,
            "roc_auc": current["roc_auc"],
            "log_loss": current["log_loss"],
            "brier": current["brier"],
            # calibration: expected calibration error once labels mature (estimates assume it)
            "ece": pl.Series(ece, dtype=pl.Float64),
            "expected_roc_auc": expected_auc,
            "reference_roc_auc": pl.Series([reference.get("roc_auc")] * days.height, dtype=pl.Float64),
            "relative_drop": [v.relative_drop for v in verdicts],
            "degraded": [v.degraded for v in verdicts],
            "reason": [v.reason for v in verdicts],
        }
    )
    segments = [
        _segment_rows(labelled[column], column, day_index, matured_row, p, by_p, y, loss, days, whole_day)
        for column in SEGMENTS
    ]
    order = pl.concat(
        [
            all_rows.with_columns(_column=pl.lit(0)),
            *(s.with_columns(_column=pl.lit(i + 1)) for i, s in enumerate(segments)),
        ],
        how="diagonal",
    )
    return (
        order.sort(["snapshot_date", "_column", "rows", "segment"], descending=[False, False, True, False])
        .select(list(PERFORMANCE_SCHEMA))
        .cast(PERFORMANCE_SCHEMA)
    )


def _segment_rows(
    keys: pl.Series,
    column: str,
    day_index: NDArray[np.int64],
    matured_row: NDArray[np.bool_],
    p: Array,
    by_p: NDArray[np.int64],
    y: Array,
    loss: dict[str, Array],
    days: pl.DataFrame,
    whole_day: dict[str, Array],
    min_rows: int = 200,
) -> pl.DataFrame:
    """`segment_metrics(rows, column)` of every day at once (realized on matured days), with the
    largest roc_auc gap between a day's segments as each row's reason. `whole_day` holds the
    days' own roc_auc, log_loss, rows and whether they are estimated, which a day with a single
    segment repeats."""
    text = keys.cast(pl.String).fill_null(MISSING)
    if text.n_unique() == 1:
        # one value in every row (a log without this attribute): each day is its one segment
        frame = pl.DataFrame(
            {
                "_day": np.arange(days.height),
                "segment": np.where(whole_day["rows"] < min_rows, OTHER, text[0]),
                "rows": whole_day["rows"],
                "estimated": whole_day["estimated"],
                "roc_auc": whole_day["roc_auc"],
                "log_loss": whole_day["log_loss"],
            }
        )
        return _with_gap_reasons(frame, column, days)
    named = (
        pl.DataFrame({"_day": day_index, "_key": text})
        .with_columns(_n=pl.len().over("_day", "_key"))
        .select(pl.when(pl.col("_n") < min_rows).then(pl.lit(OTHER)).otherwise(pl.col("_key")).alias("_key"))
        .to_series()
    )
    key_code = named.cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    combined = day_index * (int(key_code.max()) + 1) + key_code
    combos, first_row, group = np.unique(combined, return_index=True, return_inverse=True)
    group = group.astype(np.int64)
    rows = np.bincount(group, minlength=combos.size)
    pos = np.bincount(group, weights=y, minlength=combos.size)
    realized = matured_row[first_row] & (pos > 0) & (pos < rows)
    if combos.size == days.height:
        # one segment a day (a log without this attribute): the day's own figures, no second sort
        auc, log_loss = whole_day["roc_auc"], whole_day["log_loss"]
    else:
        groups = _Groups.of(group, combos.size, p, by_p)
        auc = np.where(realized, groups.auc(y[groups.order]), groups.expected_auc())
        log_loss = np.where(realized, groups.mean(loss["realized"]), groups.mean(loss["expected"]))
    frame = pl.DataFrame(
        {
            "_day": day_index[first_row],
            "segment": named.gather(first_row),
            "rows": rows,
            "estimated": ~realized,
            "roc_auc": auc,
            "log_loss": log_loss,
        }
    )
    return _with_gap_reasons(frame, column, days)


def _with_gap_reasons(frame: pl.DataFrame, column: str, days: pl.DataFrame) -> pl.DataFrame:
    """Segment rows (`_day`, segment, rows, ...) sorted as segment_metrics sorts them, with each
    day's snapshot_date, model_version and largest gap."""
    frame = frame.sort(["_day", "rows", "segment"], descending=[False, True, False])
    reasons = _gap_reasons(frame["_day"].to_numpy(), frame["segment"], frame["roc_auc"].to_numpy(), column)
    return frame.with_columns(
        snapshot_date=days["snapshot_date"].gather(frame["_day"]),
        model_version=days["model_version"].gather(frame["_day"]),
        segment_column=pl.lit(column),
        reason=reasons,
    ).drop("_day")


def _gap_reasons(day: NDArray[np.int64], segment: pl.Series, auc: Array, column: str) -> pl.Series:
    """Per row of a day's sorted segments: `largest_gap` of that day's segments as the reason."""
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    valid = ~np.isnan(auc)
    best = np.maximum.reduceat(np.where(valid, auc, -np.inf), starts)
    worst = np.minimum.reduceat(np.where(valid, auc, np.inf), starts)
    block = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, day.size]))
    position = np.arange(day.size)
    # the first of the tied best (worst) rows in the sorted order, as largest_gap's argmax (argmin)
    best_at = np.minimum.reduceat(np.where(valid & (auc == best[block]), position, day.size), starts)
    worst_at = np.minimum.reduceat(np.where(valid & (auc == worst[block]), position, day.size), starts)
    names = segment.to_list()
    text = []
    for b, w, hi, lo in zip(best_at, worst_at, best, worst, strict=True):
        if b == day.size:
            text.append(f"largest {column} gap {math.nan:.3f}: None/None")
        else:
            text.append(f"largest {column} gap {abs(float(hi) - float(lo)):.3f}: {names[b]}/{names[w]}")
    return pl.Series(text, dtype=pl.String).gather(block)
