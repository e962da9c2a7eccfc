import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.core.models.labels import LABEL, outcome_labels
from ml_assets.core.models.metrics import roc_auc
from ml_assets.core.models.spec import LabelSpec, ModelSpec
from ml_assets.core.monitoring.performance import (
    PERFORMANCE_SCHEMA,
    SEGMENTS,
    Degradation,
    degradation,
    expected_metrics,
    largest_gap,
    performance_by_day,
    realized_metrics,
    segment_metrics,
)


@pytest.fixture(scope="module")
def calibrated():
    """200k rows whose labels are Bernoulli(p): p is calibrated by construction."""
    rng = np.random.default_rng(11)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=200_000) * 1.5 - 1.0)))
    y = (rng.random(p.size) < p).astype(np.float64)
    return y, p


def test_expected_metrics_match_realized_on_calibrated_probabilities(calibrated):
    y, p = calibrated
    expected = expected_metrics(p)
    realized = realized_metrics(y, p)
    assert set(expected) == {"roc_auc", "log_loss", "brier", "positive_rate", "rows"}
    assert expected["rows"] == 200_000
    for key in ("roc_auc", "log_loss", "brier", "positive_rate"):
        assert expected[key] == pytest.approx(realized[key], abs=0.01), key
    assert 0.7 < expected["roc_auc"] < 0.9  # an informative model, not a trivial 0.5
    assert "ece" in realized and realized["ece"] < 0.02


def test_expected_auc_of_constant_and_perfect_probabilities():
    assert expected_metrics(np.full(1000, 0.3))["roc_auc"] == pytest.approx(0.5)
    # p in {0, 1}: every expected positive outranks every expected negative
    sure = expected_metrics(np.r_[np.zeros(50), np.ones(50)])
    assert sure["roc_auc"] == pytest.approx(1.0)
    assert sure["brier"] == 0.0 and sure["log_loss"] < 1e-12
    const = expected_metrics(np.full(10, 0.5))
    assert const["brier"] == pytest.approx(0.25) and const["log_loss"] == pytest.approx(math.log(2))


