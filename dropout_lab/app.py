"""What ``python -m dropout_lab`` does with a composed config: validate it, run the task, report.

Tasks: ``train`` (one model), ``two_phase`` (the main job), ``compare`` (two configs over seeds).
Bad input ends here as one clear paragraph on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

from dropout_lab.config import to_dict, validate
from dropout_lab.errors import ConfigError, TrackingError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def run(cfg, output_dir: Path) -> int:
    """Run the task ``cfg`` names, writing into ``output_dir``; return the process exit code."""
    # SIGTERM (a scheduler or `kill`) ends runs like Ctrl-C does: recorded as KILLED, not left RUNNING.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        conf = to_dict(cfg)
        validate(conf)
        output_dir.mkdir(parents=True, exist_ok=True)
        if conf["task"] == "train":
            return run_train(conf, output_dir)
        if conf["task"] == "two_phase":
            from dropout_lab.two_phase import run_two_phase

            return run_two_phase(conf, output_dir)
        from dropout_lab.compare import run_compare

        return run_compare(conf, output_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrackingError as exc:
        print(f"error: recording the run failed: {exc}. What was recorded before stays; rerun to resume "
              "a study, or use tracking=none.", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: runs in progress were recorded as KILLED; rerun the same command to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_train(cfg: dict, output_dir: Path) -> int:
    """Train one model, save ``model.npz`` and ``summary.json``, print its metrics."""
    from dropout_lab.data import load_dataset
    from dropout_lab.tracking import closing, make_tracker

    start = time.perf_counter()
    # The MLflow writer opens its store while the data loads.
    with closing(make_tracker(cfg)) as tracker:
        data = load_dataset(cfg["dataset"], cfg["model"]["dtype"])
        print(data.describe(), flush=True)
        tracker.wait_ready()
        return _train(cfg, output_dir, tracker, data, start)


def _train(cfg: dict, output_dir: Path, tracker, data, start: float) -> int:
    from dropout_lab.run import Progress, chain, fit, metrics_table, run_params, write_json
    from dropout_lab.tracking import FAILED, FINISHED

    tags = {"phase": "single", "dataset": data.name, "output_dir": str(output_dir)}
    with tracker.start_run(f"train-seed{cfg['seed']}", params=run_params(cfg), tags=tags) as mlrun:
        progress = Progress("train", _epochs(cfg, data.X_train.shape[0]), cfg["progress"])
        fitted = fit(cfg, data, cfg["seed"], chain(progress, mlrun.log_metrics))
        model_path = output_dir / "model.npz"
        fitted.model.save(model_path)
        m = fitted.metrics
        summary = {
            "task": "train",
            "status": m["status"],
            "reason": m["reason"],
            "dataset": data.name,
            "metrics": {k: m[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")},
            "epochs": m["epochs"],
            "steps": m["steps"],
            "wall_seconds": round(time.perf_counter() - start, 3),
            "train_seconds": m["train_seconds"],
            "samples_per_s": m["samples_per_s"],
            "model_file": str(model_path),
            "history": fitted.result.history,
            "mlflow": {"tracking_uri": tracker.uri, "experiment": tracker.experiment_name, "run_id": mlrun.id},
            "config": cfg,
        }
        if data.name == "xor":
            summary["predictions"] = [round(float(p), 4) for p in fitted.model.predict_proba(data.X_train)[:, 1]]
        write_json(output_dir / "summary.json", summary)
        mlrun.log_metrics(m["epochs"], {f"final_{k}": v for k, v in summary["metrics"].items() if v is not None})
        mlrun.log_metrics(m["epochs"], {"samples_per_s": m["samples_per_s"] or math.nan})
        mlrun.set_tags({"status": m["status"], "reason": m["reason"]})
        mlrun.log_artifact(output_dir / "summary.json")
        mlrun.log_artifact(model_path)
        if cfg["tracking"]["backend"] == "mlflow" and cfg["tracking"]["log_models"]:
            mlrun.log_pyfunc_model(model_path, data.mean, data.scale)
        mlrun.end(FINISHED if m["status"] != "diverged" else FAILED)
    tracker.close()

    rows = {split: {"loss": m[f"{split}_loss"], "acc": m[f"{split}_acc"]} for split in ("train", "val", "test")}
    print()
    print(metrics_table(rows))
    if "predictions" in summary:
        print(f"predictions {summary['predictions']}  targets {[int(v) for v in data.y_train]}")
    sps = m["samples_per_s"]
    print(f"\nstatus {m['status']}  epochs {m['epochs']}  wall {summary['wall_seconds']:.1f}s  "
          f"throughput {sps:,.0f} samples/s" if sps else f"\nstatus {m['status']}")
    print(f"wrote {output_dir / 'summary.json'} and {model_path}")
    if tracker.ui_command():
        print(f"view the run:  {tracker.ui_command()}")
    if m["status"] == "diverged":
        print(f"error: training diverged: {m['reason']}; lower trainer.lr.", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _epochs(cfg: dict, n_train: int) -> int:
    from dropout_lab.config import batch_size_of

    t = cfg["trainer"]
    if t["iterations"] is None:
        return int(t["epochs"])
    batch = batch_size_of(t["batch_size"]) or n_train
    return math.ceil(t["iterations"] / math.ceil(n_train / min(batch, n_train)))
