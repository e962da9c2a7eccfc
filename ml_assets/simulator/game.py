"""Seeded synthetic game telemetry, landed one batch per delivery day.

Players join every day and play sessions, levels, ads, purchases and invites; each carries a latent
engagement that drives both how they play and how likely they are to quit, so churn can be learned
from behaviour. A small, configurable share of rows is dirty the way real pipelines are dirty:
duplicate and late deliveries, null players, negative purchases, empty event types, bad timestamps.

A day's rows depend only on the parameters and that day: the state of every player is carried
forward from the start day, each day drawing from its own seed. So landing through day 60 and then
extending through day 70 gives the same batches as one run through day 70, and a rerun lands nothing.

A named shift (a scenario such as a game patch) can change behaviour from a given day on: days before
it have the same rows as the unshifted run, so a model trained on them meets drift afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from ml_assets.core.events.landing import batch_name, list_batches, write_batch
from ml_assets.lake.files import Location, folder

SIMULATION_FILE = "_simulation.json"
SOURCE = "simulator"
# Part of every batch id: bump it when the generator's output changes, so old batches are not reused.
GENERATOR_VERSION = 2

PLATFORMS = ("ios", "android", "web")
PLATFORM_P = (0.42, 0.43, 0.15)
COUNTRIES = ("US", "BR", "IN", "DE", "GB", "FR", "JP", "MX", "ID", "KR", "CA", "TR")
COUNTRY_P = (0.30, 0.10, 0.10, 0.07, 0.07, 0.06, 0.06, 0.05, 0.05, 0.05, 0.05, 0.04)
# App versions and the day (relative to the start) each was released; players upgrade after a lag.
VERSIONS = ("1.3.9", "1.4.2", "1.5.0", "1.6.0")
RELEASE_DAY = np.array([-60, -20, 25, 55])

# Event type codes; the last two are the dirty ones (empty and null type).
SESSION_START, SESSION_END, LEVEL_START, LEVEL_COMPLETE, LEVEL_FAIL = 0, 1, 2, 3, 4
PURCHASE, AD_IMPRESSION, SOCIAL_INVITE, EMPTY_TYPE, NULL_TYPE = 5, 6, 7, 8, 9
EVENT_TYPES = (
    "session_start",
    "session_end",
    "level_start",
    "level_complete",
    "level_fail",
    "purchase",
    "ad_impression",
    "social_invite",
    "",
    None,
)

# Properties are one of a few JSON texts per event type; code 0 is null.
PROPERTIES: tuple[str | None, ...] = (
    None,
    '{"stars":1}',
    '{"stars":2}',
    '{"stars":3}',
    '{"reason":"out_of_moves"}',
    '{"reason":"timeout"}',
    '{"reason":"quit"}',
    '{"sku":"gems_small","currency":"USD"}',
    '{"sku":"gems_medium","currency":"USD"}',
    '{"sku":"gems_large","currency":"USD"}',
    '{"sku":"gems_mega","currency":"USD"}',
    '{"placement":"interstitial","network":"admob"}',
    '{"placement":"rewarded","network":"admob"}',
    '{"placement":"rewarded","network":"unity"}',
    '{"channel":"link"}',
    '{"channel":"contacts"}',
    '{"channel":"facebook"}',
)
STARS_PROPS, FAIL_PROPS, SKU_PROPS, AD_PROPS, INVITE_PROPS = 1, 4, 7, 11, 14
SKU_BOUNDS = np.array([3.0, 15.0, 50.0])  # USD upper bounds of gems_small, _medium, _large

# Dirty row kinds, each taking an equal share of dirty_rate; 0 is a clean row.
CLEAN, DUPLICATE, LATE, NULL_PLAYER, NEGATIVE_PURCHASE, BAD_EVENT_TYPE, BAD_TIMESTAMP = range(7)
DIRTY_KINDS = 6
MAX_LATE_DAYS = 6
GARBAGE_TIMES = ("2025-13-45T25:61:00", "not-a-time", "31/02/2025 99:99", "0000-00-00T00:00:00Z")

DAY_MS = 86_400_000
NEVER = np.iinfo(np.int32).max


@dataclass(frozen=True)
class _Shift:
    """How a scenario changes play and churn from its day on; the defaults change nothing."""

    play_logit: float = 0.0  # added to the log-odds of playing on a day
    session_length: float = 1.0  # factor on session lengths
    purchases: float = 1.0  # factor on a payer's purchase rate
    amounts: float = 1.0  # factor on purchase amounts
    fail_logit: float = 0.0  # added to the log-odds of failing a level
    churn_logit: float = 0.0  # added to the log-odds of quitting on a day
    payer_loyalty: float = 1.0  # factor on how much having paid keeps a player


NO_SHIFT = _Shift()
# Named scenarios a simulation can switch to on its shift_day.
SHIFTS: dict[str, _Shift] = {
    # A patch that makes levels harder and the shop worse: shorter and rarer sessions, fewer and
    # smaller purchases, more failing; players quit more, and having paid protects less (so churn's
    # relation to behaviour changes too, not only the behaviour).
    "patch": _Shift(
        play_logit=-0.3,
        session_length=0.65,
        purchases=0.6,
        amounts=0.6,
        fail_logit=0.6,
        churn_logit=0.6,
        payer_loyalty=0.4,
    ),
}


@dataclass(frozen=True)
class SimulationParams:
    """What to simulate; everything but `days` fixes the rows of each day."""

    players: int = 2_000  # players present on the start day
    days: int = 60  # days simulated by `simulate` (start .. start+days-1)
    start: date = date(2025, 1, 1)
    seed: int = 7
    dirty_rate: float = 0.01  # share of rows made dirty; 0 = perfectly clean
    new_players_per_day: int | None = None  # None: max(1, players // 40)
    shift_day: date | None = None  # from this day on, behaviour follows the `shift` scenario
    shift: str = "patch"  # a key of SHIFTS; only used when shift_day is set

    @property
    def daily_new_players(self) -> int:
        """New players joining on each day after the start day."""
        return max(1, self.players // 40) if self.new_players_per_day is None else self.new_players_per_day

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)


@dataclass(frozen=True)
class SimulationReport:
    """What a `simulate` or `extend` call landed."""

    days_landed: int  # batches newly written
    days_skipped: int  # batches already present (idempotent rerun)
    rows: int  # rows in the newly written batches
    first_day: date
    last_day: date


def validate(params: SimulationParams) -> None:
    """Raise ValueError for parameters the simulator cannot honour."""
    if params.players < 1 or params.days < 1 or params.seed < 0 or params.daily_new_players < 0:
        raise ValueError(f"players and days must be >= 1, seed and new_players_per_day >= 0: {params}")
    if not 0.0 <= params.dirty_rate < 0.5:
        raise ValueError(f"dirty_rate must be in [0, 0.5): {params.dirty_rate}")
    if params.shift not in SHIFTS:
        raise ValueError(f"unknown shift {params.shift!r}; known shifts: {', '.join(sorted(SHIFTS))}")
    if params.shift_day is not None and params.shift_day < params.start:
        raise ValueError(f"shift_day {params.shift_day} is before the simulation start {params.start}")


def params_json(params: SimulationParams) -> dict:
    """The parameters as JSON values (the `_simulation.json` format).

    The shift fields appear only when shift_day is set, so unshifted simulations keep the JSON, and
    therefore the batch ids, they had before shifts existed.
    """
    raw = {**dataclasses.asdict(params), "start": params.start.isoformat()}
    if params.shift_day is None:
        del raw["shift_day"], raw["shift"]
    else:
        raw["shift_day"] = params.shift_day.isoformat()
    return raw


def params_from_json(raw: dict) -> SimulationParams:
    shift_day = raw.get("shift_day")
    return SimulationParams(
        **{
            **raw,
            "start": date.fromisoformat(raw["start"]),
            "shift_day": None if shift_day is None else date.fromisoformat(shift_day),
        }
    )


def _shift_on(params: SimulationParams, k: int) -> _Shift:
    """The behaviour change in force on day `k` (NO_SHIFT before shift_day or without one)."""
    if params.shift_day is None or k < (params.shift_day - params.start).days:
        return NO_SHIFT
    return SHIFTS[params.shift]


def batch_id(params: SimulationParams, day: date) -> str:
    """Content name of the batch delivered on `day`: a hash of everything that fixes its rows."""
    key = {k: v for k, v in params_json(params).items() if k != "days"}
    key.update(new_players_per_day=params.daily_new_players, generator=GENERATOR_VERSION)
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{canonical}|{day.isoformat()}".encode()).hexdigest()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _rng(params: SimulationParams, day: date, stream: int) -> np.random.Generator:
    """The generator of one day's draws; `stream` separates the joining cohort from the day's play."""
    return np.random.default_rng(np.random.SeedSequence([params.seed, day.toordinal(), stream]))


class _Players:
    """Every player so far, one array element each: traits fixed at joining plus state carried daily."""

    ARRAYS = (
        "base_eng skill payer spend_mu social platform country lag join_k "
        "eng level fail_ema purchases invites alive return_k"
    ).split()
    # declared so a type checker knows them; set and grown together through ARRAYS
    base_eng: np.ndarray
    skill: np.ndarray
    payer: np.ndarray
    spend_mu: np.ndarray
    social: np.ndarray
    platform: np.ndarray
    country: np.ndarray
    lag: np.ndarray
    join_k: np.ndarray
    eng: np.ndarray
    level: np.ndarray
    fail_ema: np.ndarray
    purchases: np.ndarray
    invites: np.ndarray
    alive: np.ndarray
    return_k: np.ndarray

    def __init__(self) -> None:
        for name in self.ARRAYS:
            setattr(self, name, np.empty(0))

    def join(self, rng: np.random.Generator, n: int, k: int, initial: bool) -> None:
        """Add `n` players joining on day `k`; the initial players arrive with some history."""
        base = rng.standard_normal(n)
        skill = rng.standard_normal(n)
        payer = rng.random(n) < _sigmoid(-3.0 + 0.8 * base)
        tenure = rng.exponential(90.0, n).astype(np.int32) if initial else np.zeros(n, np.int32)
        lag = rng.geometric(0.3, n) - 1
        new = {
            "base_eng": base,
            "skill": skill,
            "payer": payer,
            "spend_mu": rng.normal(1.3, 0.5, n),
            "social": np.exp(rng.normal(-2.3 + 0.5 * base, 0.8, n)),
            "platform": rng.choice(len(PLATFORMS), n, p=PLATFORM_P).astype(np.int8),
            "country": rng.choice(len(COUNTRIES), n, p=COUNTRY_P).astype(np.int8),
            # A few players never update their app.
            "lag": np.where(rng.random(n) < 0.04, NEVER // 2, lag).astype(np.int32),
            "join_k": (k - tenure).astype(np.int32),
            "eng": base.copy(),
            "level": (1 + rng.poisson(tenure * 0.5 * np.exp(0.3 * skill))).astype(np.int32),
            "fail_ema": np.full(n, 0.3),
            "purchases": (payer & (rng.random(n) < 1 - np.exp(-tenure / 20))).astype(np.int32),
            "invites": rng.poisson(tenure * np.exp(-2.3 + 0.5 * base) * 0.3).astype(np.int32),
            "alive": np.ones(n, bool),
            "return_k": np.full(n, NEVER, np.int32),
        }
        for name, values in new.items():
            setattr(self, name, np.concatenate([getattr(self, name), values]).astype(values.dtype))

    def version(self, idx: np.ndarray, k: int) -> np.ndarray:
        """App version code of players `idx` on day `k`: the newest release they have upgraded to."""
        released = k >= RELEASE_DAY[None, :]
        upgraded = (k >= RELEASE_DAY[None, :] + self.lag[idx, None]) | (self.join_k[idx, None] >= RELEASE_DAY)
        return np.maximum((released & upgraded).sum(axis=1) - 1, 0).astype(np.int8)


@dataclass
class _Events:
    """One day's events as parallel arrays, before they become a frame."""

    player: np.ndarray  # player index, -1 for a null player
    ms: np.ndarray  # milliseconds into the day
    etype: np.ndarray
    value: np.ndarray  # NaN for null
    props: np.ndarray  # index into PROPERTIES
    kind: np.ndarray  # dirty kind
    delay: np.ndarray  # extra days before delivery (late rows and duplicate copies)
    garbage: np.ndarray  # index into GARBAGE_TIMES for a bad timestamp, else -1

    def take(self, index: np.ndarray) -> _Events:
        return _Events(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


def _segment_rank(counts: np.ndarray) -> np.ndarray:
    """For segments of the given sizes laid end to end, each element's position within its segment."""
    starts = np.cumsum(counts) - counts
    return np.arange(counts.sum()) - np.repeat(starts, counts)


def _play_day(players: _Players, rng: np.random.Generator, k: int, shift: _Shift = NO_SHIFT) -> _Events:
    """Play day `k` for every alive player, updating their state; the day's events in time order."""
    alive = np.flatnonzero(players.alive)
    eng = players.eng[alive]
    joined_today = players.join_k[alive] == k
    # Players always play the day they install; afterwards engagement and spend drive how often.
    p_play = _sigmoid(-2.4 + shift.play_logit + 1.1 * eng + 0.3 * (players.purchases[alive] > 0))
    playing = alive[joined_today | (rng.random(alive.size) < p_play)]
    m = playing.size
    eng = players.eng[playing]

    # Sessions: non-overlapping, one per equal slot of the day, length driven by engagement.
    n_sess = 1 + rng.poisson(0.3 * np.exp(0.4 * eng))
    sp = np.repeat(np.arange(m), n_sess)  # session -> position in `playing`
    slot = DAY_MS / n_sess[sp]
    length = np.exp(rng.normal(np.log(400_000) + 0.35 * eng[sp], 0.7)) * shift.session_length
    length = np.minimum(np.clip(length, 20_000, 3 * 3_600_000), 0.9 * slot)
    s_start = (_segment_rank(n_sess) * slot + rng.random(sp.size) * (slot - length)).astype(np.int64)
    s_end = s_start + length.astype(np.int64)

    # Level attempts in each session; the level climbs with each completion, in order.
    n_att = rng.poisson(length / 1_500_000)
    a_sess = np.repeat(np.arange(sp.size), n_att)
    a_pos = sp[a_sess]
    q = _segment_rank(n_att)
    level0 = players.level[playing]
    p_fail = _sigmoid(-1.2 + shift.fail_logit + 0.35 * np.log(level0) - 0.9 * players.skill[playing])
    complete = rng.random(a_sess.size) >= p_fail[a_pos]
    per_player = np.bincount(a_pos, minlength=m)
    done = np.concatenate([[0], np.cumsum(complete)])
    first = np.cumsum(per_player) - per_player
    a_level = level0[a_pos] + done[:-1] - done[first[a_pos]]
    a_len, a_n = length[a_sess], n_att[a_sess]
    a_start = s_start[a_sess] + (a_len * (q + 0.1 + 0.2 * rng.random(a_sess.size)) / a_n).astype(np.int64)
    a_end = s_start[a_sess] + (a_len * (q + 0.5 + 0.4 * rng.random(a_sess.size)) / a_n).astype(np.int64)
    a_props = np.where(
        complete,
        STARS_PROPS + rng.choice(3, a_sess.size, p=(0.3, 0.45, 0.25)),
        FAIL_PROPS + rng.choice(3, a_sess.size, p=(0.7, 0.2, 0.1)),
    )

    # Ads: payers see fewer; revenue per impression is a fraction of a cent.
    payer = players.payer[playing]
    n_ads = rng.poisson(length / 900_000 * np.where(payer[sp], 0.3, 1.0))
    ad_sess = np.repeat(np.arange(sp.size), n_ads)
    ad_value = np.round(np.exp(rng.normal(np.log(0.008), 0.5, ad_sess.size)), 5)

    # Purchases (payers only, heavy-tailed amounts) and invites, each in a random session of the day.
    sess_first = np.cumsum(n_sess) - n_sess
    n_buy = np.where(payer, rng.poisson(0.12 * shift.purchases * np.exp(0.4 * eng)), 0)
    buy_pos = np.repeat(np.arange(m), n_buy)
    buy_sess = sess_first[buy_pos] + (rng.random(buy_pos.size) * n_sess[buy_pos]).astype(np.int64)
    spend = np.exp(players.spend_mu[playing][buy_pos] + rng.normal(0, 0.9, buy_pos.size)) * shift.amounts
    amount = np.maximum(np.round(spend, 2), 0.99)
    n_inv = rng.poisson(players.social[playing] * np.exp(0.3 * eng))
    inv_pos = np.repeat(np.arange(m), n_inv)
    inv_sess = sess_first[inv_pos] + (rng.random(inv_pos.size) * n_sess[inv_pos]).astype(np.int64)

    def inside(sess: np.ndarray) -> np.ndarray:
        return s_start[sess] + (rng.random(sess.size) * (s_end[sess] - s_start[sess])).astype(np.int64)

    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | int, np.ndarray, np.ndarray | int]] = [
        (sp, s_start, SESSION_START, np.full(sp.size, np.nan), 0),
        (sp, s_end, SESSION_END, (s_end - s_start) / 1000.0, 0),
        (a_pos, a_start, LEVEL_START, a_level.astype(float), 0),
        (a_pos, a_end, np.where(complete, LEVEL_COMPLETE, LEVEL_FAIL), a_level.astype(float), a_props),
        (sp[ad_sess], inside(ad_sess), AD_IMPRESSION, ad_value, AD_PROPS + rng.choice(3, ad_sess.size)),
        (buy_pos, inside(buy_sess), PURCHASE, amount, SKU_PROPS + np.searchsorted(SKU_BOUNDS, amount)),
        (
            inv_pos,
            inside(inv_sess),
            SOCIAL_INVITE,
            np.full(inv_pos.size, np.nan),
            INVITE_PROPS + rng.choice(3, inv_pos.size),
        ),
    ]
    pos = np.concatenate([p[0] for p in parts])
    ms = np.concatenate([p[1] for p in parts])
    etype = np.concatenate([np.broadcast_to(p[2], p[0].shape) for p in parts]).astype(np.int8)
    value = np.concatenate([p[3] for p in parts])
    props = np.concatenate([np.broadcast_to(p[4], p[0].shape) for p in parts]).astype(np.int8)

    # Carry state forward: progress, recent failure, spend and social history, engagement drift.
    fails = np.bincount(a_pos, weights=~complete, minlength=m)
    fail_share = np.divide(fails, per_player, out=np.full(m, 0.3), where=per_player > 0)
    players.level[playing] = level0 + (per_player - fails).astype(np.int32)
    players.fail_ema[playing] = np.where(
        per_player > 0, 0.7 * players.fail_ema[playing] + 0.3 * fail_share, players.fail_ema[playing]
    )
    players.purchases[playing] += n_buy.astype(np.int32)
    players.invites[playing] += n_inv.astype(np.int32)
    players.eng[playing] -= 0.8 * np.maximum(fail_share - 0.5, 0.0)

    order = np.argsort(ms, kind="stable")
    n = order.size
    return _Events(
        player=playing[pos[order]],
        ms=ms[order],
        etype=etype[order],
        value=value[order],
        props=props[order],
        kind=np.zeros(n, np.int8),
        delay=np.zeros(n, np.int8),
        garbage=np.full(n, -1, np.int8),
    )


