"""Model versions and their lifecycle stages, kept as an append-only Delta log.

No row is ever updated: each stage change is a new row, so the log answers "which version served
when, who moved it and why" for the whole life of a model. Promotion to production archives the
previous production version in the same Delta commit, so no table version shows two (or zero)
production versions.

Writers: each change reads the log, then appends. Delta accepts concurrent blind appends, so two
processes changing the same table at once could both succeed with clashing `seq` values; callers
must serialise writes to one registry (one Dagster run per model at a time does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import polars as pl

from ml_assets.core.models.metrics import lower_is_better
from ml_assets.core.models.spec import PromotionRule
from ml_assets.lake.tables import delta_version, open_table

STAGES: tuple[str, ...] = ("development", "staging", "production", "archived")

LOG_SCHEMA: dict[str, pl.DataType] = {
    "model": pl.String(),
    "version": pl.String(),
    "stage": pl.String(),
    "previous_stage": pl.String(),
    "at": pl.Datetime("us", "UTC"),
    "actor": pl.String(),
    "reason": pl.String(),
    "seq": pl.Int64(),
}


@dataclass(frozen=True)
class StageChange:
    """One row of the registry log: `version` of `model` entered `stage` at `at` (UTC)."""

    model: str
    version: str
    stage: str
    previous_stage: str | None
    at: datetime
    actor: str
    reason: str


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate goes to production; `stage` is "production" or "staging"."""

    promote: bool
    stage: str
    reason: str


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{at!r} has no time zone; registry times must be timezone-aware")
    return at.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Registry:
    """The model registry stored as an append-only Delta table at `uri` (absent table = empty)."""

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.uri = uri
        self.storage_options = storage_options
        self._clock = clock or _now

    # -- reading ---------------------------------------------------------------------------------

    def table_version(self) -> int | None:
        """The Delta version of the log, or None when the table does not exist yet."""
        return delta_version(self.uri, self.storage_options)

    def _log(self) -> pl.DataFrame:
        table = open_table(self.uri, self.storage_options)
        if table is None:
            return pl.DataFrame(schema=LOG_SCHEMA)
        return pl.read_delta(table).select(list(LOG_SCHEMA)).sort("seq")

    @staticmethod
    def _latest(log: pl.DataFrame, model: str) -> pl.DataFrame:
        """The newest row per version of `model` (its current stage), in seq order."""
        return (
            log.filter(pl.col("model") == model)
            .sort("seq")
            .group_by("version", maintain_order=True)
            .last()
            .sort("seq")
        )

    def stage_of(self, model: str, version: str) -> str | None:
        """The current stage of a version, or None when it is not registered."""
        rows = self._latest(self._log(), model).filter(pl.col("version") == version)
        return rows["stage"][0] if rows.height else None

    def current(self, model: str, stage: str = "production") -> str | None:
        """The version now in `stage` (the one most recently moved there if several are)."""
        _check_stage(stage)
        rows = self._latest(self._log(), model).filter(pl.col("stage") == stage)
        return rows["version"][-1] if rows.height else None

    def versions(self, model: str) -> pl.DataFrame:
        """One row per version in registration order: version, stage, registered_at, last_change_at."""
        rows = self._log().filter(pl.col("model") == model)
        return (
            rows.group_by("version", maintain_order=True)
            .agg(
                pl.col("stage").last(),
                pl.col("at").first().alias("registered_at"),
                pl.col("at").last().alias("last_change_at"),
                pl.col("seq").first().alias("_first"),
            )
            .sort("_first")
            .drop("_first")
        )

    def history(self, model: str | None = None) -> pl.DataFrame:
        """Every stage change in order (the audit log), for one model or all of them."""
        log = self._log()
        return log if model is None else log.filter(pl.col("model") == model)

    def served_at(self, model: str, at: datetime) -> str | None:
        """The version that was in production at instant `at`, or None if none was."""
        log = self._log().filter(pl.col("at") <= _utc(at))
        rows = self._latest(log, model).filter(pl.col("stage") == "production")
        return rows["version"][-1] if rows.height else None

    # -- writing ---------------------------------------------------------------------------------

    def _append(self, log: pl.DataFrame, changes: list[StageChange]) -> None:
        """Write `changes` as one Delta commit, numbered after the last row of `log`."""
        start = int(log["seq"].to_numpy().max()) + 1 if log.height else 1
        rows = [{**asdict(change), "seq": start + i} for i, change in enumerate(changes)]
        frame = pl.DataFrame(rows, schema=LOG_SCHEMA)
        frame.write_delta(self.uri, mode="append", storage_options=self.storage_options)

    def register(self, model: str, version: str, actor: str, reason: str) -> bool:
        """Add `version` in 'development'; False (and nothing written) when it is already registered."""
        log = self._log()
        if self._latest(log, model).filter(pl.col("version") == version).height:
            return False
        at = _utc(self._clock())
        self._append(log, [StageChange(model, version, "development", None, at, actor, reason)])
        return True

    def set_stage(self, model: str, version: str, stage: str, actor: str, reason: str) -> list[StageChange]:
        """Move `version` to `stage` and return the rows written (none if it is already there).

        Moving to production also archives the current production version, in the same commit.
        """
        _check_stage(stage)
        log = self._log()
        latest = self._latest(log, model)
        mine = latest.filter(pl.col("version") == version)
        if not mine.height:
            raise ValueError(f"{model} version {version!r} is not registered")
        previous = mine["stage"][0]
        if previous == stage:
            return []
        at = _utc(self._clock())
        changes: list[StageChange] = []
        if stage == "production":
            for old in latest.filter(pl.col("stage") == "production")["version"]:
                changes.append(
                    StageChange(
                        model, old, "archived", "production", at, actor, f"replaced by {version}: {reason}"
                    )
                )
        changes.append(StageChange(model, version, stage, previous, at, actor, reason))
        self._append(log, changes)
        return changes

    def _production_stack(self, model: str) -> list[str]:
        """Production tenures still open to roll back to, oldest first.

        Re-entering production as the version just before the current one pops the current one
        (a rollback, or the same done by hand), so successive rollbacks walk further back.
        """
        stack: list[str] = []
        for version in self.history(model).filter(pl.col("stage") == "production")["version"]:
            if len(stack) >= 2 and stack[-2] == version:
                stack.pop()
                continue
            if version in stack:
                stack.remove(version)
            stack.append(version)
        return stack

    def rollback(self, model: str, actor: str, reason: str) -> list[StageChange]:
        """Put back the production version before the current one (the current one is archived)."""
        current = self.current(model)
        if current is None:
            raise ValueError(f"{model} has no production version to roll back")
        stack = self._production_stack(model)
        if len(stack) < 2 or stack[-1] != current:
            raise ValueError(f"{model}: no earlier production version to roll back to from {current}")
        return self.set_stage(model, stack[-2], "production", actor, f"rollback from {current}: {reason}")


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {list(STAGES)}")


