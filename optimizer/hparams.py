"""Hyperparameters of a rule fit, their search space and the search objective (validation
log-likelihood).

The search itself (Optuna, Ray Tune) lives outside the core, in :mod:`cluster.search`; this
module defines what is searched (:data:`HYPERPARAMETER_SPACE`, axes of the same
:class:`optimizer.space.Param` type as the curriculum space) and how one candidate is scored, so
every search backend scores candidates identically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd

from twin.data.batch import TrialBatch, make_batch
from twin.data.splits import split_last_sessions
from twin.data.features import FeatureSpec
from twin.fit.train import EpochRecord, FitConfig, fit
from twin.models.learner import ModelSpec
from twin.models.rules import make_config
from optimizer.space import Param, ParamKind


@dataclass(frozen=True)
class HyperParams:
    """One candidate.

    Attributes:
        hidden_size: MLP/GRU width (dnn, rnn).
        learning_rate: Adam step size.
        tbptt: truncation length in trials.
        history: add the history regressors to the policy.
    """

    hidden_size: int = 32
    learning_rate: float = 3e-3
    tbptt: int = 500
    history: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


HYPERPARAMETER_SPACE: tuple[Param, ...] = (
    Param("hidden_size", ParamKind.LOG_INT, 8, 64),
    Param("learning_rate", ParamKind.LOG_FLOAT, 3e-4, 3e-2),
    Param("tbptt", ParamKind.CHOICE, choices=(100, 200, 500, 1000)),
    Param("history", ParamKind.BOOL),
)
"""The axes searched, one per :class:`HyperParams` field, in the order they are sampled."""


@dataclass(frozen=True)
class HyperParamScore:
    """One candidate and its score.

    Attributes:
        params: the candidate.
        val_ll: its best validation log-likelihood per trial (nats).
    """

    params: HyperParams
    val_ll: float


def split_last_session(df: pd.DataFrame, features: FeatureSpec) -> tuple[TrialBatch, TrialBatch]:
    """Training sessions and, for validation, each animal's last session (scored after running
    through the earlier ones)."""
    return split_last_sessions(make_batch(df, features))


def score_hyperparams(
    df: pd.DataFrame,
    rule: str,
    hp: HyperParams,
    epochs: int,
    seed: int = 0,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> float:
    """Fit ``rule`` with ``hp`` and return the best validation LL per trial (nats)."""
    feats = FeatureSpec(history=hp.history)
    train, val = split_last_session(df, feats)
    spec = ModelSpec(rule, feats, make_config(rule, hidden_size=hp.hidden_size))
    cfg = FitConfig(epochs=epochs, learning_rate=hp.learning_rate, tbptt=hp.tbptt, patience=max(3, epochs // 4), seed=seed)
    return fit(spec, train, val, cfg, progress=False, on_epoch=on_epoch).best_val_ll
