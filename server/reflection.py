"""Server reflection that describes every method of every service (``grpcurl describe
twin.v1.TwinService.Forecast``).

grpcio-reflection answers "file containing symbol" from a descriptor pool, and protobuf's
pool finds messages, enums, services and fields by name but not methods, so a client asking for
a method got NOT_FOUND ("Symbol not found"). :class:`MethodAwarePool` resolves a method to the
file of its service and leaves everything else to the wrapped pool; the reflection servicer
sends that file with all its transitive dependencies (``google/longrunning/operations.proto``,
``google/rpc/status.proto``, ...), so every request and response type can be described too.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor, descriptor_pool
from grpc_reflection.v1alpha import reflection


class MethodAwarePool:
    """A descriptor pool whose :meth:`FindFileContainingSymbol` also finds methods
    (``package.Service.Method``); every other call goes to the wrapped pool.

    Args:
        pool: the pool to wrap (default: protobuf's default pool, where the generated modules
            register their files).
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = descriptor_pool.Default() if pool is None else pool

    def __getattr__(self, name: str) -> object:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> descriptor.FileDescriptor:  # noqa: N802 (protobuf's name)
        """The file defining ``symbol``: a message, enum, service, field, ... or a method.

        Raises:
            KeyError: no such symbol.
        """
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(f"Couldn't find symbol {symbol}") from None
            if method not in service.methods_by_name:
                raise KeyError(f"Couldn't find symbol {symbol}") from None
            return service.file


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection (v1alpha, which grpcurl and grpc_cli use) for ``service_names`` on
    ``server``, methods included."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=MethodAwarePool())  # type: ignore[arg-type]


__all__ = ["MethodAwarePool", "enable_reflection"]
