from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ml_assets.core.features.player import KEY, EventVocabulary, event_column
from ml_assets.core.features.snapshots import player_features
from ml_assets.core.models.labels import (
    LABEL,
    SPLIT,
    build_training_set,
    purchase_count_column,
    sample_snapshot_days,
    scoring_rows,
)
from ml_assets.core.models.spec import LabelSpec, ModelSpec

D0 = date(2025, 1, 1)


def d(n: int) -> date:
    return D0 + timedelta(days=n)


def _events(rows: list[tuple]) -> pl.LazyFrame:
    """Clean events from (player, day) or (player, day, event_type) tuples."""
    full = [(r[0], r[1], r[2] if len(r) > 2 else "play") for r in rows]
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(full))],
            "player_id": [p for p, _, _ in full],
            "event_time": [datetime(d(n).year, d(n).month, d(n).day, tzinfo=UTC) for _, n, _ in full],
            "event_type": [t for _, _, t in full],
            "value": [None] * len(full),
            "platform": [None] * len(full),
            "country": [None] * len(full),
            "app_version": [None] * len(full),
            "event_date": [d(n) for _, n, _ in full],
        },
        schema={
            "event_id": pl.String,
            "player_id": pl.String,
            "event_time": pl.Datetime("us", "UTC"),
            "event_type": pl.String,
            "value": pl.Float64,
            "platform": pl.String,
            "country": pl.String,
            "app_version": pl.String,
            "event_date": pl.Date,
        },
    ).lazy()


def _features(rows: list[tuple[str, int]]) -> pl.LazyFrame:
    """A hand-made feature table: one numbered feature `x` per (player, snapshot day) row."""
    return pl.LazyFrame(
        {
            "player_id": [p for p, _ in rows],
            "snapshot_date": [d(n) for _, n in rows],
            "x": list(range(len(rows))),
        }
    )


def _spec(kind: str, every: int = 1, max_rows: int = 10_000, seed: int = 1, **label: int | str) -> ModelSpec:
    return ModelSpec(
        name=kind,
        label=LabelSpec(kind=kind, **label),
        snapshot_every_days=every,
        max_rows=max_rows,
        seed=seed,
    )


def _labels(frame: pl.DataFrame) -> dict[tuple[str, date], bool]:
    return {(p, s): y for p, s, y in frame.select("player_id", "snapshot_date", LABEL).iter_rows()}


def test_rolling_labels_rows_split_and_maturity():
    events = _events(
        [("a", 1), ("a", 2), ("a", 5), ("b", 1), ("b", 9), ("c", 2), ("e", 1), ("e", 4)]
        + [("f", 1), ("f", 5), ("z", 10)]
    )
    features = _features([("a", 1), ("a", 5), ("b", 1), ("c", 2), ("e", 1), ("f", 1), ("a", 8)])
    out = build_training_set(_spec("rolling", horizon_days=3), features, events)
    # last event day 10, horizon 3: the d8 snapshot is not matured
    assert _labels(out) == {
        ("a", d(1)): False,  # back on d2
        ("b", d(1)): True,  # next seen d9, after d1+3
        ("e", d(1)): False,  # back exactly on d1+3: inside the horizon
        ("f", d(1)): True,  # back on d1+4: one day too late
        ("c", d(2)): True,  # never back
        ("a", d(5)): True,
    }
    assert out.columns == ["player_id", "snapshot_date", "x", LABEL, SPLIT]
    assert out[SPLIT].to_list() == out["snapshot_date"].to_list()
    assert out.select(SPLIT, "player_id").rows() == sorted(out.select(SPLIT, "player_id").rows())
    assert out[LABEL].dtype == pl.Boolean


def test_rolling_samples_every_nth_matured_day_from_the_newest():
    events = _events([("a", 1), ("a", 2), ("a", 5), ("z", 10)])
    features = _features([("a", 1), ("a", 2), ("a", 5), ("a", 8)])
    out = build_training_set(_spec("rolling", every=2, horizon_days=3), features, events)
    assert out["snapshot_date"].to_list() == [d(1), d(5)]


def test_sample_keeps_latest_day():
    assert sample_snapshot_days([d(i) for i in range(10)], 3) == [d(0), d(3), d(6), d(9)]


