from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ml_assets.core.models.registry import Registry, gate
from ml_assets.core.models.spec import PromotionRule

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock so each change gets a known instant."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kwargs: float) -> datetime:
        self.at += timedelta(**kwargs)
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def reg(tmp_path, clock) -> Registry:
    return Registry(str(tmp_path / "registry"), clock=clock)


def promote(reg: Registry, clock: Clock, version: str) -> None:
    clock.advance(hours=1)
    assert reg.register("churn", version, "ci", "trained")
    reg.set_stage("churn", version, "production", "ci", "gate passed")


def test_absent_table_is_an_empty_registry(reg):
    assert reg.table_version() is None
    assert reg.current("churn") is None
    assert reg.stage_of("churn", "v1") is None
    assert reg.history().height == 0
    assert reg.versions("churn").height == 0
    assert reg.served_at("churn", T0) is None


def test_register_is_idempotent(reg):
    assert reg.register("churn", "v1", "alice", "first training") is True
    assert reg.register("churn", "v1", "alice", "rerun") is False
    assert reg.table_version() == 0  # the rerun wrote nothing
    history = reg.history()
    assert history.height == 1
    row = history.row(0, named=True)
    assert row["stage"] == "development" and row["previous_stage"] is None
    assert row["actor"] == "alice" and row["reason"] == "first training" and row["at"] == T0
    assert history.schema["at"] == pl.Datetime("us", "UTC")
    # the same version string under another model is a different version
    assert reg.register("first_purchase", "v1", "alice", "first training") is True


def test_stage_moves_and_errors(reg, clock):
    reg.register("churn", "v1", "ci", "trained")
    clock.advance(minutes=5)
    changes = reg.set_stage("churn", "v1", "staging", "ci", "checks pending")
    assert [(c.version, c.stage, c.previous_stage) for c in changes] == [("v1", "staging", "development")]
    assert changes[0].at == T0 + timedelta(minutes=5)
    assert reg.stage_of("churn", "v1") == "staging"
    assert reg.current("churn", "staging") == "v1"
    assert reg.current("churn") is None
    assert reg.set_stage("churn", "v1", "staging", "ci", "again") == []
    assert reg.history().height == 2
    with pytest.raises(ValueError, match="not registered"):
        reg.set_stage("churn", "v9", "staging", "ci", "x")
    with pytest.raises(ValueError, match="unknown stage"):
        reg.set_stage("churn", "v1", "live", "ci", "x")
    with pytest.raises(ValueError, match="unknown stage"):
        reg.current("churn", "live")


def test_promotion_archives_previous_production_in_one_commit(reg, clock):
    promote(reg, clock, "v1")
    reg.register("churn", "v2", "ci", "retrained")
    before = reg.table_version()
    rows_before = reg.history().height

    clock.advance(hours=1)
    changes = reg.set_stage("churn", "v2", "production", "bob", "beats v1 by 0.01")
    assert reg.table_version() == before + 1
    assert [(c.version, c.stage, c.previous_stage) for c in changes] == [
        ("v1", "archived", "production"),
        ("v2", "production", "development"),
    ]
    assert "replaced by v2" in changes[0].reason

    # both rows are in the new Delta version and neither is in the one before it
    new = pl.read_delta(reg.uri, version=before + 1).sort("seq")
    old = pl.read_delta(reg.uri, version=before)
    assert new.height == rows_before + 2 and old.height == rows_before
    assert new.tail(2).select("version", "stage").rows() == [("v1", "archived"), ("v2", "production")]
    # at every table version there is at most one production version
    for v in range(reg.table_version() + 1):
        log = pl.read_delta(reg.uri, version=v).sort("seq")
        latest = log.group_by("version", maintain_order=True).last()
        assert latest.filter(pl.col("stage") == "production").height <= 1

    assert reg.current("churn") == "v2"
    assert reg.stage_of("churn", "v1") == "archived"
    versions = reg.versions("churn")
    assert versions.columns == ["version", "stage", "registered_at", "last_change_at"]
    assert versions.select("version", "stage").rows() == [("v1", "archived"), ("v2", "production")]
    v1 = versions.row(0, named=True)
    assert v1["registered_at"] == T0 + timedelta(hours=1)
    assert v1["last_change_at"] == T0 + timedelta(hours=2)

    history = reg.history("churn")
    assert history["seq"].to_list() == sorted(history["seq"].to_list())
    assert history["seq"].n_unique() == history.height
    assert history.select("version", "stage").rows() == [
        ("v1", "development"),
        ("v1", "production"),
        ("v2", "development"),
        ("v1", "archived"),
        ("v2", "production"),
    ]
    assert history.row(-1, named=True)["actor"] == "bob"


