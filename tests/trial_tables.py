"""A helper of the tests: random but valid canonical trials tables."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_trials_table(
    lengths: dict[str, list[int]], seed: int = 0, contrasts: tuple[float, ...] = (0.0, 0.0625, 0.25, 1.0)
) -> pd.DataFrame:
    """A valid canonical trials table with random stimuli and choices.

    Args:
        lengths: ``lengths[subject]`` lists the number of trials of each of its sessions.
        seed: seeds the draws.
        contrasts: the unsigned contrasts drawn from.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for subj, sessions in lengths.items():
        for s, n in enumerate(sessions, start=1):
            for t in range(1, n + 1):
                side = int(rng.integers(0, 2))
                c = float(rng.choice(contrasts))
                choice = int(rng.integers(0, 2))
                rows.append(
                    dict(
                        subject=subj,
                        session=s,
                        trial=t,
                        contrast_left=c * (1 - side),
                        contrast_right=c * side,
                        choice=choice,
                        feedback=1 if choice == side else -1,
                        correct_side=side,
                        prob_left=0.5,
                    )
                )
    return pd.DataFrame(rows)


def ibl_export_subset(out_dir, n_subjects: int = 4, max_biased_sessions: int | None = 9) -> pd.DataFrame:
    """The first ``n_subjects`` mice of the shared 53-mouse export (all their endtrain sessions,
    their first ``max_biased_sessions`` biased ones), read through
    :func:`twin.data.ibl.read_ibl_export` from a copy written to ``out_dir``: the export keeps
    each mouse's rows together, so only its first rows are parsed (seconds, not the whole file).
    Skips the calling test when the file is absent."""
    import pytest

    from twin.data.ibl import default_export_path, read_ibl_export

    try:
        path = default_export_path()
    except FileNotFoundError:
        pytest.skip("the shared data folder is absent")
    if not path.exists():
        pytest.skip(f"{path} is absent")
    parts, names = [], []
    for chunk in pd.read_csv(path, chunksize=50_000):
        for s in dict.fromkeys(chunk["subject"]):
            if s not in names:
                names.append(s)
        parts.append(chunk)
        if len(names) > n_subjects:
            break
    raw = pd.concat(parts, ignore_index=True)
    raw = raw[raw["subject"].isin(names[:n_subjects])]
    if max_biased_sessions is not None:
        raw = raw[(raw["phase"] != "biased") | (raw["session_num"] <= max_biased_sessions)]
    copy = out_dir / "ibl_subset.csv"
    raw.to_csv(copy, index=False)
    return read_ibl_export(copy)[0]


def follower_trials(lengths: dict[str, list[int]], seed: int = 0) -> pd.DataFrame:
    """Canonical trials of stimulus-following animals (~85% correct), ``lengths``: trials per
    session of each subject."""
    rng = np.random.default_rng(seed)
    rows = []
    for subj, sessions in lengths.items():
        for s, n in enumerate(sessions, start=1):
            side = rng.integers(0, 2, n)
            c = rng.choice([0.0, 0.25, 1.0], n)
            choice = np.where(rng.random(n) < 0.85, side, 1 - side)
            rows.append(
                pd.DataFrame(
                    {
                        "subject": subj,
                        "session": s,
                        "trial": np.arange(1, n + 1),
                        "contrast_left": c * (1 - side),
                        "contrast_right": c * side,
                        "choice": choice,
                        "feedback": np.where(choice == side, 1, -1),
                        "correct_side": side,
                        "prob_left": 0.5,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)