def test_first_purchase_excludes_payers_and_labels_a_later_first_purchase():
    events = _events(
        [("p", 0, "iap"), ("p", 2), ("q", 1), ("q", 4, "iap"), ("r", 1), ("r", 6, "iap")]
        + [("s", 1), ("s", 3, "purchase"), ("z", 10)]
    )
    features = _features([("p", 2), ("q", 2), ("q", 4), ("q", 6), ("r", 2), ("s", 2)])
    out = build_training_set(_spec("first_purchase", horizon_days=3, purchase_event="iap"), features, events)
    assert _labels(out) == {
        ("q", d(2)): True,  # first buys d4, within d3..d5
        ("r", d(2)): False,  # first buys d6, after the horizon
        ("s", d(2)): False,  # a "purchase" event is not the spec's purchase_event
    }  # p bought before d2; q on d4 and d6 had bought by then (the day itself counts)
    assert out[SPLIT].to_list() == out["snapshot_date"].to_list()


def test_first_purchase_maturity():
    events = _events([("q", 1), ("q", 10, "purchase")])  # last day d10: d8 + 3 is not matured
    out = build_training_set(
        _spec("first_purchase", horizon_days=3), _features([("q", 6), ("q", 7), ("q", 8)]), events
    )
    assert _labels(out) == {("q", d(6)): False, ("q", d(7)): True}


def test_new_player_rows_labels_split_and_left_censoring():
    events = _events(
        [("a", 0), ("a", 4), ("b", 1), ("b", 5), ("c", 1), ("c", 2), ("c", 8)]
        + [("e", 2), ("e", 8), ("g", 4), ("f", 5), ("z", 0), ("z", 10)]
    )
    features = player_features(events, d(0), d(10))
    spec = _spec("new_player", observation_days=3, churn_days=4)
    out = build_training_set(spec, features, events)
    # a and z are left-censored (first seen on the first day of the data); f's window ends d11 > d10
    assert _labels(out) == {
        ("b", d(3)): False,  # active d5, inside the churn window d4..d7
        ("c", d(3)): True,  # back only on d8, after the window
        ("e", d(4)): False,  # active d8 = last day of the window d5..d8
        ("g", d(6)): True,  # window d7..d10 ends on the last day: matured
    }
    assert dict(zip(out["player_id"], out[SPLIT], strict=True)) == {
        "b": d(1),
        "c": d(1),
        "e": d(2),
        "g": d(4),
    }
    assert out["tenure_days"].to_list() == [2, 2, 2, 2]
    as_of = features.collect().join(out.select(KEY), on=KEY)
    assert out.drop(LABEL, SPLIT).equals(as_of.sort("player_id").select(out.drop(LABEL, SPLIT).columns))


def test_empty_events_raise():
    with pytest.raises(ValueError, match="no clean events"):
        build_training_set(_spec("rolling"), _features([("a", 1)]), _events([]))


def _assert_features_identical_labels_differ(quiet: pl.DataFrame, noisy: pl.DataFrame, before: date):
    """Rows whose features are as of a day before the planted events: same rows, same values."""
    q, n = (f.filter(pl.col("snapshot_date") < before) for f in (quiet, noisy))
    assert q.height > 0
    assert q.drop(LABEL).equals(n.drop(LABEL))
    assert not q[LABEL].equals(n[LABEL])


PAID = event_column("In-App Purchase") + "_count_total"
VOCAB = EventVocabulary(types=("play", "purchase"), valued=frozenset())


@pytest.mark.parametrize(
    ("spec", "base", "leak"),
    [
        (
            _spec("rolling", horizon_days=14),
            [("a", 0), ("a", 2), ("b", 1)],
            [("a", 12), ("a", 13), ("b", 14)],
        ),
        (
            _spec("first_purchase", horizon_days=14),
            [("a", 0), ("a", 2), ("b", 1), ("b", 3)],
            [("a", 12, "purchase"), ("b", 14, "purchase"), ("b", 13)],
        ),
        (
            _spec("new_player", observation_days=3, churn_days=7),
            [("a", 2), ("a", 3), ("b", 3)],
            [("a", 8), ("b", 12), ("b", 13)],
        ),
    ],
    ids=["rolling", "first_purchase", "new_player"],
)
def test_planted_future_events_change_labels_not_features(spec: ModelSpec, base: list, leak: list):
    """Events after each row's feature day flip labels but leave every feature value unchanged."""
    frames = []
    for rows in (base, base + leak):
        events = _events(rows + [("z", 0), ("z", 30)])
        frames.append(build_training_set(spec, player_features(events, d(0), d(20), vocab=VOCAB), events))
    _assert_features_identical_labels_differ(*frames, before=d(min(r[1] for r in leak)))


