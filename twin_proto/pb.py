"""The generated protobuf and gRPC modules of ``twin.v1``, checked fresh before import.

Everything in :mod:`server` imports the generated code through this module. On import the
stubs in ``twin_proto/gen/`` are compared with the protos they were generated from; missing or
stale stubs are regenerated (or an ImportError says how to fix it when that is impossible).
"""

from __future__ import annotations

from twin_proto.codegen import ensure_generated

ensure_generated()

from twin_proto.gen.twin.v1 import (  # noqa: E402  (must follow the freshness check)
    common_pb2,
    curriculum_service_pb2,
    curriculum_service_pb2_grpc,
    operation_pb2,
    operations_service_pb2,
    operations_service_pb2_grpc,
    protocol_pb2,
    teaching_service_pb2,
    teaching_service_pb2_grpc,
    twin_service_pb2,
    twin_service_pb2_grpc,
)

#: Full names of the twin.v1 services, as reflection lists them.
SERVICE_NAMES: tuple[str, ...] = (
    twin_service_pb2.DESCRIPTOR.services_by_name["TwinService"].full_name,
    curriculum_service_pb2.DESCRIPTOR.services_by_name["CurriculumService"].full_name,
    operations_service_pb2.DESCRIPTOR.services_by_name["OperationsService"].full_name,
    teaching_service_pb2.DESCRIPTOR.services_by_name["TeachingService"].full_name,
)

__all__ = [
    "SERVICE_NAMES",
    "common_pb2",
    "curriculum_service_pb2",
    "curriculum_service_pb2_grpc",
    "operation_pb2",
    "operations_service_pb2",
    "operations_service_pb2_grpc",
    "protocol_pb2",
    "teaching_service_pb2",
    "teaching_service_pb2_grpc",
    "twin_service_pb2",
    "twin_service_pb2_grpc",
]