def test_expected_metrics_edge_cases():
    assert math.isnan(expected_metrics(np.zeros(20))["roc_auc"])  # no expected positive
    empty = expected_metrics(np.array([]))
    assert empty["rows"] == 0 and math.isnan(empty["roc_auc"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_metrics(np.array([0.2, 1.2]))
    with pytest.raises(ValueError):
        expected_metrics(np.array([0.2, np.nan]))


def test_degradation_threshold_both_ways():
    ref = {"roc_auc": 0.80}
    slight = degradation(ref, {"roc_auc": 0.765})  # 4.4% drop
    assert not slight.degraded and slight.relative_drop == pytest.approx(0.04375)
    big = degradation(ref, {"roc_auc": 0.75})  # 6.25% drop
    assert isinstance(big, Degradation) and big.degraded
    assert big.relative_drop == pytest.approx(0.0625)
    assert "0.8000" in big.reason and "0.7500" in big.reason and "6.3%" in big.reason
    assert "5.0%" in big.reason and "degraded" in big.reason
    assert degradation(ref, {"roc_auc": 0.7592}).degraded  # 5.1%: just over
    assert not degradation(ref, {"roc_auc": 0.7608}).degraded  # 4.9%: just under
    better = degradation(ref, {"roc_auc": 0.90})
    assert not better.degraded and better.relative_drop < 0
    assert degradation(ref, {"roc_auc": 0.765}, threshold=0.04).degraded


def test_degradation_lower_is_better_metrics():
    ref = {"log_loss": 0.40, "brier": 0.10}
    rise = degradation(ref, {"log_loss": 0.43, "brier": 0.10}, metric="log_loss")  # +7.5%
    assert rise.degraded and rise.relative_drop == pytest.approx(0.075)
    assert "lower is better" in rise.reason
    small_rise = degradation(ref, {"log_loss": 0.41, "brier": 0.10}, metric="log_loss")  # +2.5%
    assert not small_rise.degraded
    fall = degradation(ref, {"log_loss": 0.40, "brier": 0.08}, metric="brier")
    assert not fall.degraded and fall.relative_drop == pytest.approx(-0.2)


def test_degradation_nan_and_missing():
    nan_current = degradation({"roc_auc": 0.8}, {"roc_auc": float("nan")})
    assert not nan_current.degraded and math.isnan(nan_current.relative_drop)
    assert "current" in nan_current.reason and "NaN" in nan_current.reason
    nan_ref = degradation({"roc_auc": float("nan")}, {"roc_auc": 0.7})
    assert not nan_ref.degraded and "reference" in nan_ref.reason
    with pytest.raises(KeyError):
        degradation({"roc_auc": 0.8}, {"log_loss": 0.3})


@pytest.fixture(scope="module")
def platforms():
    """ios and android labels follow p; web labels are noise; tv and car are too small to report alone."""
    rng = np.random.default_rng(5)
    sizes = {"ios": 3000, "android": 3000, "web": 3000, "tv": 120, "car": 60}
    platform = np.repeat(list(sizes), list(sizes.values()))
    p = 1.0 / (1.0 + np.exp(-(rng.normal(size=platform.size) * 1.5 - 0.5)))
    y = (rng.random(p.size) < p).astype(np.int64)
    web = platform == "web"
    y[web] = (rng.random(int(web.sum())) < p[web].mean()).astype(np.int64)  # independent of p
    return pl.DataFrame({"platform": platform, "probability": p, "label": y})


def test_segment_metrics_realized_finds_noise_segment(platforms):
    seg = segment_metrics(platforms, "platform")
    assert seg.columns == ["platform", "rows", "roc_auc", "log_loss", "positive_rate", "estimated"]
    assert sorted(seg["platform"].to_list()) == ["(other)", "android", "ios", "web"]
    by = {r["platform"]: r for r in seg.iter_rows(named=True)}
    assert by["(other)"]["rows"] == 180 and seg["rows"].sum() == platforms.height
    assert not seg["estimated"].any()
    web = platforms.filter(pl.col("platform") == "web")
    assert by["web"]["roc_auc"] == pytest.approx(
        roc_auc(web["label"].to_numpy(), web["probability"].to_numpy())
    )
    assert abs(by["web"]["roc_auc"] - 0.5) < 0.05
    assert by["ios"]["roc_auc"] > 0.75 and by["android"]["roc_auc"] > 0.75

    gap = largest_gap(seg)
    assert gap["segment_column"] == "platform" and gap["worst"] == "web"
    assert gap["best"] in {"ios", "android", "(other)"}
    assert gap["gap"] == pytest.approx(gap["best_metric"] - gap["worst_metric"]) and gap["gap"] > 0.2

    loss_gap = largest_gap(seg, metric="log_loss")  # lower is better: noise has the highest loss
    assert loss_gap["worst"] == "web" and loss_gap["worst_metric"] > loss_gap["best_metric"]
    assert loss_gap["gap"] > 0


def test_segment_metrics_estimated_without_labels(platforms):
    for seg in (
        segment_metrics(platforms.drop("label"), "platform"),
        segment_metrics(platforms, "platform", label=None),
    ):
        assert seg["estimated"].all()
        web = platforms.filter(pl.col("platform") == "web")["probability"].to_numpy()
        row = seg.filter(pl.col("platform") == "web").row(0, named=True)
        assert row["roc_auc"] == pytest.approx(expected_metrics(web)["roc_auc"])
        # the estimate cannot see that web's labels are noise: it trusts the calibration
        assert row["roc_auc"] > 0.75


def test_segment_metrics_mixed_and_small_segments():
    frame = pl.DataFrame(
        {
            "country": ["de"] * 300 + ["fr"] * 300 + [None] * 5,
            "probability": [0.2, 0.8] * 150 + [0.3, 0.6] * 150 + [0.5] * 5,
            "label": [0, 1] * 150 + [None] * 300 + [1] * 5,  # fr labels not matured yet
        }
    )
    seg = segment_metrics(frame, "country", min_rows=200)
    by = {r["country"]: r for r in seg.iter_rows(named=True)}
    assert set(by) == {"de", "fr", "(other)"}
    assert by["de"]["estimated"] is False and by["de"]["roc_auc"] == 1.0
    assert by["fr"]["estimated"] is True
    assert by["fr"]["roc_auc"] == pytest.approx(expected_metrics(np.array([0.3, 0.6] * 150))["roc_auc"])
    assert by["(other)"]["estimated"] is True  # a single class cannot give a realized AUC
    assert seg["country"].to_list()[-1] == "(other)"  # sorted by size
    with pytest.raises(ValueError, match="nope"):
        segment_metrics(frame, "nope")


def test_largest_gap_without_comparable_segments():
    seg = pl.DataFrame({"platform": ["a"], "rows": [10], "roc_auc": [float("nan")]})
    gap = largest_gap(seg)
    assert gap["best"] is None and math.isnan(gap["gap"])


DAY0 = date(2024, 3, 1)
SPEC = ModelSpec(name="churn", label=LabelSpec(kind="rolling", horizon_days=3))
REFERENCE = {"roc_auc": 0.7, "log_loss": 0.5, "brier": 0.2}


@pytest.fixture(scope="module")
def served():
    """14 days of scores: a few rows on some days, hundreds on others, segments big, small and null,
    tied probabilities, two model versions; the events their outcomes come from."""
    rng = np.random.default_rng(3)
    sizes = [3, 1, 450, 40, 700, 2, 0, 260, 90, 520, 5, 300, 30, 610]
    frames = []
    for d, n in enumerate(sizes):
        day = DAY0 + timedelta(days=d)
        players = rng.choice(5000, size=n, replace=False)
        frames.append(
            pl.DataFrame(
                {
                    "player_id": [f"p{i}" for i in players],
                    "snapshot_date": [day] * n,
                    "probability": np.round(rng.beta(2, 3, n), 2),  # ties
                    "model_version": rng.choice(["v1", "v2"], n).tolist(),
                    "platform": rng.choice(
                        ["ios", "android", "web", "tv", None], n, p=[0.45, 0.3, 0.2, 0.04, 0.01]
                    ).tolist(),
                    "country": rng.choice(["de", "fr", None], n, p=[0.4, 0.25, 0.35]).tolist(),
                },
                schema_overrides={"snapshot_date": pl.Date, "platform": pl.String, "country": pl.String},
            )
        )
    scored = pl.concat(frames)
    # day 3's players all come back (a matured day with a single class: estimated metrics)
    back = scored.filter(pl.col("snapshot_date") == DAY0 + timedelta(days=3))["player_id"]
    events = pl.concat(
        [
            pl.DataFrame(
                {
                    "player_id": [f"p{i}" for i in rng.choice(5000, size=1500, replace=False)],
                    "event_date": [DAY0 + timedelta(days=d)] * 1500,
                }
            )
            for d in range(len(sizes) + 4)
        ]
        + [pl.DataFrame({"player_id": back, "event_date": [DAY0 + timedelta(days=4)] * back.len()})]
    ).with_columns(event_type=pl.lit("session"))
    return scored, events


def _reference_day_rows(day, rows, reference, metric, threshold):
    """The per-day computation performance_by_day replaces, from the public per-frame functions."""
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


def _reference(scored, events, last_landed, metric, reference=REFERENCE):
    labelled = outcome_labels(SPEC, scored, events.lazy(), last_landed)
    out = []
    for (day,), rows in sorted(labelled.partition_by("snapshot_date", as_dict=True).items()):
        out.extend(_reference_day_rows(day, rows, reference, metric, 0.05))
    return pl.DataFrame(out, schema=PERFORMANCE_SCHEMA)


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss", "brier"])
@pytest.mark.parametrize("attributes", [True, False])
def test_performance_by_day_matches_the_per_day_computation(served, metric, attributes):
    scored, events = served
    if not attributes:  # a log without segment attributes: one segment a day
        scored = scored.with_columns(platform=pl.lit(None, pl.String), country=pl.lit("de"))
    last_landed = DAY0 + timedelta(days=12)  # the last few days have not matured
    want = _reference(scored, events, last_landed, metric)
    assert want["estimated"].any() and not want["estimated"].all()
    segments = {"(other)", "(null)", "ios"} if attributes else {"all", "(other)", "(null)", "de"}
    assert segments <= set(want["segment"].to_list())
    for chunk_days in (1, 3, 30):
        got = performance_by_day(
            SPEC,
            REFERENCE,
            scored.lazy(),
            events.lazy(),
            DAY0 - timedelta(days=2),
            DAY0 + timedelta(days=15),
            last_landed,
            chunk_days,
            metric,
        )
        assert_frame_equal(got, want, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def test_performance_by_day_other_metrics_take_the_per_day_path(served):
    scored, events = served
    # days with both classes: the per-day functions give no lift for an estimated day
    both = scored.filter(
        (pl.col("snapshot_date") != DAY0 + timedelta(days=3)) & (pl.len().over("snapshot_date") >= 30)
    )
    last_landed = DAY0 + timedelta(days=30)
    reference = REFERENCE | {"lift_top_decile": 2.0}
    want = _reference(both, events, last_landed, "lift_top_decile", reference)
    got = performance_by_day(
        SPEC,
        reference,
        both.lazy(),
        events.lazy(),
        DAY0,
        DAY0 + timedelta(days=13),
        last_landed,
        7,
        "lift_top_decile",
    )
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


def test_performance_by_day_reads_only_the_columns_it_needs(served):
    """Served explanations (reason_*) beside the scores change nothing, bit for bit: the result is
    the chunk computation over every column, as before the reads were narrowed."""
    from ml_assets.core.monitoring.performance import _chunk_performance

    scored, events = served
    rng = np.random.default_rng(5)
    wide = scored.with_columns(
        reason_1=pl.Series(rng.choice(["a", "b", None], scored.height).tolist(), dtype=pl.String),
        reason_1_contribution=pl.Series(rng.normal(size=scored.height)),
    )
    last_landed = DAY0 + timedelta(days=12)
    first, last = DAY0, DAY0 + timedelta(days=13)
    labelled = outcome_labels(SPEC, wide, events.lazy(), last_landed)
    want = _chunk_performance(labelled, REFERENCE, "roc_auc", 0.05)
    got = performance_by_day(SPEC, REFERENCE, wide.lazy(), events.lazy(), first, last, last_landed, 30)
    assert got.equals(want) and got.schema == want.schema
