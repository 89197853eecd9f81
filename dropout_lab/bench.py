"""Training-throughput benchmarks of the NumPy trainer, side by side with PyTorch CPU when installed.

``python -m dropout_lab.bench [--case large|small|seed|gemm|all] [--epochs E] [--no-torch] [--threads T]``
prints one JSON object per line:

* ``large``: 784-1024-1024-10 ReLU, batch 128, dropout 0.2 on the input and 0.5 on the hidden layers,
  SGD with momentum 0.9, float32, on synthetic data. Also the GFLOP/s this reaches, counting
  ``2*M*N*K`` per GEMM (forward, dW, and dX except for the first layer), as a fraction of the float32
  GEMM rates ``np.matmul`` reaches (the ``gemm`` shapes), measured just before each training run.
* ``small``: 40-256-256-10 (MNIST-1D sized), batch 64, the same rates and optimiser.
* ``seed``: the 2015 post's 3-4-1 sigmoid network, 60000 full-batch steps on the 4-row table (seconds).
* ``gemm``: float32 ``np.matmul`` of 128x1024 @ 1024x1024 and of bigger square matrices.

Each throughput is one training epoch after a warm-up epoch (``--epochs`` epochs per measurement),
measured ``--repeats`` times with NumPy and PyTorch alternating, so that both see the same machine
load; the figures are medians and ``ratio`` is NumPy over PyTorch (above 1: NumPy is faster).
PyTorch is imported only when it is used (``pip install -e .[bench]``). Benchmarks only: nothing
here is used by training.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dropout_lab.model import MLP, MLPSpec, blas_function
from dropout_lab.trainer import TrainSettings, train


@dataclass
class Case:
    """One benchmark network and its synthetic data set."""

    name: str
    sizes: list[int]  # [inputs, hidden..., outputs]
    batch: int | None  # None: full batch
    rows: int
    activation: str = "relu"
    drop_input: float = 0.2
    drop_hidden: float = 0.5
    momentum: float = 0.9
    lr: float = 0.01
    loss: str = "xent"
    reduction: str = "mean"
    dtype: str = "float32"
    init: str = "he"
    steps: int | None = None  # full-batch cases: optimiser steps per measurement


CASES = {
    "large": Case("large", [784, 1024, 1024, 10], batch=128, rows=20000),
    "small": Case("small", [40, 256, 256, 10], batch=64, rows=4000),
    # The post: U(-1, 1) weights, learning rate 0.5, hidden drop rate 0.2, no momentum, squared error
    # summed over the batch, float64.
    "seed": Case("seed", [3, 4, 1], batch=None, rows=4, activation="sigmoid", drop_input=0.0, drop_hidden=0.2,
                 momentum=0.0, lr=0.5, loss="mse", reduction="sum", dtype="float64", init="uniform", steps=60000),
}

# OpenBLAS and OpenMP worker threads busy-wait for a while after their last job; the pause keeps
# those of one library from competing with the other library's measurement.
SETTLE_SECONDS = 0.3

GEMM_SHAPES = [(128, 1024, 1024), (1024, 1024, 1024), (2048, 2048, 2048)]  # (M, K, N): (M, K) @ (K, N)


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median of the pairwise ratios a[i] / b[i] (each pair measured back to back)."""
    return statistics.median(x / y for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def synthetic(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (rows, D) from N(0, 1) and labels (rows,); the seed case uses the post's 4-row table."""
    if case.name == "seed":
        X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=case.dtype)
        return X, np.array([0, 1, 1, 0])
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((case.rows, case.sizes[0]), dtype=np.float32).astype(case.dtype)
    y = rng.integers(0, case.sizes[-1], case.rows)
    return X, y


def gemm_flops_per_row(sizes: list[int]) -> int:
    """Floating-point operations per training row: forward, dW and dX GEMMs (no dX into the inputs)."""
    total = 0
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2 * fan_in * fan_out * (3 if layer > 0 else 2)
    return total


# ----------------------------------------------------------------------------------------------
# NumPy (the trainer of this package)
# ----------------------------------------------------------------------------------------------

def numpy_runner(case: Case, X: np.ndarray, y: np.ndarray, epochs: int) -> Callable[[], float]:
    """A function that trains ``epochs`` epochs (or ``case.steps`` steps) and returns samples per second."""
    n_out = 1 if case.sizes[-1] == 2 else case.sizes[-1]
    spec = MLPSpec(n_inputs=case.sizes[0], hidden=case.sizes[1:-1], n_outputs=n_out, activation=case.activation,
                   init=case.init, drop_input=case.drop_input, drop_hidden=case.drop_hidden, loss=case.loss,
                   dtype=case.dtype)
    rng = np.random.default_rng(0)
    model = MLP(spec, rng)
    steps = case.steps
    settings = TrainSettings(optimizer="sgd", lr=case.lr, momentum=case.momentum, batch_size=case.batch,
                             epochs=steps or epochs, eval_every=steps or epochs, reduction=case.reduction,
                             eval_train_max=min(256, X.shape[0]))
    empty_X, empty_y = X[:0], y[:0]

    def run() -> float:
        result = train(model, X, y, empty_X, empty_y, settings, rng)
        return result.samples / result.train_seconds

    return run


# ----------------------------------------------------------------------------------------------
# PyTorch CPU: the same shapes, dropout, loss and SGD with momentum
# ----------------------------------------------------------------------------------------------

def torch_runner(case: Case, X: np.ndarray, y: np.ndarray, epochs: int) -> Callable[[], float]:
    import torch

    torch.manual_seed(0)
    dtype = getattr(torch, case.dtype)
    layers: list[torch.nn.Module] = []
    if case.drop_input > 0:
        layers.append(torch.nn.Dropout(case.drop_input))
    act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[case.activation]
    n_out = 1 if case.sizes[-1] == 2 else case.sizes[-1]
    widths = [*case.sizes[:-1], n_out]
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += [torch.nn.Linear(fan_in, fan_out, dtype=dtype), act()]
        if case.drop_hidden > 0:
            layers.append(torch.nn.Dropout(case.drop_hidden))
    layers.append(torch.nn.Linear(widths[-2], n_out, dtype=dtype))
    net = torch.nn.Sequential(*layers).train()
    opt = torch.optim.SGD(net.parameters(), lr=case.lr, momentum=case.momentum)
    Xt = torch.from_numpy(np.ascontiguousarray(X))
    if n_out == 1:
        yt = torch.from_numpy(y.astype(case.dtype)).reshape(-1, 1)
        reduction = case.reduction
        if case.loss == "mse":
            def loss_fn(z, t):  # the post's 0.5 * (sigmoid(z) - y)**2
                return 0.5 * torch.nn.functional.mse_loss(torch.sigmoid(z), t, reduction=reduction)
        else:
            def loss_fn(z, t):
                return torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction=reduction)
    else:
        yt = torch.from_numpy(y)
        ce = torch.nn.CrossEntropyLoss(reduction=case.reduction)
        loss_fn = ce
    n = Xt.shape[0]
    batch = n if case.batch is None else min(case.batch, n)

    def step(xb, yb) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()

    def run() -> float:
        t0 = time.perf_counter()
        if case.steps:
            for _ in range(case.steps):
                step(Xt, yt)
            return case.steps * n / (time.perf_counter() - t0)
        for _ in range(epochs):
            order = torch.randperm(n)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                step(Xt[idx], yt[idx])
        return epochs * n / (time.perf_counter() - t0)

    return run


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """PyTorch's intra-op threads set to ``threads`` while benchmarking (if torch is loaded), then restored."""
    previous = None
    if threads is not None and torch_version() is not None:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if previous is not None:
            import torch

            torch.set_num_threads(previous)


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------

