"""Tests of the synthetic Taobao-like raw-file generator."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from assets.taobao_generator import (
    CATEGORIES,
    CITIES,
    SEGMENTS,
    DirtRates,
    GeneratorConfig,
    day_path,
    generate,
    generate_day,
)

NO_DIRT = DirtRates(0.0, 0.0, 0.0, 0.0, 0.0)
# Several chunks on purpose: determinism and day regeneration must hold across chunk seams.
SMALL = GeneratorConfig(seed=7, n_users=500, n_items=300, n_days=3, chunk_users=180)
MEDIUM_CLEAN = GeneratorConfig(seed=3, n_users=4000, n_items=600, n_days=7, chunk_users=1500, dirt=NO_DIRT)
DIRTY = dataclasses.replace(MEDIUM_CLEAN, dirt=DirtRates(0.05, 0.05, 0.05, 0.05, 0.05))

USER_ID = re.compile(r"^u\d{7}$")
ITEM_ID = re.compile(r"^i\d{6}$")
FEATURES = ("age", "gender", "city", "segment", "spend_level")


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def data_lines(path: Path) -> list[str]:
    """The lines after the header, without line ends."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text.split("\n")[1:-1]


def parse_impression(line: str) -> tuple[str, str, int, int] | None:
    """(user, item, ts, clicked) of a well-formed line, else None."""
    fields = line.split(",")
    if len(fields) != 4 or not USER_ID.match(fields[0]) or not ITEM_ID.match(fields[1]):
        return None
    if not fields[2].isdigit() or fields[3] not in ("0", "1"):
        return None
    return fields[0], fields[1], int(fields[2]), int(fields[3])


def profile_rows(root: Path) -> list[dict[str, str]]:
    return [dict(zip(("user_id", *FEATURES), line.split(","))) for line in data_lines(root / "user_profile.csv")]


def truth(root: Path) -> dict[str, str]:
    return dict(line.split(",") for line in data_lines(root / "_truth" / "user_groups.csv"))


def rule_major(rows: list[dict[str, str]]) -> list[bool]:
    """The paper's rule: major when more than two features take one of the feature's top ceil(30%) values."""
    tops = {}
    for feature in FEATURES:
        counts = collections.Counter(row[feature] for row in rows)
        tops[feature] = {value for value, _ in counts.most_common(math.ceil(0.3 * len(counts)))}
    return [sum(row[f] in tops[f] for f in FEATURES) > 2 for row in rows]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    generate(root, SMALL)
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    generate(root, MEDIUM_CLEAN)
    return root


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dirty")
    generate(root, DIRTY)
    return root


def test_same_config_gives_byte_identical_files(small: Path, tmp_path: Path) -> None:
    generate(tmp_path, SMALL)
    assert file_hashes(tmp_path) == file_hashes(small)


def test_different_seed_changes_every_data_file(small: Path, tmp_path: Path) -> None:
    generate(tmp_path, dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    before, after = file_hashes(small), file_hashes(tmp_path)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name] != after[name], name


def test_generate_day_equals_that_day_of_generate(small: Path, tmp_path: Path) -> None:
    for day in range(SMALL.n_days):
        path = generate_day(tmp_path, SMALL, day)
        assert path == day_path(tmp_path, SMALL, day)
        assert path.read_bytes() == day_path(small, SMALL, day).read_bytes()
    # Only the day files were written.
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        f"logs/dt=2026-01-0{d + 1}/impressions.csv" for d in range(SMALL.n_days)
    ]


def test_generate_day_rewrites_in_place(small: Path, tmp_path: Path) -> None:
    generate(tmp_path, SMALL)
    target = day_path(tmp_path, SMALL, 1)
    target.write_text("garbage\n")
    generate_day(tmp_path, SMALL, 1)
    assert file_hashes(tmp_path) == file_hashes(small)


