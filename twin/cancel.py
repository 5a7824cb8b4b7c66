"""Cooperative cancellation of the core's long loops.

The loops that can run long (the rollout loop of every simulation, a rule's teacher-forced
rollout, a fit's epochs) call :func:`checkpoint` once per trial or epoch. Outside a
:func:`cancellable` block it does nothing; inside one it calls the block's check, which stops
the work by raising (a caller's deadline passed, its client went away, its operation was
cancelled). The check is set per thread (a context variable), so a server's concurrent calls
and background jobs each stop only their own work, and callers need not thread a callback
through every function between them and the loop.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

Check = Callable[[], None]
"""Raises to stop the work; returns when it may go on."""

_CHECK: contextvars.ContextVar[Check | None] = contextvars.ContextVar("twin_cancel_check", default=None)


def checkpoint() -> None:
    """Raise whatever the enclosing :func:`cancellable` check raises (nothing outside one)."""
    check = _CHECK.get()
    if check is not None:
        check()


@contextlib.contextmanager
def cancellable(check: Check) -> Iterator[None]:
    """Make :func:`checkpoint` call ``check`` inside the block (and an enclosing block's check
    before it)."""
    outer = _CHECK.get()
    if outer is None:
        token = _CHECK.set(check)
    else:

        def both() -> None:
            outer()
            check()

        token = _CHECK.set(both)
    try:
        yield
    finally:
        _CHECK.reset(token)


__all__ = ["Check", "cancellable", "checkpoint"]
