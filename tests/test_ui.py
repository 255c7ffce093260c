"""`dg dev` end to end: start it on a free port, read the asset graph over GraphQL, stop it
by process id. Everything it writes goes to a temporary PAML_HOME / DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("dagster_webserver", reason="dagster-webserver is not installed")
pytest.importorskip("dagster_graphql", reason="dagster-graphql is not installed")

from pipelines.definitions import ASSETS, CHECKS, DATA_ASSETS  # noqa: E402
from pipelines.instance import DAGSTER_YAML  # noqa: E402
from pipelines.jobs import JOBS  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DG_BIN = next(
    (p for p in (Path(sys.executable).with_name("dg"), REPO_ROOT / ".venv" / "bin" / "dg") if p.is_file()),
    Path(sys.executable).with_name("dg"),
)
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

ASSET_GRAPH_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    description
    isPartitioned
    isAutoCreatedStub
    jobNames
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    tags { key value }
    automationCondition { label }
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name } }
      ... on Error { message }
    }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name isAssetJob } schedules { name } sensors { name sensorState { status } } } }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_members(sid: int, zombies: bool = False) -> list[int]:
    """Processes whose session id is `sid` (the dev process and everything it spawned); zombies
    (exited, waiting to be reaped by their parent or init) only when asked for."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and (zombies or fields[0] != "Z"):
            members.append(int(entry.name))
    return members