def _churn(players: _Players, rng: np.random.Generator, k: int, shift: _Shift = NO_SHIFT) -> None:
    """Draw who quits today.

    The hazard rises with low engagement, recent failing, no spend and no invites; it falls with tenure.
    A shift raises it by `churn_logit` and scales how much having paid keeps a player.
    """
    alive = np.flatnonzero(players.alive)
    eng = players.eng[alive]
    tenure = k - players.join_k[alive]
    logit = (
        -3.4
        + shift.churn_logit
        - 0.9 * eng
        + 5.0 * (players.fail_ema[alive] - 0.35)
        - 0.9 * shift.payer_loyalty * (players.purchases[alive] > 0)
        - 0.6 * (players.invites[alive] > 0)
        - 0.35 * np.log1p(tenure)
        + 2.2 * np.exp(-tenure / 3)
    )
    quits = alive[rng.random(alive.size) < _sigmoid(logit)]
    # A few come back after a break of two weeks or more.
    back = rng.random(quits.size) < 0.08
    players.alive[quits] = False
    players.return_k[quits] = np.where(back, k + 14 + rng.geometric(1 / 20, quits.size), NEVER)
    # Everyone else drifts back toward their own base engagement.
    players.eng[alive] += 0.1 * (players.base_eng[alive] - eng) + rng.normal(0, 0.12, alive.size)


