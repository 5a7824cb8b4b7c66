"""Splitting trials for validation and cross-validation: held-out animals, held-out sessions.

* Held-out animals (:func:`split_animals`): indices of train / validation / test animals.
* Held-out future sessions (:func:`split_sessions`): the same animals cut at session ``k``.
* Early stopping on each animal's last sessions (:func:`split_last_sessions`).
* Sessions named by the data's own labels (:func:`sessions_from_label`): what a ``--from-session``
  argument selects.

Session numbering: inside the project ``session`` is a 1-based index in training order; the
data's own name of each session (ALF's 0-based number, ``YYYY-MM-DD/NNN``, the export's
``endtrain-3``...) is its ``session_label``. Arguments that a user types name sessions by label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
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


_INT_RE = re.compile(r"-?\d+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[/T ].*)?")


@dataclass(frozen=True)
class LabelledStart:
    """Where each animal's sessions from a session label on begin.

    Attributes:
        label: the label asked for.
        first: subject -> 1-based index (``session``) of its first selected session.
        missing: subjects without any session at or after the label (nothing selected).
        labels: subject -> the label of its first selected session.
    """

    label: str
    first: dict[str, int]
    missing: tuple[str, ...]
    labels: dict[str, str]

    def first_index(self, subjects: tuple[str, ...] | list[str]) -> torch.Tensor:
        """``[B]`` first session index per animal of a batch (past the last one when missing)."""
        big = np.iinfo(np.int32).max
        return torch.tensor([self.first.get(s, big) for s in subjects], dtype=torch.long)


def session_labels(df: pd.DataFrame) -> pd.Series:
    """Each trial's session label: ``session_label`` where the table has one, else ``session``."""
    if "session_label" in df.columns:
        return df["session_label"].astype(str)
    return df["session"].astype(str)


def sessions_from_label(df: pd.DataFrame, label: str) -> LabelledStart:
    """Each animal's sessions from the one labelled ``label`` on (the data's own session names).

    Per animal: the session whose label is ``label``; when it has none, the first session after
    it, if the labels order: whole numbers (ALF's session numbers, 0-based) compare as numbers,
    dates (``YYYY-MM-DD``, ``YYYY-MM-DD/NNN``) as dates. Other labels (the IBL export's
    ``endtrain-3``) must match exactly.

    Args:
        df: canonical trials table.
        label: a session label of the data.

    Raises:
        TwinError: no animal has a session at or after ``label``; names some labels there are.
    """
    label = str(label).strip()
    labels = session_labels(df)
    per = pd.DataFrame({"subject": df["subject"].astype(str), "session": df["session"], "label": labels})
    per = per.drop_duplicates(["subject", "session"])
    first: dict[str, int] = {}
    firsts: dict[str, str] = {}
    missing: list[str] = []
    for subject, part in per.groupby("subject", sort=False):
        names = part["label"].tolist()
        sessions = part["session"].astype(int).tolist()
        hit = [s for s, n in zip(sessions, names) if n == label]
        if not hit and _INT_RE.fullmatch(label) and all(_INT_RE.fullmatch(n) for n in names):
            hit = [s for s, n in zip(sessions, names) if int(n) >= int(label)]
        elif not hit and _DATE_RE.fullmatch(label) and all(_DATE_RE.fullmatch(n) for n in names):
            hit = [s for s, n in zip(sessions, names) if n >= label]
        if hit:
            first[str(subject)] = min(hit)
            firsts[str(subject)] = names[sessions.index(min(hit))]
        else:
            missing.append(str(subject))
    if not first:
        some = list(dict.fromkeys(labels.tolist()))
        shown = ", ".join(some[:6]) + (", ..." if len(some) > 6 else "")
        raise TwinError(f"no session labelled {label!r} (or after it) in the data; session labels are: {shown}")
    return LabelledStart(label=label, first=first, missing=tuple(missing), labels=firsts)
