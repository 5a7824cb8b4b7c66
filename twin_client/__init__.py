"""A Python client of the ``twin.v1`` gRPC API (grpcio and protobuf only)."""