def _return(players: _Players, k: int) -> None:
    """Players whose break ends today come back refreshed."""
    back = np.flatnonzero(players.return_k == k)
    players.alive[back] = True
    players.return_k[back] = NEVER
    players.eng[back] = players.base_eng[back]
    players.fail_ema[back] = 0.3


def _dirty(events: _Events, rng: np.random.Generator, owed: np.ndarray, rate: float) -> None:
    """Mark whole numbers of rows of each dirty kind; `owed` carries the fractions to the next day."""
    owed += events.ms.size * rate / DIRTY_KINDS
    counts = np.floor(owed).astype(np.int64)
    owed -= counts
    picked = rng.choice(events.ms.size, size=int(counts.sum()), replace=False)
    kinds = np.repeat(np.arange(1, DIRTY_KINDS + 1), counts).astype(np.int8)
    events.kind[picked] = kinds
    late = picked[kinds == LATE]
    events.delay[late] = rng.integers(1, MAX_LATE_DAYS + 1, late.size)
    dup = picked[kinds == DUPLICATE]
    events.delay[dup] = rng.integers(0, 2, dup.size)  # the copy arrives the same day or the next
    events.player[picked[kinds == NULL_PLAYER]] = -1
    neg = picked[kinds == NEGATIVE_PURCHASE]
    events.etype[neg] = PURCHASE
    events.value[neg] = -np.round(np.exp(rng.normal(1.3, 0.9, neg.size)), 2)
    events.props[neg] = SKU_PROPS
    bad_type = picked[kinds == BAD_EVENT_TYPE]
    events.etype[bad_type] = np.where(rng.random(bad_type.size) < 0.5, EMPTY_TYPE, NULL_TYPE)
    bad_time = picked[kinds == BAD_TIMESTAMP]
    events.garbage[bad_time] = rng.integers(0, len(GARBAGE_TIMES), bad_time.size)


