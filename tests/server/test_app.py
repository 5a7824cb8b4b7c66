"""Server assembly helpers: the demo round trip and config checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from twin_cli.service_demo import service_roundtrip


def test_service_roundtrip(cohort_trials, tmp_path):
    rep = service_roundtrip(cohort_trials, tmp_path / "twins", epochs=2, n_subjects=2)
    assert rep.predicted_trials > 0 and rep.plan_trials == 550 and rep.updated_version == 2
    lo = rep.plan_accuracy[1]
    assert 0.0 <= lo <= rep.plan_accuracy[0] <= rep.plan_accuracy[2] <= 1.0
    assert len(rep.lines()) == 3


def test_warm_up_freezes_the_collector_only_when_asked() -> None:
    """``twin serve`` (``freeze_gc``) moves the libraries' objects out of the collector's sight
    once the kernels are warm; without it the collector is left alone. In a subprocess: freezing
    is for the whole process."""
    code = (
        "import gc\n"
        "from server.app import warm_up_kernels\n"
        "warm_up_kernels(background=False)\n"
        "before = gc.get_freeze_count()\n"
        "warm_up_kernels(background=False, freeze_gc=True)\n"
        "print(before, gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = (int(v) for v in out.stdout.split()[-2:])
    assert before == 0 and after > 10_000


def test_stop_waits_for_the_kernels_warm_up(tmp_path) -> None:
    """A stopped server leaves no warm-up thread behind (one that logged after a test had
    closed its streams printed '--- Logging error ---')."""
    from server.app import ServerConfig, build_plane, start_server

    running = start_server(ServerConfig(address="127.0.0.1:0", local_demo=True), build_plane(tmp_path / "twins"))
    assert running.warm_up is not None
    running.stop(grace_s=60.0)
    assert not running.warm_up.is_alive()
