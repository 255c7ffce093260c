"""Deterministic synthetic Taobao-like click logs, written as dirty raw files.

Layout under `out_dir` (UTF-8, ',' separated, one header line, '\\n' line ends, no
quoting: no value ever contains a comma):

    user_profile.csv                        user_id,age,gender,city,segment,spend_level
    item_catalogue.csv                      item_id,category,brand,price_level
    logs/dt=YYYY-MM-DD/impressions.csv      user_id,item_id,ts,clicked   (one file per day)
    _truth/user_groups.csv                  user_id,true_group   (evaluation only)
    _manifest.json                          config, files, row counts, sha256

The files carry realistic dirt (see `DirtRates`): out-of-bounds or missing ages and
garbled cities in user_profile.csv; duplicated and malformed lines in the impression
files. The catalogue and the ground truth are clean.

Determinism: the bytes written are a pure function of `GeneratorConfig` (including
`chunk_users`, which fixes how users are grouped into random streams). Every random
stream is a PCG64 seeded by `SeedSequence([seed, purpose, chunk, day])`, so one day of
one chunk of users can be produced without producing any other: `generate_day(d)`
rewrites day `d` byte-identically to what `generate` wrote, and a day past `n_days`
("a new day" for scheduled retraining) can be appended later. Dirt is drawn from its
own streams, so changing only the dirt rates never changes the clean values.

Memory is bounded by one chunk of `chunk_users` users and its impressions for one day;
the total number of users does not matter.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["DirtRates", "GeneratorConfig", "GeneratedFiles", "generate", "generate_day", "day_path"]

USER_HEADER = "user_id,age,gender,city,segment,spend_level"
ITEM_HEADER = "item_id,category,brand,price_level"
LOG_HEADER = "user_id,item_id,ts,clicked"
TRUTH_HEADER = "user_id,true_group"

CITIES: tuple[str, ...] = (
    "Shanghai", "Beijing", "Hangzhou", "Shenzhen", "Guangzhou", "Chengdu", "Wuhan", "Nanjing",
    "Suzhou", "Chongqing", "Xian", "Tianjin", "Changsha", "Zhengzhou", "Qingdao", "Dongguan",
    "Ningbo", "Foshan", "Hefei", "Kunming", "Shenyang", "Jinan", "Xiamen", "Fuzhou",
    "Wuxi", "Dalian", "Harbin", "Changchun", "Shijiazhuang", "Nanning", "Guiyang", "Nanchang",
    "Taiyuan", "Lanzhou", "Urumqi", "Hohhot", "Yinchuan", "Xining", "Lhasa", "Haikou",
)  # fmt: skip
SEGMENTS: tuple[str, ...] = (
    "office_worker", "student", "service", "engineer", "sales", "teacher",
    "healthcare", "freelancer", "manufacturing", "civil_servant", "homemaker", "retired",
)  # fmt: skip
CATEGORIES: tuple[str, ...] = (
    "womens_clothing", "mens_clothing", "shoes", "bags", "beauty", "skincare", "personal_care",
    "baby", "toys", "snacks", "beverages", "fresh_food", "home_decor", "kitchen", "furniture",
    "bedding", "appliances", "phones", "computers", "audio", "cameras", "gaming", "sports",
    "outdoor", "books", "stationery", "pet_supplies", "jewelry", "watches", "automotive",
)  # fmt: skip
GENDERS: tuple[str, ...] = ("F", "M")
AGE_MIN, AGE_MAX = 10, 80  # clean ages; the cleaning step accepts [10, 100]
SPEND_LEVELS = 5
PRICE_LEVELS = 5
N_BRANDS = 200
MIN_LOGS_PER_USER = 2
MAX_LOGS_FACTOR = 50  # cap on one user's impressions, as a multiple of the mean

# Random-stream purposes: each is an independent SeedSequence branch.
_STRUCTURE, _USERS, _LOGS, _PROFILE_DIRT, _LOG_DIRT = range(5)

# Dirt values. Out-of-bounds ages straddle the cleaning bounds [10, 100] on both sides.
_BAD_AGES = ("-1", "0", "1", "3", "5", "7", "101", "120", "150", "200", "999")
_BAD_CITY_TOKENS = ("???", "n/a", "")
_ACCENTS = {"a": "àáâä", "e": "éèêë", "i": "íìîï", "o": "ôóòö", "u": "üúùû"}
_NON_NUMERIC = ("null", "NaN", "N/A", "\\N", "abc", "-", "true")
_NON_NUMERIC_TS = ("2026-01-01 08:00:00",)  # a formatted time where epoch seconds belong
_EXTRA_FIELDS = ("", "1", "ios", "android", "web", "0.5")

# Share of a feature's values that the major/minor rule calls "top" (paper: 30%).
_TOP_SHARE = 0.3
# Per feature: (mass of the top values for the major cluster, for the minor clusters).
_TOP_MASS = {
    "age": (0.86, 0.30),
    "gender": (0.70, 0.35),
    "city": (0.83, 0.30),
    "segment": (0.83, 0.30),
    "spend": (0.80, 0.30),
}
_MINOR_BLOCK_MASS = 0.55  # of a minor group's non-top mass, the part on "its own" rare values
_CLICK_BASE_LOGIT = -2.4
# Light users click more per impression (they arrive with intent), so most users reach
# the two clicks the cleaning asks for; the floor keeps heavy browsers' CTR plausible.
_INTENT_SLOPE = 0.8
_INTENT_FLOOR = -1.0
_USER_BIAS_SD = 0.5
_WEEKEND_WEIGHT = 1.15  # relative activity on Saturdays and Sundays
# Relative traffic by hour of the (UTC) day: quiet nights, busy evenings.
_HOUR_WEIGHTS = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 10, 12, 12, 10, 6], dtype=float
)


@dataclass(frozen=True)
class DirtRates:
    """Fraction of rows that get each kind of injected dirt."""

    age_out_of_bounds: float = 0.01  # profile age set to a value <10 or >100 (e.g. 0, 3, 120, 999)
    age_missing: float = 0.01  # profile age field left empty
    garbled_city: float = 0.01  # city as mojibake (e.g. 'HangzhÃ´u'), '???', 'n/a' or blank
    duplicate_log: float = 0.005  # an impression line written twice, identically
    malformed_line: float = 0.001  # an impression line truncated, with an extra field, or non-numeric


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything the generated bytes depend on."""

    seed: int = 0
    n_users: int = 3000
    n_items: int = 2000
    n_days: int = 14
    start_date: str = "2026-01-01"
    n_minor_groups: int = 4
    major_share: float = 0.7  # share of users in the large major preference cluster
    mean_logs_per_user: float = 25.0  # mean impressions per user over all days
    powerlaw_exponent: float = 2.0  # Pareto tail exponent of impressions per user
    chunk_users: int = 100_000  # users generated per chunk (bounded memory)
    dirt: DirtRates = field(default_factory=DirtRates)


