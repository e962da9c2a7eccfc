"""Reference profiles of model inputs and drift statistics that do not cry wolf on large samples.

A `Profile` summarises a reference frame (usually the training set): per numeric feature its
quantile bins, counts, moments, null share and a seeded sample of at most 2,000 values; per
categorical feature its level shares; optionally the same for the model's scores. It is stored as
plain JSON. `feature_drift` compares a current frame with it, one row per feature.

Why effect sizes and not p-values: at 100k players a two-sample KS test rejects for shifts nobody
cares about, so every feature "drifts" every day. Here a feature drifts only when two effect sizes
both pass their thresholds (Evidently's approach above 1,000 reference rows); KS D is reported for
information only. Both measures barely move with sample size on same-distribution data: PSI's
noise is about (bins - 1) * (1/n_ref + 1/n_cur), i.e. 2e-4 at 100k vs 100k rows.

Defaults (`DriftThresholds`), and why:
- `psi=0.02`: the credit-scoring 0.2 needs a ~0.45 std location shift and misses a 20% rise in the
  mean of a lognormal(sigma=1) feature (PSI ~0.03); a 10-point category move gives PSI >= 0.04.
  0.02 is 100x the same-distribution PSI at 100k rows and ~2x its mean at `min_rows`.
- `wasserstein=0.1` (Wasserstein-1 / reference std, Evidently's default): a shift worth a tenth
  of a standard deviation. A 20% scale change of lognormal(sigma=1) gives ~0.15, a doubled Poisson
  rate ~0.7; sample noise with 2,000 vs 2,000 values is ~0.02-0.03.
- `jensen_shannon=0.07` (distance, base 2): any 10-point move between two levels gives >= ~0.085
  (the worst case is 50/50 -> 40/60); Evidently's 0.1 is in base e, ~0.12 in base 2, and can miss
  it. Noise is ~sqrt((levels - 1) / (8 ln2 n)): 0.03 for 5 levels at 1,000 rows, but 0.09 for
  50 levels, so high-cardinality attributes want a few thousand current rows.
- `null_share=0.1`: numeric nulls are a PSI bin; a null share moving 10 points is an effect on its
  own (Wasserstein only sees non-null values), so an all-null column drifts unless the reference
  was mostly null too.
- `share_drifted=0.3`: the dataset alarm fires when 30% of the watched features drift, or when the
  score drifts together with at least one watched feature (see `drift_summary`).
- `min_rows=1000`: below it the statistics are computed but nothing is flagged; at 500 rows the
  same-distribution PSI of 10 bins already averages 0.018.

The thresholds above are floors. Each row's effective thresholds (`psi_threshold`,
`statistic_threshold`, stored with it) also clear the 99.9th percentile of the statistic's noise at
that row's sample sizes, so a day with few rows needs a bigger move to count:
- PSI: under no drift, PSI / (1/n_ref + 1/n_cur) is close to chi-square with (bins - 1) degrees of
  freedom; its 0.999 quantile (Wilson-Hilferty) times (1/n_ref + 1/n_cur). 10 bins, 30k reference
  rows: 0.029 at 1,000 current rows, 0.0044 at 8,000 (where the 0.02 floor rules).
- Jensen-Shannon distance: sqrt(that chi-square quantile * (1/n_ref + 1/n_cur) / (8 ln 2)).
- Normalised Wasserstein: 3 * sqrt(1/m + 1/n) for samples of m and n values, about the 99.5th
  percentile on normal, lognormal, exponential and Poisson data (the 99.9th is 1.0-1.3x it; 1.4-2.6x
  for lognormal(sigma=2)): 0.095 at 2,000 vs 2,000 values (the 0.1 floor rules), 0.12 at 2,000 vs
  1,000. A feature needs PSI past its own 99.9th-percentile bound as well, so same-distribution
  days flag a feature less than once in 1,000.
Measured with `benchmarks/bench_drift_noise.py` (results/drift_noise.json).
Detection floor with these defaults: a normal feature's mean moving ~0.15-0.2 std, a lognormal
(sigma <= 1) feature's scale moving 20%, a Poisson rate moving ~25%, a category share 10 points.

Numeric values are compared as float64 (booleans as 0/1, NaN counts as null). Categorical levels
are compared as strings over the union of reference and current levels, nulls as a level.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from ml_assets.core.days import day_chunks
from ml_assets.core.features.player import KEY
from ml_assets.core.models.labels import scoring_columns, scoring_rows
from ml_assets.core.models.spec import ModelSpec

SAMPLE_SIZE = 2000
EPSILON = 1e-4  # share given to empty bins in PSI, so log(0) never happens
SCORE = "__score__"

DRIFT_SCHEMA: dict[str, Any] = {
    "feature": pl.String,
    "kind": pl.String,
    "rows": pl.Int64,
    "psi": pl.Float64,
    "statistic": pl.Float64,
    "statistic_name": pl.String,
    "ks_statistic": pl.Float64,
    "reference_mean": pl.Float64,
    "current_mean": pl.Float64,
    "reference_null_share": pl.Float64,
    "current_null_share": pl.Float64,
    "drifted": pl.Boolean,
    "psi_threshold": pl.Float64,
    "statistic_threshold": pl.Float64,
}
NOISE_Z = 3.09  # the standard normal's 0.999 quantile: one false flag per feature in ~1,000 days
WASSERSTEIN_NOISE = 3.0  # normalised Wasserstein noise ~ this * sqrt(1/m + 1/n), see above


@dataclass(frozen=True)
class NumericProfile:
    """Reference bins (edges with -inf/+inf ends, counts per bin), moments, null share, sample."""

    edges: list[float]
    counts: list[int]
    mean: float
    std: float
    null_share: float
    sample: list[float]  # sorted, seeded, at most SAMPLE_SIZE non-null values


@dataclass(frozen=True)
class CategoricalProfile:
    """Shares of each level among non-null values, and the null share."""

    frequencies: dict[str, float]
    null_share: float


@dataclass(frozen=True)
class Profile:
    """The reference distribution of a model's inputs (and optionally its scores)."""

    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    scores: NumericProfile | None
    rows: int

    def to_json(self) -> dict[str, Any]:
        """A strict-JSON dict (no NaN or infinity) that `from_json` reads back."""
        return {
            "rows": self.rows,
            "numeric": {k: _numeric_to_json(v) for k, v in self.numeric.items()},
            "categorical": {
                k: {"frequencies": dict(v.frequencies), "null_share": v.null_share}
                for k, v in self.categorical.items()
            },
            "scores": None if self.scores is None else _numeric_to_json(self.scores),
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Profile:
        """The profile written by `to_json`."""
        return Profile(
            numeric={k: _numeric_from_json(v) for k, v in raw["numeric"].items()},
            categorical={
                k: CategoricalProfile(
                    frequencies={str(c): float(s) for c, s in v["frequencies"].items()},
                    null_share=float(v["null_share"]),
                )
                for k, v in raw["categorical"].items()
            },
            scores=None if raw.get("scores") is None else _numeric_from_json(raw["scores"]),
            rows=int(raw["rows"]),
        )


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature counts as drifted; see the module docstring for why these defaults."""

    psi: float = 0.02
    wasserstein: float = 0.1
    jensen_shannon: float = 0.07
    null_share: float = 0.1
    share_drifted: float = 0.3
    min_rows: int = 1000


def chi2_quantile(df: int, z: float = NOISE_Z) -> float:
    """The chi-square quantile with `df` degrees of freedom at standard-normal quantile `z`
    (Wilson-Hilferty: within 2% of the exact value from 2 degrees of freedom up)."""
    if df < 1:
        return 0.0
    h = 2.0 / (9.0 * df)
    return df * max(1.0 - h + z * math.sqrt(h), 0.0) ** 3


def psi_noise(bins: int, n_ref: int, n_cur: int) -> float:
    """The PSI that same-distribution samples of these sizes over `bins` occupied bins stay below
    999 times in 1,000."""
    if n_ref <= 0 or n_cur <= 0:
        return math.inf
    return chi2_quantile(bins - 1) * (1.0 / n_ref + 1.0 / n_cur)


def js_noise(levels: int, n_ref: int, n_cur: int) -> float:
    """The same for the Jensen-Shannon distance (base 2) over `levels` occupied levels."""
    return math.sqrt(psi_noise(levels, n_ref, n_cur) / (8.0 * math.log(2.0)))


def wasserstein_noise(m: int, n: int) -> float:
    """The same for the normalised Wasserstein distance between samples of `m` and `n` values."""
    if m <= 0 or n <= 0:
        return math.inf
    return WASSERSTEIN_NOISE * math.sqrt(1.0 / m + 1.0 / n)


def _finite_or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _numeric_to_json(p: NumericProfile) -> dict[str, Any]:
    return {
        "edges": p.edges[1:-1],  # the infinite ends are implied
        "counts": p.counts,
        "mean": _finite_or_none(p.mean),
        "std": _finite_or_none(p.std),
        "null_share": p.null_share,
        "sample": p.sample,
    }


def _numeric_from_json(raw: dict[str, Any]) -> NumericProfile:
    return NumericProfile(
        edges=[-math.inf, *(float(e) for e in raw["edges"]), math.inf],
        counts=[int(c) for c in raw["counts"]],
        mean=math.nan if raw["mean"] is None else float(raw["mean"]),
        std=math.nan if raw["std"] is None else float(raw["std"]),
        null_share=float(raw["null_share"]),
        sample=[float(v) for v in raw["sample"]],
    )


def _float_matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """Columns as a column-major float64 matrix, nulls as NaN (raises on a missing column)."""
    if not names:
        return np.empty((frame.height, 0))
    return frame.select(pl.col(n).cast(pl.Float64) for n in names).to_numpy(order="fortran")


def _float_column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """One column as float64, nulls as NaN, as `_float_matrix` reads it."""
    return frame[name].cast(pl.Float64).to_numpy().astype(np.float64, copy=False)


def _inner_edges(present: np.ndarray, bins: int) -> np.ndarray:
    """Finite bin edges: each distinct value its own bin when there are few, else quantiles."""
    distinct = np.unique(present)
    if distinct.size <= bins:
        # the extra edge just above the maximum separates new larger values from the top value
        return np.append(distinct, np.nextafter(distinct[-1], np.inf))
    return np.unique(np.quantile(present, np.arange(1, bins) / bins, method="lower"))


def _numeric_profile(values: np.ndarray, bins: int, rng: np.random.Generator) -> NumericProfile:
    missing = np.isnan(values)
    present = values[~missing]
    null_share = float(missing.mean()) if values.size else 0.0
    if present.size == 0:
        return NumericProfile([-math.inf, math.inf], [0], math.nan, math.nan, null_share, [])
    inner = _inner_edges(present, bins)
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=inner.size + 1)
    sample = np.sort(rng.choice(present, size=min(present.size, SAMPLE_SIZE), replace=False))
    return NumericProfile(
        edges=[-math.inf, *inner.tolist(), math.inf],
        counts=counts.tolist(),
        mean=float(present.mean()),
        std=float(present.std()),
        null_share=null_share,
        sample=sample.tolist(),
    )


def _categorical_profile(column: pl.Series) -> CategoricalProfile:
    values = column.cast(pl.String)
    present = values.len() - values.null_count()
    counts = values.drop_nulls().value_counts()
    freqs = {
        str(k): n / present for k, n in sorted(zip(counts[counts.columns[0]], counts["count"], strict=True))
    }
    return CategoricalProfile(
        frequencies=freqs, null_share=values.null_count() / values.len() if values.len() else 0.0
    )


def build_profile(
    frame: pl.DataFrame,
    features: list[str],
    categorical: Iterable[str],
    scores: np.ndarray | None = None,
    bins: int = 10,
    seed: int = 0,
) -> Profile:
    """The reference profile of `frame`: `categorical` columns by level, other `features` binned.

    `categorical` may be a model's `categories` dict (its keys are used); categorical columns not
    in `features` are profiled too. `scores`, when given, get a numeric profile of their own.
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    cats = list(dict.fromkeys(categorical))
    is_cat = set(cats)
    numeric = [f for f in features if f not in is_cat]
    matrix = _float_matrix(frame, numeric)
    return Profile(
        numeric={
            n: _numeric_profile(matrix[:, j], bins, np.random.default_rng([seed, j]))
            for j, n in enumerate(numeric)
        },
        categorical={c: _categorical_profile(frame[c]) for c in cats},
        scores=None
        if scores is None
        else _numeric_profile(
            np.asarray(scores, dtype=np.float64).ravel(), bins, np.random.default_rng([seed, len(numeric)])
        ),
        rows=frame.height,
    )


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of shares `q` against reference shares `p`."""
    p, q = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _shares_with_nulls(counts: np.ndarray, null_share: float) -> np.ndarray:
    total = counts.sum()
    shares = counts * ((1.0 - null_share) / total) if total > 0 else np.zeros(counts.size)
    return np.append(shares, null_share)


def _wasserstein_ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Wasserstein-1 distance and KS D between two sorted non-empty samples (exact, via CDFs)."""
    grid = np.sort(np.concatenate([a, b]))
    gap = np.abs(
        np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size
    )
    return float(np.sum(gap[:-1] * np.diff(grid))), float(gap.max())


def _scale(ref: NumericProfile) -> float:
    """Reference std, or the IQR of the reference sample when the std is 0."""
    if ref.std > 0:
        return ref.std
    if not ref.sample:
        return math.nan
    q1, q3 = np.quantile(np.asarray(ref.sample), [0.25, 0.75])
    return float(q3 - q1)


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _reference_rows(ref: NumericProfile) -> int:
    """Rows behind a numeric profile: its binned values plus its nulls."""
    present = sum(ref.counts)
    return round(present / (1.0 - ref.null_share)) if ref.null_share < 1.0 else 0


def _numeric_row(
    name: str, kind: str, ref: NumericProfile, values: np.ndarray, sample: np.ndarray, t: DriftThresholds
) -> dict[str, Any]:
    missing = np.isnan(values)
    present = values[~missing]
    null_share = float(missing.mean()) if values.size else math.nan
    inner = np.asarray(ref.edges[1:-1])
    current = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(ref.counts))
    p = _shares_with_nulls(np.asarray(ref.counts, dtype=np.float64), ref.null_share)
    q = _shares_with_nulls(current.astype(np.float64), 0.0 if math.isnan(null_share) else null_share)
    psi = _psi(p, q)
    psi_threshold = max(t.psi, psi_noise(int(np.count_nonzero(p + q)), _reference_rows(ref), values.size))
    cur_sample = np.sort(sample[~np.isnan(sample)])
    statistic = ks = math.nan
    statistic_threshold = t.wasserstein
    if cur_sample.size and ref.sample:
        w, ks = _wasserstein_ks(np.asarray(ref.sample), cur_sample)
        scale = _scale(ref)
        statistic = w / scale if scale > 0 else (math.inf if w > 0 else 0.0)
        statistic_threshold = max(t.wasserstein, wasserstein_noise(len(ref.sample), cur_sample.size))
    effect = statistic > statistic_threshold or abs(null_share - ref.null_share) > t.null_share
    return {
        "feature": name,
        "kind": kind,
        "rows": int(values.size),
        "psi": psi,
        "statistic": _nan_to_none(statistic),
        "statistic_name": "wasserstein_normed",
        "ks_statistic": _nan_to_none(ks),
        "reference_mean": _nan_to_none(ref.mean),
        "current_mean": _nan_to_none(float(present.mean())) if present.size else None,
        "reference_null_share": ref.null_share,
        "current_null_share": _nan_to_none(null_share),
        "drifted": bool(values.size >= t.min_rows and psi > psi_threshold and effect),
        "psi_threshold": _nan_to_none(psi_threshold),
        "statistic_threshold": statistic_threshold,
    }


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two share vectors."""
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return math.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0))


def _categorical_row(
    name: str, ref: CategoricalProfile, column: pl.Series, reference_rows: int, t: DriftThresholds
) -> dict[str, Any]:
    values = column.cast(pl.String)
    rows, nulls = values.len(), values.null_count()
    counts = values.drop_nulls().value_counts()
    current = dict(zip(counts[counts.columns[0]].to_list(), counts["count"].to_list(), strict=True))
    levels = sorted(set(ref.frequencies) | set(current))  # unseen levels count
    p = np.append([ref.frequencies.get(v, 0.0) * (1.0 - ref.null_share) for v in levels], ref.null_share)
    psi = statistic = null_share = math.nan
    psi_threshold, statistic_threshold = t.psi, t.jensen_shannon
    if rows:
        q = np.append([current.get(v, 0) for v in levels], nulls) / rows
        psi, statistic, null_share = _psi(p, q), _js_distance(p, q), nulls / rows
        occupied = int(np.count_nonzero(p + q))
        psi_threshold = max(t.psi, psi_noise(occupied, reference_rows, rows))
        statistic_threshold = max(t.jensen_shannon, js_noise(occupied, reference_rows, rows))
    return {
        "feature": name,
        "kind": "categorical",
        "rows": rows,
        "psi": _nan_to_none(psi),
        "statistic": _nan_to_none(statistic),
        "statistic_name": "jensen_shannon",
        "ks_statistic": None,
        "reference_mean": None,
        "current_mean": None,
        "reference_null_share": ref.null_share,
        "current_null_share": _nan_to_none(null_share),
        "drifted": bool(rows >= t.min_rows and psi > psi_threshold and statistic > statistic_threshold),
        "psi_threshold": _nan_to_none(psi_threshold),
        "statistic_threshold": statistic_threshold,
    }


def _sample_rows(rows: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, size=min(rows, SAMPLE_SIZE), replace=False))


def feature_drift(
    profile: Profile,
    current: pl.DataFrame,
    scores: np.ndarray | None = None,
    thresholds: DriftThresholds = DriftThresholds(),
    seed: int = 0,
) -> pl.DataFrame:
    """One row per profiled feature (plus `__score__` when both sides have scores): drift stats.

    Columns: feature, kind (numeric|categorical|score), rows, psi, statistic (normalised
    Wasserstein or JS distance), statistic_name, ks_statistic (numeric only, informational),
    reference_mean, current_mean, reference_null_share, current_null_share, drifted.
    Fewer than `thresholds.min_rows` rows: statistics computed, drifted False.
    """
    names = list(profile.numeric)
    matrix = _float_matrix(current, names)
    pick = _sample_rows(current.height, np.random.default_rng(seed))
    records = [
        _numeric_row(n, "numeric", profile.numeric[n], matrix[:, j], matrix[pick, j], thresholds)
        for j, n in enumerate(names)
    ]
    records += [
        _categorical_row(c, ref, current[c], profile.rows, thresholds)
        for c, ref in profile.categorical.items()
    ]
    if scores is not None and profile.scores is not None:
        values = np.asarray(scores, dtype=np.float64).ravel()
        spick = _sample_rows(values.size, np.random.default_rng([seed, 1]))
        records.append(_numeric_row(SCORE, "score", profile.scores, values, values[spick], thresholds))
    return pl.DataFrame(records, schema=DRIFT_SCHEMA)


def drift_summary(drift: pl.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> dict[str, Any]:
    """Counts of drifted features (score excluded), the score's PSI, the alarm, and top features by PSI.

    The alarm fires when more than `share_drifted` of the features drift, or when the score drifts
    and at least one feature drifts with it. A score that moves while every watched feature stays
    put is the model following inputs the alarm leaves out on purpose (`[drift] ignore`: age,
    lifetime totals, days since...), which is what a model trained on them should do as a game's
    players age; it is reported (`score_drifted`), not alarmed on.
    """
    features = drift.filter(pl.col("kind") != "score")
    score = drift.filter(pl.col("kind") == "score")
    n, k = features.height, int(features["drifted"].sum())
    share = k / n if n else 0.0
    score_drifted = bool(score["drifted"][0]) if score.height else False
    return {
        "features": n,
        "drifted": k,
        "share_drifted": share,
        "score_psi": score["psi"][0] if score.height else None,
        "score_drifted": score_drifted,
        "alarm": share > thresholds.share_drifted or (score_drifted and k > 0),
        "top": features.sort("psi", descending=True, nulls_last=True).head(5)["feature"].to_list(),
        "drifted_features": features.filter(pl.col("drifted"))["feature"].to_list(),
    }


def _effect(row: dict[str, Any]) -> str:
    """One drifted row's figures against the thresholds in force for it."""
    name = "normalised Wasserstein" if row["statistic_name"] == "wasserstein_normed" else "Jensen-Shannon"
    return (
        f"PSI {row['psi']:.4f} > {row['psi_threshold']:.4f} and {name} {row['statistic']:.3f} > "
        f"{row['statistic_threshold']:.3f} over {row['rows']} rows"
    )


