"""A click log of positives only (plays, purchases, likes): `dataset add` stops it early, naming the
file, column and value; `label.negatives_per_positive` samples unclicked impressions in cleaning.

Every file here is written by the test itself. Expected counts are derived by hand in comments.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import label_classes, read_custom
from assets.dataset_spec import PositivesOnlyError, SpecError, load_spec, register
from assets.negative_sampling import SAMPLED_SUFFIX, draw_dense, draw_sparse, unseen_item
from pipelines import cli
from pipelines.store import LineageStore

REPO = Path(__file__).resolve().parent.parent

PLAYS_SPEC = """\
name = "plays"
label = {{ kind = "click"{negatives} }}

[interactions]
file = "plays.csv"
user_id = "user"
item_id = "artist"
label = "played"
timestamp = "ts"

[users.features]
user = {{ type = "categorical", column = "user" }}

[items]
file = "artists.csv"
id = "artist"

[items.features]
genre = {{ type = "categorical" }}
"""


def plays_dir(root: Path, plays: dict[str, list[str]], n_items: int, negatives: str = "",
              extra_lines: tuple[str, ...] = ()) -> Path:
    """A positives-only log (plays.csv: user, artist, played = 1, ts), a catalogue of `n_items` artists
    a01, a02, ... (artists.csv) and a dataset.toml whose [label] gets `negatives` (', key = value')."""
    directory = root / "plays"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dataset.toml").write_text(PLAYS_SPEC.format(negatives=negatives), encoding="utf-8")
    artists = ["artist,genre", *(f"a{i:02d},g{i % 3}" for i in range(1, n_items + 1))]
    (directory / "artists.csv").write_text("\n".join(artists) + "\n", encoding="utf-8")
    lines = ["user,artist,played,ts"]
    for n, (user, items) in enumerate(plays.items()):
        lines += [f"{user},{item},1,{1700000000 + 100 * n + k}" for k, item in enumerate(items)]
    (directory / "plays.csv").write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return directory


def artists(*numbers: int) -> list[str]:
    return [f"a{i:02d}" for i in numbers]


# u1 plays 2 of 10 artists; u2 plays 6 and has a rejected row for a07 (appended: label 'x');
# u3 plays every artist; u4 plays 8; u5 plays 1 (too few clicked items: dropped).
HAND_PLAYS = {"u1": artists(1, 2), "u2": artists(*range(1, 7)), "u3": artists(*range(1, 11)),
              "u4": artists(*range(1, 9)), "u5": artists(5)}
HAND_EXTRA = ("u2,a07,x,1700000150",)


def hand_dir(root: Path, negatives: str = ", negatives_per_positive = 2") -> Path:
    return plays_dir(root, HAND_PLAYS, n_items=10, negatives=negatives, extra_lines=HAND_EXTRA)


def cleaned(directory: Path):
    dataset = load_spec(directory)
    return clean_logs_from_raw(read_custom(dataset), dataset.spec)


def test_dataset_add_stops_a_positives_only_log_naming_file_column_and_value(tmp_path, monkeypatch):
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))
    directory = hand_dir(tmp_path, negatives="")
    # 28 lines of data: 2 + 6 + 10 + 8 + 1 plays labelled 1, and u2's 'x' (not a number, not counted).
    assert label_classes(load_spec(directory).interactions, "played").__dict__ == {
        "rows": 28, "zeros": 0, "ones": 27, "one_as": "1", "stray_booleans": 0}
    with pytest.raises(SystemExit, match=r"^error: .*dataset.toml: plays/plays.csv \(.*plays.csv\): every label in column "
                                         r"'played' that is a number is '1' \(27 rows\), none is 0: .*"
                                         r"Add negatives_per_positive = 4 to \[label\]"):
        cli.main(["dataset", "add", str(directory)])
    assert not (tmp_path / "home" / "datasets" / "plays.toml").exists()  # not registered
    # One unclicked row is enough: the log is an ordinary click log.
    with (directory / "plays.csv").open("a", encoding="utf-8") as log:
        log.write("u1,a07,0,1700000001\n")
    assert register(directory)[0].spec.negatives_per_positive == 0


SCAN_SPEC = """\
name = "scan"
label = {{ kind = "click" }}
[interactions]
file = "{file}"
{layout}user_id = "user"
item_id = "artist"
label = "played"
[users.features]
user = {{ type = "categorical" }}
[items.features]
artist = {{ type = "categorical" }}
"""
HEADERLESS = 'separator = "{}"\nquote = ""\nheader = false\nencoding = "latin-1"\ncolumns = ["user", "artist", "played"]\n'


@pytest.mark.parametrize("write", ["quoted", "unquoted", "multichar", "multichar-cr", "parquet", "pattern"])
def test_the_label_scan_reads_every_layout_a_spec_may_declare(tmp_path, monkeypatch, write):
    monkeypatch.setenv("PAML_HOME", str(tmp_path / "home"))  # should `register` pass, it registers there
    directory = tmp_path / "log"
    directory.mkdir()
    rows = [("u1", "a01", "1"), ("u1", "a02", "1.0"), ("u2", "a01", " 1 ")]
    file, layout = "plays.csv", ""
    if write == "quoted":  # a quoted separator and CRLF line ends
        (directory / file).write_text("user,artist,played\n" + "".join(f'"{u}","{a}, x",{v}\r\n' for u, a, v in rows))
    elif write in ("unquoted", "multichar", "multichar-cr"):  # the last with old Mac line ends (CR alone)
        separator = "\t" if write == "unquoted" else "::"
        line_end = "\r" if write == "multichar-cr" else "\n"
        (directory / file).write_bytes("".join(separator.join(r) + line_end for r in rows).encode("latin-1"))
        layout = HEADERLESS.format(separator.replace("\t", "\\t"))
    elif write == "parquet":
        file = "plays.parquet"
        pl.DataFrame({"user": [r[0] for r in rows], "artist": [r[1] for r in rows], "played": [1, 1, 1]}).write_parquet(
            directory / file)
    else:  # a log in one file per day
        file = "day*/plays.csv"
        for day, row in enumerate(rows):
            (directory / f"day{day}").mkdir()
            (directory / f"day{day}" / "plays.csv").write_text("user,artist,played\n" + ",".join(row) + "\n")
    (directory / "dataset.toml").write_text(SCAN_SPEC.format(file=file, layout=layout))
    found = label_classes(load_spec(directory).interactions, "played")
    assert (found.rows, found.zeros, found.ones) == (3, 0, 3)
    with pytest.raises(PositivesOnlyError, match="every label in column 'played' that is a number is"):
        register(directory)


def test_negatives_options_are_checked(tmp_path):
    directory = hand_dir(tmp_path)
    spec = directory / "dataset.toml"
    text = spec.read_text()
    for negatives, message in ((", negatives_per_positive = 0", r"label.negatives_per_positive: expected a whole number "
                                r"of sampled negatives per positive, 1 or more .* \(found 0\)"),
                               (", negatives_per_positive = 2.5", r"label.negatives_per_positive: expected a whole "
                                r"number \(found 2.5\)"),
                               (", negatives_seed = 3", r"label.negatives_seed: needs negatives_per_positive"),
                               (", negatives_per_positive = 1, negatives_seed = -1", r"label.negatives_seed: expected "
                                r"a whole number, 0 or more \(found -1\)")):
        spec.write_text(text.replace(", negatives_per_positive = 2", negatives))
        with pytest.raises(SpecError, match=message):
            load_spec(directory)
    rating = text.replace('kind = "click", negatives_per_positive = 2', 'kind = "rating", min = 1, max = 5, '
                          "negatives_per_positive = 2")
    spec.write_text(rating)
    with pytest.raises(SpecError, match=r"label.negatives_per_positive: applies to click logs \(kind = \"click\"\) of "
                                        r"positives only; a rating log's labels are the ratings themselves.* \(found 2\)"):
        load_spec(directory)


def test_sampled_negatives_by_hand(tmp_path):
    bundle = cleaned(hand_dir(tmp_path))
    interactions = bundle.frame("interactions")
    sampled = interactions.filter(pl.col("source_file").str.ends_with(SAMPLED_SUFFIX))
    # k = 2; per user min(2 x positives, artists without any row of the user):
    # u1 min(4, 10 - 2) = 4; u2 min(12, 10 - 7) = 3, exactly a08..a10 (its rejected a07 row counts as a row);
    # u3 min(20, 0) = 0; u4 min(16, 2) = 2, exactly a09 and a10; u5 was dropped (1 clicked item).
    assert sampled.group_by("user_id").len().sort("user_id").rows() == [("u1", 4), ("u2", 3), ("u4", 2)]
    assert sampled.filter(pl.col("user_id") == "u2")["item_id"].sort().to_list() == ["a08", "a09", "a10"]
    assert sampled.filter(pl.col("user_id") == "u4")["item_id"].sort().to_list() == ["a09", "a10"]
    assert bundle.info["sampled_negatives"] == 9
    assert (bundle.info["users_short_of_negatives"], bundle.info["users_without_negatives"]) == (3, 1)  # u2-u4; u3
    assert set(sampled["label"]) == {0.0} and set(interactions.filter(~pl.col("source_file").str.ends_with(SAMPLED_SUFFIX))
                                                  ["label"]) == {1.0}
    # Never an artist the user has a row for in the file, kept or rejected; never twice.
    raw = pl.read_csv(tmp_path / "plays" / "plays.csv", infer_schema=False)
    assert sampled.join(raw, left_on=["user_id", "item_id"], right_on=["user", "artist"], how="semi").height == 0
    assert not sampled.select("user_id", "item_id").is_duplicated().any()
    # Each sampled row carries a positive of its user: its line and time, at most k per positive.
    positives = interactions.filter(pl.col("label") == 1)
    anchored = sampled.join(positives, on=["user_id", "line", "ts"], how="semi")
    assert anchored.height == sampled.height and sampled.group_by("user_id", "line").len()["len"].max() <= 2
    assert set(sampled["source_file"]) == {"plays/plays.csv" + SAMPLED_SUFFIX}
    # Sampled rows are not read rows: the log's 28 lines are 26 kept + 2 rejected (u2's 'x', u5's play).
    accounting = bundle.frame("accounting").filter(pl.col("source_file") == "plays/plays.csv")
    assert accounting.select("read", "kept", "rejected").row(0) == (28, 26, 2)
    assert interactions.height == 26 + 9
    # The same spec and files give the same rows; another seed other rows.
    assert cleaned(tmp_path / "plays").frame("interactions").equals(interactions)
    spec = tmp_path / "plays" / "dataset.toml"
    spec.write_text(spec.read_text().replace("negatives_per_positive = 2", "negatives_per_positive = 2, negatives_seed = 1"))
    reseeded = cleaned(tmp_path / "plays").frame("interactions")
    assert reseeded.height == interactions.height and not reseeded.equals(interactions)


def test_a_k_beyond_the_catalogue_gives_every_unseen_item(tmp_path):
    # TOML's largest integer: k x positives is past int64 for every user, and was wrapped around,
    # so users got fewer negatives or none, and the info counted them wrongly. Any k above the
    # catalogue means every artist the user has no row for: u1 10 - 2 = 8, u2 10 - 7 = 3, u3 0, u4 2.
    bundle = cleaned(hand_dir(tmp_path, negatives=", negatives_per_positive = 9223372036854775807"))
    sampled = bundle.frame("interactions").filter(pl.col("source_file").str.ends_with(SAMPLED_SUFFIX))
    assert sampled.group_by("user_id").len().sort("user_id").rows() == [("u1", 8), ("u2", 3), ("u4", 2)]
    assert (bundle.info["sampled_negatives"], bundle.info["users_short_of_negatives"],
            bundle.info["users_without_negatives"]) == (13, 4, 1)  # every user short of k per positive; u3 without
    # Each is drawn for its user's first positive (draw i of a user is for positive i // k).
    first = bundle.frame("interactions").filter(pl.col("label") == 1).group_by("user_id").agg(pl.col("line").min())
    assert sampled.join(first, on=["user_id", "line"], how="anti").height == 0
    # The same rows as with k = 11, the smallest k above the catalogue's 10 artists.
    same = cleaned(hand_dir(tmp_path / "eleven", negatives=", negatives_per_positive = 11")).frame("interactions")
    assert same.equals(bundle.frame("interactions"))


def test_draws_are_uniform_distinct_and_map_to_unseen_items():
    # The r-th unseen item, against a brute force over every seen set of a 5-item catalogue.
    seen_sets = [[], [0], [4], [1, 3], [0, 1, 2], [0, 2, 4], [1, 2, 3, 4]]
    seen_owner = np.array([u for u, s in enumerate(seen_sets) for _ in s], dtype=np.int64)
    seen_item = np.array([i for s in seen_sets for i in s], dtype=np.int64)
    for user, seen in enumerate(seen_sets):
        unseen = [i for i in range(5) if i not in seen]
        found = unseen_item(np.full(len(unseen), user), np.arange(len(unseen)), seen_owner, seen_item, len(seen_sets), 5)
        assert found.tolist() == unseen
    # Both draws give distinct ranks in range, as many as needed, and every rank about equally often.
    need, unseen = np.array([3, 4]), np.array([12, 6])
    counts = np.zeros((2, 12))
    rng = np.random.default_rng(0)
    for _ in range(3000):
        for draw, user in ((draw_sparse, 0), (draw_dense, 1)):
            owner, rank = draw(need, unseen, np.array([user]), rng)
            assert owner.tolist() == [user] * need[user] and len(set(rank)) == need[user] and rank.max() < unseen[user]
            counts[user, rank] += 1
    # Expected per rank: 3000 x 3 / 12 = 750 (sparse) and 3000 x 4 / 6 = 2000 (dense).
    assert np.abs(counts[0] / 750 - 1).max() < 0.12 and np.abs(counts[1, :6] / 2000 - 1).max() < 0.06


THREADS = """
import sys
from pathlib import Path
from assets.clean_logs import clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import load_spec
dataset = load_spec(Path(sys.argv[1]))
print(clean_logs_from_raw(read_custom(dataset), dataset.spec).content_hash())
"""


def test_the_same_rows_whatever_the_thread_count(tmp_path):
    directory = plays_dir(tmp_path, {f"u{u}": artists(*range(1 + u % 5, 4 + u % 5 + u % 3)) for u in range(60)}, n_items=40,
                          negatives=", negatives_per_positive = 3, negatives_seed = 7")
    hashes = set()
    for threads in ("1", "4"):
        env = {**os.environ, "PAML_THREADS": threads, "POLARS_MAX_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", THREADS, str(directory)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        hashes.add(done.stdout.strip().splitlines()[-1])
    assert len(hashes) == 1


CHAIN = """
import dagster as dg
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.jobs import data_job
from pathlib import Path
import os
home = Path(os.environ["PAML_HOME"])
result = dg.materialize(ASSETS + CHECKS, selection=data_job.selection, partition_key="plays",
                        resources=build_resources(home, home / "no-real-data"), instance=dg.DagsterInstance.ephemeral())
