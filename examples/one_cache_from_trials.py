#!/usr/bin/env python
"""Write a canonical trials table (e.g. ``twin simulate``'s) as a small ONE local cache, to try the
lab workflow (``twin fit-twins --one-cache DIR``) without a lab's own cache::

    python examples/one_cache_from_trials.py cohort.parquet one-cache

Each (subject, session) becomes ``<root>/lab/Subjects/<subject>/<date>/001/alf/task_00/`` (the
task collection current iblrig writes), session ``n`` dated ``2024-01-01 + n days``, with the
``_ibl_trials.*.npy`` attributes IBL stores: ``contrastLeft``/``contrastRight`` (NaN on the other
side), ``choice`` (-1 = right turn, +1 = left), ``feedbackType`` and ``probabilityLeft``; then
``one.alf.cache.make_parquet_db`` builds the cache tables. Needs the ``one`` extra (one-api).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

FIRST_DAY = dt.date(2024, 1, 1)


def write_one_cache(trials: pd.DataFrame, root: Path) -> Path:
    """Write ``trials`` (canonical columns) under ``root`` as ALF session folders and build the
    ONE cache tables there.

    Args:
        trials: canonical trials table (``subject``, ``session``, ``contrast_left``,
            ``contrast_right``, ``choice`` with 1 = right, ``feedback``, ``correct_side``,
            ``prob_left``).
        root: cache folder (created).

    Returns:
        ``root``.
    """
    from one.alf.cache import make_parquet_db

    for (subject, session), s in trials.groupby(["subject", "session"], sort=False):
        day = FIRST_DAY + dt.timedelta(days=int(session))
        alf = root / "lab" / "Subjects" / str(subject) / day.isoformat() / "001" / "alf" / "task_00"
        alf.mkdir(parents=True, exist_ok=True)
        right = s["correct_side"].to_numpy() == 1
        attrs = {
            "contrastLeft": np.where(right, np.nan, s["contrast_left"].to_numpy(float)),
            "contrastRight": np.where(right, s["contrast_right"].to_numpy(float), np.nan),
            "choice": np.where(s["choice"].to_numpy() == 1, -1.0, 1.0),
            "feedbackType": s["feedback"].to_numpy(float),
            "probabilityLeft": s["prob_left"].to_numpy(float),
        }
        for name, values in attrs.items():
            np.save(alf / f"_ibl_trials.{name}.npy", values)
    make_parquet_db(root, hash_files=False)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("::")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trials", type=Path, help="canonical trials table (.parquet or .csv)")
    ap.add_argument("root", type=Path, help="ONE cache folder to write")
    args = ap.parse_args(argv)
    table = pd.read_parquet(args.trials) if args.trials.suffix == ".parquet" else pd.read_csv(args.trials)
    write_one_cache(table, args.root)
    print(f"wrote a ONE cache of {table['subject'].nunique()} subjects in {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