def test_row_cap_keeps_every_split_date_and_is_seeded():
    events = _events([(f"p{i}", day) for i in range(200) for day in (0, 1, 2, 40)])
    features = player_features(events, d(0), d(2))
    spec = _spec("rolling", horizon_days=14, max_rows=150, seed=3)
    capped = build_training_set(spec, features, events)
    assert capped.height <= 150
    assert capped.group_by(SPLIT).len().sort(SPLIT)["len"].to_list() == [50, 50, 50]
    assert capped.equals(build_training_set(spec, features, events))
    other = build_training_set(replace(spec, seed=4), features, events)
    assert set(other["player_id"]) != set(capped["player_id"]) and other.height == capped.height


def test_scoring_rows_per_kind():
    features = pl.DataFrame(
        {
            "player_id": ["a", "b", "c", "d"],
            "snapshot_date": [d(9)] * 4,
            "tenure_days": [2, 6, 6, 0],
            PAID: [0, 3, None, 1],
        }
    )

    def players(spec: ModelSpec, frame: pl.DataFrame = features) -> list[str]:
        return scoring_rows(spec, frame)["player_id"].to_list()

    assert players(_spec("rolling")) == ["a", "b", "c", "d"]
    fp = _spec("first_purchase", purchase_event="In-App Purchase")
    # a type that is not lower_snake_case gets a hash suffix (see event_column)
    assert PAID.startswith("ev_in_app_purchase_") and PAID.endswith("_count_total")
    assert purchase_count_column("In-App Purchase") == PAID
    assert players(fp) == ["a", "c"]
    assert players(fp, features.drop(PAID)) == ["a", "b", "c", "d"]
    assert players(_spec("new_player", observation_days=7)) == ["b", "c"]
    assert players(_spec("new_player", observation_days=1)) == ["d"]


def _outcome_labels_as_of(
    spec: ModelSpec, rows: pl.DataFrame, events: pl.LazyFrame, last_day: date
) -> pl.DataFrame:
    """`outcome_labels` by the as-of join alone (the straightforward reference of the bit masks)."""
    from ml_assets.core.models.labels import _hits_as_of, look_ahead_days

    ahead = look_ahead_days(spec)
    wanted = events.select("player_id", "event_date", "event_type")
    if spec.label.kind == "first_purchase":
        wanted = wanted.filter(pl.col("event_type") == spec.label.purchase_event)
    hit = pl.col("_hit").fill_null(False)
    outcome = hit if spec.label.kind == "first_purchase" else ~hit
    matured = pl.col("snapshot_date") + pl.duration(days=ahead) <= pl.lit(last_day)
    return (
        _hits_as_of(rows, wanted, ahead)
        .with_columns(pl.when(matured).then(outcome).otherwise(None).alias(LABEL))
        .drop("_hit")
    )


@pytest.mark.parametrize(
    ("kind", "ahead", "days"),
    [
        ("rolling", 3, 10),
        ("first_purchase", 7, 20),
        ("rolling", 14, 49),
        ("rolling", 14, 50),
        ("rolling", 0, 5),
    ],
)
def test_outcome_labels_bit_masks_are_the_as_of_join(kind: str, ahead: int, days: int):
    """Players with no event, events before, on and after the window's edges, a row twice (two
    model versions), unmatured days, rows out of order; 50 days + 14 ahead is past the 63 days a
    mask holds (the as-of path): the labels are the as-of join's, row for row."""
    import numpy as np

    from ml_assets.core.models.labels import outcome_labels

    rng = np.random.default_rng(days + ahead)
    label = LabelSpec(kind=kind, horizon_days=ahead, purchase_event="purchase")
    spec = ModelSpec(name="m", label=label)
    n = 3_000
    rows = pl.DataFrame(
        {
            "player_id": [f"p{i}" for i in rng.integers(0, 400, n)],
            "snapshot_date": [d(int(k)) for k in rng.integers(0, days, n)],
            "model_version": rng.choice(["v1", "v2"], n).tolist(),
            "probability": rng.random(n),
        }
    )
    rows = pl.concat([rows, rows.head(50).with_columns(model_version=pl.lit("v3"))])
    events = _events(
        [
            (f"p{int(p)}", int(k), str(t))
            for p, k, t in zip(
                rng.integers(0, 450, 4_000),
                rng.integers(-5, days + ahead + 5, 4_000),
                rng.choice(["play", "purchase"], 4_000, p=[0.8, 0.2]),
                strict=True,
            )
        ]
    )
    last_day = d(days - 2 + ahead // 2)
    got = outcome_labels(spec, rows, events, last_day)
    want = _outcome_labels_as_of(spec, rows, events, last_day)
    assert got.equals(want) and got.schema == want.schema
    assert got[LABEL].null_count() > 0 and (ahead == 0 or got[LABEL].sum() > 0)
