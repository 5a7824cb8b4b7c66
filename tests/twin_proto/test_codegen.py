"""Stub generation (``twin_proto/codegen.py``) and the API conventions of ``proto/twin/v1``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2

from twin_proto import codegen


def test_stubs_are_fresh_and_importable_as_a_package():
    assert not codegen.is_stale()
    from twin_proto import pb

    assert pb.SERVICE_NAMES == ("twin.v1.TwinService", "twin.v1.CurriculumService", "twin.v1.OperationsService", "twin.v1.TeachingService")
    for path in codegen.DEFAULT_OUT_DIR.rglob("*.py"):
        text = path.read_text()
        assert "from twin.v1 import" not in text and "import twin.v1" not in text, path  # would hit the core package `twin`


def test_generate_into_a_folder_and_detect_staleness(tmp_path):
    protos = tmp_path / "proto"
    shutil.copytree(codegen.DEFAULT_PROTO_ROOT, protos)
    out = tmp_path / "gen"
    assert codegen.is_stale(out, protos)
    files = codegen.generate(out, protos)
    names = {p.name for p in files}
    assert {"twin_service_pb2.py", "twin_service_pb2_grpc.py", "operation_pb2.py", "__init__.py"} <= names
    assert (out / "twin" / "v1" / "twin_service_pb2.pyi").is_file()
    stamp = json.loads((out / codegen.STAMP_NAME).read_text())
    assert stamp["proto_sha256"] == codegen.source_digest(protos) and not codegen.is_stale(out, protos)
    grpc_py = (out / "twin" / "v1" / "twin_service_pb2_grpc.py").read_text()
    assert "from twin_proto.gen.twin.v1 import twin_service_pb2" in grpc_py
    # editing a proto makes the stubs stale; ensure_generated regenerates them
    f = protos / "twin" / "v1" / "common.proto"
    f.write_text(f.read_text() + "\n// edited\n")
    assert codegen.is_stale(out, protos)
    assert codegen.ensure_generated(out, protos) is True and not codegen.is_stale(out, protos)
    # without proto sources (an installed wheel) stamped stubs count as fresh, missing ones fail clearly
    empty = tmp_path / "no-protos"
    empty.mkdir()
    assert not codegen.is_stale(out, empty)
    with pytest.raises(ImportError, match="stubs are missing"):
        codegen.ensure_generated(tmp_path / "missing", empty)


def test_bad_proto_is_reported(tmp_path):
    protos = tmp_path / "proto"
    shutil.copytree(codegen.DEFAULT_PROTO_ROOT, protos)
    (protos / "twin" / "v1" / "broken.proto").write_text('syntax = "proto3";\npackage twin.v1;\nmessage Broken { int32 x = ; }\n')
    with pytest.raises(codegen.CodegenError, match="protoc failed"):
        codegen.generate(tmp_path / "gen", protos)
    assert not (tmp_path / "gen").exists()  # nothing half-written


def test_check_command():
    r = subprocess.run([sys.executable, "-m", "twin_proto.codegen", "--check"], capture_output=True, text=True)
    assert r.returncode == 0 and "up to date" in r.stdout


# -- conventions ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[descriptor_pb2.FileDescriptorProto]:
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("desc") / "set.pb"
    root = codegen.DEFAULT_PROTO_ROOT
    args = ["protoc", f"-I{root}", *[f"-I{d}" for d in codegen._include_dirs()], "--include_source_info", f"--descriptor_set_out={out}"]
    assert protoc.main(args + [p.relative_to(root).as_posix() for p in codegen.proto_files(root)]) == 0
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return list(fds.file)


def _elements(f: descriptor_pb2.FileDescriptorProto):
    """(path in SourceCodeInfo, kind, name) of every message, field, oneof, enum, value,
    service and method of a file."""

    def msg(m, path):
        yield path, "message", m.name
        for i, fl in enumerate(m.field):
            yield (*path, 2, i), "field", f"{m.name}.{fl.name}"
        for i, o in enumerate(m.oneof_decl):
            if not any(fl.proto3_optional for fl in m.field if fl.HasField("oneof_index") and fl.oneof_index == i):
                yield (*path, 8, i), "oneof", f"{m.name}.{o.name}"
        for i, n in enumerate(m.nested_type):
            if not n.options.map_entry:  # synthesised for map<,> fields
                yield from msg(n, (*path, 3, i))
        for i, e in enumerate(m.enum_type):
            yield from enum(e, (*path, 4, i))

    def enum(e, path):
        yield path, "enum", e.name
        for i, v in enumerate(e.value):
            yield (*path, 2, i), "enum value", v.name

    for i, m in enumerate(f.message_type):
        yield from msg(m, (4, i))
    for i, e in enumerate(f.enum_type):
        yield from enum(e, (5, i))
    for i, s in enumerate(f.service):
        yield (6, i), "service", s.name
        for j, meth in enumerate(s.method):
            yield (6, i, 2, j), "method", f"{s.name}.{meth.name}"


def test_every_element_is_commented(files):
    missing = []
    for f in files:
        if not f.name.startswith("twin/v1/"):
            continue
        comments = {tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip() for loc in f.source_code_info.location}
        missing += [f"{f.name}: {kind} {name}" for path, kind, name in _elements(f) if not comments.get(path)]
    assert missing == []


def test_naming_conventions(files):
    ours = [f for f in files if f.name.startswith("twin/v1/")]
    assert ours and all(f.package == "twin.v1" for f in ours)
    for f in ours:
        assert all(s.name.endswith("Service") for s in f.service)
        enums = list(f.enum_type) + [e for m in f.message_type for e in m.enum_type]
        for e in enums:
            assert e.value[0].number == 0 and e.value[0].name.endswith("_UNSPECIFIED"), e.name
            prefix = "".join("_" + c if c.isupper() else c for c in e.name).lstrip("_").upper() + "_"
            assert all(v.name.startswith(prefix) for v in e.value), e.name
