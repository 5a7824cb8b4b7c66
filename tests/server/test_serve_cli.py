"""``twin serve``: starts from the command line, serves, logs JSON, and shuts down gracefully on
SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from server_env import TWIN_SUBJECTS

from twin_client.client import TwinClient


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TWIN_AUTH_TOKENS"}
    env.update(extra)
    return env


def test_serve_and_sigterm(store_dir, tmp_path):
    port_file = tmp_path / "port"
    cmd = [sys.executable, "-m", "twin_cli.cli", "serve", "--store", str(store_dir), "--address", "127.0.0.1:0", "--port-file", str(port_file), "--grace", "5"]
    proc = subprocess.Popen(cmd, env=_env(TWIN_AUTH_TOKENS="reader:cli-secret"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        target = f"127.0.0.1:{int(port_file.read_text())}"
        # NextSession runs the default optimizer (attribution included): 18 s in-process and 34 s
        # in this subprocess on a quiet 2-core machine (measured 2026-12-01); this test is about
        # serving and shutting down, not about that latency
        with TwinClient(target, "cli-secret", timeout_s=120) as c:
            assert c.health() == "SERVING"
            assert c.predict(TWIN_SUBJECTS[0]).n_trials > 0
            assert c.next_session(TWIN_SUBJECTS[0], n_rollouts=20).twin.version == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    msgs = [r["msg"] for r in records]
    assert "serving" in msgs and "shutting down" in msgs and "stopped" in msgs
    rpcs = [r for r in records if r["msg"] == "rpc"]
    assert {r["method"] for r in rpcs} >= {"/twin.v1.TwinService/Predict", "/twin.v1.CurriculumService/NextSession"}
    assert all(r["code"] == "OK" and r["principal"] for r in rpcs)
    assert "cli-secret" not in err  # tokens are never logged


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "no bearer tokens"),
        (["--local-demo", "--address", "0.0.0.0:0"], "loopback"),
        (["--tls-cert", "x.pem", "--local-demo"], "--tls-cert and --tls-key go together"),
        (["--auth-config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_serve_refuses_unsafe_or_incomplete_settings(store_dir, args, words, monkeypatch, capsys):
    from twin_cli.cli import main

    monkeypatch.delenv("TWIN_AUTH_TOKENS", raising=False)
    assert main(["serve", "--store", str(store_dir), *args]) == 2
    assert words in capsys.readouterr().err