@dataclass(frozen=True)
class GeneratedFiles:
    """Paths written by `generate` and their data-line counts (header excluded, dirt included)."""

    out_dir: Path
    user_profile: Path
    item_catalogue: Path
    truth: Path
    manifest: Path
    day_files: tuple[Path, ...]
    n_user_rows: int
    n_item_rows: int
    impressions_per_day: tuple[int, ...]

    @property
    def n_impression_rows(self) -> int:
        """Impression lines over all days."""
        return sum(self.impressions_per_day)


# --------------------------------------------------------------------------- validation


def _validate(config: GeneratorConfig) -> None:
    """Raise ValueError for a config the fixed-width ids or the samplers cannot honour."""
    problems = []
    if config.seed < 0:
        problems.append("seed must be >= 0 (SeedSequence entropy)")
    if not 1 <= config.n_users <= 9_999_999:
        problems.append("n_users must be in [1, 9_999_999] (7-digit user ids)")
    if not 1 <= config.n_items <= 999_999:
        problems.append("n_items must be in [1, 999_999] (6-digit item ids)")
    if config.n_days < 1:
        problems.append("n_days must be >= 1")
    if config.n_minor_groups < 0:
        problems.append("n_minor_groups must be >= 0")
    if not 0.0 < config.major_share <= 1.0:
        problems.append("major_share must be in (0, 1]")
    if not config.mean_logs_per_user > MIN_LOGS_PER_USER:
        problems.append(f"mean_logs_per_user must exceed {MIN_LOGS_PER_USER}")
    if not config.powerlaw_exponent > 0:
        problems.append("powerlaw_exponent must be > 0")
    if config.chunk_users < 1:
        problems.append("chunk_users must be >= 1")
    rates = dataclasses.asdict(config.dirt)
    if any(not 0.0 <= r <= 1.0 for r in rates.values()):
        problems.append("dirt rates must be in [0, 1]")
    if config.dirt.age_out_of_bounds + config.dirt.age_missing > 1:
        problems.append("age_out_of_bounds + age_missing must be <= 1")
    if config.dirt.duplicate_log + config.dirt.malformed_line > 1:
        problems.append("duplicate_log + malformed_line must be <= 1")
    try:
        if not _ten_digit_days(config.start_date, 0, config.n_days - 1):
            problems.append("start_date and n_days give timestamps that are not 10 digits")
    except ValueError as err:
        problems.append(f"start_date is not an ISO date: {err}")
    if problems:
        raise ValueError("invalid GeneratorConfig: " + "; ".join(problems))


