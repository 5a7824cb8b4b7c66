"""The database backends the store tests run on: SQLite always, PostgreSQL when CI provides one."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import pytest

import twin.persist.sessions  # noqa: F401  (registers the sessions table on the store's metadata)
from twin.persist.store import TwinStore, _Base

PG_URL = os.environ.get("TWIN_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(not PG_URL, reason="TWIN_TEST_POSTGRES_URL not set (.ci/run starts a PostgreSQL server and sets it)")),
]


def open_store(backend: str, root: Path) -> TwinStore:
    """A store at ``root`` on ``backend``; on PostgreSQL with every table dropped and recreated."""
    if backend == "sqlite":
        return TwinStore(root)
    st = TwinStore(root, url=PG_URL)
    _Base.metadata.drop_all(st.engine)
    _Base.metadata.create_all(st.engine)
    return st


def run_concurrently(writer: Callable[[int], object], n: int) -> list[BaseException]:
    """Call ``writer(0) .. writer(n - 1)`` in ``n`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            writer(i)
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
