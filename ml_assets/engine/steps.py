"""The sharded steps: player_state, player_features and batch scoring of one player shard.

Each runs the same core functions as the local path on its players' rows (a player's state,
features and scores depend on that player's rows only) and writes its pieces as files of the
output table; the driver commits every shard's files in one Delta transaction. Jobs hold lazy
scans (pickled as query plans), never the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandera.polars as pa
import polars as pl

from ml_assets.core.days import ONE_DAY, day_chunks
from ml_assets.core.features.player import EventVocabulary
from ml_assets.core.features.snapshots import features_from_state
from ml_assets.core.features.state import CARRY_DAYS, STATE_DATE, state_pieces
from ml_assets.core.models.spec import ModelSpec
from ml_assets.core.models.training import TrainedModel, score_features, within_cutoffs
from ml_assets.engine.shards import ShardFiles, in_shard, write_shard


@dataclass(frozen=True)
class Output:
    """Where a step's files go: the table, its partition column, the schema its pieces are checked against."""

    table_uri: str
    column: str
    check: type[pa.DataFrameModel] | None = None


@dataclass(frozen=True)
class StateJob:
    """player_state of [first, last]: `events` the days' clean events, `stored` the state table."""

    out: Output
    shards: int
    events: pl.LazyFrame
    stored: pl.LazyFrame | None
    vocab: EventVocabulary
    first: date
    last: date
    chunk_days: int


def state_shard(job: StateJob, shard: int) -> ShardFiles:
    """The state rows of one shard's players (`core.features.state.state_pieces`), written."""
    stored = None
    if job.stored is not None:
        # the state as of first - 1 is all state_pieces reads of the table: hash only those players
        before = job.first - ONE_DAY
        recent = pl.col(STATE_DATE).is_between(before - timedelta(days=CARRY_DAYS - 1), before)
        stored = in_shard(job.stored.filter(recent), shard, job.shards)
    events = in_shard(job.events, shard, job.shards)
    pieces = state_pieces(events, stored, job.vocab, job.first, job.last, job.chunk_days)
    return write_shard(shard, pieces, job.out.table_uri, job.out.column, job.out.check)


@dataclass(frozen=True)
class FeaturesJob:
    """player_features of [first, last] from the state rows they read (`state`)."""

    out: Output
    shards: int
    state: pl.LazyFrame
    vocab: EventVocabulary
    first: date
    last: date
    windows: tuple[int, ...]
    chunk_rows: int


def features_shard(job: FeaturesJob, shard: int) -> ShardFiles:
    """The feature rows of one shard's players (`core.features.snapshots.features_from_state`), written."""
    state = in_shard(job.state, shard, job.shards)
    empty = pl.LazyFrame()  # the vocabulary is given: the counts are not read
    pieces = features_from_state(
        state, empty, job.first, job.last, job.windows, chunk_rows=job.chunk_rows, vocab=job.vocab
    )
    return write_shard(shard, pieces, job.out.table_uri, job.out.column, job.out.check)


@dataclass(frozen=True)
class ScoringJob:
    """NAME_predictions of [first, last]: `features` the feature rows (the model's columns)."""

    out: Output
    shards: int
    spec: ModelSpec
    model: TrainedModel
    features: pl.LazyFrame
    events: pl.LazyFrame | None
    first: date
    last: date
    chunk_days: int
    explain_since: date  # the first day whose rows may get reasons
    # the explained rows' cutoff per day (`explain_cutoffs` over every shard's recent scores);
    # None: no row gets reasons
    cutoffs: pl.DataFrame | None = None


def _days(features: pl.LazyFrame, start: date, end: date) -> pl.DataFrame:
    return features.filter(pl.col("snapshot_date").is_between(start, end)).collect()


_SCORES = {"snapshot_date": pl.Date, "player_id": pl.String, "probability": pl.Float64}
_CUTOFFS = {"snapshot_date": pl.Date, "cut_probability": pl.Float64, "cut_player": pl.String}


def recent_scores(job: ScoringJob, shard: int) -> pl.DataFrame:
    """(snapshot_date, player_id, probability) of one shard's scored rows from `explain_since` on:
    the driver ranks every shard's rows of a day together to pick which get reasons."""
    features = in_shard(job.features, shard, job.shards)
    start = max(job.explain_since, job.first)
    if start > job.last:
        return pl.DataFrame(schema=_SCORES)
    scored = score_features(job.spec, job.model, _days(features, start, job.last), job.events, reasons=0)
    return scored.select("snapshot_date", "player_id", "probability")


def scoring_shard(job: ScoringJob, shard: int) -> ShardFiles:
    """One shard's predictions (`core.models.training.score_features`), a few days a piece, written;
    reasons for the rows at or above their day's cutoff."""
    features = in_shard(job.features, shard, job.shards)
    cutoffs = job.cutoffs if job.cutoffs is not None else pl.DataFrame(schema=_CUTOFFS)

    def explain(picked: pl.DataFrame) -> np.ndarray:
        return within_cutoffs(picked, cutoffs)

    pieces = (
        score_features(
            job.spec, job.model, _days(features, start, end), job.events, job.spec.explain_top, explain
        )
        for start, end in day_chunks(job.first, job.last, job.chunk_days)
    )
    return write_shard(shard, pieces, job.out.table_uri, job.out.column, job.out.check)