def gemm_rates(min_seconds: float) -> dict[str, float]:
    """GFLOP/s of float32 ``np.matmul`` for each of GEMM_SHAPES (median over at least ``min_seconds``)."""
    rates = {}
    rng = np.random.default_rng(0)
    for m, k, n in GEMM_SHAPES:
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        np.matmul(a, b, out=c)  # warm-up
        samples = []
        deadline = time.perf_counter() + min_seconds
        while len(samples) < 3 or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            samples.append(time.perf_counter() - t0)
        rates[f"{m}x{k}@{k}x{n}"] = 2 * m * n * k / statistics.median(samples) / 1e9
    return rates


def bench_gemm(args) -> None:
    for shape, gflops in gemm_rates(args.gemm_seconds).items():
        emit(case="gemm", shape=shape, dtype="float32", gflops=round(gflops, 1))


def bench_case(case: Case, args) -> None:
    X, y = synthetic(case)
    epochs = args.epochs
    runners = {"numpy": numpy_runner(case, X, y, epochs)}
    use_torch = args.torch and torch_version() is not None
    if args.torch and not use_torch:
        emit(case=case.name, impl="torch", skipped="torch is not importable (pip install -e .[bench])")
    if use_torch:
        runners["torch"] = torch_runner(case, X, y, epochs)
    for run in runners.values():  # warm-up: buffers, thread pools, caches
        run()
    rates: dict[str, list[float]] = {name: [] for name in runners}
    gemm: list[dict[str, float]] = []  # the large case: the machine's GEMM rates next to each run
    for _ in range(args.repeats):
        if case.name == "large":
            gemm.append(gemm_rates(args.gemm_seconds))
        for name, run in runners.items():
            if len(runners) > 1 or gemm:
                time.sleep(SETTLE_SECONDS)  # let the idle threads of the last library stop spinning
            rates[name].append(run())
    shape = {"sizes": case.sizes, "batch": case.batch or "full", "rows": X.shape[0], "dtype": case.dtype,
             "drop": [case.drop_input, case.drop_hidden], "threads": args.threads}
    for name, values in rates.items():
        med = statistics.median(values)
        line = {"case": case.name, "impl": name, "samples_per_s": round(med, 1), **shape}
        if case.steps:
            line["steps"] = case.steps
            line["seconds"] = round(case.steps * X.shape[0] / med, 4)
        else:
            line["epochs"] = epochs
        line["runs"] = [round(v, 1) for v in values]
        if gemm and name == "numpy":
            # Achieved GFLOP/s against the best and the 128-row GEMM rate measured just before each
            # run: medians of those pairwise fractions.
            achieved = [gemm_flops_per_row(case.sizes) * v / 1e9 for v in values]
            line["gflops"] = round(statistics.median(achieved), 1)
            line["gemm_gflops"] = {k: round(statistics.median(g[k] for g in gemm), 1) for k in gemm[0]}
            first = next(iter(gemm[0]))
            line["fraction_of_gemm"] = round(statistics.median(a / max(g.values()) for a, g in zip(achieved, gemm)), 3)
            line[f"fraction_of_{first}"] = round(statistics.median(a / g[first] for a, g in zip(achieved, gemm)), 3)
        emit(**line)
    if "torch" in rates:
        emit(case=case.name, ratio=round(median_ratio(rates["numpy"], rates["torch"]), 3),
             meaning="numpy samples/s over torch samples/s, median of back-to-back pairs")


