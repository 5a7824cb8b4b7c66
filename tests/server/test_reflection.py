"""Server reflection (``server/reflection.py``): every method of every service describable, with
its request and response types and all their dependencies, as grpcurl does it."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from server.reflection import MethodAwarePool
from twin_proto.pb import SERVICE_NAMES


def _message_types(desc, seen: set[str]) -> None:
    """Walk a message's field types (proves every dependency file was sent)."""
    if desc.full_name in seen:
        return
    seen.add(desc.full_name)
    for f in desc.fields:
        if f.message_type is not None:
            _message_types(f.message_type, seen)


def test_every_method_and_its_types_are_describable(server):
    db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(server.target))
    services = sorted(set(db.get_services()) - {"grpc.reflection.v1alpha.ServerReflection"})
    assert set(SERVICE_NAMES) | {"grpc.health.v1.Health"} == set(services)
    pool = descriptor_pool.DescriptorPool(db)  # resolves every symbol through reflection only
    described = []
    for name in services:
        service = pool.FindServiceByName(name)
        assert service.methods, name
        for method in service.methods:
            # `grpcurl describe twin.v1.TwinService.Forecast`: the file containing the method
            f = db.FindFileContainingSymbol(method.full_name)
            assert f.name == service.file.name and any(m.name == method.name for s in f.service if s.name == service.name for m in s.method)
            for t in (method.input_type, method.output_type):
                assert pool.FindMessageTypeByName(t.full_name).full_name == t.full_name
                _message_types(t, set())
            described.append(method.full_name)
    assert {"twin.v1.TwinService.Forecast", "twin.v1.CurriculumService.NextSession", "twin.v1.OperationsService.WatchOperation", "grpc.health.v1.Health.Check"} <= set(described)
    # long-running results and metadata, named only in options and Any, are describable too
    for t in ("google.longrunning.Operation", "twin.v1.OperationMetadata", "twin.v1.FitCohortResult", "twin.v1.CurriculumSearchResult", "twin.v1.TwinUpdateResult"):
        assert pool.FindMessageTypeByName(t).full_name == t
    op = pool.FindMessageTypeByName("google.longrunning.Operation")
    assert op.fields_by_name["error"].message_type.full_name == "google.rpc.Status"


def test_unknown_symbols_are_not_found(server):
    db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(server.target))
    for symbol in ("twin.v1.TwinService.NoSuchMethod", "twin.v1.NoSuchService.Forecast", "nothing"):
        with pytest.raises(KeyError):
            db.FindFileContainingSymbol(symbol)


def test_method_aware_pool_finds_methods_and_delegates_the_rest():
    pool = MethodAwarePool()
    assert pool.FindFileContainingSymbol("twin.v1.TwinService.Forecast").name == "twin/v1/twin_service.proto"
    assert pool.FindFileContainingSymbol("twin.v1.ForecastRequest").name == "twin/v1/twin_service.proto"
    assert pool.FindFileByName("twin/v1/common.proto").package == "twin.v1"
    with pytest.raises(KeyError):
        pool.FindFileContainingSymbol("twin.v1.TwinService.Nope")
