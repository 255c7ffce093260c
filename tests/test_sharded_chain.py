"""The Dagster data assets with PAML_SHARDS: taobao's log travels between steps as stored Parquet
shards, and every asset's content equals the whole-log path's; the DuckDB mirrors, the checks and
the lineage are there; the scratch files are gone; a rerun gives the same artifacts."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from pipelines.cli import training_config
from pipelines.definitions import ASSETS, CHECKS, build_resources
from pipelines.store import LineageStore

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
SHARDS = 3
DATA = ["raw_logs", "clean_logs", "cold_start_users", "user_splits", "user_groups", "meta_tasks"]
CONFIG = {"ops": {"taobao_daily_logs": {"config": {"users": 500, "items": 120, "history_days": len(DAYS)}},
                  "taobao_log_window": {"config": {"days": len(DAYS)}}}}


def build(home: Path, instance: dg.DagsterInstance, shards: int, selection: list[str]) -> None:
    resources = build_resources(home, home / "no-real-data", shards=shards)
    for day in DAYS:
        if day not in instance.get_materialized_partitions(dg.AssetKey("taobao_daily_logs")):
            assert dg.materialize(ASSETS + CHECKS, selection="taobao_daily_logs", partition_key=day, instance=instance,
                                  resources=resources, run_config={"ops": {"taobao_daily_logs": CONFIG["ops"]["taobao_daily_logs"]}}).success
    ops = {**CONFIG["ops"], **{k: v for k, v in training_config(epochs=1, seeds=[0])["ops"].items() if k in selection}}
    for run in (["taobao_log_window"], [s for s in selection if s != "taobao_log_window"]):  # two partitions definitions
        if not run:
            continue
        result = dg.materialize(ASSETS + CHECKS, selection=run, partition_key="taobao", instance=instance,
                                resources=resources, run_config={"ops": {k: v for k, v in ops.items() if k in run}})
        assert result.success


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    built = {}
    for shards in (0, SHARDS):
        home = tmp_path_factory.mktemp(f"shards{shards}")
        instance = dg.DagsterInstance.ephemeral()
        build(home, instance, shards, ["taobao_log_window", *DATA, "reference_settings", "melu_model"] if shards else ["taobao_log_window", *DATA])
        built[shards] = (home, instance)
    return built


def latest(home: Path, asset: str):
    store = LineageStore(home)
    return store, store.latest(asset, "taobao")


def loaded(home: Path, asset: str):
    store, row = latest(home, asset)
    return store.load(row)


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_the_sharded_assets_store_shards_and_equal_the_whole_log(homes):
    whole, sharded = (homes[0][0], homes[SHARDS][0])
    store = LineageStore(sharded)
    day = store.load(store.latest("taobao_daily_logs", DAYS[0]))
    assert set(day.parts) == {"interactions"}  # each day read in blocks too
    window = loaded(sharded, "taobao_log_window")
    assert set(window.parts) == {"users", "interactions"} and window.info["shards"] == SHARDS
    assert len(window.parts["interactions"].files) == SHARDS  # one file per user shard, never one frame
    # the window says what the whole log's says (the spec read, the days, the generator), and how it is stored
    assert {k: v for k, v in window.info.items() if k != "shards"} == loaded(whole, "taobao_log_window").info
    # the same files read, with the same bytes (the lineage from the raw files is the same)
    sources = [sorted((Path(f.path).name, f.sha256) for f in loaded(home, "raw_logs").sources) for home in (whole, sharded)]
    assert sources[0] == sources[1] and len(sources[0]) == len(DAYS) + 3  # days, profiles, catalogue, spec
    clean_w, clean_s = loaded(whole, "clean_logs"), loaded(sharded, "clean_logs")
    assert set(clean_s.parts) == {"users", "interactions", "rejected"}
    for name in ("users", "interactions", "rejected"):
        assert canonical(clean_s.frame(name)).equals(canonical(clean_w.frame(name))), name
    assert clean_s.frame("accounting").equals(clean_w.frame("accounting"))
    for asset, frame in (("cold_start_users", "users"), ("user_groups", "groups"), ("user_groups", "table1"),
                         ("user_splits", "users")):
        assert canonical(loaded(sharded, asset).frame(frame)).equals(canonical(loaded(whole, asset).frame(frame))), asset
    splits_w, splits_s = loaded(whole, "user_splits"), loaded(sharded, "user_splits")
    assert "items" in splits_s.parts and "items" not in splits_s.frames
    assert canonical(splits_s.frame("items")).equals(canonical(splits_w.frame("items")))
    tasks_w, tasks_s = loaded(whole, "meta_tasks"), loaded(sharded, "meta_tasks")
    assert tasks_s.info == tasks_w.info and set(tasks_s.frames) == set(tasks_w.frames)
    for name in tasks_w.frames:
        assert tasks_s.frames[name].equals(tasks_w.frames[name]), name
    assert tasks_s.tensors.keys() == tasks_w.tensors.keys()
    for name, tensor in tasks_w.tensors.items():
        assert torch.equal(tasks_s.tensors[name], tensor), name


def test_mirrors_checks_and_lineage_of_the_sharded_path(homes):
    counts = {}
    for shards, (home, _) in homes.items():
        store = LineageStore(home)
        counts[shards] = store.query("SELECT reason, count(*) AS n FROM rejected_rows WHERE dataset = 'taobao' "
                                     "GROUP BY reason ORDER BY reason")
        checks = store.query("SELECT success FROM checks WHERE asset_key = 'clean_logs' AND partition = 'taobao'")
        assert checks.height > 5 and checks["success"].all()
    assert counts[SHARDS].height > 0 and counts[SHARDS].equals(counts[0])
    store, tasks = latest(homes[SHARDS][0], "meta_tasks")
    inputs = store.query("SELECT a.asset_key FROM lineage_edges e JOIN artifacts a ON a.artifact_id = e.input_artifact_id "
                         "WHERE e.artifact_id = ? ORDER BY 1", [tasks.artifact_id])
    assert inputs["asset_key"].to_list() == ["clean_logs", "user_splits"]
    # the stored parts are files in the artifact, the step's scratch copies are gone
    location = store.path_of(tasks)
    assert (location / "tensors.safetensors").is_file()
    assert load_file(str(location / "tensors.safetensors")).keys() == store.load(tasks).tensors.keys()
    scratch = homes[SHARDS][0] / "scratch"
    assert not [p for p in scratch.rglob("*") if p.is_file()]


def test_training_reads_the_sharded_tasks_and_a_rerun_stores_the_same_content(homes):
    home, instance = homes[SHARDS]
    store = LineageStore(home)
    model = store.latest("melu_model", "taobao")
    assert model is not None
    before = {a: latest(home, a)[1] for a in ("clean_logs", "user_splits", "meta_tasks")}
    build(home, instance, SHARDS, ["taobao_log_window", *DATA])
    after = {a: latest(home, a)[1] for a in before}
    for asset in before:
        assert after[asset].artifact_id != before[asset].artifact_id, asset  # a new run's artifact ...
        assert after[asset].content_hash == before[asset].content_hash, asset  # ... with the same content


def test_a_whole_window_from_days_read_in_blocks_is_the_whole_paths_window(homes):
    # PAML_SHARDS switched off after the days were read in blocks: the window reads them whole
    home, instance = homes[SHARDS]
    build(home, instance, 0, ["taobao_log_window"])
    window = loaded(home, "taobao_log_window")
    assert not window.parts
    assert latest(home, "taobao_log_window")[1].content_hash == latest(homes[0][0], "taobao_log_window")[1].content_hash
