"""deploy/: manifests parse, and every command and flag they name exists in the CLI."""

from __future__ import annotations

import argparse
import re
import shlex
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
            assert c["image"] == f"learning-twins:{version}", (path, c["image"])
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
    assert c["readinessProbe"]["grpc"]["port"] == port  # grpc.health.v1, served by the server
    assert svc["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert "--local-demo" not in args and "--auth-config" in args  # authenticated in a deployment
    grace = float(args[args.index("--grace") + 1])
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_dockerfile_installs_the_grpc_extra_and_the_protos():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY proto ./proto" in text and "setup.py" in text and "grpc" in re.search(r"pip install .*'\.\[(.*)\]'", text).group(1)
    assert "EXPOSE 50051" in text
