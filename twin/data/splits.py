"""Splitting trials for validation and cross-validation: held-out animals, held-out sessions.

* Held-out animals (:func:`split_animals`): indices of train / validation / test animals.
* Held-out future sessions (:func:`split_sessions`): the same animals cut at session ``k``.
* Early stopping on each animal's last sessions (:func:`split_last_sessions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from twin.errors import TwinError
from twin.data.batch import TrialBatch


@dataclass(frozen=True)
class AnimalSplit:
    """Held-out-animals split: indices into a batch."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def split_animals(n_animals: int, n_test: int, val_fraction: float, seed: int) -> AnimalSplit:
    """Random split into train / validation (for early stopping) / held-out test animals."""
    if not 0 < n_test < n_animals:
        raise ValueError(f"n_test must be in 1..{n_animals - 1}, got {n_test}")
    perm = np.random.default_rng(seed).permutation(n_animals)
    test = sorted(perm[:n_test].tolist())
    rest = perm[n_test:]
    n_val = max(1, int(round(val_fraction * len(rest)))) if val_fraction > 0 else 0
    if n_val >= len(rest):
        raise ValueError("not enough animals left to train after the validation split")
    return AnimalSplit(train=tuple(sorted(rest[n_val:].tolist())), val=tuple(sorted(rest[:n_val].tolist())), test=tuple(test))


@dataclass(frozen=True)
class SessionSplit:
    """Held-out-future-sessions split of the same animals.

    Attributes:
        train: sessions ``1..k-1`` (to fit).
        val: sessions ``1..k``, scoring session ``k`` only (early stopping).
        test: all sessions, scoring ``k+1..`` only (the forecast).
    """

    train: TrialBatch
    val: TrialBatch
    test: TrialBatch


def split_sessions(batch: TrialBatch, k: int) -> SessionSplit:
    """Split each animal at session ``k`` (fit on ``< k``, validate on ``k``, forecast ``> k``).

    Raises:
        ValueError: if some animal has no session after ``k``.
    """
    n_sess = torch.where(batch.valid, batch.session, torch.zeros_like(batch.session)).max(1).values
    short = [s for s, n in zip(batch.subjects, n_sess.tolist()) if n <= k]
    if k < 2 or short:
        raise ValueError(f"need k >= 2 and more than k sessions per animal; too few sessions: {short[:5]}")
    kk = torch.full((batch.n_animals,), k, dtype=torch.long)
    train = batch.truncate_sessions(kk - 1)
    val = batch.truncate_sessions(kk)
    val = val.with_mask(val.sessions_mask(k, k))
    test = batch.with_mask(batch.sessions_mask(k + 1))
    return SessionSplit(train=train, val=val, test=test)


def split_last_sessions(batch: TrialBatch, n: int = 1) -> tuple[TrialBatch, TrialBatch]:
    """Hold out each animal's last ``n`` sessions for validation.

    Returns:
        ``(train, val)``: the earlier sessions, and the whole batch scoring only the last ``n``
        sessions (run through the earlier ones first).

    Raises:
        TwinError: if some animal has ``n`` sessions or fewer.
    """
    last = batch.session.max(1).values
    if int(last.min()) <= n:
        raise TwinError(f"every animal needs more than {n} session(s) to hold the last {n} out for validation")
    return batch.truncate_sessions(last - n), batch.with_mask(batch.sessions_mask(last - n + 1))
