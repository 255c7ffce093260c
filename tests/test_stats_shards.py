"""`stats` counts a frame kept as Parquet shards (PAML_SHARDS) as it counts a whole frame."""

import polars as pl

from assets.bundle import Bundle, StoredParts
from pipelines.stats import step_counts
from pipelines.store import LineageStore


def test_step_counts_include_sharded_frames(tmp_path):
    store = LineageStore(tmp_path / "home")
    scratch = tmp_path / "home" / "scratch" / "run" / "clean_logs"
    (scratch / "interactions").mkdir(parents=True)
    pl.DataFrame({"user_id": ["a", "a"], "item_id": ["i", "j"]}).write_parquet(scratch / "interactions" / "00000.parquet")
    pl.DataFrame({"user_id": ["b"], "item_id": ["i"]}).write_parquet(scratch / "interactions" / "00001.parquet")
    bundle = Bundle(frames={"items": pl.DataFrame({"item_id": ["i", "j"]})},
                    parts={"interactions": StoredParts.under(scratch / "interactions")}, scratch=(scratch,))
    store.record(bundle, run_id="r", job_name="j", asset_key="clean_logs", partition="taobao", code_version=None,
                 inputs=[], mirrors={})
    counts = dict(step_counts(store, "taobao", steps=("clean_logs",)).select("frame", "rows").iter_rows())
    assert counts == {"interactions": 3, "items": 2}
