"""What happens overnight, done for real: workers in parallel, a process killed with SIGKILL and the
command rerun, several commands started by hand on one study, learning rates that explode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import cli_env, run_dropout_lab
from dropout_lab import search

BASE = [
    "+experiment=two_phase", "dataset=moons", "dataset.n_samples=400", "two_phase.widths=[16]",
    "two_phase.phase1_epochs=5", "two_phase.final_seeds=1", "progress=false",
]


def _study(cwd: Path, name: str = "two_phase"):
    import optuna

    return optuna.load_study(study_name=name, storage=search.open_storage(str(cwd / "optuna.journal")))


def _runs(cwd: Path, experiment: str = "two_phase"):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "", max_results=1000)


def _popen(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dropout_lab", *args], cwd=cwd, env=cli_env(),
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (KeyError, FileNotFoundError, ValueError):
            pass  # the study or its file does not exist yet
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_study_then_rerun_finishes_and_keeps_everything(tmp_path):
    from optuna.trial import TrialState

    # Trials of about 2 s, long enough to be caught running.
    args = [*BASE, "search.n_trials=6", "trainer.epochs=600", "search.pruner=none"]
    proc = _popen(args, tmp_path, tmp_path / "first.log")

    def one_done_and_one_running() -> bool:
        s = _study(tmp_path)
        # Kill once the running trial has its MLflow run, so both records of it can be checked.
        return (search.finished_count(s) >= 2
                and any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
                        for t in s.get_trials(deepcopy=False)))

    try:
        _wait_for(one_done_and_one_running, 180, "two finished trials and a running one")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: t.value for t in _study(tmp_path).trials if t.state == TrialState.COMPLETE}
    killed = [t.number for t in _study(tmp_path).trials if t.state == TrialState.RUNNING]
    assert len(before) >= 2 and len(killed) == 1

    rerun = run_dropout_lab(args, tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    study = _study(tmp_path)
    assert search.finished_count(study) == 6
    after = {t.number: t.value for t in study.trials}
    assert all(after[n] == v for n, v in before.items())  # nothing finished was lost
    dead = study.trials[killed[0]]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["killed_reason"]

    runs = _runs(tmp_path)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    by_trial = {r.data.tags.get("trial_number"): r for r in runs if r.data.tags.get("phase") == "search"}
    assert by_trial[str(killed[0])].info.status == "KILLED"
    assert all(by_trial[str(n)].info.status == "FINISHED" for n in before)
    # Phase 1 ran once, in the first process; the rerun reused it.
    assert sum(r.data.tags.get("phase") == "phase1" for r in runs) == 1
    assert "phase 1: width    16  train_acc" not in rerun.stdout


def test_two_workers_share_one_study_and_lose_no_write(tmp_path):
    from optuna.trial import TrialState

    # Trials long enough (~1 s) that the second process, which starts in a few seconds, gets some.
    args = [*BASE, "search.n_trials=8", "dataset.n_samples=3000", "two_phase.widths=[128]", "trainer.epochs=60",
            "search.n_workers=2", "search.pruner=none"]
    proc = run_dropout_lab(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stdout + proc.stderr
    study = _study(tmp_path)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 8, [(t.number, t.state.name, t.user_attrs) for t in study.trials]
    assert len({t.user_attrs["owner"] for t in finished}) == 2  # both processes ran trials
    assert len({tuple(sorted(t.params.items())) for t in finished}) == len(finished)  # no duplicate proposals
    runs = [r for r in _runs(tmp_path) if r.data.tags.get("phase") == "search"]
    assert sorted(int(r.data.tags["trial_number"]) for r in runs) == sorted(t.number for t in study.trials)
    assert all(r.info.status == "FINISHED" for r in runs)


def test_two_commands_started_together_cooperate_on_a_fresh_folder(tmp_path):
    args = [*BASE, "search.n_trials=6", "trainer.epochs=8"]
    procs = [_popen(args, tmp_path, tmp_path / f"cmd{i}.log") for i in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"cmd{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    assert not any("Traceback" in log for log in logs)
    assert search.finished_count(_study(tmp_path)) >= 6
    runs = _runs(tmp_path)
    assert sum(r.data.tags.get("phase") == "phase1" for r in runs) == 1  # phase 1 once per study
    assert sum(r.data.tags.get("phase") == "parent" for r in runs) == 1
    assert sum(r.data.tags.get("phase") == "final" for r in runs) == 2  # once: baseline + dropout
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_every_trial_diverging_is_reported_and_exits_nonzero(tmp_path):
    args = [*BASE, "search.n_trials=3", "trainer.epochs=5",
            "+search.space.lr={key: trainer.lr, type: float, low: 1.0e5, high: 1.0e7, log: true}"]
    proc = run_dropout_lab(args, tmp_path)
    assert proc.returncode == 1
    assert "no trial of study 'two_phase' completed" in proc.stderr
    assert "diverged" in proc.stderr and "Traceback" not in proc.stderr
    study = _study(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    assert all(t.user_attrs["failure_reason"].startswith("diverged") for t in study.trials)
    runs = [r for r in _runs(tmp_path) if r.data.tags.get("phase") == "search"]
    assert all(r.info.status == "FAILED" and r.data.tags["reason"].startswith("diverged") for r in runs)
    parent = [r for r in _runs(tmp_path) if r.data.tags.get("phase") == "parent"][0]
    assert parent.info.status == "FAILED"


def test_diverged_trials_never_win_and_the_study_goes_on(tmp_path):
    from optuna.trial import TrialState

    args = [*BASE, "search.n_trials=6", "trainer.epochs=5", "search.sampler=random", "tracking=none",
            "+search.space.lr={key: trainer.lr, type: float, low: 1.0e-2, high: 1.0e7, log: true}"]
    proc = run_dropout_lab(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = _study(tmp_path)
    states = [t.state for t in study.trials]
    assert TrialState.FAIL in states and TrialState.COMPLETE in states
    assert study.best_trial.state == TrialState.COMPLETE
    assert search.finished_count(study) == 6