def gate(
    candidate: dict[str, float],
    production: dict[str, float] | None,
    baseline: dict[str, float],
    checks_passed: bool,
    rule: PromotionRule,
) -> GateDecision:
    """Decide production vs staging for a candidate; all metrics come from the same test rows.

    Failed checks keep it in staging. With no production model it must beat the baseline; else it
    must beat production by `rule.min_improvement` (in the metric's direction, `metrics.lower_is_better`).
    """
    metric = rule.metric
    lower = lower_is_better(metric)
    sign = -1.0 if lower else 1.0
    for name, metrics in (("candidate", candidate), ("baseline", baseline), ("production", production)):
        if metrics is not None and metric not in metrics:
            raise ValueError(f"{name} metrics have no {metric!r}: {sorted(metrics)}")
    cand = candidate[metric]
    if production is None:
        other, label, margin = baseline[metric], "baseline", 0.0
    else:
        other, label, margin = production[metric], "production", rule.min_improvement
    figures = f"{metric} {cand:.4f} vs {label} {other:.4f}"

    if not checks_passed:
        return GateDecision(False, "staging", f"checks failed, kept in staging ({figures})")
    if math.isnan(cand) or math.isnan(other):
        return GateDecision(False, "staging", f"{figures}: cannot compare a NaN metric")
    gain = sign * (cand - other)  # > 0 means the candidate is better
    direction = "lower" if lower else "higher"
    if production is None:
        if gain > 0:
            return GateDecision(True, "production", f"{figures}: beats the baseline by {gain:.4f}")
        reason = f"{figures}: does not beat the baseline ({direction} is better)"
        return GateDecision(False, "staging", reason)
    # a tolerance so that 0.811 vs 0.809 passes a 0.002 margin despite float rounding
    if gain >= margin - 1e-12:
        return GateDecision(
            True, "production", f"{figures}: better by {gain:.4f}, meets the +{margin:g} margin"
        )
    if gain <= 0:
        return GateDecision(
            False, "staging", f"{figures}: not better than production ({direction} is better)"
        )
    return GateDecision(False, "staging", f"{figures}: better by {gain:.4f}, below the +{margin:g} margin")
