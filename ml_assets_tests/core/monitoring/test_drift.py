import json
import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.monitoring.drift import (
    SCORE,
    DriftThresholds,
    Profile,
    alarm_reason,
    build_profile,
    drift_by_day,
    drift_summary,
    feature_drift,
)

N = 100_000
PLATFORMS = ["android", "ios", "pc", "switch", "web"]
SHARES = [0.4, 0.25, 0.15, 0.12, 0.08]
MOVED = [0.3, 0.35, 0.15, 0.12, 0.08]  # 10 points from android to ios


def game_frame(n: int, seed: int, shifted: bool = False) -> pl.DataFrame:
    """59 numeric features (normal, lognormal, zero-inflated counts, booleans, totals) + platform."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pl.Series] = {}
    for i in range(15):
        cols[f"normal_{i}"] = pl.Series(rng.normal(10, 2, n), dtype=pl.Float32)
    for i in range(15):
        spend = rng.lognormal(0, 1, n) * (1.2 if shifted and i == 0 else 1.0)
        if i == 1:
            spend[rng.random(n) < 0.05] = np.nan
        cols[f"spend_{i}"] = pl.Series(spend, dtype=pl.Float32, nan_to_null=True)
    for i in range(15):
        rate = 3.0 if shifted and i == 0 else 1.5
        cols[f"count_{i}"] = pl.Series(rng.poisson(rate, n) * (rng.random(n) < 0.4), dtype=pl.Int32)
    for i in range(10):
        cols[f"flag_{i}"] = pl.Series(rng.random(n) < 0.3, dtype=pl.Boolean)
    for i in range(4):
        cols[f"total_{i}"] = pl.Series(rng.poisson(50, n), dtype=pl.Int64)
    cols["platform"] = pl.Series(rng.choice(PLATFORMS, n, p=MOVED if shifted else SHARES))
    return pl.DataFrame(cols)


@pytest.fixture(scope="module")
def reference() -> tuple[Profile, list[str]]:
    frame = game_frame(N, seed=1)
    scores = np.random.default_rng(11).beta(2, 5, N)
    features = frame.columns
    return build_profile(frame, features, ["platform"], scores=scores), features


def test_same_distribution_at_100k_rows_is_quiet(reference):
    profile, features = reference
    assert len(features) == 60
    scores = np.random.default_rng(12).beta(2, 5, N)
    drift = feature_drift(profile, game_frame(N, seed=2), scores=scores)
    assert drift.height == 61
    assert drift["feature"].to_list() == [*features, SCORE]
    assert drift["drifted"].sum() == 0
    assert drift["psi"].max() < 0.002  # 10x under the 0.02 threshold
    numeric = drift.filter(pl.col("kind") == "numeric")
    assert numeric["ks_statistic"].null_count() == 0
    assert numeric["ks_statistic"].max() < 0.06  # D between two 2,000-value samples
    assert numeric["statistic"].max() < 0.08  # 2,000-value sample noise; PSI is what keeps it quiet
    platform = drift.filter(pl.col("feature") == "platform").row(0, named=True)
    assert platform["statistic_name"] == "jensen_shannon" and platform["statistic"] < 0.02
    spend = drift.filter(pl.col("feature") == "spend_1").row(0, named=True)
    assert abs(spend["current_null_share"] - 0.05) < 0.005
    assert drift_summary(drift)["alarm"] is False


def test_real_shifts_are_caught_and_nothing_else(reference):
    profile, _ = reference
    scores = np.random.default_rng(12).beta(3, 5, N)
    drift = feature_drift(profile, game_frame(N, seed=3, shifted=True), scores=scores)
    flagged = drift.filter(pl.col("drifted"))["feature"].to_list()
    assert flagged == ["spend_0", "count_0", "platform", SCORE]
    spend = drift.filter(pl.col("feature") == "spend_0").row(0, named=True)
    assert 0.02 < spend["psi"] < 0.05 and 0.1 < spend["statistic"] < 0.25
    assert abs(spend["current_mean"] / spend["reference_mean"] - 1.2) < 0.03
    score = drift.filter(pl.col("kind") == "score").row(0, named=True)
    assert score["statistic"] > 0.4 and abs(score["current_mean"] - 3 / 8) < 0.005

    summary = drift_summary(drift)
    assert summary["features"] == 60 and summary["drifted"] == 3
    assert summary["share_drifted"] == 3 / 60
    assert summary["alarm"] is True  # from the score, not the share
    assert summary["score_psi"] == score["psi"]
    assert set(summary["top"][:3]) == {"count_0", "platform", "spend_0"} and len(summary["top"]) == 5


def test_summary_alarm_on_share_of_features():
    drift = pl.DataFrame(
        {"feature": list("abcd"), "kind": ["numeric"] * 4, "psi": [0.5, None, 0.3, 0.01]}
    ).with_columns(drifted=pl.Series([True, True, False, False]))
    summary = drift_summary(drift)
    assert summary == {
        "features": 4,
        "drifted": 2,
        "share_drifted": 0.5,
        "score_psi": None,
        "score_drifted": False,
        "alarm": True,
        "top": ["a", "c", "d", "b"],
        "drifted_features": ["a", "b"],
    }
    assert drift_summary(drift, DriftThresholds(share_drifted=0.5))["alarm"] is False


def _rows(names, drifted, psi, statistic, kind="numeric", rows=5000):
    return pl.DataFrame(
        {
            "feature": names,
            "kind": [kind] * len(names),
            "psi": psi,
            "statistic": statistic,
            "statistic_name": ["wasserstein_normed"] * len(names),
            "psi_threshold": [0.02] * len(names),
            "statistic_threshold": [0.1] * len(names),
            "drifted": drifted,
        }
    ).with_columns(rows=pl.lit(rows, pl.Int64))


def test_the_alarm_reason_names_the_statistic_that_fired_with_value_and_threshold():
    features = _rows(list("abcd"), [True, True, False, False], [0.5, 0.4, 0.3, 0.01], [0.3, 0.2, 0.0, 0.0])
    assert alarm_reason(features) == "2/4 features drifted: share 0.50 > 0.30 (a, b)"
    score = _rows([SCORE], [True], [0.0279], [0.137], kind="score", rows=8632)
    one_feature = features.with_columns(drifted=pl.col("feature") == "a")
    reason = alarm_reason(pl.concat([one_feature, score]))
    assert reason == (
        "score drifted: PSI 0.0279 > 0.0200 and normalised Wasserstein 0.137 > 0.100 over 8632 rows; "
        "with 1 feature(s) (a); a: PSI 0.5000 > 0.0200 and normalised Wasserstein 0.300 > 0.100 "
        "over 5000 rows"
    )


def test_a_score_that_moves_with_no_watched_feature_is_not_an_alarm():
    """The demo's case: the players age, the ignored calendar features move, the score follows them
    (PSI 0.028 over 8,632 rows) and every watched feature stays put."""
    quiet = _rows(list("abcd"), [False] * 4, [0.004, 0.003, 0.002, 0.001], [0.05, 0.04, 0.03, 0.02])
    score = _rows([SCORE], [True], [0.0279], [0.137], kind="score", rows=8632)
    summary = drift_summary(pl.concat([quiet, score]))
    assert summary["score_drifted"] is True and summary["alarm"] is False
    assert alarm_reason(pl.concat([quiet, score])) == "no alarm"


def test_thresholds_rise_as_samples_shrink():
    """A 0.15 std shift flags at 20,000 rows; at 1,200 rows the same shift is within the noise
    bound there and does not, though it passes the fixed floors."""
    rng = np.random.default_rng(3)
    profile = build_profile(pl.DataFrame({"x": rng.normal(size=30_000)}), ["x"], [])
    big = feature_drift(profile, pl.DataFrame({"x": rng.normal(0.15, 1.0, 20_000)})).row(0, named=True)
    assert big["drifted"] is True
    assert big["psi_threshold"] == 0.02 and big["statistic_threshold"] == 0.1  # the floors rule
    small = feature_drift(profile, pl.DataFrame({"x": rng.normal(0.15, 1.0, 1_200)})).row(0, named=True)
    assert small["psi_threshold"] > 0.023 and small["statistic_threshold"] > 0.105
    assert small["psi"] > 0.02  # would have flagged against the floor alone
    assert small["drifted"] is False
    assert small["psi_threshold"] > big["psi_threshold"]


def test_no_false_alarm_at_min_rows_on_same_distribution_days():
    """100 days of 1,000 to 1,500 rows drawn from the reference distribution: no day alarms and
    at most a handful of (feature, day) flags out of 6,000."""
    profile, _ = _small_reference()
    rng = np.random.default_rng(99)
    flags, alarms = 0, 0
    for day in range(100):
        frame = game_frame(int(rng.integers(1000, 1500)), seed=1000 + day)
        drift = feature_drift(profile, frame, seed=day)
        flags += int(drift["drifted"].sum())
        alarms += drift_summary(drift)["alarm"]
    assert alarms == 0
    assert flags <= 6  # 1 in 1,000 per feature and day, by construction of the noise bounds


def test_the_reference_period_itself_never_alarms(reference):
    profile, features = reference
    frame = game_frame(N, seed=1)  # the very rows the profile was built from
    scores = np.random.default_rng(11).beta(2, 5, N)
    for seed in range(3):  # each day of the reference period, sampled
        day = frame.sample(5_000, seed=seed)
        pick = np.random.default_rng(seed).choice(N, 5_000, replace=False)
        drift = feature_drift(profile, day, scores=scores[pick], seed=seed)
        assert drift["drifted"].sum() == 0 and drift_summary(drift)["alarm"] is False


_SMALL: tuple[Profile, list[str]] | None = None


def _small_reference() -> tuple[Profile, list[str]]:
    global _SMALL
    if _SMALL is None:
        frame = game_frame(30_000, seed=21)
        _SMALL = build_profile(frame, frame.columns, ["platform"]), frame.columns
    return _SMALL


def test_profile_json_round_trip(reference):
    profile, _ = reference
    text = json.dumps(profile.to_json(), allow_nan=False)
    back = Profile.from_json(json.loads(text))
    assert back == profile
    assert len(back.numeric["normal_0"].sample) == 2000
    assert back.numeric["normal_0"].edges[0] == -math.inf and len(back.numeric["normal_0"].counts) == 10
    assert back.scores is not None and sum(back.scores.counts) == N


def test_exact_wasserstein_ks_and_js_values():
    ref = pl.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "c": ["a", "b", "a", "b"]})
    cur = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "a", "a", "a"]})
    drift = feature_drift(build_profile(ref, ["x", "c"], ["c"]), cur, thresholds=DriftThresholds(min_rows=1))
    x, c = drift.row(0, named=True), drift.row(1, named=True)
    assert x["statistic"] == pytest.approx(1 / math.sqrt(1.25))  # W1 = 1, reference std sqrt(1.25)
    assert x["ks_statistic"] == pytest.approx(0.25)
    # four rows a side: the noise bounds at that size are above even these moves, so nothing flags
    assert x["drifted"] is False and x["statistic_threshold"] > x["statistic"]
    # p = (a .5, b .5), q = (a 1): JS divergence 0.3113 bits; PSI .5 ln 2 + (.5 - 1e-4) ln(.5 / 1e-4)
    assert c["statistic"] == pytest.approx(
        math.sqrt(0.5 * (0.5 * math.log2(2 / 3) + 0.5) + 0.5 * math.log2(4 / 3))
    )
    assert c["psi"] == pytest.approx(0.5 * math.log(2) + (0.5 - 1e-4) * math.log(0.5 / 1e-4))
    assert c["ks_statistic"] is None
    assert c["drifted"] is False and c["statistic_threshold"] > c["statistic"]


def test_discrete_features_get_one_bin_per_value():
    rng = np.random.default_rng(5)
    n = 5000
    frame = pl.DataFrame(
        {
            "level": pl.Series(rng.choice([1, 2, 3], n, p=[0.7, 0.2, 0.1]), dtype=pl.Int32),
            "rare_flag": pl.Series(rng.random(n) < 0.05),
            "zero": pl.Series(np.zeros(n), dtype=pl.Float32),
        }
    )
    profile = build_profile(frame, frame.columns, [])
    level = profile.numeric["level"]
    assert level.edges == [-math.inf, 1.0, 2.0, 3.0, math.nextafter(3.0, math.inf), math.inf]
    assert level.counts[0] == 0 and level.counts[-1] == 0 and sum(level.counts) == n
    # a 5% boolean would vanish into one quantile bin; here it keeps its own bin
    assert profile.numeric["rare_flag"].edges[1:-1] == [0.0, 1.0, math.nextafter(1.0, math.inf)]
    assert profile.numeric["zero"].std == 0.0

    same = feature_drift(profile, frame.sample(n, seed=1))
    assert same["drifted"].sum() == 0
    moved = pl.DataFrame(
        {
            "level": pl.Series(rng.choice([1, 2, 3, 4], n, p=[0.5, 0.2, 0.2, 0.1]), dtype=pl.Int32),
            "rare_flag": pl.Series(rng.random(n) < 0.15),
            "zero": pl.Series((rng.random(n) < 0.05).astype(float), dtype=pl.Float32),
        }
    )
    drift = feature_drift(profile, moved)
    assert drift["drifted"].to_list() == [True, True, True]
    assert drift["statistic"][2] == math.inf  # any move away from a constant reference


def test_all_null_current_columns():
    rng = np.random.default_rng(6)
    n = 3000
    mostly_null = np.where(rng.random(n) < 0.95, np.nan, rng.normal(size=n))
    frame = pl.DataFrame(
        {
            "x": rng.normal(size=n),
            "sparse": pl.Series(mostly_null, nan_to_null=True),
            "country": rng.choice(["de", "fr", "us"], n),
        }
    )
    profile = build_profile(frame, ["x", "sparse", "country"], ["country"])
    empty = pl.DataFrame(
        {"x": [None] * n, "sparse": [None] * n, "country": [None] * n},
        schema={"x": pl.Float64, "sparse": pl.Float64, "country": pl.String},
    )
    drift = feature_drift(profile, empty)
    x, sparse, country = (drift.row(i, named=True) for i in range(3))
    assert x["drifted"] is True and x["statistic"] is None and x["current_null_share"] == 1.0
    assert x["current_mean"] is None and x["psi"] > 5
    assert sparse["drifted"] is False  # the reference was 95% null already
    assert country["drifted"] is True and country["statistic"] > 0.99


def test_min_rows_keeps_small_samples_quiet():
    rng = np.random.default_rng(7)
    profile = build_profile(pl.DataFrame({"x": rng.normal(size=20_000)}), ["x"], [])
    small = pl.DataFrame({"x": rng.normal(1.0, 1.0, 999)})
    drift = feature_drift(profile, small)
    row = drift.row(0, named=True)
    assert row["rows"] == 999 and row["psi"] > 0.5 and row["statistic"] > 0.9
    assert row["drifted"] is False
    assert feature_drift(profile, small, thresholds=DriftThresholds(min_rows=500))["drifted"][0] is True


def test_missing_current_column_fails_loudly(reference):
    profile, _ = reference
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        feature_drift(profile, pl.DataFrame({"normal_0": [1.0]}))


def test_drift_by_day_matches_feature_drift_of_each_day():
    """Days of 0 to 2,500 rows (above 2,000 the sample is drawn), a day without served scores, nulls,
    an unseen level, a constant column: the chunked computation is feature_drift day by day."""
    rng = np.random.default_rng(8)
    reference = game_frame(5_000, seed=1).with_columns(constant=pl.lit(3.0))
    profile = build_profile(
        reference, reference.columns, ["platform"], scores=rng.beta(2, 5, reference.height)
    )
    first = date(2024, 5, 1)
    sizes = [3, 0, 1, 60, 2_500, 7, 400, 0, 2, 1_200, 30]
    days = []
    for d, n in enumerate(sizes):
        frame = game_frame(n, seed=100 + d, shifted=d % 2 == 1).with_columns(
            constant=pl.lit(3.0 if d != 6 else 4.0)
        )
        if d == 3:
            frame = frame.with_columns(platform=pl.lit("fridge"), count_0=pl.lit(None, pl.Int32))
        days.append(
            frame.with_columns(
                player_id=pl.Series([f"p{i}" for i in range(n)], dtype=pl.String),
                snapshot_date=pl.lit(first + timedelta(days=d)),
            )
        )
    features = pl.concat(days)
    served = features.select("snapshot_date", probability=pl.Series(rng.beta(2, 5, features.height)))
    served = served.filter(pl.col("snapshot_date") != first + timedelta(days=9))
    thresholds = DriftThresholds(min_rows=50)
    last = first + timedelta(days=len(sizes) - 1)
    want = []
    for d in range(len(sizes)):
        day = first + timedelta(days=d)
        rows = features.filter(pl.col("snapshot_date") == day)
        p = served.filter(pl.col("snapshot_date") == day)["probability"].to_numpy()
        stats = feature_drift(profile, rows, p if p.size else None, thresholds)
        want.append(stats.with_columns(snapshot_date=pl.lit(day)))
    expected = pl.concat(want, how="diagonal_relaxed")
    assert expected["drifted"].any() and expected["statistic"].is_null().any()
    spec = ModelSpec(name="churn")
    for chunk_days in (1, 2, 3, 20):
        got = drift_by_day(spec, profile, features.lazy(), served.lazy(), first, last, chunk_days, thresholds)
        assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def _numeric_by_day_before(name, kind, ref, values, by_day, t):
    """`_numeric_by_day` before bins were counted by comparisons and nulls as one more bin: the
    present values copied out, a binary search per value (the straightforward reference)."""
    from ml_assets.core.monitoring.drift import _psi_rows, _shares_with_nulls

    days, counts = by_day.counts.size, by_day.counts
    missing = np.isnan(values)
    nulls = bool(missing.any())
    kept, kept_day = (values[~missing], by_day.day[~missing]) if nulls else (values, by_day.day)
    with np.errstate(invalid="ignore", divide="ignore"):
        null_share = (by_day.sums(missing) if nulls else np.zeros(days)) / counts
        inner = np.asarray(ref.edges[1:-1])
        width = len(ref.counts)
        bins = np.searchsorted(inner, kept, side="right")
        current = np.bincount(kept_day * width + bins, minlength=days * width)
        current = current.reshape(days, width).astype(np.float64)
        p = _shares_with_nulls(np.asarray(ref.counts, dtype=np.float64), ref.null_share)
        known = np.where(np.isnan(null_share), 0.0, null_share)
        total = current.sum(axis=1)
        shares = np.where(total[:, None] > 0, current * ((1.0 - known) / total)[:, None], 0.0)
        psi = _psi_rows(p, np.column_stack([shares, known]))
        if nulls:
            mean = np.bincount(kept_day, weights=kept, minlength=days) / np.bincount(kept_day, minlength=days)
        else:
            mean = by_day.sums(values) / counts
    return {"rows": counts, "psi": psi, "current_mean": mean, "current_null_share": null_share}


def test_bin_index_is_searchsorted():
    """Counting edges by comparison gives searchsorted(side="right") for every value: ties with an
    edge, infinities, duplicate edges, no edge, and past 254 edges (the binary-search fallback)."""
    from ml_assets.core.monitoring.drift import _bin_index

    rng = np.random.default_rng(2)
    values = np.r_[rng.normal(size=5_000).round(1), -np.inf, np.inf, 0.0, -0.0, 1e300]
    for inner in (
        np.array([]),
        np.array([0.0]),
        np.array([-np.inf, -1.0, 0.0, 0.0, 0.5, np.inf]),
        np.unique(np.quantile(values[np.isfinite(values)], np.arange(1, 10) / 10, method="lower")),
        np.linspace(-3, 3, 400),
    ):
        got = _bin_index(inner, values)
        assert np.array_equal(got, np.searchsorted(inner, values, side="right"))
    # NaN lands in bin 0 (its own bin is counted apart)
    assert _bin_index(np.array([0.0, 1.0]), np.array([np.nan]))[0] == 0


@pytest.mark.parametrize("with_nulls", [True, False])
def test_numeric_by_day_is_bit_for_bit_the_straightforward_computation(with_nulls):
    """Unsorted rows over days with none, one and thousands of rows, NaN and nulls, a discrete
    feature (one bin per value) and values outside the reference: every figure is the reference's
    exactly, not within a tolerance."""
    from ml_assets.core.monitoring.drift import _ByDay, _chunk_drift, _float_column, _numeric_by_day

    rng = np.random.default_rng(4)
    first = date(2024, 5, 1)
    sizes = [0, 1, 3, 2_600, 0, 400, 5_000, 2]
    day = np.repeat(np.arange(len(sizes)), sizes)
    n = day.size
    frame = pl.DataFrame(
        {
            "snapshot_date": pl.Series(day + (first - date(1970, 1, 1)).days, dtype=pl.Int32).cast(pl.Date),
            "spend": pl.Series(rng.lognormal(0, 1, n) * 3, dtype=pl.Float32),
            "level": pl.Series(rng.integers(0, 6, n), dtype=pl.Int32),
            "score": rng.normal(0, 1, n),
            "platform": rng.choice(["ios", "android", "fridge"], n).tolist(),
        }
    ).sample(fraction=1.0, shuffle=True, seed=3)
    if with_nulls:
        frame = frame.with_columns(
            spend=pl.when(pl.col("spend") > 6).then(None).otherwise(pl.col("spend")),
            score=pl.when(pl.col("score") > 1).then(float("nan")).otherwise(pl.col("score")),
            level=pl.when(pl.col("level") == 5).then(None).otherwise(pl.col("level")),
        )
    reference = frame.head(3_000).with_columns(level=pl.col("level").clip(0, 3), spend=pl.col("spend") / 2)
    profile = build_profile(reference, ["spend", "level", "score"], ["platform"])
    t = DriftThresholds(min_rows=50)
    days = len(sizes)
    by_day = _ByDay.of(frame["snapshot_date"], first, days, 0)
    assert by_day.order is not None  # the rows are not in day order
    for name, ref in profile.numeric.items():
        values = by_day.grouped(_float_column(frame, name))
        got = _numeric_by_day(name, "numeric", ref, values, by_day, t)
        want = _numeric_by_day_before(name, "numeric", ref, values, by_day, t)
        assert bool(np.isnan(values).any()) == with_nulls
        for key, expected in want.items():
            assert np.array_equal(got[key], expected, equal_nan=True), (name, key)
            assert np.asarray(got[key]).dtype == np.asarray(expected).dtype, (name, key)
    empty = pl.DataFrame(schema={"snapshot_date": pl.Date, "probability": pl.Float64})
    out = _chunk_drift(profile, frame, empty, first, first + timedelta(days=days - 1), t)
    assert out.filter(pl.col("rows") == 0).height == 2 * (len(profile.numeric) + 1)
