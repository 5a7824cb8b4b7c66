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
