"""setuptools hook: generate the gRPC stubs (twin_proto/gen/) from proto/ when the package is built.

Everything else about the package is in pyproject.toml. A wheel gets the stubs in its build
folder; an editable install gets them in the source tree (``make setup`` also runs
``python -m twin_proto.codegen``). The codegen module is loaded by path: the build environment does
not have the project importable.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _codegen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_twin_codegen", HERE / "twin_proto" / "codegen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


class BuildPyWithStubs(build_py):
    """build_py that also generates twin_proto/gen/ from proto/."""

    def run(self) -> None:
        super().run()
        codegen = _codegen()
        protos = HERE / "proto"
        if getattr(self, "editable_mode", False):
            out = HERE / "twin_proto" / "gen"
        else:
            out = Path(self.build_lib) / "twin_proto" / "gen"
        files = codegen.generate(out, protos)
        self.announce(f"generated {len(files)} gRPC stub files in {out}", level=2)


setup(cmdclass={"build_py": BuildPyWithStubs})
