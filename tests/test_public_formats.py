"""Public recommender logs as their users have them, described by a spec from docs/data.md alone:
MovieLens-20M/25M CSVs without user features, Yelp's CSV export, a pandas Parquet export. Each
fixture is made up in code, in the layout of the original files."""

from pathlib import Path

import polars as pl
import pytest

from assets.bundle import Bundle
from assets.clean_logs import clean_logs_from_raw
from assets.cold_start_users import select_cold_start
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec
from assets.report import table1
from assets.user_groups import user_groups_for
from tests.fixtures import ml25m_dir


def cleaned(directory: Path) -> Bundle:
    dataset = load_spec(directory)
    return clean_logs_from_raw(read_custom(dataset), dataset.spec)


def test_a_log_without_user_features_needs_no_groups_and_tags_no_user_major(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=30, n_items=20)
    spec = load_spec(directory).spec
    assert spec.tagging_fields == () and spec.user_fields == ("user",)
    bundle = cleaned(directory)
    assert bundle.frame("rejected").height == 0
    assert bundle.frame("items").filter(pl.col("item_id") == "1")["title"].item() == "American President, The (1995)"
    frames = user_groups_for(bundle.frame("users"), select_cold_start(bundle.frame("interactions")), spec.tagging_fields)
    # The paper's rule (major: >= 3 features holding a top value) tags every user minor when none is counted.
    assert set(frames["groups"]["group"]) == {"minor"} and frames["table1"].height == 0
    shares = frames["shares"].filter(pl.col("population") == "all cleaned users")
    assert shares.select("group", "share").rows() == [("minor", 1.0)]
    # The report's Table 1 says so (major share 0) rather than that the groups are not built yet.
    rows = table1({"ml25m": Bundle(frames=frames, info={})})
    assert rows.select("item", "ours").rows() == [("major share", 0.0)]


def test_one_or_two_group_features_say_to_leave_groups_out(tmp_path):
    directory = ml25m_dir(tmp_path, n_users=4, n_items=3)
    spec_path = directory / "dataset.toml"
    spec_path.write_text(spec_path.read_text() + '\n[groups]\nfeatures = ["user"]\n')
    with pytest.raises(SpecError, match=r"groups.features: .* give at least 3 user features; with fewer, leave out "
                                        r"\[groups\] \(no user is then major: every user is minor\) \(found \('user',\)\)"):
        load_spec(directory)
