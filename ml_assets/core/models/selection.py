"""Feature selection before training: drop constant, empty, duplicate and useless columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

SAMPLE_ROWS = 50_000


@dataclass(frozen=True)
class Selection:
    """Features to keep (in input order) and the dropped ones with why: "constant", "all_null",
    "no_importance" or "duplicate_of:<kept feature>"."""

    kept: list[str]
    dropped: dict[str, str]


def _pairwise_corr(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of `x`, each pair over rows where both are not NaN.

    Done with matrix products (no loop over pairs or rows); a pair without variance gets NaN.
    """
    mask = ~np.isnan(x)
    m = mask.astype(np.float64)
    # centring first keeps the sums small, so the differences below do not lose precision
    counts = m.sum(axis=0)
    means = np.where(mask, x, 0.0).sum(axis=0) / np.maximum(counts, 1.0)
    z = np.where(mask, x - means, 0.0)
    # einsum, not `@`: multi-threaded BLAS stalls badly when other processes hold the cores
    n = np.einsum("ri,rj->ij", m, m)  # n[i, j]: rows where both i and j are present
    sx = np.einsum("ri,rj->ij", z, m)  # sx[i, j]: sum of i over rows where j is present
    sxx = np.einsum("ri,rj->ij", z * z, m)
    sxy = np.einsum("ri,rj->ij", z, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx**2 / n
        var_j = var_i.T
        r = cov / np.sqrt(var_i * var_j)
    # a column constant over the shared rows has no correlation (relative test: scale-free)
    r[(n < 2) | (var_i <= 1e-12 * sxx) | (var_j <= 1e-12 * sxx.T)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean


def select_features(
    frame: pl.DataFrame,
    features: list[str],
    label: str = "label",
    corr_threshold: float = 0.98,
    importance: dict[str, float] | None = None,
    *,
    sample_rows: int = SAMPLE_ROWS,
    seed: int = 0,
) -> Selection:
    """Which of `features` to train on.

    In order: drop all-null columns and constant ones (a single value, nulls counting as a value);
    if `importance` is given, drop features whose gain is 0 (features it does not name are kept);
    then, of numeric pairs with |Pearson r| > `corr_threshold` (nulls ignored pairwise, on at most
    `sample_rows` seeded sampled rows), keep the one more correlated with `label` (ties: the earlier)
    and drop the other as "duplicate_of:<kept>". Non-numeric columns are never duplicates.
    """
    missing = [f for f in [*features, label] if f not in frame.columns]
    if missing:
        raise ValueError(f"select_features: columns not in the frame: {missing}")
    dropped: dict[str, str] = {}
    if frame.height == 0:
        return Selection(kept=[], dropped=dict.fromkeys(features, "all_null"))
    # min == max with no nulls is a numeric constant (much cheaper than n_unique on floats)
    single = [
        (pl.col(f).null_count() == 0) & (pl.col(f).min() == pl.col(f).max())
        if _numeric(frame.schema[f])
        else pl.col(f).n_unique() == 1
        for f in features
    ]
    stats = frame.select(
        *[(pl.col(f).null_count() == frame.height).alias(f"n:{f}") for f in features],
        *[e.alias(f"u:{f}") for e, f in zip(single, features, strict=True)],
    ).row(0, named=True)
    for f in features:
        if stats[f"n:{f}"]:
            dropped[f] = "all_null"
        elif stats[f"u:{f}"]:
            dropped[f] = "constant"
    if importance is not None:
        for f in features:
            if f not in dropped and f in importance and importance[f] <= 0.0:
                dropped[f] = "no_importance"

    numeric = [f for f in features if f not in dropped and _numeric(frame.schema[f])]
    if len(numeric) > 1:
        sample = frame.sample(n=sample_rows, seed=seed) if frame.height > sample_rows else frame
        x = sample.select(pl.col(c).cast(pl.Float64).fill_nan(None) for c in [*numeric, label]).to_numpy(
            allow_copy=True
        )
        x = np.where(np.isfinite(x), x, np.nan).astype(np.float64, copy=False)
        r = np.abs(_pairwise_corr(x))
        to_label = np.nan_to_num(np.round(r[:-1, -1], 10), nan=0.0)
        r = np.nan_to_num(r[:-1, :-1], nan=0.0)
        # strongest label correlation first; ties keep input order (a stable sort)
        order = sorted(range(len(numeric)), key=lambda i: -to_label[i])
        kept_idx: list[int] = []
        for i in order:
            twins = [k for k in kept_idx if r[i, k] > corr_threshold]
            if twins:
                dropped[numeric[i]] = f"duplicate_of:{numeric[max(twins, key=lambda k: r[i, k])]}"
            else:
                kept_idx.append(i)
    return Selection(
        kept=[f for f in features if f not in dropped],
        dropped={f: dropped[f] for f in features if f in dropped},
    )
