import base64

import numpy as np
import polars as pl
import pytest

from ml_assets.core.models.evaluation import (
    calibration_table,
    evaluate,
    expected_calibration_error,
    pr_curve,
    roc_curve,
)
from ml_assets.core.models.metrics import average_precision, classification_report, roc_auc
from ml_assets.core.models.plots import (
    PNG_SIGNATURE,
    calibration_png,
    importance_png,
    markdown_image,
    pr_png,
    roc_png,
)


@pytest.fixture(scope="module")
def calibrated():
    """Labels drawn from known probabilities: p is perfectly calibrated by construction."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20_000, 6))
    p = 1.0 / (1.0 + np.exp(-(x @ np.array([1.2, -0.8, 0.5, 0.0, 0.3, -0.4]) - 1.0)))
    y = (rng.random(p.size) < p).astype(np.float64)
    return y, p


def test_calibration_table_of_calibrated_probabilities(calibrated):
    y, p = calibrated
    table = calibration_table(y, p, bins=10)
    assert table.columns == ["bin", "rows", "mean_predicted", "observed_rate"]
    assert table["bin"].to_list() == list(range(10))
    assert table["rows"].sum() == y.size
    assert table["rows"].min() >= 1990  # quantile bins are equal-sized
    assert table["mean_predicted"].is_sorted()
    # binomial noise of 2000 rows per bin is at most ~0.011 (1 sd); allow 4 sd
    gaps = (table["observed_rate"] - table["mean_predicted"]).abs()
    assert gaps.max() < 0.045
    assert abs(table["mean_predicted"][0] - p[p <= np.quantile(p, 0.1)].mean()) < 1e-12


def test_calibration_table_drops_bins_emptied_by_ties():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0], dtype=float)
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9])
    table = calibration_table(y, p, bins=4)
    assert table["rows"].to_list() == [6, 2]
    assert table["observed_rate"].to_list() == [0.5, 0.0]
    assert calibration_table(np.empty(0), np.empty(0)).height == 0


def test_ece_small_when_calibrated_large_when_not(calibrated):
    y, p = calibrated
    assert expected_calibration_error(y, p) < 0.015
    overconfident = np.clip(p * 1.8, 0.0, 1.0)
    assert expected_calibration_error(y, overconfident) > 0.15
    # a constant at the base rate is calibrated in aggregate: its single bin has no gap
    assert expected_calibration_error(y, np.full(y.size, y.mean())) < 1e-12


def test_roc_curve_endpoints_and_area_match_auc(calibrated):
    y, p = calibrated
    fpr, tpr = roc_curve(y, p)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert abs(np.trapezoid(tpr, fpr) - roc_auc(y, p)) < 1e-10


def test_roc_curve_handles_ties():
    y = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    s = np.array([0.2, 0.5, 0.5, 0.9, 0.5, 0.2])
    fpr, tpr = roc_curve(y, s)
    # one point per distinct score: 0.9, 0.5, 0.2
    assert fpr.tolist() == [0.0, 0.0, 2 / 3, 1.0]
    assert tpr.tolist() == [0.0, 1 / 3, 2 / 3, 1.0]
    assert abs(np.trapezoid(tpr, fpr) - roc_auc(y, s)) < 1e-12
    fpr, tpr = roc_curve(y, np.full(6, 0.3))
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.ones(3), np.arange(3.0))


def test_pr_curve_shape_and_average_precision(calibrated):
    y, p = calibrated
    recall, precision = pr_curve(y, p)
    assert recall.shape == precision.shape == (np.unique(p).size + 1,)
    assert (recall[0], precision[0]) == (0.0, 1.0)
    assert recall[-1] == 1.0 and abs(precision[-1] - y.mean()) < 1e-12
    assert np.all(np.diff(recall) >= 0)
    assert np.all((precision >= 0) & (precision <= 1))
    # scores have no ties, so the step-wise area is exactly metrics.average_precision
    assert abs(np.sum(np.diff(recall) * precision[1:]) - average_precision(y, p)) < 1e-10
    with pytest.raises(ValueError, match="positive"):
        pr_curve(np.zeros(3), np.arange(3.0))


def test_evaluate_is_report_plus_ece(calibrated):
    y, p = calibrated
    out = evaluate(y, p)
    assert out == {**classification_report(y, p), "ece": expected_calibration_error(y, p)}


def test_pngs_are_small_pngs_and_markdown_roundtrips(calibrated):
    y, p = calibrated
    baseline = p + np.random.default_rng(1).normal(scale=0.3, size=p.size)
    importance = {f"feature_{i:02d}_with_a_long_name": float(100 - i) for i in range(30)}
    pngs = {
        "roc": roc_png(y, p, baseline),
        "roc_alone": roc_png(y, p),
        "pr": pr_png(y, p, baseline),
        "calibration": calibration_png(calibration_table(y, p)),
        "importance": importance_png(importance, top=20),
        "importance_few": importance_png({"a": 1.0}),
    }
    for name, png in pngs.items():
        assert isinstance(png, bytes) and png.startswith(PNG_SIGNATURE), name
        assert len(png) < 40_000, (name, len(png))
    md = markdown_image(pngs["roc"], "ROC [test]")
    assert md.startswith("![ROC (test)](data:image/png;base64,") and md.endswith(")")
    assert base64.b64decode(md[len("![ROC (test)](data:image/png;base64,") : -1]) == pngs["roc"]


def test_calibration_png_accepts_empty_table():
    empty = pl.DataFrame(
        schema={"bin": pl.Int64, "rows": pl.Int64, "mean_predicted": pl.Float64, "observed_rate": pl.Float64}
    )
    assert calibration_png(empty).startswith(PNG_SIGNATURE)
