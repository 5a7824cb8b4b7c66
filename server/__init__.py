"""The gRPC service ``twin.v1`` over the core: thin servicers, a data plane, one error mapping,
auth, health and reflection. See ``server/README.md``; the API is ``proto/twin/v1``."""