# --------------------------------------------------------------------------- random streams


def _rng(seed: int, purpose: int, chunk: int = 0, day: int = 0) -> np.random.Generator:
    """The independent stream for (seed, purpose, chunk, day)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, chunk, day])))


def _cdf(pmf: np.ndarray) -> np.ndarray:
    """Cumulative distribution whose last entry is exactly 1 (so searchsorted never overflows)."""
    cdf = np.cumsum(pmf / pmf.sum(axis=-1, keepdims=True), axis=-1)
    cdf[..., -1] = 1.0
    return cdf


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sample: value index for each uniform in `u`."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.shape[-1] - 1)


def _zipf(n: int, exponent: float) -> np.ndarray:
    """Zipf-like weights over ranks 1..n."""
    return np.arange(1, n + 1, dtype=float) ** -exponent


# --------------------------------------------------------------------------- the fixed world


@dataclass(frozen=True)
class _World:
    """Everything shared by all users: catalogue, tastes, feature distributions, calendar."""

    item_category: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray  # 0-based price level
    item_cdf: np.ndarray  # exposure (popularity) distribution over items
    taste: np.ndarray  # (groups, categories, price levels) click logit offsets
    feature_cdfs: dict[str, np.ndarray]  # feature -> (groups, values) cdf
    group_cdf: np.ndarray
    day_weights: np.ndarray  # relative activity of days 0..n_days-1
    count_scale: float  # Lomax scale giving the configured mean impressions
    count_cap: int


def _feature_pmfs(shape: np.ndarray, top_mass: tuple[float, float], n_minor: int, ordinal: bool) -> np.ndarray:
    """(1 + n_minor, V) pmfs: row 0 the major cluster, then each minor group.

    The major cluster puts `top_mass[0]` on the ceil(30%) values that `shape` ranks
    highest; minor groups put only `top_mass[1]` there and favour a block of rare values
    of their own, so the rule-based minor label correlates with, but is not, the truth.
    """
    n_values = shape.size
    n_top = math.ceil(_TOP_SHARE * n_values)
    rank = np.argsort(-shape, kind="stable")
    top, rare = rank[:n_top], rank[n_top:]
    major = np.zeros(n_values)
    major[top] = top_mass[0] * shape[top] / shape[top].sum()
    if rare.size:
        major[rare] = (1 - top_mass[0]) * shape[rare] / shape[rare].sum()
    else:
        major[top] = shape[top] / shape[top].sum()
    rows = [major]
    # Ordinal features (age) get contiguous rare windows; categorical ones a round robin.
    rare_order = np.sort(rare) if ordinal else rare
    if n_minor == 0:
        blocks = []
    elif ordinal:
        blocks = np.array_split(rare_order, n_minor)
    else:
        blocks = [rare_order[k::n_minor] for k in range(n_minor)]
    for block in blocks:
        pmf = np.zeros(n_values)
        if rare.size == 0:
            pmf[top] = shape[top] / shape[top].sum()
            rows.append(pmf)
            continue
        pmf[top] = top_mass[1] * shape[top] / shape[top].sum()
        rare_mass = 1 - top_mass[1]
        others = np.setdiff1d(rare, block)
        if block.size and others.size:
            pmf[block] = rare_mass * _MINOR_BLOCK_MASS / block.size
            pmf[others] = rare_mass * (1 - _MINOR_BLOCK_MASS) / others.size
        else:
            pmf[rare] = rare_mass / rare.size
        rows.append(pmf)
    return np.vstack(rows)


def _build_world(config: GeneratorConfig) -> _World:
    """Derive the shared structure from `config.seed` alone (plus sizes)."""
    rng = _rng(config.seed, _STRUCTURE)
    n_cat = len(CATEGORIES)
    n_groups = 1 + config.n_minor_groups

    # Catalogue: skewed category sizes, brands nested in categories, category price bands.
    cat_pmf = _zipf(n_cat, 0.8)
    item_category = _draw(_cdf(cat_pmf), rng.random(config.n_items))
    brand_category = np.concatenate([np.arange(n_cat), _draw(_cdf(cat_pmf), rng.random(N_BRANDS - n_cat))])
    item_brand = np.empty(config.n_items, dtype=np.int64)
    brand_u = rng.random(config.n_items)
    for c in range(n_cat):
        brands = np.flatnonzero(brand_category == c)
        members = item_category == c
        item_brand[members] = brands[_draw(_cdf(_zipf(brands.size, 1.0)), brand_u[members])]
    price_centre = rng.uniform(1.0, 3.5, n_cat)
    item_price = np.clip(np.rint(price_centre[item_category] + rng.normal(0, 1.0, config.n_items)), 0, PRICE_LEVELS - 1)
    item_price = item_price.astype(np.int64)
    popularity = np.empty(config.n_items)
    popularity[rng.permutation(config.n_items)] = _zipf(config.n_items, 0.8)
    item_cdf = _cdf(popularity)

    # Tastes: the major cluster likes what is popular; minor clusters like niches of their own.
    log_pop = np.log(np.bincount(item_category, minlength=n_cat) + 1.0)
    pop_z = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12)
    cat_taste = np.empty((n_groups, n_cat))
    cat_taste[0] = 0.6 * rng.normal(0, 1, n_cat) + 0.5 * pop_z
    price_taste = np.empty((n_groups, PRICE_LEVELS))
    price_taste[0] = rng.normal(0, 0.3, PRICE_LEVELS) - 0.2 * (np.arange(PRICE_LEVELS) - 1.5) ** 2 / 2
    for g in range(1, n_groups):
        cat_taste[g] = 1.5 * rng.normal(0, 1, n_cat) - 0.4 * pop_z
        price_taste[g] = rng.normal(0, 0.8, PRICE_LEVELS)
    taste = cat_taste[:, :, None] + price_taste[:, None, :]
    # Centre each group's taste on what it is shown, so the overall click rate is set by
    # the base logit rather than by the luck of the taste draws.
    exposure = np.zeros((n_cat, PRICE_LEVELS))
    np.add.at(exposure, (item_category, item_price), np.diff(item_cdf, prepend=0.0))
    taste -= (taste * exposure).sum(axis=(1, 2), keepdims=True)

    # User feature marginals: skewed for the major cluster, rare-leaning for minor groups.
    ages = np.arange(AGE_MIN, AGE_MAX + 1, dtype=float)
    age_shape = np.exp(-0.5 * ((ages - 27) / 6) ** 2) + 0.15 * np.exp(-0.5 * ((ages - 42) / 10) ** 2) + 0.004
    k = config.n_minor_groups
    feature_cdfs = {
        "age": _cdf(_feature_pmfs(age_shape, _TOP_MASS["age"], k, ordinal=True)),
        "gender": _cdf(_feature_pmfs(np.array([0.6, 0.4]), _TOP_MASS["gender"], k, ordinal=False)),
        "city": _cdf(_feature_pmfs(_zipf(len(CITIES), 1.1), _TOP_MASS["city"], k, ordinal=False)),
        "segment": _cdf(_feature_pmfs(_zipf(len(SEGMENTS), 0.9), _TOP_MASS["segment"], k, ordinal=False)),
        "spend": _cdf(_feature_pmfs(np.array([0.12, 0.36, 0.30, 0.14, 0.08]), _TOP_MASS["spend"], k, ordinal=True)),
    }
    group_pmf = np.concatenate([[config.major_share], np.full(k, (1 - config.major_share) / max(k, 1))])
    if k == 0:
        group_pmf = np.ones(1)

    weekday = np.array([_weekday(config.start_date, d) for d in range(config.n_days)])
    day_weights = np.where(weekday >= 5, _WEEKEND_WEIGHT, 1.0)

    return _World(
        item_category=item_category,
        item_brand=item_brand,
        item_price=item_price,
        item_cdf=item_cdf,
        taste=taste,
        feature_cdfs=feature_cdfs,
        group_cdf=_cdf(group_pmf),
        day_weights=day_weights,
        count_scale=_lomax_scale(config.mean_logs_per_user, config.powerlaw_exponent, _count_cap(config)),
        count_cap=_count_cap(config),
    )


def _count_cap(config: GeneratorConfig) -> int:
    return max(MIN_LOGS_PER_USER, int(MAX_LOGS_FACTOR * config.mean_logs_per_user))


def _lomax_scale(mean: float, alpha: float, cap: int) -> float:
    """Scale s with E[min(2 + s*Lomax(alpha), cap)] = mean, found by bisection.

    The cap trims the heavy tail, so the uncapped formula s = (mean - 2)(alpha - 1)
    would undershoot the mean (and does not exist for alpha <= 1).
    """
    room = cap - MIN_LOGS_PER_USER
    target = mean - MIN_LOGS_PER_USER

    def capped_mean(s: float) -> float:
        if abs(alpha - 1.0) < 1e-9:
            return s * math.log1p(room / s)
        return s / (alpha - 1) * (1 - (1 + room / s) ** (1 - alpha))

    lo, hi = 1e-9, 1e9
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if capped_mean(mid) < target else (lo, mid)
    return math.sqrt(lo * hi)


# --------------------------------------------------------------------------- calendar


def _day_start(start_date: str, day_index: int) -> int:
    """Unix seconds at 00:00 UTC of day `day_index` after `start_date`."""
    day = dt.date.fromisoformat(start_date) + dt.timedelta(days=day_index)
    return calendar.timegm(day.timetuple())


def _ten_digit_days(start_date: str, first: int, last: int) -> bool:
    """Whether every second of days first..last fits the fixed 10-digit ts field."""
    try:
        return _day_start(start_date, first) >= 1_000_000_000 and _day_start(start_date, last + 1) <= 9_999_999_999
    except OverflowError:
        return False


def _weekday(start_date: str, day_index: int) -> int:
    return (dt.date.fromisoformat(start_date) + dt.timedelta(days=day_index)).weekday()


def day_path(out_dir: Path, config: GeneratorConfig, day_index: int) -> Path:
    """Path of day `day_index`'s impression file."""
    day = dt.date.fromisoformat(config.start_date) + dt.timedelta(days=day_index)
    return Path(out_dir) / "logs" / f"dt={day.isoformat()}" / "impressions.csv"


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class _Users:
    """One chunk of users: ids, latent group, features (value indices) and activity."""

    ids: np.ndarray  # 1-based user numbers
    group: np.ndarray
    features: dict[str, np.ndarray]
    bias: np.ndarray  # per-user click logit offset (incl. intent)
    total: np.ndarray  # impressions over the configured days
    day_counts: np.ndarray  # (users, n_days)


