"""Run the ``twin`` command line in-process and capture what it prints (shared by the CLI tests)."""

from __future__ import annotations

import contextlib
import io

from twin_cli.cli import main


def run(argv: list[str]) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``twin ARGV``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()