def alarm_reason(drift: pl.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> str:
    """What raised the alarm on `drift` (one day's rows), naming each statistic with its value and
    threshold: the share of drifted features, and/or the score's PSI and effect size with the
    features that moved with it."""
    summary = drift_summary(drift, thresholds)
    if not summary["alarm"]:
        return "no alarm"
    parts = []
    names = ", ".join(summary["drifted_features"][:5])
    if summary["share_drifted"] > thresholds.share_drifted:
        parts.append(
            f"{summary['drifted']}/{summary['features']} features drifted: share "
            f"{summary['share_drifted']:.2f} > {thresholds.share_drifted:.2f} ({names})"
        )
    if summary["score_drifted"]:
        score = drift.filter(pl.col("kind") == "score").row(0, named=True)
        parts.append(f"score drifted: {_effect(score)}")
        if len(parts) == 1:
            first = drift.filter(pl.col("feature") == summary["drifted_features"][0]).row(0, named=True)
            moved = f"with {summary['drifted']} feature(s) ({names})"
            parts.append(f"{moved}; {first['feature']}: {_effect(first)}")
    return "; ".join(parts)


def alarm_rows(drift: pl.DataFrame, ignore: Sequence[str]) -> pl.DataFrame:
    """The drift rows the alarm looks at: all but the features matching the `ignore` globs."""
    ignored = [f for f in drift["feature"].to_list() if any(fnmatch.fnmatch(f, g) for g in ignore)]
    return drift.filter(~pl.col("feature").is_in(ignored))


def drift_by_day(
    spec: ModelSpec,
    profile: Profile,
    features: pl.LazyFrame,
    served: pl.LazyFrame,
    first: date,
    last: date,
    chunk_days: int,
    thresholds: DriftThresholds,
    enrich: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    inputs: Sequence[str] = (),
) -> pl.DataFrame:
    """`feature_drift` of each day in [first, last] against `profile`: the features of the rows `spec`
    scores, and the scores served that day (`served`: snapshot_date, probability).

    `enrich` adds the columns the model reads beyond the feature table (behaviour features) to the
    rows, from the feature-table columns `inputs` besides the profiled ones. Rows are read
    `chunk_days` days at a time and every day of a chunk is computed at once; the result does not
    depend on `chunk_days`."""
    needed = {*KEY, *profile.numeric, *profile.categorical, *scoring_columns(spec), *inputs}
    columns = [c for c in features.collect_schema().names() if c in needed]
    parts = []
    # a few days per read: one scan per day of a wide table costs more than the statistics
    for start, end in day_chunks(first, last, chunk_days):
        in_range = pl.col("snapshot_date").is_between(start, end)
        rows = scoring_rows(spec, features.filter(in_range).select(columns).collect())
        if enrich is not None:
            rows = enrich(rows)
        scores = served.filter(in_range).select("snapshot_date", "probability").collect()
        parts.append(_chunk_drift(profile, rows, scores, start, end, thresholds))
    return pl.concat(parts, how="diagonal_relaxed")


@dataclass(frozen=True)
class _ByDay:
    """A chunk's rows grouped by day, each day's in their read order, and `feature_drift`'s sample."""

    day: np.ndarray  # day (0 = the chunk's first) of each grouped row
    order: np.ndarray | None  # read positions in grouped order (None: the read order is grouped)
    counts: np.ndarray  # rows per day
    offsets: np.ndarray  # grouped position of each day's first row
    sample: np.ndarray  # grouped positions of each day's sample (`_sample_rows` of that day)
    sample_day: np.ndarray
    whole: bool  # whether the samples are every row (no day has more than SAMPLE_SIZE)

    @staticmethod
    def of(dates: pl.Series, start: date, days: int, rng_seed: int | list[int]) -> _ByDay:
        index = dates.to_physical().to_numpy().astype(np.int64) - (start - date(1970, 1, 1)).days
        grouped = bool(np.all(index[1:] >= index[:-1]))
        order = None if grouped else np.argsort(index, kind="stable")
        counts = np.bincount(index, minlength=days)
        offsets = np.cumsum(counts) - counts
        picks = [
            # up to SAMPLE_SIZE rows the sample is every row, no draw needed
            off + (np.arange(n) if n <= SAMPLE_SIZE else _sample_rows(n, np.random.default_rng(rng_seed)))
            for off, n in zip(offsets.tolist(), counts.tolist(), strict=True)
        ]
        sample = np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, dtype=np.int64)
        return _ByDay(
            day=index if order is None else index[order],
            order=order,
            counts=counts,
            offsets=offsets,
            sample=sample,
            sample_day=np.repeat(np.arange(days), [p.size for p in picks]),
            whole=bool(counts.max(initial=0) <= SAMPLE_SIZE),
        )

    def grouped(self, values: np.ndarray) -> np.ndarray:
        """`values` (in read order) in grouped order."""
        return values if self.order is None else values[self.order]

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Per day: the sum of `values` (grouped order, one per row)."""
        out = np.zeros(self.counts.size)
        seen = self.counts > 0
        # contiguous days: a running sum over each day's slice, not a scatter by day
        out[seen] = np.add.reduceat(values, self.offsets[seen], dtype=np.float64)
        return out


def _chunk_drift(
    profile: Profile,
    rows: pl.DataFrame,
    scores: pl.DataFrame,
    start: date,
    end: date,
    t: DriftThresholds,
    seed: int = 0,
) -> pl.DataFrame:
    """`feature_drift` of each day in [start, end] (rows and served scores of that day), with its
    snapshot_date, for all days at once: a long log has hundreds of days of few rows each."""
    days = (end - start).days + 1
    by_day = _ByDay.of(rows["snapshot_date"], start, days, seed)
    records: list[dict[str, Any]] = [
        _numeric_by_day(n, "numeric", ref, by_day.grouped(_float_column(rows, n)), by_day, t)
        for n, ref in profile.numeric.items()
    ]
    records += [
        _categorical_by_day(c, ref, _grouped_series(rows[c], by_day), by_day, profile.rows, t)
        for c, ref in profile.categorical.items()
    ]
    if profile.scores is not None:
        served = _ByDay.of(scores["snapshot_date"], start, days, [seed, 1])
        values = served.grouped(scores["probability"].cast(pl.Float64).to_numpy())
        score = _numeric_by_day(SCORE, "score", profile.scores, values, served, t)
        # a day with no served score has no score row
        records.append({**score, "_keep": served.counts > 0})
    if not records:
        return pl.DataFrame(schema=DRIFT_SCHEMA | {"snapshot_date": pl.Date})

    def by_day_then_feature(value: Any) -> np.ndarray:
        return np.stack([np.broadcast_to(r.get(value, True), (days,)) for r in records], axis=1).ravel()

    keep = by_day_then_feature("_keep")
    nullable = {"psi", "statistic", "ks_statistic", "reference_mean", "current_mean"}
    nullable |= {"current_null_share", "psi_threshold"}
    day = np.repeat(np.arange(days), len(records))[keep] + (start - date(1970, 1, 1)).days
    return pl.DataFrame(
        [
            pl.Series(c, by_day_then_feature(c)[keep], dtype, nan_to_null=c in nullable)
            for c, dtype in DRIFT_SCHEMA.items()
        ]
        + [pl.Series("snapshot_date", day, pl.Int32).cast(pl.Date)]
    )


def _grouped_series(column: pl.Series, by_day: _ByDay) -> pl.Series:
    return column if by_day.order is None else column.gather(by_day.order)


def _noise(
    bound: Callable[[int, int, int], float], floor: float, occupied: np.ndarray, n_ref: int, rows: np.ndarray
) -> np.ndarray:
    """Per day: max(floor, bound(occupied bins, n_ref, rows)), as the per-day rows compute it."""
    return np.array(
        [max(floor, bound(int(o), n_ref, int(n))) for o, n in zip(occupied, rows, strict=True)],
        dtype=np.float64,
    )


def _numeric_by_day(
    name: str, kind: str, ref: NumericProfile, values: np.ndarray, by_day: _ByDay, t: DriftThresholds
) -> dict[str, Any]:
    """`_numeric_row` of each day: `values` grouped by day as `by_day` groups them."""
    days, counts = by_day.counts.size, by_day.counts
    missing = np.isnan(values)
    nulls = bool(missing.any())
    inner = np.asarray(ref.edges[1:-1])
    width = len(ref.counts)
    bins = _bin_index(inner, values)
    with np.errstate(invalid="ignore", divide="ignore"):
        if nulls:
            # nulls as one more bin: a single count per day, no copy of the present values
            cells = np.bincount(
                by_day.day * (width + 1) + np.where(missing, width, bins), minlength=days * (width + 1)
            ).reshape(days, width + 1)
            null_count, current = cells[:, width], cells[:, :width].astype(np.float64)
            null_share = null_count / counts
        else:
            null_count = np.zeros(days, dtype=np.int64)
            cells = np.bincount(by_day.day * width + bins, minlength=days * width)
            current = cells.reshape(days, width).astype(np.float64)
            null_share = np.zeros(days) / counts
        p = _shares_with_nulls(np.asarray(ref.counts, dtype=np.float64), ref.null_share)
        known = np.where(np.isnan(null_share), 0.0, null_share)
        total = current.sum(axis=1)
        shares = np.where(total[:, None] > 0, current * ((1.0 - known) / total)[:, None], 0.0)
        q = np.column_stack([shares, known])
        psi = _psi_rows(p, q)
        occupied = np.count_nonzero(p + q, axis=1)
        if nulls:
            # adding 0.0 for a null leaves each day's running sum bit for bit as summing only the
            # present values (the sum starts at +0.0, so it is never -0.0)
            present = np.where(missing, 0.0, values)
            mean = np.bincount(by_day.day, weights=present, minlength=days) / (counts - null_count)
        else:
            mean = by_day.sums(values) / counts
    psi_threshold = _noise(psi_noise, t.psi, occupied, _reference_rows(ref), counts)

    sample = values if by_day.whole else values[by_day.sample]
    sample, sample_day, sizes = _sorted_by_day(sample, by_day.sample_day, days)
    statistic = ks = np.full(days, math.nan)
    statistic_threshold = np.full(days, t.wasserstein)
    if ref.sample and sample.size:
        w, ks = _wasserstein_ks_by_group(np.asarray(ref.sample), sample, sample_day, sizes)
        scale = _scale(ref)
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic = w / scale if scale > 0 else np.where(w > 0, math.inf, 0.0)
        statistic = np.where(sizes > 0, statistic, math.nan)
        noise = np.array([wasserstein_noise(len(ref.sample), int(m)) if m else 0.0 for m in sizes])
        statistic_threshold = np.maximum(t.wasserstein, noise)
    with np.errstate(invalid="ignore"):
        effect = (statistic > statistic_threshold) | (np.abs(null_share - ref.null_share) > t.null_share)
        drifted = (counts >= t.min_rows) & (psi > psi_threshold) & effect
    return {
        "feature": name,
        "kind": kind,
        "rows": counts,
        "psi": psi,
        "statistic": statistic,
        "statistic_name": "wasserstein_normed",
        "ks_statistic": ks,
        "reference_mean": ref.mean,
        "current_mean": mean,
        "reference_null_share": ref.null_share,
        "current_null_share": null_share,
        "drifted": drifted,
        "psi_threshold": psi_threshold,
        "statistic_threshold": statistic_threshold,
    }


def _bin_index(inner: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.searchsorted(inner, values, side="right")` for sorted, NaN-free `inner`; NaN gets 0.

    A profile has ~10 edges: one vectorised comparison per edge counts the edges at or below each
    value ~10x faster than a binary search per value (searchsorted was a quarter of the drift
    step at 10M events)."""
    if inner.size >= np.iinfo(np.uint8).max:
        return np.searchsorted(inner, np.where(np.isnan(values), -np.inf, values), side="right")
    index = np.zeros(values.size, dtype=np.uint8)
    for edge in inner:
        np.add(index, values >= edge, out=index, casting="unsafe")
    return index


