"""Where the shared data folder is (the real IBL export and the Akrami-lab rat file live there)."""

from __future__ import annotations

import os
from pathlib import Path

#: the environment variable that names the shared data folder.
SHARED_DATA_ENV = "TWIN_SHARED_DATA"


def shared_data_dir() -> Path:
    """Find the shared ``data`` folder.

    Looks at the environment variable ``TWIN_SHARED_DATA`` first, then at
    ``<repo>/../shared/data`` (the repository being the folder that holds the ``twin`` package).

    Returns:
        The first candidate folder that exists.

    Raises:
        FileNotFoundError: when no candidate exists; the message lists those tried.
    """
    candidates: list[Path] = []
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        candidates.append(Path(env).expanduser())
    repo = Path(__file__).resolve().parents[2]  # twin/data/paths.py -> the repository
    candidates.append(repo.parent / "shared" / "data")
    for cand in candidates:
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no shared data folder; tried {[str(c) for c in candidates]} (set {SHARED_DATA_ENV})")
