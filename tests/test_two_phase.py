"""The main job end to end: the real command in a temporary folder, results read back through the
MLflow and Optuna APIs; and the pieces of the procedure on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropout_lab import search
from dropout_lab.two_phase import fits, stats, width_schedule

SMALL = [
    "+experiment=two_phase", "dataset=moons", "dataset.n_samples=300",
    "trainer.epochs=4", "two_phase.widths=[8,16]", "two_phase.phase1_epochs=8",
    "two_phase.final_seeds=2", "search.n_trials=3", "progress=false",
]


def _summary(cwd: Path) -> dict:
    paths = sorted(cwd.glob("outputs/two_phase/*/summary.json"))
    assert paths, "no summary.json written"
    return json.loads(paths[-1].read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One small two-phase run shared by the end-to-end checks below."""
    from conftest import run_dropout_lab

    cwd = tmp_path_factory.mktemp("two_phase")
    proc = run_dropout_lab(SMALL, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc, _summary(cwd)


def test_summary_has_what_the_run_found(finished):
    _, _, s = finished
    assert s["phase1"]["width"] in (8, 16)
    assert isinstance(s["phase1"]["fit"], bool)
    assert 0 <= s["phase1"]["train_acc"] <= 1
    assert set(s["phase2"]["best_params"]) == set(s["config"]["search"]["space"]) >= {"drop_input", "drop_hidden"}
    for variant in ("baseline", "dropout"):
        acc = s["final"][variant]["test_acc"]
        assert acc["n"] == 2 and 0 <= acc["mean"] <= 1 and acc["std"] >= 0
    assert s["improvement_test_acc"] == pytest.approx(
        s["final"]["dropout"]["test_acc"]["mean"] - s["final"]["baseline"]["test_acc"]["mean"])
    assert s["mlflow"]["tracking_uri"] == "sqlite:///mlflow.db" and s["mlflow"]["parent_run_id"]
    assert s["optuna"] == {"storage": "optuna.journal", "study_name": "two_phase"}


def test_summary_times_the_stages_and_their_training(finished):
    _, _, s = finished
    t = s["timing"]
    for stage in ("phase1", "phase2", "final"):
        assert 0 < t[f"{stage}_fit_seconds"] <= t[f"{stage}_seconds"]
    assert t["fit_seconds"] >= t["phase1_fit_seconds"] + t["phase2_fit_seconds"] + t["final_fit_seconds"] - 1e-3
    assert t["wall_seconds"] >= t["data_seconds"] + t["phase1_seconds"] + t["phase2_seconds"] + t["final_seconds"]
    assert t["tracking_wait_seconds"] >= 0


def test_prints_table_and_viewer_commands(finished):
    _, proc, _ = finished
    assert "Final, 2 seeds" in proc.stdout
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1" in proc.stdout
    assert "optuna-dashboard optuna.journal --host 127.0.0.1" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_optuna_study_has_the_trials_and_the_advice_first(finished):
    import optuna

    cwd, _, s = finished
    study = optuna.load_study(study_name="two_phase", storage=search.open_storage(str(cwd / "optuna.journal")))
    assert len(study.trials) == 3
    advice = {k: v for k, v in study.trials[0].params.items() if k.startswith("drop_")}
    assert advice == {"drop_input": 0.2, "drop_hidden": 0.5}
    assert all(t.state.is_finished() for t in study.trials)
    assert study.user_attrs["phase1"]["width"] == s["phase1"]["width"]
    assert s["phase2"]["best_trial"] == study.best_trial.number
    complete = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert s["phase2"]["best_value"] == max(complete)


def test_mlflow_parent_has_one_child_per_width_trial_and_final_run(finished):
    from mlflow import MlflowClient

    cwd, _, s = finished
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("two_phase")
    parent_id = s["mlflow"]["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    phases = [r.data.tags["phase"] for r in children]
    assert phases.count("phase1") == len(s["phase1"]["rows"])
    assert phases.count("search") == 3
    assert phases.count("final") == 2 * 2
    assert all(r.info.status in ("FINISHED", "FAILED") for r in children)
    trial_runs = [r for r in children if r.data.tags["phase"] == "search"]
    assert {r.data.tags["trial_number"] for r in trial_runs} == {"0", "1", "2"}
    assert all(r.data.tags["optuna_study"] == "two_phase" for r in trial_runs)
    # Per-epoch metrics, with step = epoch.
    history = client.get_metric_history(trial_runs[0].info.run_id, "val_acc")
    assert sorted(m.step for m in history) == list(range(1, len(history) + 1))
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"summary.json", "summary.txt", "config.yaml", "learning_curves.png", "phase1_capacity.png"} <= artifacts


def test_final_model_loads_as_pyfunc_and_predicts(finished):
    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    cwd, _, s = finished
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("two_phase")
    run = client.search_runs([exp.experiment_id], "tags.variant = 'dropout' and tags.phase = 'final' and tags.seed = '0'")[0]
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    proba = np.asarray(model.predict(np.array([[0.0, 0.5], [1.0, -0.5]])))
    assert proba.shape == (2, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_rerun_continues_the_study_without_redoing_phase1(finished, tmp_path):
    import optuna
    from conftest import run_dropout_lab
    from mlflow import MlflowClient

    cwd, _, s = finished
    # Work on a copy so the other checks keep their pristine run.
    import shutil

    for name in ("optuna.journal", "mlflow.db"):
        shutil.copy(cwd / name, tmp_path / name)
    proc = run_dropout_lab([*SMALL, "search.n_trials=5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Phase 1 is reused from the study: its result is announced, no width is trained again.
    assert f"phase 1: width {s['phase1']['width']} (" in proc.stdout
    assert "phase 1: width     8  train_acc" not in proc.stdout
    study = optuna.load_study(study_name="two_phase", storage=search.open_storage(str(tmp_path / "optuna.journal")))
    assert len(study.trials) == 5
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("two_phase")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{s['mlflow']['parent_run_id']}'")
    assert [r.data.tags["phase"] for r in children].count("phase1") == len(s["phase1"]["rows"])
    assert [r.data.tags["phase"] for r in children].count("search") == 5


def test_changed_config_with_same_study_name_is_refused(finished, tmp_path):
    import shutil

    from conftest import run_dropout_lab

    cwd, _, _ = finished
    shutil.copy(cwd / "optuna.journal", tmp_path / "optuna.journal")
    proc = run_dropout_lab([*SMALL, "trainer.lr=0.2", "tracking=none"], tmp_path)
    assert proc.returncode == 2
    assert "trainer.lr" in proc.stderr and "study_name" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_width_schedule_doubles_up_to_max():
    p = {"widths": None, "start_width": 32, "growth": 2.0, "max_width": 256}
    assert width_schedule(p) == [32, 64, 128, 256]


def test_width_schedule_explicit_list_wins():
    assert width_schedule({"widths": [10, 20], "start_width": 1, "growth": 2.0, "max_width": 4}) == [10, 20]


def test_fit_criterion_accuracy_and_loss():
    acc = {"fit_metric": "train_acc", "fit_threshold": 1.0}
    loss = {"fit_metric": "train_loss", "fit_threshold": 0.01}
    assert fits({"train_acc": 1.0}, acc) and not fits({"train_acc": 0.99}, acc)
    assert fits({"train_loss": 0.005}, loss) and not fits({"train_loss": float("nan")}, loss)


def test_stats_gives_mean_std_and_t_interval():
    out = stats([0.6, 0.7, 0.8])
    assert out["mean"] == pytest.approx(0.7) and out["std"] == pytest.approx(0.1)
    assert out["ci95"] == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)


def test_advice_is_enqueued_only_inside_the_space():
    space = {"drop_input": {"key": "model.drop_input", "low": 0.0, "high": 0.5},
             "drop_hidden": {"key": "model.drop_hidden", "low": 0.0, "high": 0.8}}
    assert search.advice_values(space) == {"drop_input": 0.2, "drop_hidden": 0.5}
    space["drop_hidden"]["high"] = 0.3
    assert search.advice_values(space) is None


def test_lease_is_exclusive_until_released(tmp_path):
    storage = search.open_storage(str(tmp_path / "j.journal"))
    first = search.Lease.try_acquire(storage, "s", "phase1")
    assert first is not None
    assert search.Lease.try_acquire(storage, "s", "phase1") is None
    first.release()
    again = search.Lease.try_acquire(storage, "s", "phase1")
    assert again is not None
    again.release()
