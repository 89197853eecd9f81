"""Several machines on one study, for real: PostgreSQL holds the Optuna study, an MLflow tracking server
(backed by PostgreSQL as well) holds the runs, and three worker commands join with `+cluster=postgres`.

Each worker pretends to run on a machine of its own (its host name is replaced at start-up), so the
check for a dead process on this machine never applies: a worker killed with SIGKILL mid-trial is
found only through Optuna's heartbeats, as it would be on another machine.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_dropout_lab
from dropout_lab import search

sys.path.insert(0, str(Path(__file__).parent))
import pg_server  # noqa: E402

PASSWORD = "s3cret-never-logged"
# Trials of about 1 s and enough of them that, after the kill, the other workers are still drawing
# trials when the dead one turns stale (3 heartbeats of 1 s missed): its replacement is then drawn too.
N_TRIALS = 16
WIDTHS = [4, 32]
WORKER_ARGS = [
    "+experiment=two_phase", "dataset=moons", "dataset.n_samples=2500", f"two_phase.widths=[{','.join(map(str, WIDTHS))}]",
    "two_phase.phase1_epochs=4", "two_phase.final_seeds=1", "progress=false", f"search.n_trials={N_TRIALS}",
    "trainer.epochs=60", "search.pruner=none", "search.heartbeat_seconds=1", "tracking.log_plots=false",
    "+cluster=postgres",
]
# Replaces the host name of a worker process, so that it looks like a worker on another machine.
SITECUSTOMIZE = """
import os, socket
if os.environ.get("SCALE_OUT_TEST_HOSTNAME"):
    socket.gethostname = lambda: os.environ["SCALE_OUT_TEST_HOSTNAME"]
