"""Build hook of the rig client distribution: copy the client from the repository and generate
its stubs.

The distribution's packages are not kept here: ``build_py`` copies ``twin_client/*.py`` and
``twin_proto/{__init__,codegen,pb}.py`` from the repository root two folders up (one source for
the repository and the distribution) and generates ``twin_proto/gen/`` from ``proto/`` with the
build environment's grpcio-tools (pinned in pyproject.toml), the same codegen the repository uses.
A wheel is therefore built from a checkout of the repository (``pip wheel clients/python``); an
sdist is not offered.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: Files of the repository that make up the distribution's Python packages.
SOURCES = {"twin_client": ("__init__.py", "client.py"), "twin_proto": ("__init__.py", "codegen.py", "pb.py")}


class BuildClient(build_py):
    """build_py that copies the client sources and generates the stubs into the build folder."""

    def run(self) -> None:
        super().run()
        if not (REPO / "proto" / "twin" / "v1").is_dir():
            raise SystemExit(f"{REPO}: not a learning-twins checkout (no proto/twin/v1): build the client from the repository")
        out = Path(self.build_lib)
        for package, names in SOURCES.items():
            shutil.rmtree(out / package, ignore_errors=True)  # nothing left from an earlier build
            (out / package).mkdir(parents=True)
            for name in names:
                shutil.copy2(REPO / package / name, out / package / name)
        generate = runpy.run_path(str(REPO / "twin_proto" / "codegen.py"), run_name="_twin_client_codegen")["generate"]
        files = generate(out / "twin_proto" / "gen", REPO / "proto")
        self.announce(f"generated {len(files)} gRPC stub files in {out / 'twin_proto' / 'gen'}", level=2)


class ClientDistribution(Distribution):
    """The packages are written by :class:`BuildClient`, not listed: still build and install them."""

    def has_pure_modules(self) -> bool:
        return True


setup(distclass=ClientDistribution, cmdclass={"build_py": BuildClient})
