"""The service layer: the data plane behind every RPC, in domain types and domain errors (no gRPC)."""
