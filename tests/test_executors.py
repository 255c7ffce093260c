"""The executor is chosen by configuration alone."""

import dagster as dg
import pytest

from pipelines.executors import executor_from_env


def test_default_is_in_process():
    assert executor_from_env({}) is dg.in_process_executor


def test_multiprocess_with_a_concurrency_limit():
    executor = executor_from_env({"PAML_EXECUTOR": "multiprocess", "PAML_MAX_CONCURRENT": "2"})
    assert executor.name == "multiprocess"


@pytest.mark.parametrize("name", ["celery", "k8s"])
def test_distributed_executors_name_their_extra_when_missing(name):
    try:
        executor = executor_from_env({"PAML_EXECUTOR": name})
    except RuntimeError as error:
        assert f".[{name}]" in str(error)
    else:  # the extra is installed: the executor is the library's own
        assert isinstance(executor, dg.ExecutorDefinition)


def test_unknown_executor_lists_the_choices():
    with pytest.raises(ValueError, match="in_process, multiprocess, celery, k8s"):
        executor_from_env({"PAML_EXECUTOR": "spark"})
