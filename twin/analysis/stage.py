"""An animal's training stage, computed from its sessions, and the criterion of its next stage.

IBL's stages, in order (``brainbox.behavior.training.TrainingStatus``):

========================  ===================================================================
stage                     reached when
========================  ===================================================================
``TRAINING``              always (trainingChoiceWorld; the protocol's contrast phases)
``TRAINED_1A``            a window of 3 consecutive training sessions passes ``trained_1a``
``TRAINED_1B``            a window of 3 consecutive training sessions passes ``trained_1b``
``BIASED``                a session of biased blocks (biasedChoiceWorld) was run
``READY_FOR_RECORDING``   3 consecutive biased sessions pass :data:`READY_FOR_RECORDING`
========================  ===================================================================

A stage, once reached, is kept (the stage is the highest reached). ``trained_1a`` and
``trained_1b`` are judged on windows of training sessions only (a window holding a biased
session is not a training window, as in ibllib). A biased session
(:func:`twin.analysis.criteria.biased_sessions`: most trials at a block prior, 0.2 or 0.8)
means the lab moved the animal on to biased blocks, which IBL does at ``trained_1b``: it puts the
animal at ``BIASED`` even when its training sessions are not in the table (the 53-mouse export
holds only the last 3 of them) or did not pass the criterion as computed here (no response-time
condition, and IBL's criteria changed over the years).

The criterion a plan aims at (:attr:`StageAssessment.target`): ``trained_1a`` in training,
``trained_1b`` at ``trained_1a``, :data:`~twin.analysis.criteria.READY_FOR_RECORDING` at
``trained_1b`` and on biased blocks; none once ready for recording.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import pandas as pd

from twin.analysis.criteria import READY_FOR_RECORDING, TRAINED_1A, TRAINED_1B, CriterionConfig, criteria_sessions


class TrainingStage(enum.Enum):
    """Where an animal stands in IBL's training pipeline, in order."""

    TRAINING = "training"
    """On trainingChoiceWorld, before ``trained_1a``."""
    TRAINED_1A = "trained_1a"
    """``trained_1a`` reached on training sessions."""
    TRAINED_1B = "trained_1b"
    """``trained_1b`` reached on training sessions: ready for biased blocks."""
    BIASED = "biased"
    """On biased blocks (biasedChoiceWorld), not yet ready for recording."""
    READY_FOR_RECORDING = "ready_for_recording"
    """Biased sessions passed the recording-readiness criterion."""

    @property
    def rank(self) -> int:
        """0 (``TRAINING``) to 4 (``READY_FOR_RECORDING``)."""
        return _ORDER.index(self)

    @property
    def trained(self) -> bool:
        """Whether the animal is past the training phases (``trained_1b`` or later): its plans
        are biased blocks, never trainingChoiceWorld."""
        return self.rank >= TrainingStage.TRAINED_1B.rank

    @property
    def target(self) -> CriterionConfig | None:
        """The criterion of the next stage (None: ready for recording, nothing further)."""
        return _TARGET[self]


_ORDER = tuple(TrainingStage)
_TARGET: dict[TrainingStage, CriterionConfig | None] = {
    TrainingStage.TRAINING: TRAINED_1A,
    TrainingStage.TRAINED_1A: TRAINED_1B,
    TrainingStage.TRAINED_1B: READY_FOR_RECORDING,
    TrainingStage.BIASED: READY_FOR_RECORDING,
    TrainingStage.READY_FOR_RECORDING: None,
}


