"""Training one configuration: config -> network + settings -> trained model with metrics.

Every stage of dropout_lab (a single run, phase-1 widths, Optuna trials, final seeds) trains through
:func:`fit`, so they all mean the same thing by a config.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dropout_lab.config import batch_size_of, flatten
from dropout_lab.data import Dataset
from dropout_lab.model import MLP, MLPSpec
from dropout_lab.trainer import Callback, TrainResult, TrainSettings, evaluate, train


def model_spec(model_cfg: dict, data: Dataset) -> MLPSpec:
    """The network the ``model`` config describes, sized for ``data``."""
    mult = float(model_cfg.get("width_multiplier", 1.0))
    hidden = [max(1, int(round(h * mult))) for h in model_cfg["hidden"]]
    return MLPSpec(
        n_inputs=data.n_features,
        hidden=hidden,
        n_outputs=1 if data.n_classes == 2 else data.n_classes,
        activation=model_cfg["activation"],
        init=model_cfg["init"],
        drop_input=model_cfg["drop_input"],
        drop_hidden=model_cfg["drop_hidden"],
        loss=model_cfg["loss"],
        dtype=model_cfg["dtype"],
    )


def train_settings(t: dict) -> TrainSettings:
    """The ``trainer`` config as :class:`TrainSettings`."""
    return TrainSettings(
        optimizer=t["optimizer"], lr=float(t["lr"]), momentum=float(t["momentum"]), nesterov=bool(t["nesterov"]),
        lr_decay=float(t["lr_decay"]), weight_decay=float(t["weight_decay"]),
        max_norm=None if t["max_norm"] is None else float(t["max_norm"]),
        batch_size=batch_size_of(t["batch_size"]), epochs=int(t["epochs"]),
        iterations=None if t["iterations"] is None else int(t["iterations"]),
        eval_every=int(t["eval_every"]), patience=None if t["patience"] is None else int(t["patience"]),
        reduction=t["reduction"], eval_train_max=int(t["eval_train_max"]),
    )


@dataclass
class Fit:
    """A trained model with its training record and final metrics (dropout off)."""

    model: MLP
    result: TrainResult
    metrics: dict[str, Any]


# Below this many multiply-adds per batch in the largest layer, OpenBLAS runs one thread anyway.
OPENBLAS_SERIAL_MACS = 65536 * 4
# Up to this many per batch one BLAS thread trains as fast as two (64 x 256 x 256: 6% faster; 64 x 512 x 512:
# 17% slower) and leaves the other core to the MLflow writer or a second worker (BENCHMARKS.md). The limit
# holds for evaluation too: bigger products, but a small part of the time.
ONE_THREAD_MACS = 8_000_000


def blas_threads(spec: MLPSpec, batch_size: int | None, n_train: int, configured: int | None = None) -> int | None:
    """BLAS threads to train ``spec`` with: ``configured`` if set, 1 for small products, None to leave
    the library's setting alone."""
    if configured is not None:
        return int(configured)
    sizes = [spec.n_inputs, *spec.hidden, spec.n_outputs]
    largest = max(a * b for a, b in zip(sizes, sizes[1:]))
    if n_train * largest <= OPENBLAS_SERIAL_MACS:
        return None  # not even evaluating the training set makes OpenBLAS use a second thread
    rows = min(batch_size or n_train, n_train)
    return 1 if rows * largest <= ONE_THREAD_MACS else None


_fit_seconds = 0.0


def fit_seconds() -> float:
    """Seconds this process has spent in :func:`fit` (training, evaluation, building the network)."""
    return _fit_seconds


def fit(cfg: dict, data: Dataset, seed: int, callback: Callback | None = None) -> Fit:
    """Train the config's network on ``data`` with one Generator seeded by ``seed``; evaluate on test."""
    global _fit_seconds
    began = time.perf_counter()
    try:
        return _fit(cfg, data, seed, callback)
    finally:
        _fit_seconds += time.perf_counter() - began


