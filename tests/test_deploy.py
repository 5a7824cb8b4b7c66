"""deploy/: manifests parse, every command and flag they name exists in the CLI, RayJob entrypoints
run under ``bash -ce`` as KubeRay's submitter runs them, the server's probes pass against a real
TLS server, and the Dockerfile builds CPU and GPU images from the right torch wheels."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twin_cli.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = sorted(DEPLOY.rglob("*.yaml"))


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def check_twin_command(cmd: str) -> None:
    """Parse a `twin ...` command line with the real parser (env references replaced)."""
    words = shlex.split(re.sub(r"\$\((\w+)\)", r"ENV_\1", cmd))
    assert words[0] == "twin", cmd
    sub = _subparsers(build_parser())
    assert words[1] in sub, f"unknown twin command {words[1]!r} in {cmd!r}"
    build_parser().parse_args(words[1:])  # exits (SystemExit) on an unknown flag


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs


def _containers(spec: object) -> list[dict]:
    out: list[dict] = []
    if isinstance(spec, dict):
        for k, v in spec.items():
            if k == "containers" and isinstance(v, list):
                out += v
            else:
                out += _containers(v)
    elif isinstance(spec, list):
        for v in spec:
            out += _containers(v)
    return out


def test_k8s_images_match_the_dockerfile_tag_and_version():
    version = re.search(r'^version = "([^"]+)"', (DEPLOY.parent / "pyproject.toml").read_text(), re.M).group(1)
    assert f"learning-twins:{version}" in (DEPLOY / "Dockerfile").read_text()
    ray_pin = re.search(r"ray\[tune\]==([\d.]+)", (DEPLOY.parent / "pyproject.toml").read_text()).group(1)
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        doc = list(yaml.safe_load_all(path.read_text()))
        for c in _containers(doc):
            gpu = "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            assert c["image"] == f"learning-twins:{version}{'-gpu' if gpu else ''}", (path, c["image"])
        text = path.read_text()
        for v in re.findall(r'rayVersion: "([\d.]+)"', text):
            assert v == ray_pin, (path, v)


def test_rayjob_entrypoints_are_real_twin_commands():
    paths = sorted((DEPLOY / "k8s").glob("rayjob-*.yaml"))
    assert {p.name for p in paths} >= {"rayjob-fit-twins.yaml", "rayjob-curriculum-search.yaml"}
    for path in paths:
        doc = next(yaml.safe_load_all(path.read_text()))
        check_twin_command(doc["spec"]["entrypoint"])


def test_curriculum_constraints_configmap_is_valid():
    from optimizer.space import Constraints

    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "rayjob-curriculum-search.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    raw = yaml.safe_load(cm["data"]["constraints.yaml"])
    Constraints(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def test_dockerfile_copies_every_package_and_cmd_exists():
    text = (DEPLOY / "Dockerfile").read_text()
    for pkg in ("twin", "twin_cli", "twin_proto", "twin_client", "cluster", "optimizer", "service", "server"):
        assert f"COPY {pkg} ./{pkg}" in text
    cmd = re.search(r'^CMD \[(.*)\]$', text, re.M).group(1)
    assert shlex.split(cmd.replace(",", " "))[0] == "twin"


def test_checker_rejects_unknown_flags():
    with pytest.raises(SystemExit):
        check_twin_command("twin fit-twins data.parquet --no-such-flag")
    with pytest.raises(AssertionError):
        check_twin_command("twin no-such-command --port 1")


def test_server_deployment_runs_twin_serve_on_the_service_port():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "server.yaml").read_text()))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    svc = next(d for d in docs if d["kind"] == "Service")
    (c,) = _containers(dep)
    check_twin_command(shlex.join(c["command"]))
    args = c["command"]
    port = int(args[args.index("--address") + 1].rsplit(":", 1)[1])
    assert c["ports"][0]["containerPort"] == port == 50051
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = c[probe]["exec"]["command"]
        check_twin_command(shlex.join(cmd))
        assert cmd[1] == "health" and cmd[cmd.index("--address") + 1] == f"127.0.0.1:{port}"
        assert "--tls-ca" in cmd and "--tls-cert" in args  # TLS on, and the probe speaks it
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert "--local-demo" not in args and "--auth-config" in args  # authenticated in a deployment
    grace = float(args[args.index("--grace") + 1])
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_dockerfile_installs_the_grpc_extra_and_the_protos():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY proto ./proto" in text and "setup.py" in text and "grpc" in re.search(r"pip install .*'\.\[(.*)\]'", text).group(1)
    assert "EXPOSE 50051" in text


# --------------------------------------------------------------------------------------------
# RayJob entrypoints under bash -ce

STUB_TWIN = """#!{python}
import json, os, sys
sys.path.insert(0, {repo!r})
from twin_cli.cli import build_parser
args = build_parser().parse_args(sys.argv[1:])
with open(os.environ["STUB_OUT"], "w") as fh:
    json.dump({{"argv": sys.argv[1:], "db_url": args.db_url}}, fh)
