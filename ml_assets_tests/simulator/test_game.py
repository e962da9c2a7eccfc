"""The simulator: deterministic, prefix-stable, landing-format telemetry with learnable churn and dirt."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from ml_assets.app.cli import main
from ml_assets.core.events.landing import LANDING_SCHEMA, list_batches, read_window, scan_landing
from ml_assets.core.settings import HOME_ENV
from ml_assets.simulator.game import (
    SIMULATION_FILE,
    SimulationParams,
    batch_id,
    extend,
    load_params,
    params_from_json,
    params_json,
    simulate,
    simulate_days,
)

START = date(2025, 1, 1)
SMALL = SimulationParams(players=300, days=30, start=START, seed=3, dirty_rate=0.02)
# what landing adds: bookkeeping, and columns the simulator has no use for (it writes no source
# text for values; its rows count as received at the end of their delivery day)
LANDING_ONLY = ("batch_id", "source", "value_raw", "received_at")
CANONICAL = [c for c in LANDING_SCHEMA if c not in ("received_date", *LANDING_ONLY)]


@cache
def rows_of(params: SimulationParams) -> pl.DataFrame:
    """Every row delivered start..last_day, in delivery order."""
    return pl.concat(frame for _, frame in simulate_days(params, params.start, params.last_day))


def day(n: int) -> date:
    return START + timedelta(days=n)


def test_same_params_give_same_rows_and_another_seed_does_not():
    first = [f for _, f in simulate_days(SMALL, START, day(9))]
    again = [f for _, f in simulate_days(SMALL, START, day(9))]
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    other = pl.concat(f for _, f in simulate_days(SimulationParams(players=300, seed=4), START, day(9)))
    assert not pl.concat(first).select(CANONICAL).equals(other.select(CANONICAL))


def test_rows_have_the_landing_schema_and_land_with_it(tmp_path: Path):
    _, frame = next(simulate_days(SMALL, START, START))
    expected = {c: t for c, t in LANDING_SCHEMA.items() if c not in LANDING_ONLY}
    assert dict(frame.schema) == expected
    simulate(tmp_path, SMALL, until=day(1))
    landed = scan_landing(tmp_path).collect()
    assert dict(landed.drop("partition_date").schema) == LANDING_SCHEMA
    assert set(landed["source"]) == {"simulator"}
    assert set(landed["batch_id"]) == {batch_id(SMALL, day(0)), batch_id(SMALL, day(1))}


def test_clean_rows_are_well_formed():
    rows = rows_of(SMALL).filter(pl.col("event_time").is_not_null(), pl.col("player_id").is_not_null())
    assert (
        rows["event_time_raw"]
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_zone="UTC")
        .equals(rows["event_time"], check_names=False)
    )
    assert set(rows["platform"]) == {"ios", "android", "web"}
    countries = rows.group_by("player_id").agg(pl.col("country").first())["country"].value_counts(sort=True)
    assert countries.height >= 10 and countries["country"][0] == "US"
    assert countries["count"][0] > 2 * countries["count"][-1]  # skewed toward a few markets
    sessions = rows.filter(pl.col("event_type") == "session_end")["value"]
    assert (
        sessions.min() > 0 and rows.filter(pl.col("event_type") == "session_start")["value"].null_count() > 0
    )


def test_prefix_stable_extend_matches_one_run_and_rerun_lands_nothing(tmp_path: Path):
    split, whole = tmp_path / "split", tmp_path / "whole"
    first = simulate(split, SMALL, until=day(19))
    assert (first.days_landed, first.days_skipped, first.first_day, first.last_day) == (20, 0, START, day(19))
    more = extend(split, until=day(29))
    assert (more.days_landed, more.days_skipped) == (10, 20)
    one = simulate(whole, SMALL, until=day(29))
    assert one.rows == first.rows + more.rows > 0
    assert [p.name for p in list_batches(split)] == [p.name for p in list_batches(whole)]
    assert all(Path(a.uri).read_bytes() == (whole / a.name).read_bytes() for a in list_batches(split))

    before = sorted(p.name for p in split.iterdir())
    seen: list[date] = []
    again = simulate(split, SMALL, progress=seen.append)
    assert (again.days_landed, again.days_skipped, again.rows) == (0, 30, 0)
    assert seen == [day(n) for n in range(30)]
    assert sorted(p.name for p in split.iterdir()) == before
    assert load_params(split).days == 30 and (split / SIMULATION_FILE).exists()


def test_extend_refuses_without_a_simulation_or_before_the_start(tmp_path: Path):
    with pytest.raises(ValueError, match="no simulation saved"):
        extend(tmp_path, until=day(3))
    simulate(tmp_path, SMALL, until=day(1))
    with pytest.raises(ValueError, match="before the simulation start"):
        extend(tmp_path, until=START - timedelta(days=1))
    with pytest.raises(ValueError, match="different simulation"):
        simulate(tmp_path, SimulationParams(players=300, seed=99), until=day(1))


def test_window_matches_the_simulated_days(tmp_path: Path):
    simulate(tmp_path, SMALL, until=day(9))
    window = read_window(tmp_path)
    assert window is not None and (window.first_day, window.last_day) == (START, day(9))


def test_each_dirty_kind_is_present_at_a_dirty_rate():
    rows = rows_of(SMALL)
    assert rows.height > 5_000
    dup_ids = rows.filter(pl.col("event_id").is_duplicated())
    assert dup_ids.height > 0
    # A duplicate is the same event, delivered again the same day or the next.
    copies = dup_ids.group_by("event_id").agg(
        pl.struct(CANONICAL).n_unique().alias("versions"),
        (pl.col("received_date").max() - pl.col("received_date").min()).dt.total_days().alias("gap"),
    )
    assert copies["versions"].max() == 1 and set(copies["gap"]) == {0, 1}

    lateness = rows.select((pl.col("received_date") - pl.col("event_time").dt.date()).dt.total_days())
    late = lateness.to_series().drop_nulls().filter(lateness.to_series().drop_nulls() != 0)
    assert late.min() >= 1 and late.max() <= 6
    assert (late <= 3).any() and (late > 3).any()  # both inside and beyond a 3-day watermark

    assert rows["player_id"].null_count() > 0
    assert rows.filter(pl.col("event_type") == "purchase", pl.col("value") < 0).height > 0
    assert rows.filter(pl.col("event_type") == "").height > 0 and rows["event_type"].null_count() > 0
    bad_time = rows.filter(pl.col("event_time").is_null())
    assert bad_time.height > 0
    assert (
        bad_time["event_time_raw"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", strict=False).null_count()
        == bad_time.height
    )
    dirty_share = (bad_time.height + rows["player_id"].null_count()) / rows.height
    assert 0.002 < dirty_share < 0.02  # two of six kinds at 2%


def test_no_dirty_rows_at_rate_zero():
    rows = rows_of(SimulationParams(players=300, days=30, seed=3, dirty_rate=0.0))
    assert rows["event_id"].is_unique().all()
    assert (
        rows.null_count().select("player_id", "event_time", "event_type", "event_time_raw").row(0) == (0,) * 4
    )
    assert (rows["event_time"].dt.date() == rows["received_date"]).all()
    assert rows.filter(pl.col("event_type") == "purchase")["value"].min() > 0
    assert "" not in set(rows["event_type"])


def test_new_players_join_and_play_every_day():
    params = SimulationParams(players=300, days=20, seed=3, dirty_rate=0.0, new_players_per_day=12)
    first_seen = (
        rows_of(params)
        .group_by("player_id")
        .agg(pl.col("received_date").min().alias("first"))
        .with_columns(index=pl.col("player_id").str.slice(1).cast(pl.Int64))
    )
    for n in range(1, 20):
        joiners = first_seen.filter(pl.col("index").is_between(300 + (n - 1) * 12, 300 + n * 12 - 1))
        assert joiners.height == 12 and set(joiners["first"]) == {day(n)}
    assert first_seen["index"].max() == 300 + 19 * 12 - 1


def test_payers_are_few_and_spend_is_heavy_tailed():
    rows = rows_of(SimulationParams(players=3_000, days=30, seed=5, dirty_rate=0.0))
    players = rows["player_id"].n_unique()
    buys = rows.filter(pl.col("event_type") == "purchase")
    share = buys["player_id"].n_unique() / players
    assert 0.01 < share < 0.08
    amounts = buys["value"]
    assert amounts.min() >= 0.99
    assert amounts.mean() > 1.3 * amounts.median() and amounts.max() > 10 * amounts.median()


def test_new_version_rolls_out_partway():
    rows = rows_of(SimulationParams(players=500, days=40, seed=3, dirty_rate=0.0))
    by_day = rows.group_by("received_date").agg((pl.col("app_version") == "1.5.0").mean().alias("new"))
    new = dict(zip(by_day["received_date"], by_day["new"], strict=True))
    assert all(new[day(n)] == 0 for n in range(25))
    assert 0 < new[day(25)] < new[day(39)] and new[day(39)] > 0.8


def test_churn_follows_behaviour():
    rows = rows_of(SimulationParams(players=3_000, days=60, seed=11, dirty_rate=0.0))
    early = rows.filter(pl.col("received_date") < day(30))
    gone = set(early["player_id"]) - set(rows.filter(pl.col("received_date") >= day(46))["player_id"])
    stats = (
        early.group_by("player_id")
        .agg(
            session=pl.col("value").filter(pl.col("event_type") == "session_end").mean(),
            fails=(pl.col("event_type") == "level_fail").sum(),
            attempts=(pl.col("event_type") == "level_start").sum(),
            payer=(pl.col("event_type") == "purchase").any(),
            days=pl.col("received_date").n_unique(),
        )
        .with_columns(quit=pl.col("player_id").is_in(list(gone)))
        .group_by("quit")
        .agg(
            pl.col("session", "payer", "days").mean(),
            (pl.col("fails").sum() / pl.col("attempts").sum()).alias("fails"),
            pl.len(),
        )
    )
    quit, stay = (stats.filter(pl.col("quit") == flag).row(0, named=True) for flag in (True, False))
    assert quit["len"] > 200 and stay["len"] > 200
    assert quit["session"] < 0.9 * stay["session"]
    assert quit["fails"] > stay["fails"]
    assert quit["payer"] < stay["payer"]
    assert quit["days"] < stay["days"]


# A game patch on day 12 of SMALL: the same simulation otherwise.
PATCHED = dataclasses.replace(SMALL, shift_day=day(12))


def test_rows_before_the_shift_match_the_unshifted_run():
    plain = dict(simulate_days(SMALL, START, day(13)))
    patched = dict(simulate_days(PATCHED, START, day(13)))
    assert all(patched[day(n)].equals(plain[day(n)]) for n in range(12))
    assert not patched[day(12)].equals(plain[day(12)])
    # Starting mid-way replays the same carried state.
    assert next(simulate_days(PATCHED, day(13), day(13)))[1].equals(patched[day(13)])


def test_patch_shortens_sessions_cuts_purchases_and_raises_churn():
    base = SimulationParams(players=3_000, days=40, start=START, seed=3, dirty_rate=0.0)
    shifted = dataclasses.replace(base, shift_day=day(20))

    def after_shift(params: SimulationParams) -> dict[str, float]:
        rows = rows_of(params)
        post = rows.filter(pl.col("received_date") >= day(20))
        sessions = post.filter(pl.col("event_type") == "session_end")["value"]
        buys = post.filter(pl.col("event_type") == "purchase")["value"]
        levels = post["event_type"].value_counts().to_dict(as_series=False)
        counts = dict(zip(levels["event_type"], levels["count"], strict=True))
        # Players active just before the patch (the same players in both runs), unseen in days 30..39.
        cohort = set(rows.filter(pl.col("received_date").is_between(day(15), day(19)))["player_id"])
        later = set(rows.filter(pl.col("received_date") >= day(30))["player_id"])
        return {
            "session": sessions.mean(),
            "buys_per_session": buys.len() / sessions.len(),
            "amount": buys.median(),
            "fail_rate": counts["level_fail"] / counts["level_start"],
            "gone": len(cohort - later) / len(cohort),
        }

    b, s = after_shift(base), after_shift(shifted)
    assert 0.55 < s["session"] / b["session"] < 0.75  # ~35% shorter
    assert 0.4 < s["buys_per_session"] / b["buys_per_session"] < 0.8  # ~40% fewer purchases
    assert 0.45 < s["amount"] / b["amount"] < 0.8  # ~40% smaller
    assert s["fail_rate"] > b["fail_rate"] + 0.05
    assert s["gone"] > 1.1 * b["gone"]


def test_unshifted_params_keep_their_batch_ids():
    # Digests from before shifts existed: lakes landed then stay valid.
    assert batch_id(SMALL, START) == "ac377ad27f19e4e4af0fabad87f4692ce3bba127e6cee109f2be59207eee3290"
    assert (
        batch_id(SimulationParams(), date(2025, 2, 1))
        == "680d82e08ed27ca82a3d0f0bff0b3cd783dfc2cd7664b0435fd8c3a9ea0360e1"
    )
    assert "shift_day" not in params_json(SMALL) and "shift" not in params_json(SMALL)
    # A shifted simulation is another simulation: its own id for every day, before the shift too.
    assert all(batch_id(PATCHED, day(n)) != batch_id(SMALL, day(n)) for n in (0, 11, 12, 20))
    later = dataclasses.replace(SMALL, shift_day=day(13))
    assert batch_id(later, START) != batch_id(PATCHED, START)
    for params in (SMALL, PATCHED):
        assert params_from_json(json.loads(json.dumps(params_json(params)))) == params


def test_extend_feeds_a_lake_day_by_day_across_the_shift(tmp_path: Path):
    daily, whole = tmp_path / "daily", tmp_path / "whole"
    simulate(daily, PATCHED, until=day(9))
    for n in range(10, 16):
        report = extend(daily, until=day(n))
        assert (report.days_landed, report.days_skipped) == (1, n)
    assert load_params(daily) == PATCHED  # the shift is saved and reused
    simulate(whole, PATCHED, until=day(15))
    assert [p.name for p in list_batches(daily)] == [p.name for p in list_batches(whole)]
    assert all(Path(a.uri).read_bytes() == (whole / a.name).read_bytes() for a in list_batches(daily))
    with pytest.raises(ValueError, match="different simulation"):
        simulate(daily, SMALL, until=day(15))


def test_unknown_shift_or_a_shift_before_the_start_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown shift 'nerf'; known shifts: patch"):
        next(simulate_days(dataclasses.replace(PATCHED, shift="nerf"), START, START))
    with pytest.raises(ValueError, match="unknown shift"):
        simulate(tmp_path, dataclasses.replace(SMALL, shift="nerf"), until=START)
    with pytest.raises(ValueError, match="before the simulation start"):
        simulate(tmp_path, dataclasses.replace(SMALL, shift_day=START - timedelta(days=1)), until=START)
    assert not (tmp_path / SIMULATION_FILE).exists()


def test_cli_lands_a_shifted_simulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv(HOME_ENV, str(tmp_path))  # restored after; the CLI sets it for its children
    sim = ["--home", str(tmp_path), "simulate", "--players", "50", "--days", "4", "--seed", "3"]
    assert main([*sim, "--shift-day", "2025-01-03"]) == 0
    assert load_params(tmp_path / "landing").shift_day == day(2)
    assert main(["--home", str(tmp_path), "simulate", "--until", "2025-01-06"]) == 0  # extends, shifted
    assert load_params(tmp_path / "landing") == SimulationParams(
        players=50, days=6, seed=3, dirty_rate=0.01, shift_day=day(2)
    )
    capsys.readouterr()
    assert main([*sim, "--shift-day", "2025-01-03", "--shift", "nerf"]) == 2
    assert "known shifts: patch" in capsys.readouterr().err
    assert main([*sim, "--shift", "patch"]) == 2
    assert "--shift needs --shift-day" in capsys.readouterr().err
