"""``buf lint`` of proto/ with the repository's buf.yaml (Google-style protos, STANDARD rules).

buf comes from ``$TWIN_TEST_BUF`` (.ci/run installs it from the npm registry with .ci/buf.sh) or
``buf`` on PATH. Without it the test is skipped on a developer's machine and fails in CI
(``CI=true``), where it must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from twin_proto import codegen

ROOT = Path(__file__).resolve().parents[2]


def _buf() -> str | None:
    return os.environ.get("TWIN_TEST_BUF") or shutil.which("buf")


@pytest.fixture
def buf() -> str:
    path = _buf()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must lint the protos: no buf ($TWIN_TEST_BUF unset; .ci/buf.sh installs it from npm)")
        pytest.skip("no buf binary (bash .ci/buf.sh installs it from npm; or set TWIN_TEST_BUF)")
    return path


def _workspace(tmp_path: Path, protos: Path = ROOT / "proto") -> Path:
    """A copy of the repository's buf workspace: buf.yaml verbatim, proto/, and the googleapis
    protos in build/proto-deps as buf.yaml expects them."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(ROOT / "buf.yaml", ws / "buf.yaml")
    shutil.copytree(protos, ws / "proto")
    codegen.write_dependency_protos(ws / "build" / "proto-deps")
    return ws


def _lint(buf: str, ws: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([buf, "lint"], cwd=ws, capture_output=True, text=True, timeout=120, check=False)


def test_protos_are_buf_lint_clean(buf, tmp_path):
    res = _lint(buf, _workspace(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == ""


def test_buf_lint_catches_a_violation(buf, tmp_path):
    """The lint really reads our protos: an enum whose zero value is not *_UNSPECIFIED fails."""
    ws = _workspace(tmp_path)
    (ws / "proto" / "twin" / "v1" / "bad.proto").write_text('syntax = "proto3";\npackage twin.v1;\n// Bad.\nenum Bad {\n  // Zero.\n  BAD_NONE = 0;\n}\n')
    res = _lint(buf, ws)
    assert res.returncode != 0 and "bad.proto" in res.stdout and "UNSPECIFIED" in res.stdout, res.stdout + res.stderr


def test_dependency_protos_include_longrunning_under_its_canonical_name(tmp_path):
    written = codegen.write_dependency_protos(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"google/longrunning/operations.proto", "google/api/field_behavior.proto", "google/api/resource.proto", "google/rpc/status.proto"} <= names
    assert "google/longrunning/operations_proto.proto" not in names
