"""One table of metric directions: the promotion gate and degradation agree on every metric."""

import pytest

from ml_assets.core.models.metrics import COMPARABLE, HIGHER_IS_BETTER, LOWER_IS_BETTER, lower_is_better
from ml_assets.core.models.registry import gate
from ml_assets.core.models.spec import PromotionRule
from ml_assets.core.monitoring.performance import degradation


@pytest.mark.parametrize("metric", COMPARABLE)
def test_gate_and_degradation_agree_on_direction(metric):
    good, bad = (0.02, 0.10) if lower_is_better(metric) else (0.80, 0.60)
    rule = PromotionRule(metric=metric, min_improvement=0.0)
    baseline = {metric: bad}
    # a worse candidate is not promoted over production, and the same move counts as a degradation
    worse = gate({metric: bad}, {metric: good}, baseline, checks_passed=True, rule=rule)
    assert not worse.promote and worse.stage == "staging"
    assert degradation({metric: good}, {metric: bad}, metric, threshold=0.05).degraded
    # a better candidate is promoted, and the same move is no degradation
    better = gate({metric: good}, {metric: bad}, baseline, checks_passed=True, rule=rule)
    assert better.promote and better.stage == "production"
    assert not degradation({metric: bad}, {metric: good}, metric, threshold=0.05).degraded


def test_ece_is_lower_is_better_everywhere():
    # the bug this table fixed: the gate promoted ECE 0.10 over production at 0.02
    decision = gate({"ece": 0.10}, {"ece": 0.02}, {"ece": 0.2}, True, PromotionRule(metric="ece"))
    assert not decision.promote
    assert LOWER_IS_BETTER.isdisjoint(HIGHER_IS_BETTER)


def test_a_metric_of_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="no known direction"):
        gate({"accuracy": 0.9}, None, {"accuracy": 0.8}, True, PromotionRule(metric="accuracy"))
