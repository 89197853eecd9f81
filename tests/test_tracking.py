"""The MLflow tracker on its own: what it records through its writer process (and in this process),
what survives the death of the training process, and how a store it cannot use is reported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dropout_lab.errors import ConfigError
from dropout_lab.tracking import FINISHED, MlflowTracker, closing


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _record_one_run(tracker: MlflowTracker, tmp_path: Path) -> str:
    """A parent with one child holding params, per-epoch metrics, tags, a file, text and a figure."""
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with closing(tracker):
        tracker.wait_ready()
        parent = tracker.start_run("parent", tags={"phase": "parent"})
        child = tracker.start_run("child", params={"model.drop_hidden": 0.5}, tags={"phase": "search"},
                                  parent=parent)
        for epoch in range(1, 4):
            child.log_metrics(epoch, {"val_acc": 0.5 + epoch / 10, "val_loss": float("nan")})
        child.set_tags({"state": "COMPLETE"})
        child.log_artifact(note)
        child.log_text("some text", "summary.txt")
        child.plot("learning_curves", tmp_path / "curves.png", keep=False,
                   histories={"trial": [{"epoch": e, "val_acc": 0.5 + e / 10} for e in range(1, 4)]}, title="t")
        child.end(FINISHED)
        parent.end(FINISHED)
        return child.id


@pytest.mark.parametrize("asynchronous", [True, False], ids=["writer-process", "in-process"])
def test_tracker_records_runs_metrics_tags_and_artifacts(tmp_path, asynchronous):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _record_one_run(MlflowTracker(uri, "exp", asynchronous=asynchronous), tmp_path)

    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"model.drop_hidden": "0.5"}
    assert run.data.tags["state"] == "COMPLETE"
    assert client.get_run(run.data.tags["mlflow.parentRunId"]).info.run_name == "parent"
    assert [m.value for m in client.get_metric_history(run_id, "val_acc")] == pytest.approx([0.6, 0.7, 0.8])
    assert "val_loss" not in run.data.metrics  # not finite: not recorded
    assert {a.path for a in client.list_artifacts(run_id)} == {"note.txt", "summary.txt", "curves.png"}
    assert not (tmp_path / "curves.png").exists()  # keep=False: in MLflow only


def test_kept_figure_is_written_once_the_tracker_is_closed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "capacity.png"
    with closing(MlflowTracker(uri, "exp")) as tracker:
        run = tracker.start_run("parent")
        run.plot("capacity", path, rows=[{"width": 8, "train_acc": 0.9, "val_acc": 0.8}], chosen=8, title="t")
        run.end(FINISHED)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.path for a in _client(uri).list_artifacts(run.id)] == ["capacity.png"]


def test_writer_records_what_it_was_sent_after_the_training_process_dies(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = textwrap.dedent(f"""
        import os
        from dropout_lab.tracking import MlflowTracker
        tracker = MlflowTracker({uri!r}, "exp")
        run = tracker.start_run("doomed")
        for epoch in range(1, 101):
            run.log_metrics(epoch, {{"val_acc": epoch / 100}})
        run.flush()
        print(run.id, flush=True)
        os._exit(9)  # no close, no atexit: as if killed
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    run_id = proc.stdout.strip()
    client = _client(uri)
    deadline = time.monotonic() + 60
    while len(client.get_metric_history(run_id, "val_acc")) < 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(client.get_metric_history(run_id, "val_acc")) == 100
    assert client.get_run(run_id).info.status == "RUNNING"  # never ended: a resume marks it KILLED


def test_two_phase_job_with_a_store_the_writer_cannot_open_exits_2_without_traceback(tmp_path):
    from conftest import run_dropout_lab

    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
    proc = run_dropout_lab(["+experiment=two_phase", "dataset=moons", "dataset.n_samples=200",
                            "two_phase.widths=[8]", "search.n_trials=2", "progress=false"], tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "cannot use the MLflow tracking store 'tracking.uri=sqlite:///mlflow.db'" in proc.stderr
    assert (tmp_path / "mlflow.db").read_bytes() == b"this is not a database" * 100


def test_store_the_writer_cannot_open_is_a_config_error(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    tracker = MlflowTracker(f"sqlite:///{db}", "exp")
    with pytest.raises(ConfigError, match=r"cannot use the MLflow tracking store 'tracking.uri=sqlite:///.*mlflow.db'"):
        with closing(tracker):
            tracker.wait_ready()
    assert db.read_bytes() == b"this is not a database" * 100  # left as it was


# --- BLAS threads per network -------------------------------------------------------------------

def _spec(sizes: list[int]):
    from dropout_lab.model import MLPSpec

    return MLPSpec(n_inputs=sizes[0], hidden=sizes[1:-1], n_outputs=sizes[-1])


@pytest.mark.parametrize(("sizes", "batch", "rows", "expected"), [
    ([40, 256, 256, 10], 64, 4000, 1),         # 4.2M multiply-adds per batch: one thread
    ([40, 64, 64, 10], 64, 3200, 1),           # batches serial anyway, but evaluation would not be
    ([40, 1024, 1024, 10], 64, 4000, None),    # 67M: the library's threads
    ([784, 1024, 1024, 10], 128, 20000, None),
    ([3, 4, 1], None, 4, None),                # tiny: OpenBLAS runs one thread anyway, nothing to limit
])
def test_blas_threads_one_for_small_networks_only(sizes, batch, rows, expected):
    from dropout_lab.run import blas_threads

    assert blas_threads(_spec(sizes), batch, rows) == expected


def test_configured_blas_threads_win():
    from dropout_lab.run import blas_threads

    assert blas_threads(_spec([40, 256, 256, 10]), 64, 4000, configured=2) == 2


def test_mlflow_telemetry_is_off_unless_the_user_asks_for_it() -> None:
    # No network calls at run time: MLflow's usage telemetry is switched off before MLflow is
    # imported, and a user's own setting is kept.
    code = "import os, dropout_lab.tracking; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}

    def run(env: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run(env) == "true"
    assert run({**env, "MLFLOW_DISABLE_TELEMETRY": "false"}) == "false"
