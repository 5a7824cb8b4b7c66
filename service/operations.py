"""Operations: get, list, cancel and watch the long-running jobs of the other parts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from service.config import DataPlaneConfig
from service.errors import InvalidArgumentError
from service.jobs import JobKind, JobManager, JobSnapshot, JobState
from service.paging import Page, paginate


class Operations:
    """GetOperation, ListOperations, CancelOperation and WatchOperation.

    Args:
        jobs: the job manager the operations run on.
        config: limits and defaults (page sizes).
    """

    def __init__(self, jobs: JobManager, config: DataPlaneConfig = DataPlaneConfig()) -> None:
        self.jobs, self.config = jobs, config

    def get_operation(self, op_id: str) -> JobSnapshot:
        """One operation."""
        if not op_id:
            raise InvalidArgumentError.field("id", "required")
        return self.jobs.get(op_id)

    def list_operations(self, kind: JobKind | None, state: JobState | None, subject: str, page_size: int = 0, page_token: str = "") -> Page[JobSnapshot]:
        """Operations, newest first."""
        c = self.config
        return paginate(self.jobs.list(kind, state, subject or None), lambda s: (-s.seq,), page_size, page_token, c.default_page_size, c.max_page_size)

    def cancel_operation(self, op_id: str) -> JobSnapshot:
        """Request an operation's cancellation."""
        if not op_id:
            raise InvalidArgumentError.field("id", "required")
        return self.jobs.cancel(op_id)

    def watch_operation(self, op_id: str, is_active: Callable[[], bool]) -> Iterator[JobSnapshot]:
        """The operation now and after every change, until it is done."""
        if not op_id:
            raise InvalidArgumentError.field("id", "required")
        return self.jobs.watch(op_id, is_active)


__all__ = ["Operations"]