class DagsterDev:
    """One `dg dev` process in its own session, with a log file and a GraphQL client."""

    def __init__(self, tmp: Path):
        self.home = tmp / "paml_home"
        self.dagster_home = self.home / "dagster"
        self.dagster_home.mkdir(parents=True)
        (self.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
        data_dir = tmp / "data"
        data_dir.mkdir()
        self.log_path = tmp / "dagster_dev.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PAML_HOME": str(self.home),
            "DAGSTER_HOME": str(self.dagster_home),
            "PAML_DATA_DIR": str(data_dir),
            "GX_ANALYTICS_ENABLED": "False",
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),  # the project's environment, as after `activate`
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(DG_BIN), "dev", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def graphql(self, query: str, timeout: float = 30.0) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        assert not payload.get("errors"), f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def wait_until_loaded(self) -> float:
        """Seconds until the webserver answers and the code location is LOADED (fails with the log)."""
        start = time.monotonic()
        deadline = start + STARTUP_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dg dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                    response.read()
                workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
                assert workspace["__typename"] == "Workspace", workspace
                entries = workspace["locationEntries"]
                for entry in entries:
                    error = entry["locationOrLoadError"] or {}
                    if error.get("__typename") == "PythonError":
                        pytest.fail(f"code location {entry['name']} failed to load:\n{error['message']}\n{''.join(error['stack'])}")
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    return time.monotonic() - start
                last = f"locations: {[(e['name'], e['loadStatus']) for e in entries]}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last = repr(exc)
            time.sleep(0.5)
        pytest.fail(f"dg dev not ready after {STARTUP_TIMEOUT_S:.0f}s ({last}); log tail:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM the process group; SIGKILL whatever of the session is still alive after
        STOP_TIMEOUT_S (the code server sometimes outlives `dg dev` by its 45 s heartbeat
        timeout). Idempotent. Returns the exit code of `dg dev`."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        while session_members(self.proc.pid, zombies=True) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.killed = session_members(self.proc.pid)
        for pid in self.killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        kill_deadline = time.monotonic() + 10
        while session_members(self.proc.pid) and time.monotonic() < kill_deadline:
            time.sleep(0.1)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    server = DagsterDev(tmp_path_factory.mktemp("ui"))
    try:
        server.wait_until_loaded()
        yield server
    finally:
        server.stop()  # a no-op when test_stops_by_process_id already did it
        assert server.proc.poll() is not None


@pytest.fixture(scope="module")
def graph(ui) -> dict:
    return ui.graphql(ASSET_GRAPH_QUERY, timeout=60)


def by_key(graph: dict) -> dict[str, dict]:
    return {"/".join(node["assetKey"]["path"]): node for node in graph["assetNodes"]}


def test_every_asset_is_in_the_graph(graph):
    expected = {key.to_user_string() for asset in ASSETS for key in asset.keys}
    assert expected <= set(by_key(graph)), f"missing in the UI: {sorted(expected - set(by_key(graph)))}"
    stubs = sorted(key for key, node in by_key(graph).items() if node["isAutoCreatedStub"])
    assert not stubs, f"assets depended on but never defined: {stubs}"


def test_assets_match_their_definitions(graph):
    nodes = by_key(graph)
    for asset in ASSETS:
        for key in asset.keys:
            node = nodes[key.to_user_string()]
            assert node["groupName"] and node["groupName"] == asset.group_names_by_key[key], node
            assert (node["description"] or "").strip(), f"{key.to_user_string()} has no description"
            assert node["isPartitioned"] == (asset.partitions_def is not None), node
    for asset in DATA_ASSETS:
        assert nodes[asset.key.to_user_string()]["isPartitioned"], asset.key
    assert nodes["meta_tasks"]["isPartitioned"]
    assert not nodes["report"]["isPartitioned"]


def test_checks_are_attached(graph):
    nodes = by_key(graph)
    expected = {(ck.asset_key.to_user_string(), ck.name) for check in CHECKS for ck in check.check_keys}
    assert ("clean_logs", "clean_logs_expectations") in expected
    found = set()
    for key, node in nodes.items():
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", f"{key}: {checks}"
        found |= {(key, check["name"]) for check in checks["checks"]}
    assert found == expected


def test_jobs_are_listed(graph):
    repos = graph["repositoriesOrError"]
    assert repos["__typename"] == "RepositoryConnection", repos
    jobs = {job["name"] for repo in repos["nodes"] for job in repo["jobs"]}
    assert {"data_job", "training_job", "evaluation_job"} <= jobs, jobs
    assert {job.name for job in JOBS} <= jobs
    job_names = {name for node in graph["assetNodes"] for name in node["jobNames"]}
    assert {"data_job", "training_job", "evaluation_job"} <= job_names
    nodes = by_key(graph)
    assert "data_job" in nodes["meta_tasks"]["jobNames"]
    assert "evaluation_job" in nodes["report"]["jobNames"]


def test_retraining_automation_is_visible(graph):
    from pipelines.automation import SCHEDULES, SENSORS

    repos = graph["repositoriesOrError"]["nodes"]
    schedules = {s["name"] for repo in repos for s in repo["schedules"]}
    sensors = {s["name"] for repo in repos for s in repo["sensors"]}
    assert {s.name for s in SCHEDULES} == schedules == set()
    assert {s.name for s in SENSORS} == sensors == {"default_automation_condition_sensor", "raw_files_changed",
                                                          "taobao_files_changed"}


def test_owners_tags_and_automation_show(graph):
    nodes = by_key(graph)
    for key in (k for asset in ASSETS for k in asset.keys):
        node = nodes[key.to_user_string()]
        assert node["owners"] == [{"team": "paml"}], node
        assert {"layer", "partitioned_by"} <= {t["key"] for t in node["tags"]}, node
        assert node["automationCondition"] and node["automationCondition"]["label"], node
    assert nodes["taobao_daily_logs"]["automationCondition"]["label"].startswith("on_cron")
    sensors = {s["name"]: s["sensorState"]["status"] for repo in graph["repositoriesOrError"]["nodes"] for s in repo["sensors"]}
    assert sensors["default_automation_condition_sensor"] == "RUNNING"


def test_stops_by_process_id(ui, graph):
    pid = ui.proc.pid
    assert session_members(pid), "dg dev is not running"
    started = time.monotonic()
    returncode = ui.stop()
    assert returncode is not None and ui.proc.poll() is not None
    assert time.monotonic() - started < STOP_TIMEOUT_S + 15
    assert not session_members(pid), "processes of the dg dev session are still alive"
    if not session_members(pid, zombies=True):  # exited children may wait a moment for init to reap them
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
