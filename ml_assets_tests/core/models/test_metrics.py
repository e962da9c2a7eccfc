import numpy as np

from ml_assets.core.models.metrics import average_precision, brier, lift_at_top, log_loss, roc_auc


def test_auc_known_values():
    y = np.array([0, 0, 1, 1], dtype=float)
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert np.isnan(roc_auc(np.ones(3), np.arange(3.0)))


def test_average_precision_and_losses():
    y = np.array([1, 0, 1, 0], dtype=float)
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert abs(average_precision(y, s) - (1 + 2 / 3) / 2) < 1e-12
    assert abs(brier(y, np.full(4, 0.5)) - 0.25) < 1e-12
    assert abs(log_loss(y, np.full(4, 0.5)) - np.log(2)) < 1e-12
    assert lift_at_top(np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0.0]), np.arange(10.0)[::-1]) == 10.0
