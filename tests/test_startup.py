"""What a process pays to start: loading the Dagster definitions leaves torch and scipy to the steps that compute."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from models import configs
from models.learners import METHODS, LearnerConfig
from models.network import NetworkConfig
from models.references import DEFAULT_PROTOCOL, REFERENCES, ReferenceSettings, SearchGrid
from models.tasks import PROTOCOLS, WARM_SPLIT
from models.training import TrainConfig
from models.user_memory import MEMORY_BACKENDS, MemoryConfig


def test_definitions_and_a_run_without_a_network_load_neither_torch_nor_scipy(tmp_path):
    # Every Dagster process (the UI's code server, each run, `dagster asset materialize`) loads the definitions;
    # torch alone was 3 of their 6.2 s on a 2 GHz core. A run of one day's logs (the resource's set-up and
    # tear-down included) builds no network, so it should not load torch either.
    code = textwrap.dedent("""
        import sys
        from pipelines.cli import run_job, taobao_days
        from pipelines.definitions import defs
        from assets.method_assets import ModelConfig
        jobs = sorted(job.name for job in defs.jobs)
        config = ModelConfig()
        run_job("taobao_logs_job", taobao_days()[0])
        print(len(jobs), config.batching, sorted(m for m in ("torch", "scipy", "models.references", "models.learners")
                                                   if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PAML_HOME": str(tmp_path / "home")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs, batching, loaded = done.stdout.strip().splitlines()[-1].split(maxsplit=2)  # after the run's progress lines
    assert int(jobs) > 0 and batching == TrainConfig().batching
    assert loaded.strip() == "[]", loaded


def test_the_light_names_are_the_models_own():
    # The asset factories iterate over METHOD_NAMES and never see the registry: the two must agree, in order.
    assert configs.METHOD_NAMES == tuple(METHODS)
    for light, heavy in ((configs.LearnerConfig, LearnerConfig), (configs.NetworkConfig, NetworkConfig),
                         (configs.TrainConfig, TrainConfig), (configs.MemoryConfig, MemoryConfig),
                         (configs.ReferenceSettings, ReferenceSettings), (configs.SearchGrid, SearchGrid)):
        assert light is heavy
    assert (configs.PROTOCOLS, configs.WARM_SPLIT, configs.MEMORY_BACKENDS, configs.REFERENCES, configs.DEFAULT_PROTOCOL) == \
        (PROTOCOLS, WARM_SPLIT, MEMORY_BACKENDS, REFERENCES, DEFAULT_PROTOCOL)
