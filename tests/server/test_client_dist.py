"""The rig client distribution (clients/python): its wheel, built from this repository, installs
on its own and talks to a real server; it declares Python >= 3.9 and only grpcio, protobuf and
googleapis-common-protos.

Which Python: the slow tests install the wheel, with only the declared dependencies at the oldest
versions the distribution claims, into a fresh venv of (a) CPython 3.9, the oldest Python it
claims, unpacked from Debian 11's archive by ``.ci/python39.sh`` (signature and checksums checked;
``TWIN_TEST_PYTHON39`` names an interpreter to use instead), and (b) this project's Python.
:func:`test_sources_need_no_newer_python_than_claimed` also checks the distribution's code
statically with vermin for Python 3.9.

The fast tests build the wheel without build isolation (this environment's grpcio-tools); the
slow ones build it as a user would, in an isolated build environment with the pinned
grpcio-tools 1.49.1 (network to PyPI), and run that gencode on the oldest protobuf runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from server_env import RIG, TWIN_SUBJECTS

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "clients" / "python"
ROUNDTRIP = Path(__file__).resolve().parent / "client_dist_roundtrip.py"
EXAMPLE = ROOT / "examples" / "rig_client.py"
PROJECT = tomllib.loads((DIST / "pyproject.toml").read_text())["project"]


def _lower_bounds() -> dict[str, str]:
    """Each declared dependency's oldest claimed version (``name>=X``)."""
    out = {}
    for req in PROJECT["dependencies"]:
        name, _, rest = req.partition(">=")
        out[name.strip()] = rest.split(",")[0].strip()
    return out


