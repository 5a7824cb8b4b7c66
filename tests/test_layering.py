"""Every import arrow points down the layers; one test per package and one per core subpackage.

Top level (lowest first): ``twin`` (the pure core) ← ``optimizer`` ← ``service`` ←
{``server``, ``cluster``, ``twin_cli``}; ``twin_proto`` (generated stubs) and ``twin_client``
(the gRPC client) stand apart from the core: the client installs on a rig with grpcio and
protobuf only. ``twin_interop`` (adapters to other labs' data libraries, each an optional
extra) sits on the core alone, beside ``optimizer``; only the CLI imports it. Inside the core the subpackages are ranked too (``errors`` and ``protocol`` at
the bottom, ``fit`` at the top); a module may import its own subpackage or a lower rank only.

``KNOWN`` lists the arrows that still run the wrong way, each with the issue that removes it;
a listed arrow that no longer exists fails the test too, so the list can only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Third-party edges no package below the edges may import.
EDGE_LIBS = {"ray", "grpc", "grpc_health", "grpc_reflection", "grpc_status", "google", "optuna"}
#: Project packages.
PROJECT = {"twin", "optimizer", "service", "server", "cluster", "twin_cli", "twin_proto", "twin_client", "twin_interop", "experiments", "bench"}

#: What each package may import, of the project's packages and the edge libraries.
ALLOWED: dict[str, set[str]] = {
    "twin": {"twin"},
    "optimizer": {"twin", "optimizer", "optuna"},
    "twin_interop": {"twin", "twin_interop"},
    "service": {"twin", "optimizer", "service"},
    "twin_proto": {"twin_proto", "grpc", "google"},
    "twin_client": {"twin_client", "twin_proto", "grpc", "grpc_health", "grpc_status", "google"},
    "server": {"twin", "optimizer", "service", "server", "twin_proto", "grpc", "grpc_health", "grpc_reflection", "grpc_status", "google"},
    "cluster": {"twin", "optimizer", "service", "cluster", "ray", "optuna"},
    "twin_cli": PROJECT - {"experiments", "bench"} | EDGE_LIBS,
}

#: Rank of each core subpackage (top-level core modules by their own name).
CORE_RANK = {"errors": 0, "progress": 0, "cancel": 0, "protocol": 1, "data": 2, "models": 3, "analysis": 4, "persist": 4, "baselines": 4, "sim": 5, "fit": 6}

#: Arrows that still point the wrong way: (importing file, imported module) -> why it is still here.
KNOWN: dict[tuple[str, str], str] = {
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _files(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if "gen" not in p.relative_to(ROOT / pkg).parts)


def _core_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(pkg: str) -> set[tuple[str, str, int]]:
    bad = set()
    for path in _files(pkg):
        rel = str(path.relative_to(ROOT))
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in PROJECT | EDGE_LIBS and top not in ALLOWED[pkg]:
                bad.add((rel, name, line))
            if pkg == "twin" and top == "twin":
                src = path.relative_to(ROOT / "twin").parts
                src_part = src[0] if len(src) > 1 else src[0].removesuffix(".py")
                dst_part = _core_part(name)
                if dst_part and dst_part != src_part and CORE_RANK.get(dst_part, 99) >= CORE_RANK.get(src_part, -1):
                    bad.add((rel, name, line))
    return bad


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_arrows_point_down(pkg):
    found = _violations(pkg)
    unexpected = sorted(v for v in found if (v[0], v[1]) not in KNOWN)
    assert not unexpected, "\n".join(f"{f} line {n} imports {m}" for f, m, n in unexpected)
    gone = sorted(k for k in KNOWN if k[0].startswith(pkg + "/") and k not in {(f, m) for f, m, _ in found})
    assert not gone, f"fixed arrows still listed in KNOWN (remove them): {gone}"


def test_every_package_is_ranked():
    tops = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert tops - {"experiments", "bench", "examples", "tests"} <= set(ALLOWED), tops
    core = {p.name.removesuffix(".py") for p in (ROOT / "twin").iterdir() if p.name != "__init__.py" and p.name != "__pycache__"}
    assert core <= set(CORE_RANK), core - set(CORE_RANK)
