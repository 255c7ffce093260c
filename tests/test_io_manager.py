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


def notices(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, str]]:
    """(level, message) of the run's 'never materialized' lines, in order."""
    return [(entry.level, entry.user_message) for entry in instance.all_logs(run_id)
            if "never materialized" in (entry.user_message or "")]


def test_a_step_says_once_at_info_which_partitions_its_fan_ins_miss_and_each_other_set_again(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"io_manager": LineageIOManager(home=str(tmp_path))}
    assets = [FIRST, SECOND, THIRD, first_two, all_three]
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