assert result.success
"""


def test_a_positives_only_log_with_sampled_negatives_runs_to_meta_tasks(tmp_path, monkeypatch):
    # 40 users, each with 3-6 plays of 30 artists: k x positives <= 18 <= the 24 artists a user never played.
    plays = {f"u{u:02d}": artists(*range(1 + u % 17, 4 + u % 17 + u % 4)) for u in range(40)}
    directory = plays_dir(tmp_path, plays, n_items=30, negatives=", negatives_per_positive = 3")
    home = tmp_path / "home"
    monkeypatch.setenv("PAML_HOME", str(home))
    assert cli.main(["dataset", "add", str(directory)]) == 0
    env = {**os.environ, "PAML_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "PAML_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHAIN], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    store = LineageStore(home, read_only=True)
    clean = store.load(store.latest("clean_logs", "plays"))
    n_plays = sum(len(items) for items in plays.values())
    assert clean.info["sampled_negatives"] == 3 * n_plays and clean.info["users_short_of_negatives"] == 0
    interactions = clean.frame("interactions")
    assert interactions.group_by("label").len().sort("label").rows() == [(0.0, 3 * n_plays), (1.0, n_plays)]
    played = pl.DataFrame([(u, i) for u, items in plays.items() for i in items], schema=["user_id", "item_id"], orient="row")
    negatives = interactions.filter(pl.col("label") == 0)
    assert negatives.join(played, on=["user_id", "item_id"], how="semi").height == 0
    checks = store.query("SELECT count(*) AS n, bool_and(success) AS ok FROM checks WHERE partition = 'plays'")
    assert checks["n"][0] > 0 and checks["ok"][0]
    splits = store.load(store.latest("user_splits", "plays"))
    assert splits.frame("items")["label"].min() == 0.0  # the training users see both classes
    assert store.latest("meta_tasks", "plays").content_hash  # built (raises PartitionNotBuiltError if not)


LASTFM_SPEC = """\
name = "lastfm"
label = { kind = "click", negatives_per_positive = 4 }
[interactions]
file = "userid-timestamp-artid-artname-traid-traname.tsv"
format = "tsv"
quote = ""
header = false
columns = ["user", "time", "artist_mbid", "artist", "track_mbid", "track"]
user_id = "user"
item_id = "artist"
timestamp = "time"
timestamp_format = "iso"
[users.features]
user = { type = "categorical" }
[items.features]
artist = { type = "categorical" }
"""


def test_a_log_of_plays_without_a_label_column_is_all_positives_with_sampled_negatives(tmp_path):
    # Last.fm-1K's plays as shipped: six columns, no label. Each user plays 2 of 3 artists, one of them twice.
    directory = tmp_path / "lastfm"
    directory.mkdir()
    plays = [(u, t, a) for u in (1, 2) for t, a in enumerate(("Artist A", "Artist B", "Artist A" if u == 1 else "C"))]
    (directory / "userid-timestamp-artid-artname-traid-traname.tsv").write_text("".join(
        f"user_{u:06d}\t2009-05-0{1 + t}T23:08:57Z\t\t{a}\t\tTrack \"{t}\"\n" for u, t, a in plays), encoding="utf-8")
    (directory / "dataset.toml").write_text(LASTFM_SPEC, encoding="utf-8")
    interactions = cleaned(directory).frame("interactions")
    # user 1: A (twice, merged) and B played, C left: min(4 x 2, 1) = 1 negative, C; user 2 played all three.
    assert interactions.select("user_id", "item_id", "label").rows() == [
        ("user_000001", "Artist A", 1.0), ("user_000001", "Artist B", 1.0), ("user_000001", "C", 0.0),
        ("user_000002", "Artist A", 1.0), ("user_000002", "Artist B", 1.0), ("user_000002", "C", 1.0)]
    spec = directory / "dataset.toml"
    spec.write_text(LASTFM_SPEC.replace(", negatives_per_positive = 4", ""), encoding="utf-8")
    with pytest.raises(SpecError, match=r"interactions.label: required key missing"):
        load_spec(directory)