def test_new_day_past_the_horizon(small: Path, tmp_path: Path) -> None:
    new_day = SMALL.n_days
    path = generate_day(tmp_path, SMALL, new_day)
    assert path == tmp_path / "logs" / "dt=2026-01-04" / "impressions.csv"
    assert generate_day(tmp_path / "again", SMALL, new_day).read_bytes() == path.read_bytes()
    users = {row["user_id"] for row in profile_rows(small)}
    day_start = 1767225600 + new_day * 86400  # 2026-01-04 00:00 UTC
    parsed = [parse_impression(line) for line in data_lines(path)]
    good = [p for p in parsed if p is not None]
    assert len(good) > 0.9 * len(parsed) > 0
    assert {p[0] for p in good} <= users
    assert all(day_start <= p[2] < day_start + 86400 for p in good)
    assert path.read_bytes() != day_path(small, SMALL, new_day - 1).read_bytes()


def test_layout_headers_and_manifest(small: Path) -> None:
    expected = {
        "_manifest.json",
        "_truth/user_groups.csv",
        "item_catalogue.csv",
        "user_profile.csv",
        *(f"logs/dt=2026-01-0{d + 1}/impressions.csv" for d in range(SMALL.n_days)),
    }
    assert set(file_hashes(small)) == expected
    headers = {
        "user_profile.csv": "user_id,age,gender,city,segment,spend_level",
        "item_catalogue.csv": "item_id,category,brand,price_level",
        "_truth/user_groups.csv": "user_id,true_group",
        **{f"logs/dt=2026-01-0{d + 1}/impressions.csv": "user_id,item_id,ts,clicked" for d in range(SMALL.n_days)},
    }
    for name, header in headers.items():
        assert (small / name).read_text(encoding="utf-8").split("\n", 1)[0] == header, name
    manifest = json.loads((small / "_manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"] == dataclasses.asdict(SMALL)
    assert set(manifest["files"]) == expected - {"_manifest.json"}
    for name, facts in manifest["files"].items():
        assert facts["rows"] == len(data_lines(small / name)), name
        assert facts["sha256"] == hashlib.sha256((small / name).read_bytes()).hexdigest(), name


def test_ids_and_clean_values(clean: Path) -> None:
    rows = profile_rows(clean)
    assert [r["user_id"] for r in rows] == [f"u{i:07d}" for i in range(1, MEDIUM_CLEAN.n_users + 1)]
    for row in rows:
        assert 10 <= int(row["age"]) <= 80
        assert row["gender"] in ("F", "M")
        assert row["city"] in CITIES
        assert row["segment"] in SEGMENTS
        assert row["spend_level"] in {"1", "2", "3", "4", "5"}
    items = [line.split(",") for line in data_lines(clean / "item_catalogue.csv")]
    assert [i[0] for i in items] == [f"i{i:06d}" for i in range(1, MEDIUM_CLEAN.n_items + 1)]
    assert all(i[1] in CATEGORIES and re.match(r"^b\d{4}$", i[2]) and i[3] in "12345" for i in items)
    assert set(truth(clean)) == {r["user_id"] for r in rows}


def test_without_dirt_every_line_parses_and_nothing_repeats(clean: Path) -> None:
    item_ids = {line.split(",")[0] for line in data_lines(clean / "item_catalogue.csv")}
    user_ids = set(truth(clean))
    for day in range(MEDIUM_CLEAN.n_days):
        lines = data_lines(day_path(clean, MEDIUM_CLEAN, day))
        assert len(set(lines)) == len(lines)
        for line in lines:
            parsed = parse_impression(line)
            assert parsed is not None, line
            assert parsed[0] in user_ids and parsed[1] in item_ids


def impressions(root: Path, config: GeneratorConfig) -> list[tuple[str, str, int, int]]:
    out = []
    for day in range(config.n_days):
        out += [p for p in map(parse_impression, data_lines(day_path(root, config, day))) if p]
    return out


def test_activity_is_heavy_tailed_with_a_floor(clean: Path) -> None:
    rows = impressions(clean, MEDIUM_CLEAN)
    per_user = collections.Counter(r[0] for r in rows)
    assert len(per_user) == MEDIUM_CLEAN.n_users  # every user has at least one impression
    assert min(per_user.values()) >= 2
    mean = len(rows) / MEDIUM_CLEAN.n_users
    assert 0.8 * MEDIUM_CLEAN.mean_logs_per_user < mean < 1.2 * MEDIUM_CLEAN.mean_logs_per_user
    assert 8 * mean < max(per_user.values()) <= 50 * MEDIUM_CLEAN.mean_logs_per_user
    assert sorted(per_user.values())[len(per_user) // 2] < mean  # median below mean: right skew


def test_click_rate_and_clicks_per_user(clean: Path) -> None:
    rows = impressions(clean, MEDIUM_CLEAN)
    rate = sum(r[3] for r in rows) / len(rows)
    assert 0.05 <= rate <= 0.15
    clicked_items = collections.defaultdict(set)
    for user, item, _, click in rows:
        if click:
            clicked_items[user].add(item)
    kept = sum(len(items) >= 2 for items in clicked_items.values()) / MEDIUM_CLEAN.n_users
    assert 0.45 < kept < 0.95


def test_dirt_rates_are_roughly_honoured(dirty: Path) -> None:
    rows = profile_rows(dirty)
    n = len(rows)
    ages = [r["age"] for r in rows]
    missing = sum(a == "" for a in ages)
    out_of_bounds = sum(a != "" and not 10 <= int(a) <= 100 for a in ages)
    garbled = sum(r["city"] not in CITIES for r in rows)
    for count in (missing, out_of_bounds, garbled):
        assert 0.03 * n < count < 0.07 * n
    assert any("Ã" in r["city"] for r in rows)  # mojibake, not only placeholders
    assert all("," not in r["city"] for r in rows)

    lines = []
    for day in range(DIRTY.n_days):
        lines += data_lines(day_path(dirty, DIRTY, day))
    good = [line for line in lines if parse_impression(line)]
    malformed = len(lines) - len(good)
    duplicates = len(good) - len(set(good))
    for count in (malformed, duplicates):
        assert 0.035 * len(lines) < count < 0.065 * len(lines)


def test_dirt_only_where_it_belongs(dirty: Path, clean: Path) -> None:
    # The catalogue and truth are clean, and dirt never changes clean values.
    assert (dirty / "item_catalogue.csv").read_bytes() == (clean / "item_catalogue.csv").read_bytes()
    assert truth(dirty) == truth(clean)
    for d_row, c_row in zip(profile_rows(dirty), profile_rows(clean), strict=True):
        for field in ("user_id", "gender", "segment", "spend_level"):
            assert d_row[field] == c_row[field]
        assert d_row["city"] == c_row["city"] or d_row["city"] not in CITIES
        assert d_row["age"] == c_row["age"] or not (d_row["age"].isdigit() and 10 <= int(d_row["age"]) <= 100)
    for day in range(DIRTY.n_days):
        clean_lines = data_lines(day_path(clean, MEDIUM_CLEAN, day))
        dirty_lines = data_lines(day_path(dirty, DIRTY, day))
        good = [line for line in dirty_lines if parse_impression(line)]
        n_malformed = len(dirty_lines) - len(good)
        assert set(good) <= set(clean_lines)
        # A malformed line replaces a clean one; a duplicate adds one.
        assert len(set(good)) == len(clean_lines) - n_malformed


def test_malformed_lines_exist_at_a_small_rate(tmp_path: Path) -> None:
    config = dataclasses.replace(
        MEDIUM_CLEAN, n_users=1500, dirt=DirtRates(0.0, 0.0, 0.0, 0.0, 0.01)
    )
    files = generate(tmp_path, config)
    lines = [line for path in files.day_files for line in data_lines(path)]
    bad = [line for line in lines if parse_impression(line) is None]
    assert 0 < len(bad) < 0.03 * len(lines)
    good = [line for line in lines if parse_impression(line)]
    assert len(set(good)) == len(good)  # no duplicates when their rate is 0
    assert all(r["age"].isdigit() and r["city"] in CITIES for r in profile_rows(tmp_path))


def test_true_groups_follow_major_share(clean: Path, tmp_path: Path) -> None:
    groups = collections.Counter(truth(clean).values())
    assert set(groups) == {"major", *(f"minor_{k}" for k in range(1, MEDIUM_CLEAN.n_minor_groups + 1))}
    assert abs(groups["major"] / MEDIUM_CLEAN.n_users - MEDIUM_CLEAN.major_share) < 0.03
    half = dataclasses.replace(MEDIUM_CLEAN, n_users=2000, n_days=1, major_share=0.5, n_minor_groups=2)
    generate(tmp_path, half)
    groups = collections.Counter(truth(tmp_path).values())
    assert set(groups) == {"major", "minor_1", "minor_2"}
    assert abs(groups["major"] / half.n_users - 0.5) < 0.04


def test_rule_major_share_and_agreement_with_truth(clean: Path) -> None:
    rows = profile_rows(clean)
    rule = rule_major(rows)
    assert 0.55 <= sum(rule) / len(rule) <= 0.85
    true_group = truth(clean)
    is_major = [true_group[r["user_id"]] == "major" for r in rows]
    p_major = sum(r for r, t in zip(rule, is_major) if t) / sum(is_major)
    p_minor = sum(r for r, t in zip(rule, is_major) if not t) / (len(rows) - sum(is_major))
    assert p_major > 0.85 and p_minor < 0.4  # correlated with the truth ...
    assert p_major < 1.0 and p_minor > 0.0  # ... but not identical to it


def test_minor_groups_click_differently(clean: Path) -> None:
    category = {
        line.split(",")[0]: line.split(",")[1] for line in data_lines(clean / "item_catalogue.csv")
    }
    true_group = truth(clean)
    shown: dict[tuple[str, str], int] = collections.Counter()
    clicks: dict[tuple[str, str], int] = collections.Counter()
    for user, item, _, click in impressions(clean, MEDIUM_CLEAN):
        # Major users split in two: their gap is the noise floor for a real taste gap.
        group = true_group[user]
        if group == "major":
            group = f"major_{int(user[1:]) % 2}"
        shown[group, category[item]] += 1
        clicks[group, category[item]] += click

    def gap(a: str, b: str) -> float:
        shared = [c for c in CATEGORIES if shown[a, c] >= 150 and shown[b, c] >= 150]
        assert len(shared) >= 10
        ctr = lambda g, c: clicks[g, c] / shown[g, c]  # noqa: E731
        return sum(abs(ctr(a, c) - ctr(b, c)) for c in shared) / len(shared)

    noise = gap("major_0", "major_1")
    for k in range(1, MEDIUM_CLEAN.n_minor_groups + 1):
        assert gap(f"minor_{k}", "major_0") > 2 * noise, k


def test_invalid_configs_are_rejected(tmp_path: Path) -> None:
    for bad in (
        dataclasses.replace(SMALL, n_users=0),
        dataclasses.replace(SMALL, n_items=1_000_000),
        dataclasses.replace(SMALL, mean_logs_per_user=1.5),
        dataclasses.replace(SMALL, start_date="2026-13-01"),
        dataclasses.replace(SMALL, dirt=DirtRates(age_out_of_bounds=0.7, age_missing=0.7)),
    ):
        with pytest.raises(ValueError):
            generate(tmp_path, bad)
    for day in (-1, 10**7):
        with pytest.raises(ValueError):
            generate_day(tmp_path, SMALL, day)
    assert not any(tmp_path.iterdir())
