"""A tiny run of every benchmark in bench/ (``--smoke``), so none rots: each must finish, print
its figures and write nothing into bench/results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Benchmark → a line its smoke run must print.
EXPECTED = {
    "sim_throughput.py": "simulated trials/s",
    "batch1_rollout.py": "fused_speedup=",
    "fit_throughput.py": "dnn (naive baseline)",
    "curriculum_search.py": "search_seconds",
    "grpc_predict.py": "supplied Predict server-side p50",
    "ray_cohort.py": "max_abs_val_ll_diff_nats",
    "oversized_requests.py": "criterion_over_p99_lt_100ms",
    "ensemble_fit.py": "extrapolated to",
    "teaching_latency.py": "Teach p99 at 1 rig",
}


def test_every_benchmark_has_a_smoke_run():
    assert {p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_")} == set(EXPECTED)  # _serve.py: a helper


def _run(script: str, *args: str, timeout: float = 300) -> str:
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "bench" / "results").iterdir()}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in (ROOT / "bench" / "results").iterdir()}
    assert after == before, "a smoke run wrote into bench/results"
    return proc.stdout


@pytest.mark.parametrize("script", sorted(set(EXPECTED) - {"ray_cohort.py"}))
def test_smoke(script):
    assert EXPECTED[script] in _run(script)


@pytest.mark.slow
def test_smoke_ray_cohort():
    """Ray's start alone takes tens of seconds here; tests/cluster cover the same path fast."""
    assert EXPECTED["ray_cohort.py"] in _run("ray_cohort.py")


def test_smoke_writes_results_where_asked(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "sim_throughput.py"), "--smoke", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "sim_throughput.json").exists() and "| rule" in (tmp_path / "sim_throughput.md").read_text()