"""


@pytest.fixture(scope="session")
def cluster():
    """PostgreSQL and an MLflow tracking server on 127.0.0.1, started once and stopped when the tests end."""
    try:
        with pg_server.servers() as servers:
            yield servers
    except pg_server.Unavailable as exc:
        if os.environ.get("CI"):  # .ci/run installs PostgreSQL: there, not running this test is a failure
            pytest.fail(f"PostgreSQL is needed for the scale-out test in CI: {exc}")
        pytest.skip(f"PostgreSQL cannot be started here: {exc}")


def _env(cluster, study_db: str, tmp_path: Path, host: str | None = None) -> dict[str, str]:
    # The password is ignored (trust authentication) but travels in the URL, as a user's would.
    storage = study_db.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    # One BLAS thread each: three workers share this machine's cores, and their trials stay steady.
    env = cli_env(DROPOUT_LAB_OPTUNA_STORAGE=storage, DROPOUT_LAB_TRACKING_URI=cluster.tracking_uri,
                  OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if host:
        (tmp_path / "site").mkdir(exist_ok=True)
        (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "site"), env.get("PYTHONPATH")]))
        env["SCALE_OUT_TEST_HOSTNAME"] = host
    return env


def _wait_for(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except KeyError:
            pass  # the study does not exist yet
        if procs and all(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_workers_on_several_machines_survive_a_killed_worker(cluster, tmp_path):
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    db = cluster.createdb("three_workers")
    hosts = ["machine-a", "machine-b", "machine-c"]
    procs = {}
    for host in hosts:
        cwd = tmp_path / host
        cwd.mkdir()
        procs[host] = subprocess.Popen(
            [sys.executable, "-m", "dropout_lab", *WORKER_ARGS], cwd=cwd, env=_env(cluster, db, tmp_path, host),
            stdout=(cwd / "worker.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
    storage = search.open_storage(db)

    def study():
        return optuna.load_study(study_name="two_phase", storage=storage)

    victim: list[str] = []

    def a_worker_mid_trial() -> bool:
        s = study()
        if search.finished_count(s) < 1:
            return False
        for t in s.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host = t.user_attrs.get("owner", "").rpartition(":")[0]
            # Just started (a trial takes about 1 s here), so that the kill lands in the middle of it.
            young = (datetime.datetime.now() - t.datetime_start).total_seconds() < 0.5
            if host in procs and "mlflow_run_id" in t.user_attrs and young:
                # Freeze the worker, then make sure its trial is still running: on a busy machine the
                # trial can end between reading the study and the kill.
                os.killpg(procs[host].pid, signal.SIGSTOP)
                if study().trials[t.number].state == TrialState.RUNNING:
                    victim.append(host)
                    return True
                os.killpg(procs[host].pid, signal.SIGCONT)
        return False

    try:
        _wait_for(a_worker_mid_trial, 120, "a finished trial and a running one", list(procs.values()))
        os.killpg(procs[victim[0]].pid, signal.SIGKILL)
        codes = {host: p.wait(timeout=150) for host, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    logs = {host: (tmp_path / host / "worker.log").read_text() for host in hosts}
    survivors = [h for h in hosts if h != victim[0]]
    assert codes[victim[0]] == -signal.SIGKILL
    for host in survivors:
        assert codes[host] == 0 and "Traceback" not in logs[host], logs[host][-3000:]

    # Optuna: the study reached its trial count; the killed worker's trial failed through its heartbeat.
    s = study()
    assert search.finished_count(s) >= N_TRIALS
    assert not s.get_trials(states=(TrialState.RUNNING,))
    owner_of = {t.number: t.user_attrs.get("owner", "").rpartition(":")[0] for t in s.trials}
    killed = [t for t in s.trials if owner_of[t.number] == victim[0] and t.state not in (TrialState.COMPLETE,
                                                                                           TrialState.PRUNED)]
    assert len(killed) == 1, [(t.number, t.state, owner_of[t.number]) for t in s.trials]
    dead = killed[0]
    assert dead.state == TrialState.FAIL
    assert "killed_reason" not in dead.user_attrs  # not the same-machine pid check: the heartbeat did it
    assert {t.state for t in s.trials if t.number != dead.number} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({owner_of[t.number] for t in s.trials if t.state == TrialState.COMPLETE}) >= 2

    # MLflow: every trial once (by trial_number), phase 1 once per width, the final once, nothing RUNNING.
    client = MlflowClient(tracking_uri=cluster.tracking_uri)
    exp = client.get_experiment_by_name("two_phase")
    runs = client.search_runs([exp.experiment_id], "", max_results=1000)
    trial_runs = [r for r in runs if r.data.tags.get("phase") == "search"]
    assert sorted(int(r.data.tags["trial_number"]) for r in trial_runs) == sorted(t.number for t in s.trials)
    by_trial = {int(r.data.tags["trial_number"]): r for r in trial_runs}
    assert all(by_trial[t.number].info.status == "FINISHED" for t in s.trials if t.number != dead.number)
    assert by_trial[dead.number].info.status == "KILLED"
    assert "its worker died" in by_trial[dead.number].data.tags["killed_reason"]
    phase1 = [r for r in runs if r.data.tags.get("phase") == "phase1"]
    widths = [int(r.data.tags["width"]) for r in phase1]
    assert len(widths) == len(set(widths)) == len(s.user_attrs["phase1"]["rows"])
    assert sum(r.data.tags.get("phase") == "parent" for r in runs) == 1
    assert sum(r.data.tags.get("phase") == "final" for r in runs) == 2
    assert not [r for r in runs if r.info.status == "RUNNING"]

    # The password in the storage URL is nowhere: not printed, not an MLflow param, tag or logged file.
    assert not any(PASSWORD in log for log in logs.values())
    for run in runs:
        assert PASSWORD not in repr(run.data.params) + repr(run.data.tags)
    parent = next(r for r in runs if r.data.tags.get("phase") == "parent")
    assert parent.data.params["search.storage"].startswith("postgresql://postgres:***@")
    for name in ("config.yaml", "summary.json"):
        path = client.download_artifacts(parent.info.run_id, name, str(tmp_path))
        assert PASSWORD not in Path(path).read_text()


def test_unreachable_servers_fail_in_seconds_with_one_paragraph(tmp_path):
    closed = pg_server.free_port()
    for env, what in [
        ({"DROPOUT_LAB_OPTUNA_STORAGE": f"postgresql://u:{PASSWORD}@127.0.0.1:{closed}/optuna",
          "DROPOUT_LAB_TRACKING_URI": "sqlite:///mlflow.db"}, "cannot open the Optuna storage"),
        ({"DROPOUT_LAB_OPTUNA_STORAGE": str(tmp_path / "optuna.journal"),
          "DROPOUT_LAB_TRACKING_URI": f"http://127.0.0.1:{closed}"}, "cannot reach the MLflow tracking store"),
    ]:
        start = time.monotonic()
        proc = run_dropout_lab([*WORKER_ARGS], tmp_path, env=cli_env(**env), timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert time.monotonic() - start < 30
        assert what in proc.stderr and "Traceback" not in proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr
        assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_a_missing_environment_variable_is_named(tmp_path):
    env = cli_env(DROPOUT_LAB_TRACKING_URI="sqlite:///mlflow.db")
    env.pop("DROPOUT_LAB_OPTUNA_STORAGE", None)
    proc = run_dropout_lab(WORKER_ARGS, tmp_path, env=env, timeout=120)
    assert proc.returncode == 2
    assert "environment variable DROPOUT_LAB_OPTUNA_STORAGE is not set" in proc.stderr
    assert "search.storage" in proc.stderr and "Traceback" not in proc.stderr
