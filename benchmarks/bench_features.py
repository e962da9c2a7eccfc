"""Benchmark of the feature step: ml_assets' `player_features` against hand-written Polars, DuckDB and pandas.

For each size, clean events come from the simulator through ml_assets' own cleaning (cached as Parquet
under benchmarks/.cache). Each variant then runs in its own Python process, which loads the events,
computes the features of every snapshot day of the data (first..last event day) and reports wall time
and its own peak RSS. On the 1M set the four variants' outputs are first compared value by value.

    .venv/bin/python benchmarks/bench_features.py --sizes 1m,10m
    .venv/bin/python benchmarks/bench_features.py --sizes 1m --skip-pandas
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS_DIR,
    ChildFailed,
    Size,
    clean_events_path,
    event_window,
    fmt_gib,
    fmt_s,
    log,
    machine,
    markdown_table,
    parse_sizes,
    peak_rss_bytes_self,
    run_child,
    text_table,
    write_results,
)

WINDOWS = (1, 7, 28)
ATTRS = ("platform", "country", "app_version")
KEY = ["player_id", "snapshot_date"]
VARIANTS = ("ours", "polars_hand", "duckdb", "pandas")
LABELS = {
    "ours": "ml_assets player_features",
    "polars_hand": "hand-written Polars (dense grid + rolling)",
    "duckdb": "DuckDB SQL (dense grid + window functions)",
    "pandas": "pandas (vectorised, dense grid)",
}
INPUT_COLUMNS = ["player_id", "event_time", "event_id", "event_type", "value", "event_date", *ATTRS]
PANDAS_BUDGET_S = 600.0  # above this projected time the pandas run uses a subset of players
PANDAS_MEMORY_SHARE = 0.6  # ... and above this share of RAM as projected peak (10M pandas needs ~40 GiB)
SUBSET_PLAYERS = 0.2  # share of players the pandas subset keeps (whole players, by id hash)
TARGET_VS_POLARS = 1.3  # ours may be at most this many times slower than the hand-written query
TARGET_VS_PANDAS = 5.0  # ours must be at least this many times faster than pandas


def stem(event_type: str) -> str:
    """Feature column prefix of an event type (same naming rule as the product's columns)."""
    return "ev_" + re.sub(r"[^0-9a-z]+", "_", event_type.lower()).strip("_")


# ---------------------------------------------------------------------------------------------------
# (a) The same features as one Polars lazy query, written the direct way: a dense day x player grid
# from each player's first active day, rolling sums per window, forward fills for recency and maxima.


def event_kinds(events: pl.LazyFrame) -> tuple[list[str], set[str]]:
    """Event types present (sorted) and those that carry a value."""
    kinds = events.group_by("event_type").agg(pl.col("value").is_not_null().any().alias("valued")).collect()
    return sorted(kinds["event_type"].to_list()), set(kinds.filter("valued")["event_type"].to_list())


def polars_features(
    events: pl.LazyFrame, first: date, last: date, windows: Sequence[int] = WINDOWS
) -> pl.LazyFrame:
    """Feature snapshots for [first, last]: one lazy query over a dense (player, day) grid."""
    events = events.filter(pl.col("event_date") <= last)
    types, valued = event_kinds(events)
    windows = sorted(windows)
    longest, short = windows[-1], windows[min(1, len(windows) - 1)]

    aggs: list[pl.Expr] = [pl.len().alias("n")]
    for t in types:
        hit = pl.col("event_type") == t
        aggs.append(hit.sum().alias(f"{t}|n"))
        if t in valued:
            aggs.append(pl.col("value").filter(hit).sum().alias(f"{t}|sum"))
            aggs.append(pl.col("value").filter(hit).max().alias(f"{t}|max"))
    aggs += [pl.col(a).drop_nulls().last().alias(a) for a in ATTRS]
    daily = events.group_by("player_id", "event_date").agg(aggs)

    # every day from a player's first activity until `longest` days after their last (they leave the
    # population after that), so a window is simply the sum of its last w rows
    spans = daily.group_by("player_id").agg(
        pl.col("event_date").min().alias("start"),
        pl.min_horizontal(pl.col("event_date").max() + pl.duration(days=longest - 1), pl.lit(last)).alias(
            "end"
        ),
    )
    grid = spans.select("player_id", pl.date_ranges("start", "end").alias("event_date")).explode("event_date")
    dense = grid.join(daily, on=["player_id", "event_date"], how="left").sort("player_id", "event_date")

    per = "player_id"
    day = pl.col("event_date")
    summed = ["n", *[f"{t}|n" for t in types], *[f"{t}|sum" for t in types if t in valued]]
    rolled: list[pl.Expr] = [pl.col(c).fill_null(0) for c in summed]
    rolled.append(pl.when(pl.col("n").is_not_null()).then(day).forward_fill().over(per).alias("last_active"))
    rolled.append(day.min().over(per).alias("first_active"))
    rolled.append(pl.col("n").is_not_null().cast(pl.Int32).alias("active"))
    for t in types:
        seen = pl.when(pl.col(f"{t}|n") > 0).then(day)
        rolled.append(seen.forward_fill().over(per).alias(f"{t}|last"))
        if t in valued:
            rolled.append(pl.col(f"{t}|max").forward_fill().cum_max().over(per).alias(f"{t}|max"))
    rolled += [pl.col(a).forward_fill().over(per) for a in ATTRS]
    dense = dense.with_columns(rolled)

    def win(c: str, w: int) -> pl.Expr:
        return pl.col(c).rolling_sum(w, min_samples=1).over(per)

    def days_between(a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return (a - b).dt.total_days().cast(pl.Int32)

    out: list[pl.Expr] = [
        days_between(day, pl.col("first_active")).alias("tenure_days"),
        days_between(day, pl.col("last_active")).alias("recency_days"),
        pl.col("n").cum_sum().over(per).cast(pl.Int64).alias("events_total"),
    ]
    for w in windows:
        out.append(win("n", w).cast(pl.Int32).alias(f"events_{w}d"))
        out.append(win("active", w).cast(pl.Int32).alias(f"active_days_{w}d"))
    for t in types:
        s = stem(t)
        out += [win(f"{t}|n", w).cast(pl.Int32).alias(f"{s}_count_{w}d") for w in windows]
        out.append(pl.col(f"{t}|n").cum_sum().over(per).cast(pl.Int32).alias(f"{s}_count_total"))
        out.append(days_between(day, pl.col(f"{t}|last")).alias(f"{s}_recency_days"))
        if t in valued:
            out += [win(f"{t}|sum", w).cast(pl.Float32).alias(f"{s}_value_sum_{w}d") for w in windows]
            n_long = win(f"{t}|n", longest)
            out.append(
                pl.when(n_long > 0)
                .then(win(f"{t}|sum", longest) / n_long)
                .cast(pl.Float32)
                .alias(f"{s}_value_mean_{longest}d")
            )
            out.append(pl.col(f"{t}|max").cast(pl.Float32).alias(f"{s}_value_max"))
            out.append(pl.col(f"{t}|sum").cum_sum().over(per).cast(pl.Float32).alias(f"{s}_value_total"))
    feats = dense.select(per, day.alias("snapshot_date"), *out, *ATTRS).filter(
        pl.col("snapshot_date").is_between(first, last), pl.col("recency_days") < longest
    )

    def ratio(num: str, den: str) -> pl.Expr:
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).cast(pl.Float32)

    game: list[pl.Expr] = []
    present = set(types)
    if "session_end" in valued:
        game.append(
            ratio(f"ev_session_end_value_sum_{short}d", f"ev_session_end_count_{short}d").alias(
                f"game_session_length_mean_{short}d"
            )
        )
    if {"level_fail", "level_start"} <= present:
        game.append(
            ratio(f"ev_level_fail_count_{longest}d", f"ev_level_start_count_{longest}d").alias(
                f"game_level_fail_rate_{longest}d"
            )
        )
    if "level_complete" in valued:
        game.append(pl.col("ev_level_complete_value_max").alias("game_level_max"))
    if "purchase" in present:
        game.append((pl.col("ev_purchase_count_total") > 0).alias("game_is_payer"))
    if {"ad_impression", "session_start"} <= present:
        game.append(
            ratio(f"ev_ad_impression_count_{short}d", f"ev_session_start_count_{short}d").alias(
                f"game_ads_per_session_{short}d"
            )
        )
    return feats.with_columns(game).sort(KEY)


# ---------------------------------------------------------------------------------------------------
# (c) The same features in DuckDB SQL, the peer a team would pick: a dense (player, day) grid and
# window functions (`ROWS BETWEEN w - 1 PRECEDING`, running sums, `last_value ... IGNORE NULLS`).


def duckdb_features(
    events: pl.DataFrame, first: date, last: date, windows: Sequence[int] = WINDOWS
) -> pl.DataFrame:
    """Feature snapshots for [first, last] as one DuckDB query over `events` (Arrow, no copy)."""
    import duckdb

    types, valued = event_kinds(events.lazy().filter(pl.col("event_date") <= last))
    windows = sorted(windows)
    longest, short = windows[-1], windows[min(1, len(windows) - 1)]

    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def lit(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    daily = ["count(*) AS n"]
    for i, t in enumerate(types):
        hit = f"event_type = {lit(t)}"
        daily.append(f"count(*) FILTER (WHERE {hit}) AS t{i}_n")
        if t in valued:
            daily.append(f"sum(value) FILTER (WHERE {hit}) AS t{i}_sum")
            daily.append(
                f"max(CASE WHEN isnan(value) THEN NULL ELSE value END) FILTER (WHERE {hit}) AS t{i}_max"
            )
    # the day's latest non-null attribute, in input order (as drop_nulls().last() in Polars)
    daily += [f"arg_max({a}, rn) FILTER (WHERE {a} IS NOT NULL) AS {a}" for a in ATTRS]
    player = "PARTITION BY player_id ORDER BY event_date"
    upto = f"OVER ({player} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"

    def win(col: str, w: int) -> str:
        return f"sum({col}) OVER ({player} ROWS BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"

    rolled = ["coalesce(n, 0) AS n", "(n IS NOT NULL)::INTEGER AS active"]
    rolled += [f"last_value(CASE WHEN n IS NOT NULL THEN event_date END IGNORE NULLS) {upto} AS last_active"]
    rolled += ["min(event_date) OVER (PARTITION BY player_id) AS first_active"]
    for i, t in enumerate(types):
        rolled.append(f"coalesce(t{i}_n, 0) AS t{i}_n")
        rolled.append(
            f"last_value(CASE WHEN t{i}_n > 0 THEN event_date END IGNORE NULLS) {upto} AS t{i}_last"
        )
        if t in valued:
            rolled.append(f"coalesce(t{i}_sum, 0) AS t{i}_sum")
            rolled.append(f"max(t{i}_max) {upto} AS t{i}_max")
    rolled += [f"last_value({a} IGNORE NULLS) {upto} AS {a}" for a in ATTRS]

    out = [
        "player_id",
        "event_date AS snapshot_date",
        "(event_date - first_active)::INTEGER AS tenure_days",
        "(event_date - last_active)::INTEGER AS recency_days",
        f"sum(n) {upto}::BIGINT AS events_total",
    ]
    for w in windows:
        out.append(f"{win('n', w)}::INTEGER AS events_{w}d")
        out.append(f"{win('active', w)}::INTEGER AS active_days_{w}d")
    for i, t in enumerate(types):
        s = stem(t)
        out += [f"{win(f't{i}_n', w)}::INTEGER AS {q(f'{s}_count_{w}d')}" for w in windows]
        out.append(f"sum(t{i}_n) {upto}::INTEGER AS {q(f'{s}_count_total')}")
        out.append(f"(event_date - t{i}_last)::INTEGER AS {q(f'{s}_recency_days')}")
        if t in valued:
            out += [f"{win(f't{i}_sum', w)}::FLOAT AS {q(f'{s}_value_sum_{w}d')}" for w in windows]
            n_long, sum_long = win(f"t{i}_n", longest), win(f"t{i}_sum", longest)
            mean = f"CASE WHEN {n_long} > 0 THEN {sum_long} / {n_long} END"
            out.append(f"({mean})::FLOAT AS {q(f'{s}_value_mean_{longest}d')}")
            out.append(f"t{i}_max::FLOAT AS {q(f'{s}_value_max')}")
            out.append(f"sum(t{i}_sum) {upto}::FLOAT AS {q(f'{s}_value_total')}")
    out += list(ATTRS)

    def ratio(num: str, den: str) -> str:
        return f"CASE WHEN {q(den)} > 0 THEN ({q(num)} / {q(den)})::FLOAT END"

    game = []
    present = set(types)
    if "session_end" in valued:
        game.append(
            f"{ratio(f'ev_session_end_value_sum_{short}d', f'ev_session_end_count_{short}d')} "
            f"AS game_session_length_mean_{short}d"
        )
    if {"level_fail", "level_start"} <= present:
        game.append(
            f"{ratio(f'ev_level_fail_count_{longest}d', f'ev_level_start_count_{longest}d')} "
            f"AS game_level_fail_rate_{longest}d"
        )
    if "level_complete" in valued:
        game.append("ev_level_complete_value_max AS game_level_max")
    if "purchase" in present:
        game.append("ev_purchase_count_total > 0 AS game_is_payer")
    if {"ad_impression", "session_start"} <= present:
        game.append(
            f"{ratio(f'ev_ad_impression_count_{short}d', f'ev_session_start_count_{short}d')} "
            f"AS game_ads_per_session_{short}d"
        )
    sql = f"""
    WITH ev AS (SELECT *, row_number() OVER () AS rn FROM events WHERE event_date <= DATE '{last}'),
    daily AS (SELECT player_id, event_date, {", ".join(daily)} FROM ev GROUP BY player_id, event_date),
    spans AS (
        SELECT player_id, min(event_date) AS lo,
               least(max(event_date) + {longest - 1}, DATE '{last}') AS hi
        FROM daily GROUP BY player_id
    ),
    grid AS (
        SELECT player_id,
               unnest(generate_series(lo::TIMESTAMP, hi::TIMESTAMP, INTERVAL 1 DAY))::DATE AS event_date
        FROM spans
    ),
    dense AS (SELECT * FROM grid LEFT JOIN daily USING (player_id, event_date)),
    rolled AS (SELECT player_id, event_date, {", ".join(rolled)} FROM dense),
    feats AS (SELECT {", ".join(out)} FROM rolled)
    SELECT *{", " + ", ".join(game) if game else ""} FROM feats
    WHERE snapshot_date BETWEEN DATE '{first}' AND DATE '{last}' AND recency_days < {longest}
    ORDER BY player_id, snapshot_date
    """
    con = duckdb.connect()
    con.register("events", events.to_arrow())
    return con.sql(sql).pl()


# ---------------------------------------------------------------------------------------------------
# (b) The same features in pandas, vectorised: integer player codes and day numbers, a dense grid
# filled by position, groupby cumsum/shift for windows and groupby ffill for recency and maxima.


def pandas_features(ev: Any, first: date, last: date, windows: Sequence[int] = WINDOWS) -> Any:
    """Feature snapshots for [first, last] from an events DataFrame (pandas in, pandas out)."""
    import pandas as pd

    epoch = np.datetime64("1970-01-01", "D")
    first_n = int((np.datetime64(first, "D") - epoch).astype(int))
    last_n = int((np.datetime64(last, "D") - epoch).astype(int))
    day_n = (ev["event_date"].to_numpy().astype("datetime64[D]") - epoch).astype(np.int64)
    keep = day_n <= last_n
    ev, day_n = ev.loc[keep], day_n[keep]
    windows = sorted(windows)
    longest, short = windows[-1], windows[min(1, len(windows) - 1)]

    codes, players = pd.factorize(ev["player_id"], sort=True)
    etype = ev["event_type"].to_numpy()
    types = sorted(pd.unique(etype))
    valued = set(pd.unique(etype[ev["value"].notna().to_numpy()]))

    # spans per player: first active day .. min(last active + longest - 1, last)
    start = np.full(len(players), np.iinfo(np.int64).max)
    np.minimum.at(start, codes, day_n)
    stop = np.full(len(players), np.iinfo(np.int64).min)
    np.maximum.at(stop, codes, day_n)
    end = np.minimum(stop + longest - 1, last_n)
    span = end - start + 1
    offset = np.concatenate([[0], np.cumsum(span)[:-1]])
    n_rows = int(span.sum())
    g_player = np.repeat(np.arange(len(players)), span)
    g_day = start[g_player] + (np.arange(n_rows) - offset[g_player])
    row = offset[codes] + (day_n - start[codes])  # each event's dense row

    frame = pd.DataFrame({"p": g_player, "day": g_day})
    n = np.bincount(row, minlength=n_rows)
    cols: dict[str, np.ndarray] = {"n": n.astype(np.int64), "active": (n > 0).astype(np.int64)}
    values = ev["value"].to_numpy(dtype=np.float64, na_value=np.nan)
    for t in types:
        hit = etype == t
        cols[f"{t}|n"] = np.bincount(row[hit], minlength=n_rows)
        if t in valued:
            v = values[hit]
            ok = ~np.isnan(v)
            cols[f"{t}|sum"] = np.bincount(row[hit][ok], weights=v[ok], minlength=n_rows)
            mx = np.full(n_rows, np.nan)
            np.fmax.at(mx, row[hit][ok], v[ok])
            cols[f"{t}|max"] = mx
    dense = pd.concat([frame, pd.DataFrame(cols)], axis=1)

    # the day's latest non-null attribute: events are in time order, so groupby.last (skips nulls)
    ev_attrs = ev[list(ATTRS)].copy()
    ev_attrs["row"] = row
    last_attrs = ev_attrs.groupby("row", sort=True).last()
    for a in ATTRS:
        col = pd.Series(pd.NA, index=np.arange(n_rows), dtype=ev[a].dtype)
        col.iloc[last_attrs.index.to_numpy()] = last_attrs[a].to_numpy()
        dense[a] = col

    by = dense.groupby("p", sort=False)
    day_or_nan = dense["day"].where(dense["n"] > 0)
    out: dict[str, Any] = {
        "player_id": players.to_numpy()[g_player],
        "snapshot_n": g_day,
        "tenure_days": (g_day - start[g_player]).astype(np.int32),
        "recency_days": g_day - day_or_nan.groupby(dense["p"]).ffill().to_numpy(),
        "events_total": by["n"].cumsum().to_numpy(),
    }
    summed = ["n", "active", *[f"{t}|n" for t in types], *[f"{t}|sum" for t in types if t in valued]]
    cum = by[summed].cumsum()
    cum_by = cum.groupby(dense["p"], sort=False)
    lagged = {w: cum_by.shift(w, fill_value=0) for w in windows}

    def win(c: str, w: int) -> np.ndarray:
        return (cum[c] - lagged[w][c]).to_numpy()

    for w in windows:
        out[f"events_{w}d"] = win("n", w).astype(np.int32)
        out[f"active_days_{w}d"] = win("active", w).astype(np.int32)
    seen_days = pd.DataFrame({t: dense["day"].where(dense[f"{t}|n"] > 0) for t in types})
    last_seen = seen_days.groupby(dense["p"], sort=False).ffill()
    max_cols = [f"{t}|max" for t in types if t in valued]
    lifetime_max = dense[max_cols].groupby(dense["p"], sort=False).cummax()
    lifetime_max = lifetime_max.groupby(dense["p"], sort=False).ffill()
    for t in types:
        s = stem(t)
        for w in windows:
            out[f"{s}_count_{w}d"] = win(f"{t}|n", w).astype(np.int32)
        out[f"{s}_count_total"] = cum[f"{t}|n"].to_numpy().astype(np.int32)
        out[f"{s}_recency_days"] = g_day - last_seen[t].to_numpy()
        if t in valued:
            for w in windows:
                out[f"{s}_value_sum_{w}d"] = win(f"{t}|sum", w).astype(np.float32)
            n_long, sum_long = win(f"{t}|n", longest), win(f"{t}|sum", longest)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n_long > 0, sum_long / n_long, np.nan)
            out[f"{s}_value_mean_{longest}d"] = mean.astype(np.float32)
            out[f"{s}_value_max"] = lifetime_max[f"{t}|max"].to_numpy().astype(np.float32)
            out[f"{s}_value_total"] = cum[f"{t}|sum"].to_numpy().astype(np.float32)
    for a in ATTRS:
        out[a] = dense[a].groupby(dense["p"], sort=False).ffill().to_numpy()
    feats = pd.DataFrame(out)
    in_pop = feats["snapshot_n"].between(first_n, last_n) & (feats["recency_days"] < longest)
    feats = feats.loc[in_pop].reset_index(drop=True)
    feats.insert(1, "snapshot_date", epoch + feats.pop("snapshot_n").to_numpy().astype("timedelta64[D]"))

    def ratio(num: str, den: str) -> np.ndarray:
        d = feats[den].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(d > 0, feats[num].to_numpy() / d, np.nan).astype(np.float32)

    present = set(types)
    if "session_end" in valued:
        feats[f"game_session_length_mean_{short}d"] = ratio(
            f"ev_session_end_value_sum_{short}d", f"ev_session_end_count_{short}d"
        )
    if {"level_fail", "level_start"} <= present:
        feats[f"game_level_fail_rate_{longest}d"] = ratio(
            f"ev_level_fail_count_{longest}d", f"ev_level_start_count_{longest}d"
        )
    if "level_complete" in valued:
        feats["game_level_max"] = feats["ev_level_complete_value_max"]
    if "purchase" in present:
        feats["game_is_payer"] = feats["ev_purchase_count_total"] > 0
    if {"ad_impression", "session_start"} <= present:
        feats[f"game_ads_per_session_{short}d"] = ratio(
            f"ev_ad_impression_count_{short}d", f"ev_session_start_count_{short}d"
        )
    # dense rows are already in (player code, day) order and codes follow sorted player ids
    return feats


# ---------------------------------------------------------------------------------------------------
# Worker: one variant in this process, reporting JSON on stdout.


def subset_filter(share: float) -> pl.Expr:
    """Whole players whose id hashes into the first `share` of buckets."""
    return (pl.col("player_id").hash(seed=1) % 1000) < int(share * 1000)


def load_events(path: Path, variant: str, subset: float | None) -> Any:
    frame = pl.scan_parquet(path).select(INPUT_COLUMNS)
    if subset is not None:
        frame = frame.filter(subset_filter(subset))
    events = frame.collect()
    return events.to_pandas() if variant == "pandas" else events


def compute(variant: str, events: Any, first: date, last: date) -> Any:
    """The variant's feature frame, fully materialised."""
    if variant == "ours":
        from ml_assets.core.features.snapshots import player_features

        return player_features(events.lazy(), first, last, windows=WINDOWS).collect()
    if variant == "polars_hand":
        return polars_features(events.lazy(), first, last).collect()
    if variant == "duckdb":
        return duckdb_features(events, first, last)
    if variant == "pandas":
        return pandas_features(events, first, last)
    raise ValueError(f"unknown variant {variant}")


def worker(variant: str, path: Path, repeat: int, subset: float | None) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    first, last = event_window(path)
    started = time.perf_counter()
    events = load_events(path, variant, subset)
    load_s = time.perf_counter() - started
    rss_loaded = peak_rss_bytes_self()
    times, shape = [], (0, 0)
    for _ in range(repeat):
        started = time.perf_counter()
        out = compute(variant, events, first, last)
        times.append(time.perf_counter() - started)
        shape = out.shape
        del out
    return {
        "variant": variant,
        "input_events": len(events),
        "load_s": round(load_s, 3),
        "compute_s": [round(t, 3) for t in times],
        "rows_out": shape[0],
        "columns_out": shape[1],
        "peak_rss_after_load_bytes": rss_loaded,
        "peak_rss_bytes": peak_rss_bytes_self(),
        "snapshot_days": (last - first).days + 1,
        # 1-minute load average before the run: above ~0.5 another process shared the 2 cores
        "loadavg_1m_before": round(load_before, 2),
        # how soon jemalloc returns freed pages to the OS moves our time by up to ~25% at 1M
        "allocator": effective_jemalloc_conf(),
    }


def effective_jemalloc_conf() -> str:
    """jemalloc options Polars started with: its defaults, then `_RJEM_MALLOC_CONF` (later ones win)."""
    options: dict[str, str] = {}
    for item in os.environ.get("_RJEM_MALLOC_CONF", "").split(","):
        if ":" in item:
            key, value = item.split(":", 1)
            options[key] = value
    return ",".join(f"{k}:{v}" for k, v in options.items()) or "jemalloc defaults"


def mismatches(ours: pl.DataFrame, other: pl.DataFrame) -> list[str]:
    """Columns where `other` differs from `ours` (same rows in the same order), with the bad-row count."""
    bad_cols = []
    for col in ours.columns:
        a, b = ours[col], other[col]
        if a.dtype.is_float() or b.dtype.is_float():
            a, b = a.cast(pl.Float64), b.cast(pl.Float64)
            close = ((a - b).abs() <= 1e-4 + 1e-5 * b.abs()) | (a.is_null() & b.is_null())
            bad = int((~(close | (a.is_nan() & b.is_nan())).fill_null(False)).sum())
        else:
            bad = int((~a.eq_missing(b.cast(a.dtype, strict=False))).sum())
        if bad:
            bad_cols.append(f"{col}: {bad} rows")
    return bad_cols


def check(path: Path) -> dict[str, Any]:
    """Compare the hand-written Polars and pandas outputs with ml_assets' on every row and column."""
    first, last = event_window(path)
    events = load_events(path, "ours", None)
    ours = compute("ours", events, first, last)
    others = {
        "polars_hand": compute("polars_hand", events, first, last),
        "duckdb": compute("duckdb", events, first, last),
        "pandas": pl.from_pandas(pandas_features(events.to_pandas(), first, last)).with_columns(
            pl.col("snapshot_date").cast(pl.Date)
        ),
    }
    compared = {}
    for name, other in others.items():
        if set(other.columns) != set(ours.columns):
            raise AssertionError(f"{name}: columns differ: {sorted(set(other.columns) ^ set(ours.columns))}")
        if not other.select(KEY).equals(ours.select(KEY)):
            raise AssertionError(f"{name}: (player_id, snapshot_date) rows or their order differ")
        bad = mismatches(ours, other.select(ours.columns))
        if bad:
            raise AssertionError(f"{name} differs from ml_assets on {bad}")
        compared[name] = {"rows_compared": other.height, "columns_compared": other.width}
    return {"rows": ours.height, "columns": ours.width, "compared": compared}


# ---------------------------------------------------------------------------------------------------
# Driver.


def run_variant(variant: str, path: Path, repeat: int, subset: float | None = None) -> dict[str, Any]:
    args = [str(Path(__file__)), "--worker", variant, "--data", str(path), "--repeat", str(repeat)]
    if subset is not None:
        args += ["--subset", str(subset)]
    log(f"[run] {variant} on {path.name}" + (f" (subset {subset:.0%} of players)" if subset else ""))
    try:
        result = run_child(args)
    except ChildFailed as exc:
        log(f"      FAILED: {exc}")
        raise
    result["best_s"] = min(result["compute_s"])
    result["events_per_s"] = result["input_events"] / result["best_s"]
    log(
        f"      {result['best_s']:.2f}s best of {result['compute_s']}, "
        f"peak {fmt_gib(result['peak_rss_bytes'])} GiB, {result['rows_out']:,} rows out"
    )
    return result


BENCH_STATE: dict[str, float] = {}  # pandas' 1M cost per event, to project the larger sizes


def run_pandas(size: Size, path: Path, repeat: int, events: int) -> dict[str, Any]:
    """pandas on the whole set, or on a subset of players when the 1M run projects too long or too big.

    Time and peak memory both grow about linearly with events (the dense grid does), so the 1M
    figures project the larger sizes; the subset keeps whole players, so its features are exact.
    """
    import psutil

    per_event = BENCH_STATE.get("pandas_s_per_event")
    rss_per_event = BENCH_STATE.get("pandas_rss_per_event")
    if size.name == "1m" or per_event is None or rss_per_event is None:
        res = run_variant("pandas", path, repeat)  # as many runs as the other variants
        BENCH_STATE["pandas_s_per_event"] = res["best_s"] / res["input_events"]
        BENCH_STATE["pandas_rss_per_event"] = res["peak_rss_bytes"] / res["input_events"]
        return res
    projected_s, projected_rss = per_event * events, rss_per_event * events
    budget_rss = PANDAS_MEMORY_SHARE * psutil.virtual_memory().total
    if projected_s <= PANDAS_BUDGET_S and projected_rss <= budget_rss:
        return run_variant("pandas", path, 1)
    res = run_variant("pandas", path, 1, SUBSET_PLAYERS)
    res["subset"] = SUBSET_PLAYERS
    res["projected_full_s"] = round(projected_s, 1)
    res["projected_full_peak_rss_bytes"] = int(projected_rss)
    res["note"] = (
        f"pandas on all {events:,} events was projected from the 1M run at {projected_s:.0f}s and "
        f"{fmt_gib(projected_rss)} GiB peak (budget {PANDAS_BUDGET_S:.0f}s, {fmt_gib(budget_rss)} GiB; "
        f"a first attempt was OOM-killed at 24 GiB), so it was timed on {SUBSET_PLAYERS:.0%} of players "
        f"({res['input_events']:,} events); the ratio compares events/s"
    )
    return res


def bench_size(size: Size, skip_pandas: bool, repeat: int) -> dict[str, Any]:
    path = clean_events_path(size)
    entry: dict[str, Any] = {"size": size.name, "players_start": size.players, "days": size.days}
    if size.name == "1m":
        log("[check] comparing the four variants' outputs on the 1M set")
        entry["equivalence"] = json.loads(
            run_child([str(Path(__file__)), "--worker", "check", "--data", str(path)])["check"]
        )
        log(f"        ok: {entry['equivalence']}")
    results = {v: run_variant(v, path, repeat) for v in ("ours", "polars_hand", "duckdb")}
    entry["input_events"] = results["ours"]["input_events"]
    if not skip_pandas:
        results["pandas"] = run_pandas(size, path, repeat, entry["input_events"])
    entry["results"] = results
    ours = results["ours"]
    entry["ratio_ours_vs_polars_hand"] = round(ours["best_s"] / results["polars_hand"]["best_s"], 3)
    entry["ratio_ours_vs_duckdb"] = round(ours["best_s"] / results["duckdb"]["best_s"], 3)
    if "pandas" in results:
        # events/s ratio, so a subset run compares like with like
        entry["speedup_ours_vs_pandas"] = round(ours["events_per_s"] / results["pandas"]["events_per_s"], 2)
    return entry


def render(entries: list[dict[str, Any]], command: str, info: dict[str, Any]) -> tuple[str, str]:
    headers = [
        "size",
        "events in",
        "variant",
        "compute s (best)",
        "events/s",
        "peak RSS GiB",
        "rows out",
        "time vs ours",
    ]
    rows = []
    for e in entries:
        ours_best = e["results"]["ours"]["best_s"]
        for v, r in e["results"].items():
            rel = (
                f"{r['best_s'] / ours_best:.2f}x"
                if "subset" not in r
                else f"{e['results']['ours']['events_per_s'] / r['events_per_s']:.2f}x (per event)"
            )
            label = LABELS[v] + (f" [subset {r['subset']:.0%}]" if "subset" in r else "")
            rows.append(
                [
                    e["size"],
                    f"{r['input_events']:,}",
                    label,
                    fmt_s(r["best_s"]),
                    f"{r['events_per_s'] / 1e6:.2f}M",
                    fmt_gib(r["peak_rss_bytes"]),
                    f"{r['rows_out']:,}",
                    rel,
                ]
            )
    verdicts = []
    for e in entries:
        ratio = e["ratio_ours_vs_polars_hand"]
        line = (
            f"- {e['size']} ({e['input_events']:,} events): ours / hand-written Polars = {ratio:.2f}x "
            f"(target <= {TARGET_VS_POLARS}x: {'met' if ratio <= TARGET_VS_POLARS else 'NOT met'})"
        )
        duck = e.get("ratio_ours_vs_duckdb")
        if duck is not None:
            line += f"; ours / DuckDB = {duck:.2f}x (target <= 1x: {'met' if duck <= 1 else 'NOT met'})"
        if "speedup_ours_vs_pandas" in e:
            sp = e["speedup_ours_vs_pandas"]
            line += (
                f"; pandas time / ours = {sp:.2f}x per event "
                f"(target >= {TARGET_VS_PANDAS}x faster: {'met' if sp >= TARGET_VS_PANDAS else 'NOT met'})"
            )
        verdicts.append(line)
        for r in e["results"].values():
            if "note" in r:
                verdicts.append(f"  - note: {r['note']}")
    notes = [
        "Compute time excludes interpreter start and loading the Parquet file; peak RSS is the whole",
        "worker process (load included). Polars runs on every core; pandas is single-threaded.",
    ]
    runs = list(
        dict.fromkeys((e["size"], len(r["compute_s"])) for e in entries for r in e["results"].values())
    )
    notes.append(
        "Each variant's time is its best of "
        + ", ".join(f"{n} run{'s' if n > 1 else ''} at {size}" for size, n in runs)
        + " in one process (every run is in the JSON; the first run of a process is the slowest)."
    )
    allocators = {r.get("allocator") for e in entries for v, r in e["results"].items() if v != "pandas"}
    if allocators - {None}:
        conf = ", ".join(sorted(a for a in allocators if a))
        notes.append(f"Polars' jemalloc options (the worker imports Polars before ml_assets): {conf}.")
    eq = [e for e in entries if "equivalence" in e]
    if eq:
        c = eq[0]["equivalence"]
        notes.append(
            f"Equivalence on the 1M set: {c['rows']:,} rows x {c['columns']} columns from ml_assets; "
            + ", ".join(
                f"{k} matched on all {v['rows_compared']:,} rows x {v['columns_compared']} columns"
                for k, v in c["compared"].items()
            )
            + " (floats within 1e-4 abs + 1e-5 rel)."
        )
    md = "\n\n".join(
        [
            "# Feature step benchmark",
            f"Command: `{command}`  \nMachine: {info['cpu']}, {info['cores']} cores, "
            f"{info['memory_gib']} GiB RAM; Python {info['python']}, Polars {info['polars']}.",
            markdown_table(headers, rows),
            "\n".join(verdicts),
            " ".join(notes),
        ]
    )
    text = text_table(headers, rows) + "\n\n" + "\n".join(verdicts)
    return md, text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1m,10m", help="comma separated: 1m, 3m, 10m (default 1m,10m)")
    p.add_argument("--skip-pandas", action="store_true", help="time only ml_assets and hand-written Polars")
    p.add_argument("--repeat", type=int, default=0, help="timed runs per variant (default 5 at 1m, 1 above)")
    p.add_argument("--render", action="store_true", help="only rewrite results/features.md from the JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--subset", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.render:
        saved = json.loads((RESULTS_DIR / "features.json").read_text())
        md, text = render(saved["sizes"], saved["command"], saved["machine"])
        write_results("features", saved, md)
        print(text)
        return 0
    if args.worker == "check":
        print(json.dumps({"check": json.dumps(check(Path(args.data))), "peak_rss_bytes": 0}))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), max(1, args.repeat), args.subset)))
        return 0

    sizes = parse_sizes(args.sizes)
    entries = []
    for size in sizes:
        # the first run of a process is cold (heap growing, pages faulting); five give every variant
        # several warm runs to take the best of
        repeat = args.repeat or (5 if size.name == "1m" else 1)
        entries.append(bench_size(size, args.skip_pandas, repeat))
    info = machine()
    command = "python benchmarks/bench_features.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md, text = render(entries, command.strip(), info)
    print(text)
    json_path, md_path = write_results(
        "features", {"command": command.strip(), "machine": info, "sizes": entries}, md
    )
    log(f"saved {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
