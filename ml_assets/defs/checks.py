"""Asset checks built from the Pandera schemas, reporting failure counts and cases as metadata."""

from __future__ import annotations

import dagster as dg
import pandera.polars as pa
import polars as pl

from ml_assets.core.markdown import markdown_table
from ml_assets.core.schemas import validate_frame

SCHEMA_CHECK = "schema"
MAX_CASES = 20


def schema_check_spec(asset: str, blocking: bool, description: str | None = None) -> dg.AssetCheckSpec:
    """The spec of the `schema` check an asset runs on what it writes."""
    return dg.AssetCheckSpec(
        name=SCHEMA_CHECK,
        asset=asset,
        blocking=blocking,
        description=description or f"{asset} matches its Pandera schema (ml_assets.core.schemas)",
    )


def schema_check_result(
    frame: pl.DataFrame, model: type[pa.DataFrameModel], asset: str | None = None
) -> dg.AssetCheckResult:
    """Run `model` over `frame` and report the outcome the way the Dagster UI shows checks."""
    passed, cases = validate_frame(frame, model)
    return _result(model, frame.height, passed, cases, asset)


class ChunkedSchemaCheck:
    """Validates each piece of a chunked output as it is written; `result()` reports them as one check.

    Rules across rows (uniqueness per player and day) hold per piece because pieces never share a day.
    """

    def __init__(self, model: type[pa.DataFrameModel], asset: str) -> None:
        self.model, self.asset = model, asset
        self.rows = 0
        self.cases: list[pl.DataFrame] = []

    def __call__(self, piece: pl.DataFrame) -> None:
        passed, cases = validate_frame(piece, self.model)
        self.add(piece.height, None if passed else cases)

    def add(self, rows: int, cases: pl.DataFrame | None) -> None:
        """Count a piece validated elsewhere (by an engine worker): rows, failure cases (None: passed)."""
        self.rows += rows
        if cases is not None:
            self.cases.append(cases.cast(pl.String))

    def result(self) -> dg.AssetCheckResult:
        """The check's outcome over every piece seen."""
        cases = pl.concat(self.cases, how="diagonal") if self.cases else pl.DataFrame()
        return _result(self.model, self.rows, not self.cases, cases, self.asset)


def _result(
    model: type[pa.DataFrameModel], rows: int, passed: bool, cases: pl.DataFrame, asset: str | None
) -> dg.AssetCheckResult:
    metadata: dict[str, dg.RawMetadataValue] = {"rows_checked": rows, "schema": model.__name__}
    if not passed:
        by_check = cases.group_by([c for c in ("column", "check") if c in cases.columns]).len()
        metadata["failure_count"] = cases.height
        metadata["failures_by_check"] = dg.MetadataValue.md(_markdown(by_check.sort("len", descending=True)))
        metadata["failure_cases"] = dg.MetadataValue.md(_markdown(cases.head(MAX_CASES).cast(pl.String)))
    else:
        metadata["failure_count"] = 0
    return dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=asset,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
    )


def _markdown(frame: pl.DataFrame) -> str:
    return markdown_table(frame.columns, frame.iter_rows())