# ----------------------------------------------------------------------------------------------
# The study around training: the main job with MLflow on against tracking=none
# ----------------------------------------------------------------------------------------------

STUDY_ARGS = ["+experiment=two_phase", "progress=false"]
_USER_BLAS_THREADS = os.environ.get("OPENBLAS_NUM_THREADS")


def run_job(overrides: list[str]) -> dict:
    """``python -m dropout_lab`` in a new empty folder: its wall and CPU seconds (children included:
    the MLflow writer) and the ``timing`` of its summary.json."""
    import resource
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        env = dict(os.environ)
        env.pop("OPENBLAS_NUM_THREADS", None)  # set by main() for this process; the jobs run as users run them
        if _USER_BLAS_THREADS is not None:
            env["OPENBLAS_NUM_THREADS"] = _USER_BLAS_THREADS
        proc = subprocess.run([sys.executable, "-m", "dropout_lab", *overrides], cwd=tmp, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - began
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"error: the job {overrides} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        summary = json.loads(next(Path(tmp).glob("outputs/*/*/summary.json")).read_text())
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"wall": wall, "cpu": cpu, **summary["timing"]}


def bench_study(args) -> None:
    """The two-phase job with MLflow tracking (a new SQLite store each time) against the same job with
    ``tracking=none``, alternating; overheads as percentages of the training time."""
    base = STUDY_ARGS + args.study_args
    arms = {"mlflow": base, "none": base + ["tracking=none"]}
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):
        for arm, overrides in arms.items():
            runs[arm].append(run_job(overrides))
    med = lambda arm, key: statistics.median(r[key] for r in runs[arm])  # noqa: E731
    pairs = list(zip(runs["mlflow"], runs["none"]))
    training = med("none", "fit_seconds")
    optuna = [r["phase2_seconds"] - r["phase2_fit_seconds"] for r in runs["none"]]
    tracking_pct = [100 * (a["wall"] / b["wall"] - 1) for a, b in pairs]
    optuna_pct = [100 * o / r["wall"] for o, r in zip(optuna, runs["none"])]
    emit(case="study", args=base, repeats=args.repeats,
         wall_seconds={arm: round(med(arm, "wall"), 2) for arm in arms},
         cpu_seconds={arm: round(med(arm, "cpu"), 2) for arm in arms},
         training_seconds=round(training, 2),
         tracking_overhead_pct_of_wall=round(statistics.median(tracking_pct), 2),
         tracking_overhead_pct_of_training=round(statistics.median(
             100 * (a["wall"] - b["wall"]) / b["fit_seconds"] for a, b in pairs), 2),
         optuna_bookkeeping_seconds=round(statistics.median(optuna), 3),
         optuna_bookkeeping_pct_of_training=round(statistics.median(
             100 * o / r["fit_seconds"] for o, r in zip(optuna, runs["none"])), 2),
         optuna_bookkeeping_pct_of_wall=round(statistics.median(optuna_pct), 2),
         tracking_and_optuna_pct_of_wall=round(statistics.median(t + o for t, o in zip(tracking_pct, optuna_pct)), 2),
         # The wall-time figures above include the machine's drift between the two jobs of a pair;
         # these split tracking's cost into what it adds outside training (start-up, waits, the
         # final flush), how much slower training ran beside the writer, and the writer's CPU.
         outside_training_seconds={arm: round(statistics.median(r["wall"] - r["fit_seconds"] for r in runs[arm]), 2)
                                   for arm in arms},
         tracking_outside_training_pct_of_wall=round(statistics.median(
             100 * ((a["wall"] - a["fit_seconds"]) - (b["wall"] - b["fit_seconds"])) / b["wall"] for a, b in pairs), 2),
         training_slowdown_with_tracking_pct=round(statistics.median(
             100 * (a["fit_seconds"] / b["fit_seconds"] - 1) for a, b in pairs), 2),
         tracking_cpu_seconds=round(statistics.median(a["cpu"] - b["cpu"] for a, b in pairs), 2),
         # Python, imports and Hydra before the job's clock starts, and exit after it stops.
         startup_and_exit_seconds={arm: round(statistics.median(r["wall"] - r["wall_seconds"] for r in runs[arm]), 2)
                                   for arm in arms},
         waited_for_tracking_seconds=round(med("mlflow", "tracking_wait_seconds"), 3),
         walls={arm: [round(r["wall"], 2) for r in runs[arm]] for arm in arms},
         meaning="overhead of tracking: wall time with MLflow on over the same job with tracking=none, "
                 "median of back-to-back pairs; Optuna bookkeeping: phase 2's time outside training; "
                 "training_slowdown: training time with MLflow on over the same training with tracking=none "
                 "(the writer process on the other core, and the machine's drift)")


