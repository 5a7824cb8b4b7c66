"""Limits, defaults and request deadlines of the data plane."""

from __future__ import annotations

import time
from dataclasses import dataclass

from twin.fit.train import FitConfig

from service.errors import DeadlineExceededError


@dataclass(frozen=True)
class DataPlaneConfig:
    """Limits and defaults of the service.

    Attributes:
        default_page_size: page size when a request sets none.
        max_page_size: largest page.
        default_rollouts: forecast rollouts when a request sets none.
        max_rollouts: most forecast rollouts per request.
        max_forecast_trial_steps: most rollouts × trials per forecast (bounds its cost).
        interval_level: default interval coverage.
        max_interval_width: default widest acceptable accuracy interval of a plan.
        update_fit: optimisation settings of twin updates (None: the core's defaults).
        prediction_cache_trials: trials of stored-history predictions kept in memory (0: none).
        metadata_ttl_s: how stale a subject's metadata snapshot (versions, aliases, sessions) may
            be; changes made by other processes sharing the store are seen within it, changes
            made through this server at once.
    """

    default_page_size: int = 100
    max_page_size: int = 1000
    default_rollouts: int = 200
    max_rollouts: int = 2000
    max_forecast_trial_steps: int = 2_000_000
    interval_level: float = 0.9
    max_interval_width: float = 0.3
    update_fit: FitConfig | None = None
    prediction_cache_trials: int = 2_000_000
    metadata_ttl_s: float = 1.0


@dataclass(frozen=True)
class Deadline:
    """The client's deadline, checked between steps of a request.

    Attributes:
        expires_at: ``time.monotonic()`` value it expires at (None: no deadline).
    """

    expires_at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        """A deadline ``seconds`` from now (None: none)."""
        return cls(None if seconds is None else time.monotonic() + seconds)

    def check(self, step: str) -> None:
        """Raise if the deadline passed (before ``step``).

        Raises:
            DeadlineExceededError: it did.
        """
        if self.expires_at is not None and time.monotonic() >= self.expires_at:
            raise DeadlineExceededError(f"the deadline passed before {step}")


NO_DEADLINE = Deadline()


__all__ = ["DataPlaneConfig", "Deadline", "NO_DEADLINE"]
