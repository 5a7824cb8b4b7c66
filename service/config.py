"""Limits, defaults and request deadlines of the data plane."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twin.cancel import cancellable
from twin.fit.train import FitConfig

from service.errors import DeadlineExceededError, OperationCancelledError
from service.limits import Limits


@dataclass(frozen=True)
class DataPlaneConfig:
    """Limits and defaults of the service.

    Attributes:
        limits: what one request may cost, and how much may run at once
            (:class:`~service.limits.Limits`).
        default_page_size: page size when a request sets none.
        default_rollouts: forecast rollouts when a request sets none.
        interval_level: default interval coverage.
        max_interval_width: default widest acceptable accuracy interval of a plan.
        update_fit: optimisation settings of twin updates (None: the core's defaults).
        prediction_cache_trials: trials of stored-history predictions kept in memory (0: none).
        metadata_ttl_s: how stale a subject's metadata snapshot (versions, aliases, sessions) may
            be; changes made by other processes sharing the store are seen within it, changes
            made through this server at once.
        teach_decision_budget_ms: per-decision time budget of a Teach stream; a slower decision
            is discarded and the trial falls back to the session protocol.
    """

    limits: Limits = field(default_factory=Limits)
    default_page_size: int = 100
    default_rollouts: int = 200
    interval_level: float = 0.9
    max_interval_width: float = 0.3
    update_fit: FitConfig | None = None
    prediction_cache_trials: int = 2_000_000
    metadata_ttl_s: float = 1.0
    teach_decision_budget_ms: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.default_page_size <= self.limits.max_page_size:
            raise ValueError(f"default_page_size must be in [1, limits.max_page_size = {self.limits.max_page_size}]")
        if not 1 <= self.default_rollouts <= self.limits.max_rollouts:
            raise ValueError(f"default_rollouts must be in [1, limits.max_rollouts = {self.limits.max_rollouts}]")

    @property
    def max_page_size(self) -> int:
        """Largest page (``limits.max_page_size``)."""
        return self.limits.max_page_size

    @property
    def max_rollouts(self) -> int:
        """Most forecast rollouts per request (``limits.max_rollouts``)."""
        return self.limits.max_rollouts


@dataclass(frozen=True)
class Deadline:
    """The client's deadline and whether it is still waiting, checked between the steps of a
    request and, inside :meth:`scope`, on every trial of the core's long loops.

    Attributes:
        expires_at: ``time.monotonic()`` value it expires at (None: no deadline).
        is_active: False once the client has gone away (cancelled the call, closed the
            connection); None: never asked.
    """

    expires_at: float | None = None
    is_active: Callable[[], bool] | None = field(default=None, compare=False)

    @classmethod
    def after(cls, seconds: float | None, is_active: Callable[[], bool] | None = None) -> "Deadline":
        """A deadline ``seconds`` from now (None: none)."""
        return cls(None if seconds is None else time.monotonic() + seconds, is_active)

    def check(self, step: str) -> None:
        """Raise if the deadline passed or the client went away (before or during ``step``).

        Raises:
            DeadlineExceededError: the deadline passed.
            OperationCancelledError: the client is no longer waiting.
        """
        if self.expires_at is not None and time.monotonic() >= self.expires_at:
            raise DeadlineExceededError(f"the deadline passed before {step} was done")
        if self.is_active is not None and not self.is_active():
            raise OperationCancelledError(f"the client cancelled the call before {step} was done")

    def scope(self, step: str) -> contextlib.AbstractContextManager[None]:
        """A block whose long loops (rollouts, predictions, fits: :func:`twin.cancel.checkpoint`)
        stop with :meth:`check`'s error as soon as the deadline passes or the client goes away."""
        if self.expires_at is None and self.is_active is None:
            return contextlib.nullcontext()
        return cancellable(lambda: self.check(step))


NO_DEADLINE = Deadline()


__all__ = ["DataPlaneConfig", "Deadline", "NO_DEADLINE"]
