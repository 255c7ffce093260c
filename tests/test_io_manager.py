"""The lineage IO manager's fan-in reads in real Dagster runs, on toy assets."""

import logging

import dagster as dg
import polars as pl

from assets.bundle import Bundle
from pipelines.io_manager import LineageIOManager

DATASETS = dg.StaticPartitionsDefinition(["a", "b", "c"])


def toy(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=DATASETS)
    def upstream(context: dg.AssetExecutionContext) -> Bundle:
        return Bundle(frames={"rows": pl.DataFrame({"partition": [context.partition_key]})})

    return upstream


FIRST, SECOND, THIRD = toy("first"), toy("second"), toy("third")


@dg.asset
def first_two(first: dict, second: dict) -> Bundle:
    return Bundle(frames={"rows": pl.concat([b.frame("rows") for b in (*first.values(), *second.values())])})


@dg.asset
def all_three(first: dict, second: dict, third: dict) -> Bundle:
    return Bundle(frames={"rows": pl.concat([b.frame("rows") for b in (*first.values(), *second.values(), *third.values())])})


@dg.asset(partitions_def=DATASETS, ins={"first": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})
def window_of_first(first) -> Bundle:
    present = sorted(first)  # a window picks its partitions from those present and names the ones it misses itself
    return Bundle(frames={"rows": pl.DataFrame({"partition": present, "missing": [len(first.missing)] * len(present)})})


def notices(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, str]]:
    """(level, message) of the run's 'never materialized' lines, in order."""
    return [(entry.level, entry.user_message) for entry in instance.all_logs(run_id)
            if "never materialized" in (entry.user_message or "")]


def test_a_step_says_once_at_info_which_partitions_its_fan_ins_miss_and_a_window_leaves_it_to_its_asset(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"io_manager": LineageIOManager(home=str(tmp_path))}
    assets = [FIRST, SECOND, THIRD, first_two, all_three, window_of_first]
    for partition, built in (("a", [FIRST, SECOND, THIRD]), ("b", [FIRST, SECOND]), ("c", [THIRD])):
        assert dg.materialize(assets, selection=built, partition_key=partition, resources=resources, instance=instance).success

    # first and second both miss c: one notice at INFO, the repeat at DEBUG (in the log, off the console)
    run = dg.materialize(assets, selection=[first_two], resources=resources, instance=instance)
    assert run.success
    assert notices(instance, run.run_id) == [
        (logging.INFO, "first: 1 partition(s) never materialized, left out: c"),
        (logging.DEBUG, "second: 1 partition(s) never materialized, left out: c")]
    assert sorted(run.asset_value("first_two").frame("rows")["partition"]) == ["a", "a", "b", "b"]

    # third misses another set: said at INFO too; each step (run) starts afresh
    run = dg.materialize(assets, selection=[all_three], resources=resources, instance=instance)
    assert run.success
    assert notices(instance, run.run_id) == [
        (logging.INFO, "first: 1 partition(s) never materialized, left out: c"),
        (logging.DEBUG, "second: 1 partition(s) never materialized, left out: c"),
        (logging.INFO, "third: 1 partition(s) never materialized, left out: b")]

    # a window's missing partitions are the window asset's to name: DEBUG
    run = dg.materialize(assets, selection=[window_of_first], partition_key="a", resources=resources, instance=instance)
    assert run.success
    assert notices(instance, run.run_id) == [(logging.DEBUG, "first: 1 partition(s) never materialized, left out: c")]
    assert run.asset_value("window_of_first").frame("rows").rows() == [("a", 1), ("b", 1)]