@dataclass(frozen=True)
class StageAssessment:
    """An animal's stage and when it reached each one.

    Attributes:
        subject: the animal.
        stage: the highest stage reached.
        n_sessions: sessions judged.
        trained_1a_session: session number (the table's ``session``) ending the first window
            passing ``trained_1a`` (None: not reached).
        trained_1b_session: the same for ``trained_1b``.
        biased_session: the first session of biased blocks (None: none).
        ready_session: the session ending the first window of biased sessions passing the
            recording-readiness criterion (None: not reached).
    """

    subject: str
    stage: TrainingStage
    n_sessions: int = 0
    trained_1a_session: int | None = None
    trained_1b_session: int | None = None
    biased_session: int | None = None
    ready_session: int | None = None

    @property
    def target(self) -> CriterionConfig | None:
        """The criterion the next sessions aim at (None once ready for recording)."""
        return self.stage.target

    def summary(self) -> str:
        """One line: the stage, where each stage was reached, the target criterion."""
        reached = [
            f"{name} at session {s}"
            for name, s in (("trained_1a", self.trained_1a_session), ("trained_1b", self.trained_1b_session), ("biased blocks", self.biased_session), ("ready_for_recording", self.ready_session))
            if s is not None
        ]
        head = f"stage {self.stage.value}" + (f" ({', '.join(reached)}; {self.n_sessions} sessions)" if reached else f" ({self.n_sessions} sessions)")
        t = self.target
        return head + (f"; next criterion {t.label}" if t is not None else "; no further criterion: keep it on biased blocks")


def new_animal(subject: str) -> StageAssessment:
    """The stage of an animal without sessions: training, aiming at ``trained_1a``."""
    return StageAssessment(subject, TrainingStage.TRAINING)


def _first(sessions: np.ndarray, hit: np.ndarray) -> int | None:
    idx = np.flatnonzero(hit)
    return int(sessions[idx[0]]) if idx.size else None


def assess_stages(df: pd.DataFrame, ready: CriterionConfig = READY_FOR_RECORDING, source: str = "<table>") -> dict[str, StageAssessment]:
    """Every subject's stage, from a canonical trials table (all criteria judged in one batch).

    Args:
        df: canonical trials table (:mod:`twin.data.trials`); each subject's sessions numbered
            without gaps.
        ready: the recording-readiness criterion (a block criterion).
        source: name used in error messages.

    Returns:
        ``{subject: assessment}`` in table order.

    Raises:
        TrialDataError: invalid table.
        ValueError: ``ready`` is not a block criterion.
    """
    if not ready.on_biased_blocks:
        raise ValueError(f"ready must be a block criterion (min_bias_shift set); got {ready.label!r}")
    table = criteria_sessions(df, (TRAINED_1A, TRAINED_1B, ready), source)
    w = TRAINED_1A.window
    # a training window holds no biased session
    any_biased = table.groupby("subject", sort=False)["biased"].transform(lambda b: b.astype(float).rolling(w, min_periods=1).max()).to_numpy() > 0
    out: dict[str, StageAssessment] = {}
    for subject, g in table.groupby("subject", sort=False):
        idx = g.index.to_numpy()
        sess = g["session"].to_numpy()
        training = ~any_biased[idx]
        s1a = _first(sess, g[f"passes_{TRAINED_1A.name}"].to_numpy() & training)
        s1b = _first(sess, g[f"passes_{TRAINED_1B.name}"].to_numpy() & training)
        sb = _first(sess, g["biased"].to_numpy())
        sr = _first(sess, g[f"passes_{ready.name}"].to_numpy())
        if sr is not None:
            stage = TrainingStage.READY_FOR_RECORDING
        elif sb is not None:
            stage = TrainingStage.BIASED
        elif s1b is not None:
            stage = TrainingStage.TRAINED_1B
        elif s1a is not None:
            stage = TrainingStage.TRAINED_1A
        else:
            stage = TrainingStage.TRAINING
        out[str(subject)] = StageAssessment(str(subject), stage, len(g), s1a, s1b, sb, sr)
    return out


def assess_stage(df: pd.DataFrame, subject: str, source: str = "<table>") -> StageAssessment:
    """One subject's stage from its trials (any other subjects' rows are ignored); a subject
    without trials is a new animal (:func:`new_animal`)."""
    rows = df[df["subject"] == subject] if len(df) else df
    if len(rows) == 0:
        return new_animal(subject)
    return assess_stages(rows, source=source)[subject]


__all__ = ["StageAssessment", "TrainingStage", "assess_stage", "assess_stages", "new_animal"]
