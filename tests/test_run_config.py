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


# max_steps 0 and patience 0 passed Dagster's check and were refused only when training started (TrainConfig).
@pytest.mark.parametrize(("field", "value"), [("gamma", -1.0), ("max_steps", -5), ("max_steps", 0), ("patience", 0),
                                              ("eval_every", 0), ("meta_batch", 0), ("device", "gpu"), ("memory_k", 0)])
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


@pytest.mark.parametrize("argv, message", [
    (["demo", "--max-steps", "-5"], "argument --max-steps: max_steps must be a whole number >= 1, got -5 (or 0: the models' own budget)"),
    (["demo", "--epochs", "0"], "argument --epochs: epochs must be a whole number >= 1, got 0"),
    (["reproduce", "--epochs", "-1"], "argument --epochs: epochs must be a whole number >= 1, got -1"),
    (["reproduce", "--threads", "0"], "argument --threads: threads must be a whole number >= 1, got 0"),
    (["tune", "--max-steps", "0"], "argument --max-steps: max_steps must be a whole number >= 1, got 0"),
    (["tune", "--eval-every", "-100"], "argument --eval-every: eval_every must be a whole number >= 1, got -100"),
    (["tune", "--patience", "0"], "argument --patience: patience must be a whole number >= 1, got 0"),
    (["tune", "--trials", "0"], "argument --trials: trials must be a whole number >= 1, got 0"),
    (["tune", "--workers", "x"], "argument --workers: invalid workers 'x': not a whole number"),
    # A device the search workers cannot use failed in each of them, after the tasks were exported.
    (["tune", "--device", "gpu"], "argument --device: invalid device 'gpu': give cpu, cuda or cuda:N"),
    (["tune", "--device", "cuda:99"], "argument --device: device cuda:99: this machine has "),
])
def test_the_cli_refuses_a_count_below_one_before_any_step_runs(capsys, argv, message):
    # Was refused by TrainConfig when the training step started, after a minute of data steps.
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    # The same rule as the config's, from the same function.
    from models.training import TrainConfig

    if "--max-steps" in argv and argv[0] == "tune":
        with pytest.raises(ValueError, match="max_steps must be a whole number >= 1, got 0"):
            TrainConfig(max_steps=0)


def test_the_demo_still_takes_max_steps_0_for_the_models_own_budget():
    args = cli.build_parser().parse_args(["demo", "--max-steps", "0", "--epochs", "2"])
    assert (args.max_steps, args.epochs) == (0, 2)

@pytest.mark.parametrize(("module", "arguments"), [("models.distributed", ["--tasks", "none", "--out", "out"]),
                                                   ("models.search", ["--tasks", "none", "--journal", "journal.log"])])
def test_training_entry_points_refuse_a_seed_out_of_range(module, arguments, tmp_path):
    # torchrun's models.distributed trained a model "seed -1" (the CLI and run configs refused it already).
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", module, *arguments, "--seed", "-1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "argument --seed: seed -1 out of range 0..4294967295" in done.stderr


@pytest.mark.parametrize(("values", "message"), [({"days": 0}, "greater than or equal to 1"),
                                                 ({"end_day": "2026-13-01"}, "end_day: '2026-13-01' is not a day YYYY-MM-DD"),
                                                 ({"end_day": "yesterday"}, "end_day: 'yesterday' is not a day YYYY-MM-DD")])
def test_a_log_window_that_is_no_window_is_refused_naming_the_key(values, message):
    # end_day 'yesterday' failed in the step with Python's "Invalid isoformat string", naming no key.
    from assets.taobao_logs import LogWindowConfig

    with pytest.raises(pydantic.ValidationError) as raised:
        LogWindowConfig(**values)
    assert message in cli.expected_failure(raised.value) and list(values)[0] in cli.expected_failure(raised.value)
    assert LogWindowConfig(end_day="2026-01-05").end_day == "2026-01-05"


@pytest.mark.parametrize("argument", ["--trials", "--workers", "--threads"])
def test_the_search_entry_point_refuses_a_count_below_one(argument, tmp_path):
    # --workers 0 started no worker and ended "done" with no trial; --trials 0 ran none either.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "models.search", "--tasks", "none", "--journal", "journal.log", argument, "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    name = argument.removeprefix("--")
    assert done.returncode == 2 and f"argument {argument}: {name} must be a whole number >= 1, got 0" in done.stderr
