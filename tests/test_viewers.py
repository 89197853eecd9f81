"""The live viewers on a real run's stores: ``mlflow server`` on the SQLite store and ``optuna-dashboard``
on the journal, each bound to 127.0.0.1 on a free port, checked through their HTTP APIs, then stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import cli_env, run_in_new_folder, small_two_phase, two_phase_summary

SMALL = small_two_phase(final_seeds=2, n_trials=3)
START_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(name: str) -> str:
    """The console script ``name`` installed beside this Python (the same environment), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def request(url: str, payload: dict | None = None, timeout: float = 10) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if payload is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Server:
    """A viewer process in its own process group, stopped (with its workers) by :meth:`stop`."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_until(self, probe, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{what} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                probe()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(0.5)
        pytest.fail(f"{what} did not answer within {START_TIMEOUT}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._out.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return run_in_new_folder(tmp_path_factory, "viewers", SMALL)


@pytest.fixture(scope="module")
def viewers(run_dir, tmp_path_factory):
    """Both viewers started at once (MLflow takes the longest), yielded as base URLs, always stopped."""
    logs = tmp_path_factory.mktemp("viewer-logs")
    mlflow_port, dashboard_port = free_port(), free_port()
    env = cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    servers = []
    try:
        mlflow_server = Server([command("mlflow"), "server", "--backend-store-uri",
                                f"sqlite:///{run_dir / 'mlflow.db'}", "--host", "127.0.0.1",
                                "--port", str(mlflow_port), "--workers", "1"], run_dir, env, logs / "mlflow.log")
        servers.append(mlflow_server)
        dashboard = Server([command("optuna-dashboard"), "optuna.journal", "--host", "127.0.0.1",
                            "--port", str(dashboard_port)], run_dir, env, logs / "dashboard.log")
        servers.append(dashboard)
        urls = {"mlflow": f"http://127.0.0.1:{mlflow_port}", "dashboard": f"http://127.0.0.1:{dashboard_port}"}
        dashboard.wait_until(lambda: request(f"{urls['dashboard']}/api/studies"), "optuna-dashboard")
        mlflow_server.wait_until(lambda: request(f"{urls['mlflow']}/api/2.0/mlflow/experiments/search",
                                                 {"max_results": 10}), "mlflow server")
        yield urls
    finally:
        for server in servers:
            server.stop()


def test_mlflow_server_serves_the_parent_and_its_children(viewers, run_dir):
    s = two_phase_summary(run_dir)
    runs = request(f"{viewers['mlflow']}/api/2.0/mlflow/runs/search",
                   {"experiment_ids": [s["mlflow"]["experiment_id"]], "max_results": 1000})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
    parent = s["mlflow"]["parent_run_id"]
    assert tags[parent]["phase"] == "parent"
    children = [t for t in tags.values() if t.get("mlflow.parentRunId") == parent]
    phases = sorted(t["phase"] for t in children)
    assert phases == sorted(["phase1"] * len(s["phase1"]["rows"]) + ["search"] * 3 + ["final"] * 4)
    assert len(runs) == 1 + len(children)


def test_optuna_dashboard_serves_the_study_and_its_trials(viewers, run_dir):
    s = two_phase_summary(run_dir)
    studies = request(f"{viewers['dashboard']}/api/studies")["study_summaries"]
    (study,) = [x for x in studies if x["study_name"] == s["optuna"]["study_name"]]
    detail = request(f"{viewers['dashboard']}/api/studies/{study['study_id']}")
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert {t["state"] for t in trials} <= {"Complete", "Pruned", "Fail"}
    params = {p["name"]: float(p["param_external_value"]) for p in trials[0]["params"] if p["name"].startswith("drop_")}
    assert params == {"drop_input": 0.2, "drop_hidden": 0.5}
    best = [t for t in detail["best_trials"]]
    assert best and best[0]["values"][0] == pytest.approx(s["phase2"]["best_value"])