@contextlib.contextmanager
def blas_threads(threads: int):
    """Limit NumPy's BLAS pool to ``threads`` (via threadpoolctl when installed), restored afterwards.

    Yields a description for the report."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "unchanged (threadpoolctl is not installed: set OPENBLAS_NUM_THREADS)"
        return
    with threadpool_limits(threads, user_api="blas"):
        yield str(threads)


def cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def blas_info() -> str | None:
    """The loaded BLAS libraries (NumPy's, then SciPy's when the networks call it directly): library,
    version and kernel architecture (via threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [" ".join(str(pool.get(k)) for k in ("internal_api", "version", "architecture") if pool.get(k))
             for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return "; ".join(pools) or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dropout_lab.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=["large", "small", "seed", "gemm", "all", "study"], default="all",
                   help="all: gemm, large, small and seed; study (minutes): the main job with and without MLflow")
    p.add_argument("--study-args", nargs="*", default=[], metavar="OVERRIDE",
                   help="extra overrides for the study case's jobs (default: the main job as it is)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per measurement (after one warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per implementation; medians are printed")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the same networks in PyTorch CPU (when importable)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS / PyTorch threads")
    p.add_argument("--rows", type=int, default=None, help="override the number of rows of the large/small data")
    p.add_argument("--steps", type=int, default=None, help="override the seed case's 60000 steps")
    p.add_argument("--gemm-seconds", type=float, default=0.3, help="minimum time per GEMM shape and measurement")
    args = p.parse_args(argv)
    for key in ("epochs", "repeats", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The large and small networks call SciPy's BLAS directly (MLP.blas): load it now, so that the
    # thread limit below covers it too. SciPy's OpenBLAS can ignore a limit set once it is loaded
    # (its products kept two threads under a limit of one), so the limit also goes into the
    # environment it reads when loading.
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    blas_function("gemm", np.dtype(np.float32))
    with blas_threads(args.threads) as blas, torch_threads(args.threads if args.torch else None):
        emit(case="machine", cpu=cpu_model(), cpus=os.cpu_count(), threads=args.threads, blas_threads=blas,
             blas=blas_info(), numpy=np.__version__, torch=torch_version() if args.torch else None,
             python=sys.version.split()[0])
        for name in ["gemm", "large", "small", "seed"] if args.case == "all" else [args.case]:
            if name == "study":
                bench_study(args)
                continue
            if name == "gemm":
                bench_gemm(args)
                continue
            case = CASES[name]
            if args.rows and name != "seed":
                case = Case(**{**case.__dict__, "rows": args.rows})
            if args.steps and name == "seed":
                case = Case(**{**case.__dict__, "steps": args.steps})
            bench_case(case, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