def test_served_at_over_time(reg, clock):
    promote(reg, clock, "v1")  # production from T0+1h
    promote(reg, clock, "v2")  # production from T0+2h
    clock.advance(hours=1)
    reg.set_stage("churn", "v2", "archived", "ops", "incident")  # nothing in production from T0+3h

    assert reg.served_at("churn", T0) is None
    assert reg.served_at("churn", T0 + timedelta(hours=1)) == "v1"
    assert reg.served_at("churn", T0 + timedelta(hours=1, minutes=59)) == "v1"
    assert reg.served_at("churn", T0 + timedelta(hours=2)) == "v2"
    assert reg.served_at("churn", T0 + timedelta(hours=3)) is None
    assert reg.served_at("other", T0 + timedelta(hours=2)) is None
    with pytest.raises(ValueError, match="time zone"):
        reg.served_at("churn", datetime(2025, 3, 1, 13))


def test_rollback_restores_previous_production(reg, clock):
    promote(reg, clock, "v1")
    promote(reg, clock, "v2")
    promote(reg, clock, "v3")
    clock.advance(hours=1)
    changes = reg.rollback("churn", "ops", "v3 scores drift")
    assert [(c.version, c.stage) for c in changes] == [("v3", "archived"), ("v2", "production")]
    assert "rollback from v3" in changes[1].reason
    assert reg.current("churn") == "v2"
    assert reg.stage_of("churn", "v3") == "archived"
    assert reg.served_at("churn", clock.at - timedelta(minutes=1)) == "v3"

    # a second rollback walks further back instead of returning to the version rolled back from
    clock.advance(hours=1)
    reg.rollback("churn", "ops", "v2 too")
    assert reg.current("churn") == "v1"
    with pytest.raises(ValueError, match="no earlier production"):
        reg.rollback("churn", "ops", "nothing left")


def test_rollback_with_nothing_before_raises(reg, clock):
    with pytest.raises(ValueError, match="no production version"):
        reg.rollback("churn", "ops", "empty")
    promote(reg, clock, "v1")
    before = reg.table_version()
    with pytest.raises(ValueError, match="no earlier production"):
        reg.rollback("churn", "ops", "only one")
    assert reg.table_version() == before
    assert reg.current("churn") == "v1"


RULE = PromotionRule(metric="roc_auc", min_improvement=0.002)
BASE = {"roc_auc": 0.70, "log_loss": 0.60}


def test_gate_refuses_worse_candidate():
    d = gate({"roc_auc": 0.800}, {"roc_auc": 0.809}, BASE, True, RULE)
    assert (d.promote, d.stage) == (False, "staging")
    assert "0.8000 vs production 0.8090" in d.reason and "not better" in d.reason


def test_gate_refuses_improvement_below_margin():
    d = gate({"roc_auc": 0.812}, {"roc_auc": 0.8109}, BASE, True, RULE)
    assert (d.promote, d.stage) == (False, "staging")
    assert d.reason == "roc_auc 0.8120 vs production 0.8109: better by 0.0011, below the +0.002 margin"


def test_gate_promotes_clear_improvement_and_exact_margin():
    d = gate({"roc_auc": 0.830}, {"roc_auc": 0.809}, BASE, True, RULE)
    assert (d.promote, d.stage) == (True, "production")
    assert "better by 0.0210" in d.reason
    # exactly the margin passes despite float rounding of 0.809 + 0.002
    assert gate({"roc_auc": 0.811}, {"roc_auc": 0.809}, BASE, True, RULE).promote


def test_gate_first_version_against_baseline():
    up = gate({"roc_auc": 0.7001}, None, BASE, True, RULE)
    assert (up.promote, up.stage) == (True, "production")
    assert "vs baseline 0.7000" in up.reason
    down = gate({"roc_auc": 0.70}, None, BASE, True, RULE)
    assert (down.promote, down.stage) == (False, "staging")
    assert "does not beat the baseline" in down.reason


def test_gate_failed_checks_stay_in_staging():
    d = gate({"roc_auc": 0.95}, {"roc_auc": 0.80}, BASE, False, RULE)
    assert (d.promote, d.stage) == (False, "staging")
    assert "checks failed" in d.reason


def test_gate_lower_is_better_metric():
    rule = PromotionRule(metric="log_loss", min_improvement=0.005)
    better = gate({"log_loss": 0.40}, {"log_loss": 0.42}, BASE, True, rule)
    assert better.promote and "lower" not in better.reason
    tiny = gate({"log_loss": 0.417}, {"log_loss": 0.42}, BASE, True, rule)
    assert not tiny.promote and "below the +0.005 margin" in tiny.reason
    worse = gate({"log_loss": 0.45}, {"log_loss": 0.42}, BASE, True, rule)
    assert not worse.promote and "lower is better" in worse.reason
    assert gate({"log_loss": 0.59}, None, BASE, True, rule).promote
    assert not gate({"log_loss": 0.61}, None, BASE, True, rule).promote


def test_gate_nan_and_missing_metric():
    assert not gate({"roc_auc": float("nan")}, None, BASE, True, RULE).promote
    with pytest.raises(ValueError, match="no 'roc_auc'"):
        gate({"pr_auc": 0.5}, None, BASE, True, RULE)
