"""Generate the Python gRPC stubs of ``proto/twin/v1/*.proto`` into ``twin_proto/gen/``.

The stubs are generated at install or build time and never committed: ``make setup`` runs
``python -m twin_proto.codegen``, a wheel build runs :func:`generate` from ``setup.py``'s
``build_py`` hook, and importing :mod:`twin_proto.pb` regenerates them when they are missing or
older than the protos (or says how to, when ``grpcio-tools`` is not installed).

protoc writes imports by proto path (``from twin.v1 import common_pb2``), which would resolve
to our core package ``twin``. The stubs are therefore generated into a temporary folder, their
``twin.v1`` imports rewritten to ``twin_proto.gen.twin.v1``, and the folder moved into place in one
rename, with a stamp file recording the hash of the protos they came from.

This module imports neither grpc nor the generated code at import time (``setup.py`` loads it
by path in the build environment).

Usage::

    python -m twin_proto.codegen            # (re)generate twin_proto/gen/
    python -m twin_proto.codegen --check    # exit 1 if twin_proto/gen/ is missing or stale
    python -m twin_proto.codegen --deps build/proto-deps   # the googleapis protos, for buf
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The package the protos declare (and the folder they live in under the proto root).
PROTO_PACKAGE_PATH = Path("twin") / "v1"
#: Python package the stubs are importable as once generated into ``twin_proto/gen``.
GEN_PACKAGE = "twin_proto.gen"
#: Name of the stamp file written next to the generated packages.
STAMP_NAME = "STAMP.json"

_PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PROTO_ROOT = _PACKAGE_DIR.parent / "proto"
DEFAULT_OUT_DIR = _PACKAGE_DIR / "gen"

_IMPORT_RE = re.compile(r"^(\s*)from twin\.v1 import ", re.MULTILINE)
_IMPORT_DOTTED_RE = re.compile(r"^(\s*)import twin\.v1\.", re.MULTILINE)


class CodegenError(RuntimeError):
    """The stubs could not be generated (protoc failed, or grpcio-tools is missing)."""


@dataclass(frozen=True)
class Stamp:
    """What a generated folder was made from.

    Attributes:
        proto_sha256: hash of the proto sources (paths and contents).
        grpcio_tools: version of grpcio-tools (and so of protoc) that generated them.
    """

    proto_sha256: str
    grpcio_tools: str


def proto_files(proto_root: Path = DEFAULT_PROTO_ROOT) -> list[Path]:
    """The ``.proto`` files of the package, sorted."""
    return sorted((proto_root / PROTO_PACKAGE_PATH).glob("*.proto"))


def source_digest(proto_root: Path = DEFAULT_PROTO_ROOT) -> str:
    """SHA-256 over the proto files' relative paths and contents."""
    h = hashlib.sha256()
    for path in proto_files(proto_root):
        h.update(path.relative_to(proto_root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def read_stamp(out_dir: Path = DEFAULT_OUT_DIR) -> Stamp | None:
    """The stamp of a generated folder, or None when absent or unreadable."""
    try:
        data = json.loads((out_dir / STAMP_NAME).read_text())
        return Stamp(proto_sha256=str(data["proto_sha256"]), grpcio_tools=str(data["grpcio_tools"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_stale(out_dir: Path = DEFAULT_OUT_DIR, proto_root: Path = DEFAULT_PROTO_ROOT) -> bool:
    """True when ``out_dir`` lacks stubs or they were generated from other protos.

    Without proto sources (an installed wheel), stubs that carry a stamp count as fresh.
    """
    stamp = read_stamp(out_dir)
    if stamp is None:
        return True
    if not proto_files(proto_root):
        return False
    return stamp.proto_sha256 != source_digest(proto_root)


def _include_dirs() -> list[Path]:
    """protoc include folders: the well-known types (grpcio-tools), googleapis-common-protos'
    ``google/api``, ``google/rpc`` and ``google/longrunning`` protos, and a folder that holds
    ``google/longrunning/operations.proto``.

    googleapis-common-protos ships that file as ``operations_proto.proto`` (its generated module
    registers it under the canonical name ``google/longrunning/operations.proto``); the copy
    under the canonical name lets our imports use it, and our stubs then import
    ``google.longrunning.operations_pb2``, which the package provides.
    """
    try:
        import grpc_tools
    except ImportError as exc:  # pragma: no cover - exercised only without grpcio-tools
        raise CodegenError("grpcio-tools is not installed: install the project's grpc pins (pip install -e '.[grpc]')") from exc
    dirs = [Path(grpc_tools.__file__).resolve().parent / "_proto"]
    for entry in sys.path:  # googleapis-common-protos ships google/rpc/*.proto beside its modules
        candidate = Path(entry or ".") / "google" / "rpc" / "status.proto"
        if candidate.is_file():
            dirs.append(candidate.parent.parent.parent.resolve())
            break
    else:
        raise CodegenError("google/rpc/status.proto not found: install googleapis-common-protos (a dependency of grpcio-status)")
    longrunning = dirs[-1] / "google" / "longrunning"
    if not (longrunning / "operations.proto").is_file():
        source = longrunning / "operations_proto.proto"
        if not source.is_file():
            raise CodegenError(f"{source} not found: install googleapis-common-protos")
        shim = Path(tempfile.gettempdir()) / f"twin-proto-include-{hashlib.sha256(source.read_bytes()).hexdigest()[:16]}"
        target = shim / "google" / "longrunning" / "operations.proto"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".operations.proto.{os.getpid()}")
            part.write_bytes(source.read_bytes())
            os.replace(part, target)
        dirs.append(shim)
    return dirs


#: Folders of googleapis-common-protos whose protos ours import (directly or through each other).
GOOGLEAPIS_FOLDERS = ("google/api", "google/rpc", "google/longrunning")


def write_dependency_protos(dest: Path) -> list[Path]:
    """Copy the non-well-known protos ours import into ``dest`` (``google/api``, ``google/rpc``,
    ``google/longrunning``, the latter under its canonical name), for tools such as ``buf`` that
    read a folder of protos rather than protoc include paths. The well-known types
    (``google/protobuf``) are left out: buf has them built in.

    Returns:
        The files written.

    Raises:
        CodegenError: googleapis-common-protos or grpcio-tools is not installed.
    """
    written = []
    for folder in GOOGLEAPIS_FOLDERS:
        for inc in _include_dirs()[1:]:
            for src in sorted((inc / folder).glob("*.proto")):
                if src.name == "operations_proto.proto":
                    continue  # the same file as operations.proto, under the package's own name
                target = Path(dest) / folder / src.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(src.read_bytes())
                written.append(target)
    return written


def _grpc_tools_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _rewrite_imports(folder: Path) -> None:
    """Point the generated ``twin.v1`` imports at ``twin_proto.gen.twin.v1``."""
    for path in folder.rglob("*.py*"):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        new = _IMPORT_RE.sub(rf"\1from {GEN_PACKAGE}.twin.v1 import ", text)
        new = _IMPORT_DOTTED_RE.sub(rf"\1import {GEN_PACKAGE}.twin.v1.", new)
        if new != text:
            path.write_text(new)


def generate(out_dir: Path = DEFAULT_OUT_DIR, proto_root: Path = DEFAULT_PROTO_ROOT) -> list[Path]:
    """Generate the stubs of every proto under ``proto_root/twin/v1`` into ``out_dir``.

    ``out_dir`` is replaced as a whole (generated in a sibling temporary folder, then renamed),
    so a concurrent reader sees the old stubs or the new ones, never a mix.

    Args:
        out_dir: the ``twin_proto/gen`` folder to (re)create.
        proto_root: folder holding ``twin/v1/*.proto``.

    Returns:
        The generated Python files.

    Raises:
        CodegenError: no protos, grpcio-tools missing, or protoc reporting an error.
    """
    protos = proto_files(proto_root)
    if not protos:
        raise CodegenError(f"no .proto files under {proto_root / PROTO_PACKAGE_PATH}")
    includes = _include_dirs()
    from grpc_tools import protoc

    out_dir, proto_root = Path(out_dir).resolve(), Path(proto_root).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=out_dir.parent))
    try:
        args = ["grpc_tools.protoc", f"-I{proto_root}", *[f"-I{d}" for d in includes]]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        args += [p.relative_to(proto_root).as_posix() for p in protos]
        cwd = os.getcwd()
        try:
            os.chdir(proto_root)
            rc = protoc.main(args)
        finally:
            os.chdir(cwd)
        if rc != 0:
            raise CodegenError(f"protoc failed (exit {rc}) on {[p.name for p in protos]}; see its messages above")
        _rewrite_imports(tmp)
        for pkg in (tmp, tmp / "twin", tmp / PROTO_PACKAGE_PATH):
            (pkg / "__init__.py").write_text('"""Generated by twin_proto.codegen from proto/; do not edit."""\n')
        stamp = {"proto_sha256": source_digest(proto_root), "grpcio_tools": _grpc_tools_version()}
        (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=1) + "\n")
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".old-{out_dir.name}-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out_dir.rglob("*.py"))


def ensure_generated(out_dir: Path = DEFAULT_OUT_DIR, proto_root: Path = DEFAULT_PROTO_ROOT) -> bool:
    """Make sure fresh stubs exist in ``out_dir``, regenerating them if they are stale.

    Returns:
        True when the stubs were (re)generated.

    Raises:
        ImportError: stale or missing stubs that cannot be regenerated here (no grpcio-tools,
            or no proto sources), with the command that fixes it.
    """
    if not is_stale(out_dir, proto_root):
        return False
    if not proto_files(proto_root):
        raise ImportError(
            f"the generated gRPC stubs are missing from {out_dir} and the proto sources are not "
            "installed: reinstall the package from a build that ran its codegen hook"
        )
    try:
        generate(out_dir, proto_root)
    except CodegenError as exc:
        raise ImportError(
            f"the gRPC stubs in {out_dir} are missing or older than {proto_root} and could not be "
            f"regenerated ({exc}); run `make setup` or `python -m twin_proto.codegen`"
        ) from exc
    return True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate, or check freshness with ``--check``."""
    p = argparse.ArgumentParser(prog="python -m twin_proto.codegen", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help=f"output folder (default {DEFAULT_OUT_DIR})")
    p.add_argument("--proto-root", type=Path, default=DEFAULT_PROTO_ROOT, help="folder holding twin/v1/*.proto")
    p.add_argument("--check", action="store_true", help="exit 1 if the stubs are missing or stale; generate nothing")
    p.add_argument("--deps", type=Path, default=None, metavar="DIR", help="only copy the googleapis protos ours import into DIR (for buf), generate nothing")
    args = p.parse_args(argv)
    if args.deps is not None:
        try:
            written = write_dependency_protos(args.deps)
        except CodegenError as exc:
            print(f"codegen: error: {exc}", file=sys.stderr)
            return 1
        print(f"copied {len(written)} dependency protos into {args.deps}")
        return 0
    if args.check:
        stale = is_stale(args.out, args.proto_root)
        print(f"{args.out}: {'stale or missing' if stale else 'up to date'}")
        return 1 if stale else 0
    try:
        files = generate(args.out, args.proto_root)
    except CodegenError as exc:
        print(f"codegen: error: {exc}", file=sys.stderr)
        return 1
    print(f"generated {len(files)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
