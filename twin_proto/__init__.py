"""The generated protobuf/gRPC modules of ``twin.v1`` (stubs generated from ``proto/``, never committed)."""