def _frame(events: _Events, players: _Players, day: date, k: int) -> pl.DataFrame:
    """Landing-format rows of one day's events (received_date is set at delivery)."""
    day_us = (day - date(1970, 1, 1)).days * 86_400_000_000
    player = np.maximum(events.player, 0)
    time = pl.from_epoch(pl.Series(day_us + events.ms * 1000), time_unit="us").dt.replace_time_zone("UTC")
    frame = pl.DataFrame(
        {
            "seq": np.arange(events.ms.size),
            "pidx": events.player,
            "time": time,
            "event_type": pl.Series(EVENT_TYPES, dtype=pl.String).gather(events.etype),
            "value": pl.Series(events.value, nan_to_null=True),
            "platform": pl.Series(PLATFORMS).gather(players.platform[player]),
            "country": pl.Series(COUNTRIES).gather(players.country[player]),
            "app_version": pl.Series(VERSIONS).gather(players.version(player, k)),
            "properties": pl.Series(PROPERTIES, dtype=pl.String).gather(events.props),
            "garbage": pl.Series(events.garbage, dtype=pl.Int8).replace(-1, None),
            "_kind": events.kind,
            "_delay": events.delay,
        }
    )
    bad_time = pl.col("garbage").is_not_null()
    return frame.select(
        event_id=pl.lit(f"{day:%Y%m%d}-") + pl.col("seq").cast(pl.String).str.zfill(9),
        player_id=pl.when(pl.col("pidx") >= 0).then(
            pl.lit("p") + pl.col("pidx").cast(pl.String).str.zfill(7)
        ),
        event_time=pl.when(~bad_time).then(pl.col("time")),
        event_type="event_type",
        value="value",
        platform="platform",
        country="country",
        app_version="app_version",
        properties="properties",
        event_time_raw=pl.when(bad_time)
        .then(pl.col("garbage").replace_strict(dict(enumerate(GARBAGE_TIMES)), return_dtype=pl.String))
        .otherwise(pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")),
        _kind="_kind",
        _delay="_delay",
    )


def simulate_days(params: SimulationParams, first: date, last: date) -> Iterator[tuple[date, pl.DataFrame]]:
    """Landing-format rows delivered on each day first..last (inclusive)."""
    validate(params)
    if first < params.start:
        raise ValueError(f"first day {first} is before the simulation start {params.start}")
    first_k, last_k = (first - params.start).days, (last - params.start).days
    players = _Players()
    owed = np.zeros(DIRTY_KINDS)
    pending: dict[int, list[pl.DataFrame]] = {}
    for k in range(last_k + 1):
        day = params.start + timedelta(days=k)
        players.join(_rng(params, day, 1), params.players if k == 0 else params.daily_new_players, k, k == 0)
        _return(players, k)
        rng = _rng(params, day, 0)
        shift = _shift_on(params, k)
        events = _play_day(players, rng, k, shift)
        _churn(players, rng, k, shift)
        _dirty(events, rng, owed, params.dirty_rate)
        # Rows of a day reach at most MAX_LATE_DAYS later batches; earlier days only carry state.
        if k + MAX_LATE_DAYS < first_k:
            continue
        rows = _frame(events, players, day, k)
        kind, delay = pl.col("_kind"), pl.col("_delay")
        held = rows.filter((kind == LATE) | ((kind == DUPLICATE) & (delay > 0)))
        for d, part in held.partition_by("_delay", as_dict=True, maintain_order=True).items():
            pending.setdefault(k + int(d[0]), []).append(part)
        if k < first_k:
            continue
        today = [rows.filter(kind != LATE), rows.filter((kind == DUPLICATE) & (delay == 0))]
        batch = pl.concat(today + pending.pop(k, []))
        yield day, batch.drop("_kind", "_delay").with_columns(received_date=pl.lit(day, pl.Date))


def _save(landing: Location, params: SimulationParams, until: date) -> None:
    """Record the simulation in the landing area; refuse one that holds a different simulation."""
    days = max(params.days, (until - params.start).days + 1)
    if has_simulation(landing):
        saved = load_params(landing)
        if batch_id(saved, saved.start) != batch_id(params, params.start):
            raise ValueError(f"{landing} holds a different simulation ({saved}); not mixing in {params}")
        days = max(days, saved.days)
    text = json.dumps(params_json(dataclasses.replace(params, days=days)), indent=2)
    folder(landing).write(SIMULATION_FILE, text.encode())


def _land(
    landing: Location, params: SimulationParams, until: date, progress: Callable[[date], None] | None
) -> SimulationReport:
    """Write the batches of start..until that are missing, simulating only from the first missing day."""
    days = [params.start + timedelta(days=i) for i in range((until - params.start).days + 1)]
    landed_names = {e.name for e in list_batches(landing)}
    present = [batch_name(batch_id(params, d)) in landed_names for d in days]
    first_missing = present.index(False) if False in present else len(days)
    landed = rows = 0
    skipped = first_missing
    for day in days[:first_missing]:
        if progress:
            progress(day)
    if first_missing < len(days):
        for day, frame in simulate_days(params, days[first_missing], until):
            if write_batch(landing, frame, batch_id(params, day), SOURCE):
                landed, rows = landed + 1, rows + frame.height
            else:
                skipped += 1
            if progress:
                progress(day)
    return SimulationReport(landed, skipped, rows, params.start, until)


def simulate(
    landing: Location,
    params: SimulationParams,
    until: date | None = None,
    progress: Callable[[date], None] | None = None,
) -> SimulationReport:
    """Land one batch per delivery day from params.start through `until` (default start+days-1).

    Saves the params to _simulation.json in the landing area (with `days` widened to cover `until`);
    a landing area that already holds a different simulation is refused with ValueError.
    """
    validate(params)
    until = params.last_day if until is None else until
    if until < params.start:
        raise ValueError(f"until {until} is before the simulation start {params.start}")
    _save(landing, params, until)
    return _land(landing, params, until, progress)


def has_simulation(landing: Location) -> bool:
    """Whether a simulation is saved in the landing area."""
    return folder(landing).exists(SIMULATION_FILE)


def load_params(landing: Location) -> SimulationParams:
    """The simulation saved in the landing area; ValueError when there is none."""
    raw = folder(landing).read(SIMULATION_FILE)
    if raw is None:
        raise ValueError(f"no simulation saved in {landing} (expected {SIMULATION_FILE}); run simulate first")
    return params_from_json(json.loads(raw))


def extend(
    landing: Location, until: date, progress: Callable[[date], None] | None = None
) -> SimulationReport:
    """Continue the simulation saved in the landing area's _simulation.json through `until`.

    ValueError when none is saved or `until` is before its start.
    """
    return simulate(landing, load_params(landing), until, progress)
