"""``twin serve`` in its own process for the service benchmarks (a helper module, not a
benchmark: the leading underscore keeps it out of the smoke-run list)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The log line a served process writes once its compiled kernels are warm.
KERNELS_READY = '"kernels ready"'


def wait_for_port(proc: subprocess.Popen, port_file: Path, log_file: Path | None = None, ready: str | None = None, timeout_s: float = 180.0) -> int:
    """The port ``proc`` wrote into ``port_file``, once written and, with ``ready``, once that
    line is in ``log_file`` (a server serves from its port's binding on, on the torch path until
    its kernels are warm).

    Raises:
        RuntimeError: the process exited, or did not get there within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_file.read_text()[-4000:] if log_file else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.1)
    while ready is not None and log_file is not None and ready not in log_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server's kernels were not ready: {log_file.read_text()[-4000:]}")
        time.sleep(0.1)
    return int(port_file.read_text())


def twin_serve(store: Path, port_file: Path, log_file: Path, args: Sequence[str] = (), env: Mapping[str, str] = {}) -> tuple[subprocess.Popen, int]:
    """Start ``twin serve --store store`` on a free loopback port, its JSON log (access lines
    included) into ``log_file``; returns the process and its port once its kernels are warm.

    Args:
        store: the twin store it serves.
        port_file: where it writes its port.
        log_file: its stderr.
        args: further ``twin serve`` options.
        env: variables added to this process's environment (tokens, thread counts).
    """
    cmd = [sys.executable, "-m", "twin_cli.cli", "serve", "--store", str(store), "--address", "127.0.0.1:0", "--port-file", str(port_file), "--log-level", "info", *args]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file.open("w"), text=True)
    return proc, wait_for_port(proc, port_file, log_file, KERNELS_READY)
