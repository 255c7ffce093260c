"""What a newcomer meets: the README's real-data block run as written, one-line CLI errors, `stats`.

The README block runs in a temporary directory laid out like a fresh clone (every top-level
entry of the repository linked, no `.paml/`), on made-up raw files in the original formats.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipelines.cli import expected_failure, main
from pipelines.store import LineageStore
from tests.fixtures import tiny_real_data

pytestmark = pytest.mark.heavy  # long: handed out first when the tests run in parallel (tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv" if (REPO_ROOT / ".venv").exists() else Path(sys.prefix)
TELEMETRY_BANNER = "we collect usage statistics"
STATE_VARIABLES = ("PAML_HOME", "PAML_DATA_DIR", "DAGSTER_HOME")


def readme_block(marker: str) -> str:
    """The ```bash block of README.md that contains `marker`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    matching = [b for b in blocks if marker in b]
    assert len(matching) == 1, f"README.md has {len(matching)} bash blocks containing {marker!r}"
    return matching[0]


def fresh_clone(tmp: Path) -> Path:
    """A directory that looks like a fresh clone with its `.venv`: no state, no caches."""
    clone = tmp / "clone"
    clone.mkdir()
    skip = {".git", ".venv", ".pytest_cache", "__pycache__"}
    for entry in REPO_ROOT.iterdir():
        if entry.name not in skip and not entry.name.startswith(".paml"):
            (clone / entry.name).symlink_to(entry)
    (clone / ".venv").symlink_to(VENV)
    return clone


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without the pipeline's state variables (a new shell)."""
    return {**{k: v for k, v in os.environ.items() if k not in STATE_VARIABLES}, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Run the README's real-data block line by line in one shell, as a reader would paste it.

    Two substitutions only: the data directory placeholder, and `make ui` (a server that runs
    until stopped; tests/test_ui.py starts `dg dev` for real) is dry-run with `make -n`
    to check what it would start.
    """
    tmp = tmp_path_factory.mktemp("newcomer")
    data, clone, port = tiny_real_data(tmp / "data"), fresh_clone(tmp), free_port()
    block = readme_block("export PAML_DATA_DIR=")
    assert "/path/to/data" in block and "\nmake ui" in block
    script = block.replace("/path/to/data", str(data))
    script = re.sub(r"^make ui\b.*$", f"make -n ui PORT={port}", script, flags=re.M)
    # PYTHONPATH stands in for the clone's own editable install (`make install`): the venv may be
    # shared with another checkout, and Dagster's CLI imports `assets` and `models` through it.
    result = subprocess.run(["bash", "-e", "-c", script], cwd=clone, env=clean_env(PYTHONPATH=str(clone)),
                            capture_output=True, text=True, timeout=600)
    return clone, port, result


def test_readme_block_runs_as_written(readme_run):
    clone, _, result = readme_run
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert TELEMETRY_BANNER not in output
    assert "telemetry:\n  enabled: false" in (clone / ".paml" / "dagster" / "dagster.yaml").read_text()


def test_readme_block_builds_both_datasets_in_one_instance(readme_run):
    import dagster as dg

    clone, _, _ = readme_run
    built = LineageStore(clone / ".paml").query(
        "SELECT partition, count(DISTINCT asset_key) AS steps FROM artifacts WHERE kind = 'bundle' GROUP BY ALL ORDER BY ALL")
    assert built.rows() == [("bookcrossing", 6), ("movielens", 6)]
    # Both runs (Dagster's CLI, then ours) are in the persistent instance the UI reads.
    with dg.DagsterInstance.from_config(str(clone / ".paml" / "dagster")) as instance:
        runs = instance.get_runs()
    assert len(runs) == 2 and all(run.is_success for run in runs)


def test_readme_stats_and_ui_lines(readme_run):
    _, port, result = readme_run
    stats = result.stdout[result.stdout.index("### movielens"):]
    assert "### bookcrossing" in stats
    assert re.search(r"\| meta_tasks +\| yes ", stats) and re.search(r"\| melu_model +\| no ", stats)
    assert "Not built for movielens: melu_model," in stats
    assert "Counts after every step:" in stats and "Rejected rows by reason:" in stats
    assert f".venv/bin/dg dev --host 127.0.0.1 --port {port}" in result.stdout
    assert ".venv/bin/python -m pipelines.cli init" in result.stdout


def one_error_line(text: str) -> str:
    """The single line an expected failure prints (fails on tracebacks and multi-line output)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_missing_raw_files_is_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--dataset", "movielens", "--data-only"], cwd=REPO_ROOT,
        env=clean_env(PAML_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(tmp_path / "home" / "dagster"),
                      PAML_DATA_DIR=str(tmp_path / "data")),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert line.startswith("error: movielens: missing raw file(s) users.dat, movies.dat, ratings.dat")
    assert str(tmp_path / "data" / "ml-1m") in line and "files.grouplens.org" in line


def test_missing_raw_files_say_when_paml_data_dir_is_not_set(tmp_path, monkeypatch):
    # The usual slip: PAML_DATA_DIR never exported. Naming only the default directory did not say so.
    from assets.raw_files import MissingRawFilesError, require_files

    monkeypatch.delenv("PAML_DATA_DIR", raising=False)
    with pytest.raises(MissingRawFilesError, match=r"PAML_DATA_DIR is not set: export PAML_DATA_DIR=<the directory that "
                                                   r"holds ml-1m/>\)\. To obtain them: download https://files"):
        require_files("movielens", tmp_path)
    monkeypatch.setenv("PAML_DATA_DIR", str(tmp_path))
    with pytest.raises(MissingRawFilesError, match=rf"in {re.escape(str(tmp_path / 'bookcrossing'))} "
                                                   rf"\(PAML_DATA_DIR={re.escape(str(tmp_path))}\)\."):
        require_files("bookcrossing", tmp_path)


def test_an_undecodable_raw_file_is_one_line_naming_file_line_and_byte(tmp_path):
    from tests.fixtures import good_ml_users, ml_ratings_for, movielens_dir

    data = tmp_path / "data"
    ratings = ml_ratings_for(range(1, 6))
    ratings[3] = ratings[3][:4] + "\x00" + ratings[3][4:]  # a NUL byte: UTF-16 or binary, not latin-1 text
    movielens_dir(data, good_ml_users(5), ratings)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--dataset", "movielens", "--data-only"], cwd=REPO_ROOT,
        env=clean_env(PAML_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(tmp_path / "home" / "dagster"),
                      PAML_DATA_DIR=str(data)),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert line.startswith("error: ml-1m/ratings.dat") and "NUL byte at line 4, byte 5" in line


def empty_database(home: Path) -> None:
    """A database in `home` holding one unrelated artifact: none of the pipeline's steps is built."""
    from assets.bundle import Bundle

    LineageStore(home).record(Bundle(frames={"t": pl.DataFrame({"x": [1]})}), run_id="r0", job_name="j", asset_key="other",
                              partition="", code_version="1", inputs=[], mirrors={})


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    for name, value in {"PAML_HOME": tmp_path, "DAGSTER_HOME": tmp_path / "dagster", "PAML_DATA_DIR": tmp_path / "data"}.items():
        monkeypatch.setenv(name, str(value))
    return tmp_path


@pytest.mark.parametrize("argv, expected", [
    (["recommend", "--dataset", "movielens", "--profile", "gender=F", "--ratings", "1=4"],
     "error: no reg_paml model in service for movielens (no promotion in model_registry): train and promote one"),
    (["recommend", "--dataset", "movielens", "--profile", "gender", "--ratings", "1=4"],
     "error: --profile: expected KEY=VALUE, got 'gender'"),
    (["recommend", "--dataset", "movielens", "--profile", "gender=F", "--ratings", "1=four"],
     "error: label 'four' of item '1' is not a number; give"),
    (["sql", "SELEC 1"], "error: Parser Error: syntax error at or near \"SELEC\""),
])
def test_expected_failures_are_one_line(empty_home, argv, expected):
    empty_database(empty_home)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert one_error_line(str(exit_info.value.code)).startswith(expected)


@pytest.mark.parametrize("argv, expected", [
    (["stats", "movielens", "imdb"], "python -m pipelines.cli stats: error: argument datasets: invalid choice: 'imdb'"),
    (["recommend", "--dataset", "taobao", "--method", "svd", "--profile", "a=1", "--ratings", "i=1"],
     "python -m pipelines.cli recommend: error: unknown method 'svd'; known: melu, meta_sgd"),
    (["demo", "--dataset", "netflix"], "python -m pipelines.cli demo: error: argument --dataset: invalid choice: 'netflix'"),
    (["train"], "python -m pipelines.cli: error: argument command: invalid choice: 'train'"),
    # tune's counts: 0 trials or workers used to search nothing and succeed, 0 threads or steps
    # to end in a traceback after the data steps had run
    (["tune", "--trials", "0"], "python -m pipelines.cli tune: error: argument --trials: trials must be a whole number >= 1, got 0"),
    (["tune", "--workers", "0"], "python -m pipelines.cli tune: error: argument --workers: workers must be a whole number >= 1, got 0"),
    (["tune", "--threads", "0"], "python -m pipelines.cli tune: error: argument --threads: threads must be a whole number >= 1, got 0"),
    (["tune", "--max-steps", "-1"], "python -m pipelines.cli tune: error: argument --max-steps: max_steps must be a whole number >= 1, got -1"),
    (["tune", "--patience", "x"], "python -m pipelines.cli tune: error: argument --patience: invalid patience 'x'"),
    (["tune", "--stop-after", "-5"], "python -m pipelines.cli tune: error: argument --stop-after: -5 is not a number of seconds"),
])
def test_bad_arguments_are_one_line(empty_home, capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(expected) and line.endswith("--help)")


def test_results_help_names_both_places_it_writes(capsys):
    # Its help said docs/results.md only; a store without MovieLens and Book-Crossing metrics is
    # written to PAML_HOME/results.md instead (pipelines/results.py `results_target`).
    with pytest.raises(SystemExit):
        main(["results", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("docs/results.md when the store holds meta-learner metrics of MovieLens and Book-Crossing, "
            "else PAML_HOME/results.md") in text


def test_failed_check_and_bugs_are_told_apart():
    from dagster._core.errors import DagsterAssetCheckFailedError

    message = expected_failure(DagsterAssetCheckFailedError("1 blocking check failed: clean_logs_expectations"))
    assert "clean_logs_expectations" in message and "FROM checks WHERE NOT success" in message
    assert expected_failure(ZeroDivisionError("a bug")) is None  # bugs keep their traceback


def test_stats_names_what_is_not_built(empty_home, capsys):
    empty_database(empty_home)
    assert main(["stats", "bookcrossing"]) == 0
    out = capsys.readouterr().out
    assert "Not built for bookcrossing: raw_logs, clean_logs," in out
    assert "`.venv/bin/python -m pipelines.cli demo --dataset bookcrossing --data-only`" in out


def test_init_prepares_the_instance_and_lists_raw_files(empty_home, capsys):
    tiny_real_data(empty_home / "data")
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "movielens: ready" in out and "bookcrossing: ready" in out and "taobao: synthetic logs" in out
    assert (empty_home / "dagster" / "dagster.yaml").read_text().endswith("telemetry:\n  enabled: false\n")
    (empty_home / "data" / "taobao").mkdir()  # a taobao/ directory means real logs: say what they lack
    assert main(["init"]) == 0
    assert "taobao: real logs in" in (out := capsys.readouterr().out) and "incomplete: " in out and "user_profile.csv" in out


def test_init_says_ready_for_a_raw_file_kept_compressed(empty_home, capsys):
    # The readers take ml-1m/ratings.dat.gz for ratings.dat; init said 'missing ratings.dat'.
    import gzip

    ratings = tiny_real_data(empty_home / "data") / "ml-1m" / "ratings.dat"
    ratings.with_name("ratings.dat.gz").write_bytes(gzip.compress(ratings.read_bytes()))
    ratings.unlink()
    assert main(["init"]) == 0
    assert "movielens: ready" in capsys.readouterr().out


def test_item_attributes_for_movies_and_books(tmp_path):
    from assets.clean_logs import clean_logs_from_raw
    from assets.cold_start import item_attributes
    from assets.raw_files import read_bookcrossing, read_movielens
    from assets.specs import SPECS

    data = tiny_real_data(tmp_path)
    movies = clean_logs_from_raw(read_movielens(data), SPECS["movielens"]).frame("items")
    ranked = pl.DataFrame({"rank": [1, 2, 3], "item_id": ["3", "1", "404"]})
    shown = item_attributes(ranked, movies, SPECS["movielens"].display_fields)
    assert shown.rows() == [(1, "3", "Amélie (2001)", ""), (2, "1", "Toy Story (1995)", "Animation, Comedy"),
                            (3, "404", None, None)]
    books = clean_logs_from_raw(read_bookcrossing(data), SPECS["bookcrossing"]).frame("items")
    shown = item_attributes(pl.DataFrame({"item_id": ["0002"]}), books, SPECS["bookcrossing"].display_fields)
    assert shown.row(0, named=True) == {"item_id": "0002", "title": "Book 2", "author": "Author 2"}