def _sorted_by_day(
    values: np.ndarray, day: np.ndarray, days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`values` grouped by `day` (non-decreasing) without NaN, each day's sorted: the values, their
    days and the count per day."""
    given = np.bincount(day, minlength=days)
    width = int(given.max(initial=0))
    if width and days * width <= 2 * values.size:
        # each day a row of a padded matrix: sorting many short rows beats one argsort of all
        # values; +inf pads (and stands for NaN) sort last, and ties with a real +inf are harmless
        missing = np.isnan(values)
        padded = np.where(missing, np.inf, values)
        if given.min() == width:  # as many values every day (days above the sample size)
            grid = padded.reshape(days, width)
        else:
            grid = np.full((days, width), np.inf)
            grid[day, np.arange(values.size) - (np.cumsum(given) - given)[day]] = padded
        grid.sort(axis=1)
        sizes = given - np.bincount(day[missing], minlength=days)
        return grid[np.arange(width) < sizes[:, None]], np.repeat(np.arange(days), sizes), sizes
    keep = ~np.isnan(values)
    values, day = values[keep], day[keep]
    by_value = np.argsort(values)
    # a stable sort of small integer codes is a radix sort
    codes = day[by_value]
    order = by_value[np.argsort(codes.astype(np.uint16) if days < 2**16 else codes, kind="stable")]
    return values[order], day[order], np.bincount(day, minlength=days)


def _psi_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """`_psi` of each row of shares `q` against reference shares `p`."""
    p, q = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    return np.asarray(np.sum((q - p) * np.log(q / p), axis=1))


def _wasserstein_ks_by_group(
    a: np.ndarray, b: np.ndarray, group: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`_wasserstein_ks(a, b_g)` of every group g: `a` sorted, `b` sorted by (group, value), `sizes`
    the values per group; NaN for an empty group.

    Between two consecutive values of b_g the CDF of b_g is a constant c, so the area between the
    CDFs there is the integral of |F_a - c|, which the running integral of F_a gives in O(log |a|):
    no merged grid of a with every group's values (|a| points per day)."""
    n_a = a.size
    # integral of F_a from -inf to a[i]: F_a is i/n_a on [a[i-1], a[i])
    at_a = np.r_[0.0, np.cumsum(np.arange(1, n_a) / n_a * np.diff(a))]

    def integral(x: np.ndarray, right: np.ndarray) -> np.ndarray:
        """From -inf to x, given right = searchsorted(a, x, side="right")."""
        below = np.maximum(right - 1, 0)
        return np.where(right == 0, 0.0, at_a[below] + (right / n_a) * (x - a[below]))

    starts = np.cumsum(sizes) - sizes
    # only the last of each run of ties bounds a region [u, v): the CDF of b_g is flat between them
    boundary = np.r_[b[1:] != b[:-1], True]
    boundary[(starts + sizes - 1)[sizes > 0]] = True  # a group's last value
    ends = np.flatnonzero(boundary)
    in_group = group[ends]
    m, k, u = sizes[in_group], ends - starts[in_group] + 1, b[ends]
    last = k == m
    c = k / m
    right_u, left_u = np.searchsorted(a, u, side="right"), np.searchsorted(a, u, side="left")
    # a region ends where the next one starts; the last of a group runs to the end of a
    v = np.where(last, np.maximum(u, a[-1]), np.r_[u[1:], 0.0])
    right_v = np.where(last, n_a, np.r_[right_u[1:], 0])
    left_v = np.r_[left_u[1:], 0]
    # F_a >= c from the j-th smallest value of a on: below it the area is c - F_a, above F_a - c
    j = np.minimum((k * n_a + m - 1) // m, n_a) - 1
    right_a = np.searchsorted(a, a, side="right")
    cross = np.clip(a[j], u, v)
    right_cross = np.where(a[j] < u, right_u, np.where(a[j] > v, right_v, right_a[j]))
    g_u, g_v, g_cross = integral(u, right_u), integral(v, right_v), integral(cross, right_cross)
    area = np.where(
        last,
        (v - u) - (g_v - g_u),
        c * (cross - u) - (g_cross - g_u) + (g_v - g_cross) - c * (v - cross),
    )
    # the CDF gap at each value and just before the next one
    gap = np.abs(right_u / n_a - c)
    gap = np.where(last, gap, np.maximum(gap, np.abs(left_v / n_a - c)))
    present = np.flatnonzero(sizes)
    first = np.searchsorted(ends, starts[present])  # each group's first region
    w = np.full(sizes.size, math.nan)
    ks = np.full(sizes.size, math.nan)
    w[present] = integral(u[first], right_u[first]) + np.add.reduceat(area, first)
    ks[present] = np.maximum(left_u[first] / n_a, np.maximum.reduceat(gap, first))
    return w, ks


def _categorical_by_day(
    name: str,
    ref: CategoricalProfile,
    column: pl.Series,
    by_day: _ByDay,
    reference_rows: int,
    t: DriftThresholds,
) -> dict[str, Any]:
    """`_categorical_row` of each day: `column` grouped by day as `by_day` groups them."""
    days, rows = by_day.counts.size, by_day.counts
    values = column.cast(pl.String)
    known = values.is_not_null().to_numpy()
    # every level of the chunk: a level absent on both sides of a day adds exactly 0 to its figures
    levels = sorted(set(ref.frequencies) | set(values.drop_nulls().unique().to_list()))
    codes = values.filter(known).cast(pl.Enum(levels)).to_physical().to_numpy().astype(np.int64)
    width = len(levels)
    current = np.bincount(by_day.day[known] * width + codes, minlength=days * width).reshape(days, width)
    nulls = np.bincount(by_day.day[~known], minlength=days)
    p = np.append([ref.frequencies.get(v, 0.0) * (1.0 - ref.null_share) for v in levels], ref.null_share)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.column_stack([current, nulls]) / rows[:, None]
        psi = _psi_rows(p, q)
        middle = (p + q) / 2

        def kl(x: np.ndarray) -> np.ndarray:
            return np.asarray(np.sum(np.where(x > 0, x * np.log2(x / middle), 0.0), axis=1))

        statistic = np.sqrt(np.maximum(0.5 * kl(np.broadcast_to(p, q.shape)) + 0.5 * kl(q), 0.0))
        null_share = nulls / rows
    occupied = np.count_nonzero(p + q, axis=1)
    seen = rows > 0
    psi = np.where(seen, psi, math.nan)
    statistic = np.where(seen, statistic, math.nan)
    psi_threshold = np.where(seen, _noise(psi_noise, t.psi, occupied, reference_rows, rows), t.psi)
    statistic_threshold = np.where(
        seen, _noise(js_noise, t.jensen_shannon, occupied, reference_rows, rows), t.jensen_shannon
    )
    with np.errstate(invalid="ignore"):
        drifted = (rows >= t.min_rows) & (psi > psi_threshold) & (statistic > statistic_threshold)
    return {
        "feature": name,
        "kind": "categorical",
        "rows": rows,
        "psi": psi,
        "statistic": statistic,
        "statistic_name": "jensen_shannon",
        "ks_statistic": math.nan,
        "reference_mean": math.nan,
        "current_mean": math.nan,
        "reference_null_share": ref.null_share,
        "current_null_share": null_share,
        "drifted": drifted,
        "psi_threshold": psi_threshold,
        "statistic_threshold": statistic_threshold,
    }
