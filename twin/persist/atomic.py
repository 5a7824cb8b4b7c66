"""Atomic file writes: a temporary file in the target's folder, fsync, then one rename, so a
reader sees either the old file or the whole new one, and a crash leaves no partial file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None], mode: int | None = None) -> Path:
    """Write ``path`` atomically.

    Args:
        path: the target file (its folder is created).
        write: writes the content to the temporary path it is given.
        mode: permission bits for the result (``mkstemp`` makes the file private).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["atomic_write"]