"""


@pytest.mark.parametrize("name", ["rayjob-fit-twins.yaml", "rayjob-curriculum-search.yaml"])
def test_rayjob_entrypoint_runs_under_bash_ce(tmp_path, name):
    """The rendered entrypoint, run as KubeRay's submitter runs it (``bash -ce``, none of the head's
    variables set), reaches ``twin`` with arguments the real parser takes; on the head, where
    TWIN_DB_URL is set from the secret, ``twin`` gets the database URL from it."""
    entrypoint = next(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))["spec"]["entrypoint"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "twin"
    stub.write_text(STUB_TWIN.format(python=sys.executable, repo=str(DEPLOY.parent)))
    stub.chmod(0o755)
    out = tmp_path / "out.json"
    env = {"PATH": f"{bindir}{os.pathsep}/usr/bin:/bin", "STUB_OUT": str(out), "HOME": str(tmp_path)}
    run = subprocess.run(["bash", "-ce", entrypoint], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "command not found" not in run.stderr
    got = json.loads(out.read_text())
    assert got["argv"] == shlex.split(entrypoint)[1:] and got["db_url"] is None
    url = "postgresql+psycopg://twin@db/twins"
    run = subprocess.run(["bash", "-ce", entrypoint], env={**env, "TWIN_DB_URL": url}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["db_url"] == url


# --------------------------------------------------------------------------------------------
# probes against a TLS server


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_server_probes_pass_against_a_tls_server(tmp_path, capsys):
    grpc = pytest.importorskip("grpc")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.app import ServerConfig, TlsConfig, build_plane, start_server
    from server.auth import AuthConfig, Role
    from twin_cli.cli import main

    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=twin-server", "-addext", "subjectAltName=DNS:twin-server"],
        check=True, capture_output=True,
    )
    auth = AuthConfig.from_tokens({"r-token": Role.READER})  # health needs no token
    running = start_server(
        ServerConfig(address="127.0.0.1:0", auth=auth, tls=TlsConfig(cert, key), grace_s=1.0), build_plane(tmp_path / "store")
    )
    try:
        docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "server.yaml").read_text()))
        (c,) = _containers(next(d for d in docs if d["kind"] == "Deployment"))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            cmd = list(c[probe]["exec"]["command"])
            cmd[cmd.index("--address") + 1] = f"127.0.0.1:{running.port}"
            cmd[cmd.index("--tls-ca") + 1] = str(cert)  # the mounted secret's CA: here the self-signed certificate
            assert main(cmd[1:]) == 0, capsys.readouterr().out
            assert "SERVING" in capsys.readouterr().out
        # what kubelet's gRPC probe does (plaintext) cannot pass against this port
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
        # nor does the probe with the wrong name, or with nothing listening
        assert main(["health", "--address", f"127.0.0.1:{running.port}", "--tls-ca", str(cert), "--server-name", "other", "--timeout", "3"]) == 1
    finally:
        running.stop(grace_s=0.5)
    assert main(["health", "--address", f"127.0.0.1:{running.port}", "--tls-ca", str(cert), "--server-name", "twin-server", "--timeout", "2"]) == 1


# --------------------------------------------------------------------------------------------
# CPU and GPU images


def test_dockerfile_builds_cpu_and_gpu_images_from_pytorchs_wheels():
    text = (DEPLOY / "Dockerfile").read_text()
    pin = re.search(r'"torch==([\d.]+)"', (DEPLOY.parent / "pyproject.toml").read_text()).group(1)
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)  # the default image is the CPU one
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(pin)}$", text, re.M)  # the project's pin
    install = re.search(r"^RUN pip install (.*?)(?<!\\)$", text, re.M | re.S).group(0)
    torch_step, project_step = install.index('"torch==${TORCH_VERSION}"'), install.index("'.[ray,grpc,postgres]'")
    assert torch_step < project_step  # torch first: the project's torch pin is then met
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in install
    assert "torch.version.cuda" in install  # the build fails if the wheel is not the variant asked for
    assert "TORCH_VARIANT=cu128" in text and "learning-twins:0.1.0-gpu" in text  # how to build the GPU image
