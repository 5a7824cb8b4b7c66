"""Per-role quotas of concurrent calls: how many costly calls (Predict, Forecast, NextSession)
each role may run at once, and how many WatchOperation streams may be open.

A call over its role's quota is refused at once with RESOURCE_EXHAUSTED (retry later), so one
role's callers cannot hold every server thread: readers' dashboards leave rigs their own share
for the next session's plan, and health checks a thread to answer on. Teach streams (a whole
session each) are bounded in all and per client (the token's name). The numbers are
:class:`~service.limits.Limits` fields (``max_concurrent_reader_calls``, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from server.auth import Principal, Role
from service.limits import ConcurrencyGate, Limits

#: Methods whose work grows with the request (counted against the caller's role).
COSTLY_METHODS = frozenset({"/twin.v1.TwinService/Predict", "/twin.v1.TwinService/Forecast", "/twin.v1.CurriculumService/NextSession"})
#: The stream that holds a thread until its operation is done.
WATCH_METHOD = "/twin.v1.OperationsService/WatchOperation"
#: The teaching stream: holds a thread for a whole session (counted in all and per client).
TEACH_METHOD = "/twin.v1.TeachingService/Teach"


class CallQuotas:
    """The concurrency quotas of one server.

    Args:
        limits: the quotas' values.
    """

    def __init__(self, limits: Limits) -> None:
        self._per_role = {
            Role.READER: limits.max_concurrent_reader_calls,
            Role.RIG: limits.max_concurrent_rig_calls,
            Role.ADMIN: limits.max_concurrent_admin_calls,
        }
        self._watches = limits.max_concurrent_watches
        self._teach = limits.max_concurrent_teach_streams
        self.gate = ConcurrencyGate({**{r.value: n for r, n in self._per_role.items()}, "watch": self._watches, "teach": self._teach})
        self.per_client = ConcurrencyGate({}, default=limits.max_teach_streams_per_client)

    def threads_held(self) -> int:
        """Threads the quotas let calls hold at once, at most."""
        return sum(self._per_role.values()) + self._watches + self._teach

    def hold(self, method: str, principal: Principal | None) -> contextlib.AbstractContextManager[None]:
        """Count the call for its duration (callers without authentication count as readers).

        Raises:
            LimitExceededError: its quota is full.
        """
        if method in COSTLY_METHODS:
            role = principal.role if principal is not None else Role.READER
            return self.gate.hold(role.value, f"max_concurrent_{role.value}_calls", f"costly calls (Predict, Forecast, NextSession) of the {role.value} role")
        if method == WATCH_METHOD:
            return self.gate.hold("watch", "max_concurrent_watches", "open WatchOperation streams")
        if method == TEACH_METHOD:
            return self._hold_teach(principal.name if principal is not None else "")
        return contextlib.nullcontext()


    @contextlib.contextmanager
    def _hold_teach(self, client: str) -> Iterator[None]:
        """One Teach stream: counted among all streams, then among the client's."""
        with self.gate.hold("teach", "max_concurrent_teach_streams", "open Teach streams"):
            with self.per_client.hold(f"client:{client}", "max_teach_streams_per_client", "open Teach streams of this client"):
                yield


__all__ = ["COSTLY_METHODS", "CallQuotas", "TEACH_METHOD", "WATCH_METHOD"]
