"""Run config as a Dagster user writes it (`--config` of `dagster asset materialize`, the launchpad):
a wrong value is refused with its key and value, before the run starts where Dagster's schema can
say so, else when the step starts; never deep in training. Real Dagster runs, no mocks."""

import dagster as dg
import pydantic
import pytest

from assets.method_assets import ModelConfig
from assets.production_protocol import ProductionConfig
from pipelines import cli
from pipelines.definitions import ASSETS, CHECKS, build_resources


@pytest.mark.parametrize(("key", "value"), [("protocol", "prod"), ("batching", "bucket"), ("memory_backend", "annoy")])
def test_a_value_outside_its_choices_is_refused_before_the_run_starts(tmp_path, key, value):
    # These strings used to reach models/ (`unknown protocol 'prod'` from training_view, `backend must
    # be ...` from MemoryConfig) after the tasks were loaded, without the key.
    config = {"ops": {"reg_paml_model": {"config": {key: value}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as raised:
        dg.materialize(ASSETS + CHECKS, selection=["reg_paml_model"], partition_key="taobao", run_config=config,
                       resources=build_resources(tmp_path / "home", tmp_path / "data"), instance=dg.DagsterInstance.ephemeral())
    assert f"reg_paml_model:config:{key}" in str(raised.value) and value in str(raised.value)


@pytest.mark.parametrize("seeds", [[-1], [2**64], [0, 0], []])
def test_seeds_out_of_range_are_refused_naming_the_key(seeds):
    # seeds [-1] trained a model "seed -1"; 99999999999999999999 failed in torch.manual_seed with
    # "Overflow when unpacking long long", naming neither the key nor the value.
    with pytest.raises(pydantic.ValidationError, match="seeds") as raised:
        ModelConfig(seeds=seeds)
    assert cli.expected_failure(raised.value).startswith("bad run config (ModelConfig): seeds=")


@pytest.mark.parametrize(("field", "value"), [("gamma", -1.0), ("max_steps", -5), ("eval_every", 0), ("meta_batch", 0),
                                              ("device", "gpu"), ("memory_k", 0)])
def test_numbers_and_devices_out_of_range_are_refused_naming_the_key(field, value):
    with pytest.raises(pydantic.ValidationError) as raised:
        ModelConfig(**{field: value})
    assert [error["loc"] for error in raised.value.errors()] == [(field,)]
    assert f"{field}={value!r}" in cli.expected_failure(raised.value)


def test_an_unknown_method_name_is_refused_naming_the_key():
    with pytest.raises(pydantic.ValidationError, match="methods: unknown \\['regpaml'\\]"):
        ProductionConfig(methods=["reg_paml", "regpaml"])
    assert ProductionConfig(methods=["reg_paml"]).methods == ["reg_paml"]


def test_a_step_refuses_its_config_when_it_starts_naming_key_and_value(tmp_path):
    # The generator's seed: numpy's SeedSequence refused -5 ("invalid GeneratorConfig: seed must be >= 0");
    # now the step's config says so, with the key, before anything is generated.
    config = {"ops": {"taobao_daily_logs": {"config": {"seed": -5, "users": 200, "items": 100, "history_days": 3}}}}
    with pytest.raises(pydantic.ValidationError) as raised:
        dg.materialize(ASSETS + CHECKS, selection=["taobao_daily_logs"], partition_key="2026-01-01", run_config=config,
                       resources=build_resources(tmp_path / "home", tmp_path / "data"), instance=dg.DagsterInstance.ephemeral())
    assert [(error["loc"], error["input"]) for error in raised.value.errors()] == [(("seed",), -5)]
    assert not (tmp_path / "home" / "raw").exists()


def test_the_cli_refuses_a_seed_out_of_range_in_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--dataset", "taobao", "--seeds", "0", "-1"])
    assert exited.value.code == 2
    assert "argument --seeds: seed -1 out of range 0..4294967295" in capsys.readouterr().err
