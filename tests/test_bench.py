"""Tests for the benchmark script: it runs on tiny sizes and prints valid JSON lines with the expected
keys. No timing assertions: benchmarks are not tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dropout_lab import bench


def run_bench(capsys, *argv: str) -> list[dict]:
    assert bench.main(list(argv)) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def by_case(rows: list[dict], case: str) -> list[dict]:
    return [r for r in rows if r["case"] == case]


@pytest.fixture
def tiny_gemm(monkeypatch):
    monkeypatch.setattr(bench, "GEMM_SHAPES", [(8, 16, 16), (32, 32, 32)])


def test_small_case_prints_numpy_throughput(capsys) -> None:
    rows = run_bench(capsys, "--case", "small", "--epochs", "1", "--repeats", "1", "--rows", "256", "--no-torch")
    machine = by_case(rows, "machine")[0]
    assert {"cpus", "threads", "numpy"} <= machine.keys()
    (line,) = by_case(rows, "small")
    assert line["impl"] == "numpy"
    assert line["sizes"] == [40, 256, 256, 10] and line["batch"] == 64 and line["rows"] == 256
    assert line["samples_per_s"] > 0 and len(line["runs"]) == 1


def test_gemm_case_prints_one_rate_per_shape(capsys, tiny_gemm) -> None:
    rows = run_bench(capsys, "--case", "gemm", "--gemm-seconds", "0")
    gemm = by_case(rows, "gemm")
    assert [g["shape"] for g in gemm] == ["8x16@16x16", "32x32@32x32"]
    assert all(g["dtype"] == "float32" and g["gflops"] > 0 for g in gemm)


def test_large_case_reports_gflops_against_the_measured_gemm_rate(capsys, tiny_gemm) -> None:
    rows = run_bench(capsys, "--case", "large", "--repeats", "2", "--rows", "256", "--no-torch",
                     "--gemm-seconds", "0")
    (line,) = by_case(rows, "large")
    assert line["sizes"] == [784, 1024, 1024, 10] and line["batch"] == 128 and line["dtype"] == "float32"
    assert line["drop"] == [0.2, 0.5] and len(line["runs"]) == 2
    assert {"samples_per_s", "gflops", "gemm_gflops", "fraction_of_gemm", "fraction_of_8x16@16x16"} <= line.keys()
    assert set(line["gemm_gflops"]) == {"8x16@16x16", "32x32@32x32"}
    assert line["gflops"] > 0 and line["fraction_of_gemm"] > 0


def test_seed_case_reports_seconds(capsys) -> None:
    rows = run_bench(capsys, "--case", "seed", "--steps", "50", "--repeats", "1", "--no-torch")
    (line,) = by_case(rows, "seed")
    assert line["sizes"] == [3, 4, 1] and line["batch"] == "full" and line["steps"] == 50
    assert line["seconds"] > 0


def test_gflop_count_per_row() -> None:
    # forward + dW for every layer, dX for all but the first: 2 * (2*3*4 + 3*4*5) = 168
    assert bench.gemm_flops_per_row([3, 4, 5]) == 2 * 3 * 4 * 2 + 2 * 4 * 5 * 3


def test_torch_is_compared_when_importable_and_reported_missing_otherwise(capsys) -> None:
    rows = run_bench(capsys, "--case", "small", "--repeats", "1", "--rows", "128", "--threads", "1")
    small = by_case(rows, "small")
    torch_lines = [r for r in small if r.get("impl") == "torch"]
    assert len(torch_lines) == 1
    if bench.torch_version() is None:
        assert "skipped" in torch_lines[0]
    else:
        assert torch_lines[0]["samples_per_s"] > 0
        (ratio,) = [r for r in small if "ratio" in r]
        assert ratio["ratio"] > 0


def test_module_runs_as_a_script_without_importing_torch_up_front() -> None:
    code = "import sys, dropout_lab.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    done = subprocess.run(
        [sys.executable, "-m", "dropout_lab.bench", "--case", "seed", "--steps", "10", "--repeats", "1", "--no-torch"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["case"] for line in done.stdout.splitlines()] == ["machine", "seed"]


def test_bad_option_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--epochs", "0"])


def test_study_case_reports_tracking_and_optuna_overheads(capsys) -> None:
    rows = run_bench(capsys, "--case", "study", "--repeats", "1", "--study-args", "dataset=moons",
                     "dataset.n_samples=300", "two_phase.widths=[8]", "two_phase.phase1_epochs=3",
                     "two_phase.final_seeds=1", "search.n_trials=2", "trainer.epochs=3")
    (study,) = by_case(rows, "study")
    assert set(study["wall_seconds"]) == {"mlflow", "none"} and min(study["wall_seconds"].values()) > 0
    assert study["training_seconds"] > 0
    for key in ("tracking_overhead_pct_of_wall", "tracking_overhead_pct_of_training",
                "optuna_bookkeeping_seconds", "optuna_bookkeeping_pct_of_training", "optuna_bookkeeping_pct_of_wall",
                "tracking_and_optuna_pct_of_wall", "waited_for_tracking_seconds"):
        assert isinstance(study[key], (int, float)), key
    assert study["optuna_bookkeeping_seconds"] >= 0
    assert all(0 < seconds < study["wall_seconds"][arm] for arm, seconds in study["startup_and_exit_seconds"].items())