def _pip(*args: str, python: str = sys.executable, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"pip {' '.join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def build_wheel(dest: Path, isolated: bool) -> Path:
    """Build the distribution's wheel into ``dest``; returns its path."""
    _pip("wheel", "--no-deps", *(() if isolated else ("--no-build-isolation",)), str(DIST), "-w", str(dest), timeout=600)
    (wheel,) = dest.glob("learning_twins_client-*.whl")
    return wheel


def _session_json(cohort_trials, subject: str, path: Path) -> Path:
    s3 = cohort_trials[(cohort_trials.subject == subject) & (cohort_trials.session == 3)]
    cols = ["contrast_left", "contrast_right", "choice", "feedback", "correct_side", "prob_left"]
    path.write_text(json.dumps([{k: (float(v) if k.startswith(("contrast", "prob")) else int(v)) for k, v in zip(cols, row)} for row in s3[cols].itertuples(index=False)]))
    return path


def _roundtrip(python: str, server, cohort_trials, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    subject = TWIN_SUBJECTS[1]
    trials = _session_json(cohort_trials, subject, tmp_path / "session.json")
    res = subprocess.run([python, "-s", str(ROUNDTRIP), server.target, RIG, subject, str(trials)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["plan"] == {"subject": subject, "n_trials": out["plan"]["n_trials"], "twin": f"subjects/{subject}/twins/1", "fallback_reason": "FALLBACK_REASON_NONE"}
    assert out["upload"]["session"] == 3 and out["upload"]["done"] and out["upload"]["state"] == "OPERATION_STATE_SUCCEEDED" and out["upload"]["version"] == 2
    assert out["upload"]["operation"].startswith("operations/")
    assert out["refused"]["code"] == "INVALID_ARGUMENT" and out["refused"]["fields"] == ["trials[2].feedback"]
    return out


def _example(python: str, server, cohort_trials, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """examples/rig_client.py with the installed distribution: plan, then upload a CSV and wait."""
    subject = TWIN_SUBJECTS[2]
    s3 = cohort_trials[(cohort_trials.subject == subject) & (cohort_trials.session == 3)].drop(columns=["subject", "session"])
    csv = tmp_path / "rig-session.csv"
    s3.to_csv(csv, index=False)
    env = {**(env or {}), "TWIN_TOKEN": RIG, "PATH": "/usr/bin:/bin"}
    out = ""
    for args in (["plan", "--subject", subject, "--out", str(tmp_path / "plan.json")], ["upload", "--subject", subject, "--trials", str(csv), "--wait"]):
        res = subprocess.run([python, "-s", str(EXAMPLE), "--target", server.target, *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        out += res.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["subject"] == subject
    assert f"stored {subject} session 3" in out and "twin v2 now serves" in out
    return out


def test_declared_dependencies_are_grpcio_protobuf_and_googleapis_only():
    assert PROJECT["requires-python"] == ">=3.9"
    assert set(_lower_bounds()) == {"grpcio", "protobuf", "googleapis-common-protos"}
    assert not any("numpy" in r or "pandas" in r for r in PROJECT["dependencies"])


def test_wheel_installs_alone_and_talks_to_the_server(server, cohort_trials, tmp_path):
    wheel = build_wheel(tmp_path / "dist", isolated=False)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert {"twin_client/client.py", "twin_proto/pb.py", "twin_proto/gen/STAMP.json", "twin_proto/gen/twin/v1/twin_service_pb2_grpc.py"} <= names
    assert not any(n.startswith(("twin/", "server/", "service/", "optimizer/")) for n in names)  # the client only
    assert "Requires-Python: >=3.9" in meta
    assert sorted(line.split(":", 1)[1].strip().split(";")[0].split(">")[0].split("<")[0] for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line) == [
        "googleapis-common-protos",
        "grpcio",
        "protobuf",
    ]
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    out = _roundtrip(sys.executable, server, cohort_trials, tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out["client_file"].startswith(str(target))  # the installed copy, not the repository's
    _example(sys.executable, server, cohort_trials, tmp_path, env={"PYTHONPATH": str(target)})


def test_sources_need_no_newer_python_than_claimed(tmp_path):
    """vermin: the distribution's code (client, stub loader, generated stubs) runs on 3.9; and it
    would notice a 3.10 construct."""
    wheel = build_wheel(tmp_path / "dist", isolated=False)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "src")
    files = sorted(str(p) for p in (tmp_path / "src").rglob("*.py"))
    cmd = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "-t=3.9-", "--violations", "--no-tips", "--no-parse-comments"]
    res = subprocess.run(cmd + files, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    newer = tmp_path / "newer.py"
    newer.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    assert subprocess.run(cmd + [str(newer)], capture_output=True, text=True, timeout=60, check=False).returncode != 0


PIP_FOR_OLD_PYTHON = "pip==25.2"  # the newest pip that still runs on 3.9 at the time of writing


def python39() -> tuple[str, dict[str, str]]:
    """A CPython 3.9 interpreter and the environment its venvs need (``.ci/python39.sh``)."""
    path = os.environ.get("TWIN_TEST_PYTHON39")
    if not path:
        res = subprocess.run(["bash", str(ROOT / ".ci" / "python39.sh")], capture_output=True, text=True, timeout=600, check=False)
        assert res.returncode == 0, f".ci/python39.sh failed:\n{res.stderr[-3000:]}"
        path = res.stdout.strip().splitlines()[-1]
    libs = Path(path).resolve().parents[1] / "root" / "usr" / "lib" / "x86_64-linux-gnu"
    return path, {"LD_LIBRARY_PATH": str(libs)} if libs.is_dir() else {}


def _fresh_venv(base: str, venv: Path, tmp_path: Path) -> str:
    """A venv of interpreter ``base`` with a pip that runs there; returns its python."""
    res = subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    python = str(venv / "bin" / "python")
    wheels = tmp_path / "pip-wheel"
    _pip("download", "--no-deps", "-d", str(wheels), PIP_FOR_OLD_PYTHON)
    (pip_wheel,) = wheels.glob("pip-*.whl")
    res = subprocess.run([python, str(pip_wheel / "pip"), "install", "--disable-pip-version-check", "-q", str(pip_wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return python


@pytest.mark.slow
@pytest.mark.parametrize("which", ["python3.9", "this-python"])
def test_oldest_claimed_dependencies_in_a_fresh_venv(which, server, cohort_trials, tmp_path, monkeypatch):
    """A fresh venv of the oldest claimed Python (3.9) and of this project's, with the wheel as a
    user builds it (isolated, grpcio-tools 1.49.1) and only the declared dependencies at their
    oldest claimed versions: the round trip and the rig example run. Needs PyPI and, for 3.9,
    Debian's archive (about a minute each)."""
    base, env = python39() if which == "python3.9" else (sys.executable, {})
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the venv's own packages only, never this checkout's
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # for the venv's pip and scripts (the server in this process has its libraries loaded)
    wheel = build_wheel(tmp_path / "dist", isolated=True)
    with zipfile.ZipFile(wheel) as z:
        assert json.loads(z.read("twin_proto/gen/STAMP.json"))["grpcio_tools"] == "1.49.1"  # the pinned, old gencode
    venv = tmp_path / "venv"
    python = _fresh_venv(base, venv, tmp_path)
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == ("3.9" if which == "python3.9" else "%d.%d" % sys.version_info[:2])
    oldest = _lower_bounds()
    _pip("install", "--only-binary=:all:", *(f"{k}=={v}" for k, v in oldest.items()), str(wheel), python=python, timeout=600)
    frozen = {line.split("==")[0].lower(): line.split("==")[1] for line in _pip("freeze", python=python).stdout.split() if "==" in line}
    assert {k: frozen[k] for k in oldest} == oldest and "numpy" not in frozen and "pandas" not in frozen
    out = _roundtrip(python, server, cohort_trials, tmp_path)
    assert out["protobuf"] == oldest["protobuf"] and out["grpcio"] == oldest["grpcio"]
    assert out["client_file"].startswith(str(venv))
    _example(python, server, cohort_trials, tmp_path, env=env)  # CSV upload without pandas
