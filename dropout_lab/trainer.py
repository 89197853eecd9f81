"""Minibatch training of an :class:`~dropout_lab.model.MLP`: SGD (momentum, Nesterov) or Adam,
learning-rate decay, L2 weight decay, the max-norm constraint, early stopping and a per-epoch callback.

The trainer knows nothing of Optuna, MLflow or Hydra: it takes plain arguments and reports each
evaluation through ``callback(epoch, metrics)``, which may return ``True`` to stop training (or raise,
as a pruner does).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dropout_lab.errors import bad_value
from dropout_lab.model import MLP, blas_function, loss_forward_backward

OPTIMIZERS = ("sgd", "adam")
REDUCTIONS = ("mean", "sum")

Callback = Callable[[int, dict], "bool | None"]


@dataclass
class TrainSettings:
    """How to train (what the ``trainer`` config says)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch
    weight_decay: float = 0.0  # L2 penalty on weights (not biases)
    max_norm: float | None = None  # bound on the L2 norm of each unit's incoming weights
    batch_size: int | None = 128  # None: full batch
    epochs: int = 20
    iterations: int | None = None  # total optimiser steps; overrides epochs when set
    eval_every: int = 1  # evaluate (and call back) every this many epochs
    patience: int | None = None  # early stopping on validation loss, in evaluations
    reduction: str = "mean"
    eval_train_max: int = 10000  # train metrics are measured (dropout off) on at most this many rows
    adam_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise bad_value("trainer.optimizer", self.optimizer, " | ".join(OPTIMIZERS))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise bad_value("trainer.lr", self.lr, "a finite number > 0")
        if not 0 <= self.momentum < 1:
            raise bad_value("trainer.momentum", self.momentum, "a number in [0, 1)")
        if not 0 < self.lr_decay <= 1:
            raise bad_value("trainer.lr_decay", self.lr_decay, "a number in (0, 1] (per-epoch multiplier)")
        if self.weight_decay < 0:
            raise bad_value("trainer.weight_decay", self.weight_decay, "a number >= 0")
        if self.max_norm is not None and not self.max_norm > 0:
            raise bad_value("trainer.max_norm", self.max_norm, "null (off) or a number > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise bad_value("trainer.batch_size", self.batch_size, "a whole number >= 1, or 'full'")
        if self.epochs < 1:
            raise bad_value("trainer.epochs", self.epochs, "a whole number >= 1")
        if self.iterations is not None and self.iterations < 1:
            raise bad_value("trainer.iterations", self.iterations, "null or a whole number >= 1")
        if self.eval_every < 1:
            raise bad_value("trainer.eval_every", self.eval_every, "a whole number >= 1")
        if self.patience is not None and self.patience < 1:
            raise bad_value("trainer.patience", self.patience, "null (off) or a whole number >= 1")
        if self.reduction not in REDUCTIONS:
            raise bad_value("trainer.reduction", self.reduction, " | ".join(REDUCTIONS))


@dataclass
class TrainResult:
    """What a training run produced: status, per-evaluation history and final metrics."""

    status: str  # completed | early_stopped | stopped | diverged
    reason: str = ""
    history: list[dict] = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    train_seconds: float = 0.0  # time inside optimiser steps only (no evaluation)
    samples: int = 0
    best_epoch: int | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def final(self) -> dict:
        """Metrics of the returned weights (the best epoch when early stopping restored it)."""
        if not self.history:
            return {}
        if self.best_epoch is not None:
            for row in self.history:
                if row["epoch"] == self.best_epoch:
                    return row
        return self.history[-1]


def evaluate(model: MLP, X: np.ndarray, y: np.ndarray, loss: str, batch_size: int = 4096) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``X`` (N, D), ``y`` (N,) with dropout off."""
    n = X.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    total_loss, correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb, yb = X[start:start + batch_size], y[start:start + batch_size]
        z = model.forward(xb)
        batch_loss, y_hat, _ = loss_forward_backward(z, yb, loss, reduction="sum")
        total_loss += batch_loss
        pred = (y_hat[:, 0] > 0.5).astype(np.int64) if y_hat.shape[1] == 1 else y_hat.argmax(axis=1)
        correct += int((pred == yb).sum())
    return total_loss / n, correct / n


class Optimizer:
    """SGD with (Nesterov) momentum or Adam, with L2 weight decay and max-norm, updating in place.

    Gradients, velocities and Adam's second moments are laid out like :attr:`MLP.flat`, so one step
    updates all parameters at once. It goes through the flat vectors in slices of ``CHUNK_BYTES``:
    the arrays of one slice stay in the CPU cache during the few operations of the update, which
    then reads and writes main memory once instead of once per operation.
    """

    CHUNK_BYTES = 1 << 18

    def __init__(self, model: MLP, s: TrainSettings) -> None:
        self.model, self.s = model, s
        self.params = model.params
        self.is_weight = [p.ndim == 2 for p in self.params]
        self.flat_grads, self.grads = model.new_flat()
        self.kind = "adam" if s.optimizer == "adam" else "momentum" if s.momentum > 0 else "sgd"
        none = [None] * len(self.params)
        flat_m, m = model.new_flat() if self.kind != "sgd" else (None, none)  # velocity / first moment
        flat_v, v = model.new_flat() if self.kind == "adam" else (None, none)  # second moment
        self.velocity = None if flat_m is None else m
        self.second = None if flat_v is None else v
        # The pieces updated one after the other: (p, g, m, v, two scratch arrays of their shape).
        if model.owns_flat():
            size, chunk = model.flat.size, max(1, self.CHUNK_BYTES // model.dtype.itemsize)
            flats = (model.flat, self.flat_grads, flat_m, flat_v)
            pieces = [tuple(None if a is None else a[i:i + chunk] for a in flats) for i in range(0, size, chunk)]
        else:  # a parameter array was replaced: update each on its own
            pieces = list(zip(self.params, self.grads, m, v))
        # Plain momentum SGD on a network that calls BLAS directly: backward adds each gradient to
        # the velocity in the product that computes it (MLP.backward's accumulate), so the step does
        # not read the gradients; see step() for why the velocities hold momentum * m between steps.
        self.accumulate = model.blas and self.kind == "momentum" and not s.nesterov and not s.weight_decay
        # The accumulate path updates the whole flat vectors in two BLAS calls (axpy, scal): on a big
        # network this pass is bound by memory bandwidth, and BLAS spreads it over its threads where
        # NumPy's operations run on one core (measured: 1.3-1.7 ms instead of 3.6 ms per step on
        # 784-1024-1024-10 with 2 cores).
        self.flat_blas = None
        if self.accumulate and model.owns_flat():
            self.flat_blas = (model.flat, flat_m, blas_function("axpy", model.dtype), blas_function("scal", model.dtype))
        largest = max(p.size for p, *_ in pieces)
        scratch = [np.empty(largest, dtype=model.dtype) for _ in range(2)]
        self.pieces = [(p, g, m, v, *(t[:p.size].reshape(p.shape) for t in scratch)) for p, g, m, v in pieces]
        self.t = 0

    def step(self, lr: float) -> None:
        s = self.s
        self.t += 1
        if s.weight_decay:
            for p, g, is_weight in zip(self.params, self.grads, self.is_weight):
                if is_weight:
                    g += s.weight_decay * p  # the gradient of 0.5 * weight_decay * |W|^2
        if self.kind == "adam":
            b1, b2 = s.adam_betas
            step = lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
            for p, g, m, v, tmp, denom in self.pieces:
                m *= b1
                m += np.multiply(g, 1 - b1, out=tmp)  # m = b1 * m + (1 - b1) * g
                v *= b2
                np.multiply(g, g, out=tmp)
                tmp *= 1 - b2
                v += tmp  # v = b2 * v + (1 - b2) * g^2
                np.sqrt(v, out=denom)
                denom += 1e-8
                np.multiply(m, step, out=tmp)
                tmp /= denom
                p -= tmp  # p -= step * m / (sqrt(v) + 1e-8)
        elif self.kind == "momentum":
            # PyTorch's formulation: m = momentum * m + g; Nesterov steps along g + momentum * m.
            mu = s.momentum
            if self.accumulate:
                # backward has added g to the velocity, which held momentum * m: it holds the new
                # m = momentum * m + g. Scaling it by momentum here spares BLAS a separate pass over
                # it (with beta = momentum) in the next backward.
                if self.flat_blas is not None:
                    p, m, axpy, scal = self.flat_blas
                    if axpy(m, p, a=-lr) is not p or scal(mu, m) is not m:  # p -= lr * m; m *= momentum
                        raise RuntimeError("BLAS axpy / scal did not update the flat vectors in place")
                else:
                    for p, _, m, _, tmp, _ in self.pieces:
                        p -= np.multiply(m, lr, out=tmp)
                        m *= mu
            else:
                for p, g, m, _, tmp, _ in self.pieces:
                    m *= mu
                    m += g
                    if s.nesterov:
                        g += np.multiply(m, mu, out=tmp)
                        p -= np.multiply(g, lr, out=tmp)
                    else:
                        p -= np.multiply(m, lr, out=tmp)
        else:
            for p, g, _, _, tmp, _ in self.pieces:
                p -= np.multiply(g, lr, out=tmp)
        self.constrain()

    def constrain(self) -> None:
        """Apply the max-norm constraint (when set) after an update."""
        s = self.s
        if s.max_norm is not None:
            for p, is_weight in zip(self.params, self.is_weight):
                if is_weight:
                    # Max-norm (Srivastava et al. 2014): each unit's incoming weight vector, a column
                    # of W (fan_in, fan_out), is projected back onto the ball of radius max_norm.
                    norms = np.sqrt(np.einsum("ij,ij->j", p, p))
                    over = norms > s.max_norm
                    if over.any():
                        p[:, over] *= (s.max_norm / norms[over]).astype(p.dtype)


def train(
    model: MLP,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    settings: TrainSettings,
    rng: np.random.Generator,
    callback: Callback | None = None,
) -> TrainResult:
    """Train ``model`` in place (see :func:`_train`).

    Overflow while a run diverges is expected and reported as status ``diverged``, so NumPy's
    floating-point warnings are silenced here rather than printed for every layer.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train(model, X_train, y_train, X_val, y_val, settings, rng, callback)


def _train(
    model: MLP,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    settings: TrainSettings,
    rng: np.random.Generator,
    callback: Callback | None = None,
) -> TrainResult:
    """Train ``model`` in place; ``rng`` drives shuffling and dropout masks.

    Every ``eval_every`` epochs (and after the last) the train metrics (dropout off, on at most
    ``eval_train_max`` rows), the validation metrics, the learning rate and the running minibatch loss
    (dropout on) go into the history and to ``callback``.
    """
    s = settings
    dtype = model.dtype
    X_train = np.ascontiguousarray(X_train, dtype=dtype)
    X_val = np.ascontiguousarray(X_val, dtype=dtype)
    n = X_train.shape[0]
    batch = n if s.batch_size is None else min(int(s.batch_size), n)
    steps_per_epoch = math.ceil(n / batch)
    epochs = s.epochs if s.iterations is None else math.ceil(s.iterations / steps_per_epoch)
    total_steps = s.iterations if s.iterations is not None else epochs * steps_per_epoch
    # Train metrics come from a fixed subset so that evaluating them stays cheap on large sets.
    eval_idx = np.sort(rng.choice(n, s.eval_train_max, replace=False)) if n > s.eval_train_max else None
    X_eval = X_train if eval_idx is None else X_train[eval_idx]
    y_eval = y_train if eval_idx is None else y_train[eval_idx]

    opt = Optimizer(model, s)
    result = TrainResult(status="completed")
    best_val, best_params, bad_evals = math.inf, None, 0
    lr = s.lr
    forward, backward, grads, update = model.forward, model.backward, opt.grads, opt.step
    if opt.accumulate:  # gradients go straight into the velocities (see Optimizer)
        backward, grads = functools.partial(backward, accumulate=True), opt.velocity
    loss_name, reduction = model.spec.loss, s.reduction
    full_batch = batch == n
    y_train = np.asarray(y_train)
    if model.spec.n_outputs == 1:
        y_train = y_train.astype(dtype)  # 0/1 targets in the network's dtype once, not every step
    if not full_batch:
        # Minibatches are gathered into these arrays, reused from batch to batch.
        xb_all = np.empty((batch, *X_train.shape[1:]), dtype=dtype)  # (batch, D)
        yb_all = np.empty(batch, dtype=y_train.dtype)  # (batch,)

    def step(xb: np.ndarray, yb: np.ndarray) -> float:
        """One optimiser step on the batch ``xb`` (B, D), ``yb`` (B,); returns the batch loss.

        A non-finite loss leaves the weights alone (the caller stops: training diverged).
        """
        z = forward(xb, rng)
        loss, _, dz = loss_forward_backward(z, yb, loss_name, reduction)
        if math.isfinite(loss):
            backward(dz, grads)
            update(lr)
        return loss

    # A loss far above where training started has diverged even while it stays finite: the
    # cross-entropy of saturated outputs, or Adam's bounded steps, can grow without overflowing.
    start_loss = evaluate(model, X_eval, y_eval, loss_name)[0]
    chance = math.log(max(2, model.spec.n_outputs)) if loss_name == "xent" else math.inf
    blowup = 10 * max(start_loss, chance) if math.isfinite(start_loss) else math.inf

    def diverged(loss: float, epoch: int, lr: float) -> None:
        result.status = "diverged"
        result.reason = f"training loss became {loss} at epoch {epoch} (learning rate {lr:g})"

    epoch = 0
    while epoch < epochs:
        # Train up to the next evaluation (every eval_every epochs, and after the last one) with
        # the clock running: the clock measures optimiser steps only, never evaluation.
        until = min(epochs, (epoch // s.eval_every + 1) * s.eval_every)
        t0 = time.perf_counter()
        if full_batch:
            # One step per epoch on all rows, back to back: no shuffling (the gradient does not
            # depend on row order), no gathering.
            first = epoch + 1
            for epoch in range(first, until + 1):
                loss = step(X_train, y_train)
                if not math.isfinite(loss):
                    break
                lr *= s.lr_decay
            ok = math.isfinite(loss)
            result.steps += epoch - first + ok
            result.samples += (epoch - first + ok) * n
            loss_sum, seen = (0.0 + loss * n, n) if ok else (0.0, 0)  # of the last epoch
            if not ok:
                diverged(loss, epoch, lr)
                lr *= s.lr_decay
        else:
            while epoch < until:
                epoch += 1
                loss, loss_sum, seen = 0.0, 0.0, 0
                order = rng.permutation(n)
                for start in range(0, n, batch):
                    if result.steps >= total_steps:
                        break
                    idx = order[start:start + batch]
                    xb = np.take(X_train, idx, axis=0, out=xb_all[:len(idx)])
                    yb = np.take(y_train, idx, out=yb_all[:len(idx)])
                    loss = step(xb, yb)
                    if not math.isfinite(loss):
                        diverged(loss, epoch, lr)
                        break
                    result.steps += 1
                    loss_sum += loss * len(idx)
                    seen += len(idx)
                result.samples += seen
                lr *= s.lr_decay
                if result.status == "diverged":
                    break
        result.train_seconds += time.perf_counter() - t0
        result.epochs = epoch
        row = {"epoch": epoch, "batch_loss": loss_sum / seen if seen else float("nan")}
        row["train_loss"], row["train_acc"] = evaluate(model, X_eval, y_eval, model.spec.loss)
        if X_val.shape[0]:
            row["val_loss"], row["val_acc"] = evaluate(model, X_val, y_val, model.spec.loss)
        row["lr"] = lr / s.lr_decay
        row["seconds"] = result.train_seconds
        if result.status != "diverged" and not all(
            math.isfinite(v) for k, v in row.items() if k.endswith("loss")
        ):
            result.status = "diverged"
            result.reason = f"loss became non-finite at epoch {epoch} (learning rate {row['lr']:g})"
        elif result.status != "diverged" and row["train_loss"] > blowup:
            result.status = "diverged"
            result.reason = (f"training loss {row['train_loss']:.4g} at epoch {epoch} is over 10x its starting "
                             f"value {start_loss:.4g} (learning rate {row['lr']:g})")
        result.history.append(row)
        if result.status == "diverged":
            break
        if callback is not None and callback(epoch, row):
            result.status, result.reason = "stopped", f"stopped by callback at epoch {epoch}"
            break
        if s.patience is not None and "val_loss" in row:
            if row["val_loss"] < best_val:
                best_val, bad_evals, result.best_epoch = row["val_loss"], 0, epoch
                best_params = [p.copy() for p in model.params]
            else:
                bad_evals += 1
                if bad_evals >= s.patience:
                    result.status = "early_stopped"
                    result.reason = f"validation loss did not improve for {s.patience} evaluations"
                    break
    if best_params is not None and result.best_epoch != result.epochs:
        for p, best in zip(model.params, best_params):
            p[...] = best
    else:
        result.best_epoch = None
    return result
