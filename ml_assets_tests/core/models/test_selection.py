import numpy as np
import polars as pl
import pytest

from ml_assets.core.models.selection import Selection, select_features


def _frame(n: int = 2_000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.random(n) < 0.3
    x = rng.normal(size=n)
    return pl.DataFrame(
        {
            "informative": label + rng.normal(scale=0.5, size=n),
            "const": np.full(n, 5.0),
            "empty": pl.Series([None] * n, dtype=pl.Float32),
            "x": x,
            "x2": 2 * x + 1,
            "dead": rng.normal(size=n),
            "platform": rng.choice(["ios", "android"], n),
            "country": ["DE"] * n,
            "flag": label,  # a bool column is numeric for the correlation
            "label": label,
        }
    )


FEATURES = ["informative", "const", "empty", "x", "x2", "dead", "platform", "country"]


def test_drops_constant_empty_duplicate_and_useless_with_reasons():
    frame = _frame()
    importance = {f: 1.0 for f in FEATURES} | {"dead": 0.0}
    sel = select_features(frame, FEATURES, importance=importance)
    assert sel == Selection(
        kept=["informative", "x", "platform"],
        dropped={
            "const": "constant",
            "empty": "all_null",
            "x2": "duplicate_of:x",  # equally correlated with the label: the earlier one stays
            "dead": "no_importance",
            "country": "constant",
        },
    )
    assert select_features(frame, FEATURES).kept == ["informative", "x", "dead", "platform"]


def test_of_a_correlated_pair_the_one_closer_to_the_label_stays():
    frame = _frame()
    rng = np.random.default_rng(1)
    noisy = frame["informative"].to_numpy() + rng.normal(scale=0.02, size=frame.height)
    frame = frame.with_columns(noisy_copy=pl.Series(noisy))
    sel = select_features(frame, ["noisy_copy", "informative", "flag"])
    assert sel.dropped == {"noisy_copy": "duplicate_of:informative"}
    assert sel.kept == ["informative", "flag"]


def test_nulls_are_ignored_pairwise_and_sampling_is_seeded():
    frame = _frame(5_000).with_columns(
        x_gappy=pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("x") * 3)
    )
    sel = select_features(frame, ["x", "x_gappy", "dead"], sample_rows=500, seed=7)
    # the two are equal where both are present; which stays depends on the label correlation
    assert sel.dropped in ({"x_gappy": "duplicate_of:x"}, {"x": "duplicate_of:x_gappy"})
    assert "dead" in sel.kept
    assert sel == select_features(frame, ["x", "x_gappy", "dead"], sample_rows=500, seed=7)


def test_threshold_is_respected():
    frame = _frame()
    rng = np.random.default_rng(2)
    frame = frame.with_columns(near=pl.col("x") + pl.Series(rng.normal(scale=0.3, size=frame.height)))
    assert select_features(frame, ["x", "near"]).dropped == {}  # r ~ 0.96
    dropped = select_features(frame, ["x", "near"], corr_threshold=0.9).dropped
    assert dropped in ({"near": "duplicate_of:x"}, {"x": "duplicate_of:near"})


def test_unknown_column_is_an_error():
    with pytest.raises(ValueError, match="not in the frame"):
        select_features(_frame(10), ["nope"])