def _n_chunks(config: GeneratorConfig) -> int:
    return -(-config.n_users // config.chunk_users)


def _make_users(config: GeneratorConfig, world: _World, chunk: int) -> _Users:
    """Users of chunk `chunk`, from that chunk's own stream."""
    rng = _rng(config.seed, _USERS, chunk)
    first = chunk * config.chunk_users
    n = min(config.chunk_users, config.n_users - first)
    group = _draw(world.group_cdf, rng.random(n))
    features = {}
    for name, cdfs in world.feature_cdfs.items():
        u = rng.random(n)
        values = np.empty(n, dtype=np.int64)
        for g in range(cdfs.shape[0]):
            members = group == g
            values[members] = _draw(cdfs[g], u[members])
        features[name] = values
    total = np.rint(MIN_LOGS_PER_USER + world.count_scale * rng.pareto(config.powerlaw_exponent, n))
    total = np.minimum(total, world.count_cap).astype(np.int64)
    intent = np.maximum(_INTENT_SLOPE * (math.log(config.mean_logs_per_user) - np.log(total)), _INTENT_FLOOR)
    bias = rng.normal(0.0, _USER_BIAS_SD, n) + intent
    day_counts = rng.multinomial(total, world.day_weights / world.day_weights.sum())
    return _Users(
        ids=np.arange(first + 1, first + n + 1, dtype=np.int64),
        group=group,
        features=features,
        bias=bias,
        total=total,
        day_counts=np.asarray(day_counts, dtype=np.int64).reshape(n, config.n_days),
    )


def _garble_city(city: str, kind: int, param: int) -> str:
    """A mojibake city (accented vowel, UTF-8 read as latin-1) or a junk token."""
    if kind < len(_BAD_CITY_TOKENS):
        return _BAD_CITY_TOKENS[kind]
    vowels = [i for i, ch in enumerate(city) if ch in _ACCENTS]
    pos = vowels[param % len(vowels)]
    accents = _ACCENTS[city[pos]]
    accented = city[:pos] + accents[(param // 7) % len(accents)] + city[pos + 1 :]
    return accented.encode("utf-8").decode("latin-1")


def _profile_lines(config: GeneratorConfig, users: _Users, chunk: int) -> tuple[str, str]:
    """user_profile.csv and _truth rows of one chunk (dirt from the chunk's dirt stream)."""
    rng = _rng(config.seed, _PROFILE_DIRT, chunk)
    n = users.ids.size
    # All dirt draws happen unconditionally so the dirty rows are stable in the rates.
    u_age, bad_age, u_city = rng.random(n), rng.integers(0, len(_BAD_AGES), n), rng.random(n)
    city_kind = rng.integers(0, len(_BAD_CITY_TOKENS) + 3, n)  # mojibake is the likeliest kind
    city_param = rng.integers(0, 1 << 30, n)
    rates = config.dirt
    oob = u_age < rates.age_out_of_bounds
    missing = (u_age >= rates.age_out_of_bounds) & (u_age < rates.age_out_of_bounds + rates.age_missing)
    garbled = u_city < rates.garbled_city

    ages = (users.features["age"] + AGE_MIN).astype(str).astype(object)
    ages[oob] = np.asarray(_BAD_AGES, dtype=object)[bad_age[oob]]
    ages[missing] = ""
    cities = np.asarray(CITIES, dtype=object)[users.features["city"]]
    for i in np.flatnonzero(garbled):
        cities[i] = _garble_city(cities[i], int(city_kind[i]), int(city_param[i]))
    genders = np.asarray(GENDERS, dtype=object)[users.features["gender"]]
    segments = np.asarray(SEGMENTS, dtype=object)[users.features["segment"]]
    spends = users.features["spend"] + 1
    group_names = ["major"] + [f"minor_{g}" for g in range(1, config.n_minor_groups + 1)]
    profile, truth = [], []
    for uid, age, gender, city, segment, spend, g in zip(
        users.ids.tolist(), ages, genders, cities, segments, spends.tolist(), users.group.tolist()
    ):
        profile.append(f"u{uid:07d},{age},{gender},{city},{segment},{spend}\n")
        truth.append(f"u{uid:07d},{group_names[g]}\n")
    return "".join(profile), "".join(truth)


# --------------------------------------------------------------------------- impressions


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digit bytes of non-negative integers, zero padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def _fixed_lines(uid: np.ndarray, item: np.ndarray, ts: np.ndarray, clicked: np.ndarray) -> np.ndarray:
    """(n, 30) bytes, one 'u#######,i######,##########,#\\n' line per row.

    Every field is fixed width, so a whole chunk-day is formatted by array arithmetic
    instead of a Python loop over tens of millions of lines.
    """
    n = uid.size
    out = np.empty((n, 30), dtype=np.uint8)
    out[:, 0] = ord("u")
    out[:, 1:8] = _digits(uid, 7)
    out[:, 8] = ord(",")
    out[:, 9] = ord("i")
    out[:, 10:16] = _digits(item, 6)
    out[:, 16] = ord(",")
    out[:, 17:27] = _digits(ts, 10)
    out[:, 27] = ord(",")
    out[:, 28] = clicked.astype(np.uint8) + ord("0")
    out[:, 29] = ord("\n")
    return out


def _malform(line: str, kind: int, param: int) -> str:
    """A broken version of a clean line (without its newline)."""
    if kind == 0:  # truncated: a writer died mid-line
        return line[: 1 + param % (len(line) - 1)]
    if kind == 1:  # an extra field from a newer client
        return line + "," + _EXTRA_FIELDS[param % len(_EXTRA_FIELDS)]
    fields = line.split(",")
    if param % 2 == 0:  # non-numeric timestamp
        tokens = _NON_NUMERIC + _NON_NUMERIC_TS
        fields[2] = tokens[(param // 2) % len(tokens)]
    else:  # non-numeric click flag
        fields[3] = _NON_NUMERIC[(param // 2) % len(_NON_NUMERIC)]
    return ",".join(fields)


def _day_chunk_bytes(config: GeneratorConfig, world: _World, users: _Users, chunk: int, day: int) -> tuple[list[bytes], int]:
    """Impression lines of one chunk for one day, as byte segments, and their line count."""
    rng = _rng(config.seed, _LOGS, chunk, day)
    if day < config.n_days:
        counts = users.day_counts[:, day]
    else:
        # Past the configured horizon each user keeps its average daily activity.
        weight = _WEEKEND_WEIGHT if _weekday(config.start_date, day) >= 5 else 1.0
        counts = rng.poisson(users.total * weight / world.day_weights.sum())
    owner = np.repeat(np.arange(users.ids.size), counts)
    m = owner.size
    item = _draw(world.item_cdf, rng.random(m))
    hour = _draw(_cdf(_HOUR_WEIGHTS), rng.random(m))
    ts = _day_start(config.start_date, day) + hour * 3600 + rng.integers(0, 3600, m)
    group = users.group[owner]
    logit = (
        _CLICK_BASE_LOGIT
        + world.taste[group, world.item_category[item], world.item_price[item]]
        + users.bias[owner]
    )
    clicked = rng.random(m) < 1.0 / (1.0 + np.exp(-logit))
    uid = users.ids[owner]
    order = np.lexsort((item, uid, ts))  # time ordered, as a log writer would emit them
    uid, item, ts, clicked = uid[order], item[order], ts[order], clicked[order]

    dirt = _rng(config.seed, _LOG_DIRT, chunk, day)
    u, kind, param = dirt.random(m), dirt.integers(0, 3, m), dirt.integers(0, 1 << 30, m)
    rates = config.dirt
    malformed = u < rates.malformed_line
    duplicate = (u >= rates.malformed_line) & (u < rates.malformed_line + rates.duplicate_log)
    rows = np.repeat(np.arange(m), 1 + duplicate)  # a duplicate sits right after its original
    lines = _fixed_lines(uid[rows], item[rows] + 1, ts[rows], clicked[rows])  # ids are 1-based
    segments: list[bytes] = []
    start = 0
    for pos in np.flatnonzero(malformed[rows]):
        segments.append(lines[start:pos].tobytes())
        r = rows[pos]
        clean = lines[pos, :-1].tobytes().decode("ascii")
        segments.append((_malform(clean, int(kind[r]), int(param[r])) + "\n").encode("ascii"))
        start = pos + 1
    segments.append(lines[start:].tobytes())
    return segments, rows.size


# --------------------------------------------------------------------------- writing


def _tmp(path: Path) -> Path:
    """In-progress name: hidden, so globs for the final name never see a partial file."""
    return path.with_name(f".{path.name}.inprogress")


class _HashingWriter:
    """Appends to a file while hashing what was written."""

    def __init__(self, path: Path, header: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.final = path
        self.tmp = _tmp(path)
        self.hash = hashlib.sha256()
        self.rows = 0
        self._handle: IO[bytes] = self.tmp.open("wb")
        self.write([(header + "\n").encode("utf-8")], 0)

    def write(self, segments: list[bytes], rows: int) -> None:
        for segment in segments:
            self._handle.write(segment)
            self.hash.update(segment)
        self.rows += rows

    def commit(self) -> None:
        self._handle.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self._handle.close()
        self.tmp.unlink(missing_ok=True)


def _item_text(world: _World) -> str:
    lines = [
        f"i{i + 1:06d},{CATEGORIES[c]},b{b + 1:04d},{p + 1}\n"
        for i, (c, b, p) in enumerate(zip(world.item_category.tolist(), world.item_brand.tolist(), world.item_price.tolist()))
    ]
    return "".join(lines)


def generate(out_dir: Path, config: GeneratorConfig) -> GeneratedFiles:
    """Write every file of the layout for `config`; return the paths and row counts.

    Each file appears atomically (written under a hidden name, then renamed). Day files
    already in `out_dir` beyond `n_days` are left alone.
    """
    _validate(config)
    out_dir = Path(out_dir)
    world = _build_world(config)
    writers: list[_HashingWriter] = []

    def open_writer(path: Path, header: str) -> _HashingWriter:
        writer = _HashingWriter(path, header)
        writers.append(writer)
        return writer

    try:
        items = open_writer(out_dir / "item_catalogue.csv", ITEM_HEADER)
        items.write([_item_text(world).encode("utf-8")], config.n_items)
        profile = open_writer(out_dir / "user_profile.csv", USER_HEADER)
        truth = open_writer(out_dir / "_truth" / "user_groups.csv", TRUTH_HEADER)
        days = [open_writer(day_path(out_dir, config, d), LOG_HEADER) for d in range(config.n_days)]
        for chunk in range(_n_chunks(config)):
            users = _make_users(config, world, chunk)
            profile_text, truth_text = _profile_lines(config, users, chunk)
            profile.write([profile_text.encode("utf-8")], users.ids.size)
            truth.write([truth_text.encode("utf-8")], users.ids.size)
            for d, writer in enumerate(days):
                segments, rows = _day_chunk_bytes(config, world, users, chunk, d)
                writer.write(segments, rows)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.commit()

    manifest = {
        "generator": "assets.taobao_generator",
        "format_version": 1,
        "config": dataclasses.asdict(config),
        "files": {
            w.final.relative_to(out_dir).as_posix(): {"rows": w.rows, "sha256": w.hash.hexdigest()} for w in writers
        },
    }
    manifest_path = out_dir / "_manifest.json"
    tmp = _tmp(manifest_path)
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return GeneratedFiles(
        out_dir=out_dir,
        user_profile=profile.final,
        item_catalogue=items.final,
        truth=truth.final,
        manifest=manifest_path,
        day_files=tuple(w.final for w in days),
        n_user_rows=profile.rows,
        n_item_rows=items.rows,
        impressions_per_day=tuple(w.rows for w in days),
    )


def generate_day(out_dir: Path, config: GeneratorConfig, day_index: int) -> Path:
    """Write (or rewrite) only day `day_index`'s impression file and return its path.

    For `day_index < n_days` the bytes equal those `generate` wrote for that day; a
    later index is a new day of logs from the same users. Profiles, catalogue, truth and
    manifest are not touched.
    """
    _validate(config)
    if day_index < 0 or not _ten_digit_days(config.start_date, day_index, day_index):
        raise ValueError(f"day_index {day_index} is negative or its timestamps are not 10 digits")
    world = _build_world(config)
    writer = _HashingWriter(day_path(Path(out_dir), config, day_index), LOG_HEADER)
    try:
        for chunk in range(_n_chunks(config)):
            users = _make_users(config, world, chunk)
            segments, rows = _day_chunk_bytes(config, world, users, chunk, day_index)
            writer.write(segments, rows)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return writer.final