def _fit(cfg: dict, data: Dataset, seed: int, callback: Callback | None) -> Fit:
    rng = np.random.default_rng(seed)
    model = MLP(model_spec(cfg["model"], data), rng)
    settings = train_settings(cfg["trainer"])
    threads = blas_threads(model.spec, settings.batch_size, data.X_train.shape[0], cfg["trainer"].get("blas_threads"))
    with _blas_limit(threads):
        result = train(model, data.X_train, data.y_train, data.X_val, data.y_val, settings, rng, callback)
    final = result.final
    metrics: dict[str, Any] = {
        "status": result.status,
        "reason": result.reason,
        "epochs": result.epochs,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 4),
        "samples_per_s": round(result.samples_per_s, 1) if math.isfinite(result.samples_per_s) else None,
    }
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        metrics[key] = final.get(key)
    if data.X_test.shape[0] and result.status != "diverged":
        X_test = np.ascontiguousarray(data.X_test, dtype=model.dtype)
        metrics["test_loss"], metrics["test_acc"] = evaluate(model, X_test, data.y_test, model.spec.loss)
    else:
        metrics["test_loss"] = metrics["test_acc"] = None
    return Fit(model, result, metrics)


@contextlib.contextmanager
def _blas_limit(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


# Config sections that mean nothing for a task's runs: left out of their MLflow params, so the
# UI's parameter columns show what shaped each run.
_UNUSED_SECTIONS = {"train": ("two_phase", "search", "compare"), "two_phase": ("compare",),
                    "compare": ("two_phase", "search")}


def run_params(cfg: dict) -> dict[str, Any]:
    """The flattened config of a run, without the sections its task does not use."""
    unused = _UNUSED_SECTIONS.get(cfg.get("task", ""), ())
    return flatten({k: v for k, v in cfg.items() if k not in unused})


class Progress:
    """Per-evaluation progress lines, at most one every ``every_s`` seconds (and the last one)."""

    def __init__(self, label: str, total_epochs: int, enabled: bool = True, every_s: float = 1.0,
                 stream=None) -> None:
        self.label, self.total, self.enabled, self.every_s = label, total_epochs, enabled, every_s
        self.stream = stream or sys.stdout
        self._last = -math.inf

    def __call__(self, epoch: int, row: dict) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < self.every_s and epoch < self.total):
            return
        self._last = now
        parts = [f"{self.label} epoch {epoch}/{self.total}"]
        for key in ("batch_loss", "train_loss", "train_acc", "val_loss", "val_acc"):
            if key in row and row[key] is not None:
                parts.append(f"{key} {row[key]:.4f}")
        print("  ".join(parts), file=self.stream, flush=True)


def chain(*callbacks: Callable | None) -> Callback:
    """One callback calling several; training stops if any returns True."""
    active = [c for c in callbacks if c is not None]

    def call(epoch: int, row: dict) -> bool:
        stop = False
        for c in active:
            stop = bool(c(epoch, row)) or stop
        return stop

    return call


def metrics_table(rows: dict[str, dict], columns: tuple[str, ...] = ("loss", "acc")) -> str:
    """A small fixed-width table: one line per split (train/val/test), one column per metric."""
    head = f"{'split':<8}" + "".join(f"{c:>12}" for c in columns)
    lines = [head, "-" * len(head)]
    for split, values in rows.items():
        cells = []
        for c in columns:
            v = values.get(c)
            cells.append(f"{v:>12.4f}" if isinstance(v, (int, float)) and v is not None else f"{'-':>12}")
        lines.append(f"{split:<8}" + "".join(cells))
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON (NaN written as null), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def fmt(v: Any) -> str:
    """A metric for a table: four decimals, or "-" when missing."""
    return f"{v:.4f}" if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else "-"


def to_yaml(cfg: dict) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(cfg))


def log_curves(run, histories: dict, output_dir: Path | None, name: str, title: str, cfg: dict,
               force: bool = False, per_run: bool = False) -> Path | None:
    """Learning curves as ``name``.png, logged to ``run`` when tracking and plots are on (``force``: also
    without tracking). Kept in ``output_dir`` when given (the path is returned), else in MLflow only.
    ``per_run``: the figure of one width or trial, drawn only with ``tracking.run_plots``."""
    if per_run and not cfg["tracking"]["run_plots"]:
        return None
    if not force and (cfg["tracking"]["backend"] != "mlflow" or not cfg["tracking"]["log_plots"]):
        return None
    if not any(histories.values()):
        return None
    path = Path(output_dir or ".") / f"{name}.png"
    run.plot("learning_curves", path, keep=output_dir is not None, histories=histories, title=title)
    return path if output_dir is not None else None
