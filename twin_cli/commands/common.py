"""What several ``twin`` subcommands share: the twin-store flags and the simulated families."""

from __future__ import annotations

import argparse
from pathlib import Path

FAMILIES = ["reinforce", "asymmetric", "history"]
"""Ground-truth learner families a command may simulate."""


def store_args(q: argparse.ArgumentParser) -> None:
    """Add ``--store`` and ``--db-url`` (the twin store) to ``q``."""
    q.add_argument("--store", type=Path, default=Path("twins"), help="twin store folder (default: ./twins)")
    q.add_argument("--db-url", default=None, help="SQLAlchemy URL of the metadata database (default: SQLite in the store folder)")


__all__ = ["FAMILIES", "store_args"]
