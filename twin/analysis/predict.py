"""Per-trial predictions of a twin along a trial history (teacher-forced)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.data.batch import TrialBatch, make_batch
from twin.errors import TwinError
from twin.models import batch1
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel
from twin.models.state import TwinState


@dataclass(frozen=True)
class Prediction:
    """What a twin predicts on each trial of a history.

    Attributes:
        p_right: ``[T]`` probability of a right choice on each trial.
        weights: ``[T, K]`` policy weights in force on each trial.
        feature_names: the ``K`` weight names.
        log_likelihood: total log-likelihood of the observed choices (nats).
        n_trials: ``T``.
    """

    p_right: np.ndarray
    weights: np.ndarray
    feature_names: tuple[str, ...]
    log_likelihood: float
    n_trials: int

    @property
    def ll_per_trial(self) -> float:
        """Mean log-likelihood per trial (nats)."""
        return self.log_likelihood / max(self.n_trials, 1)


@torch.no_grad()
def predict(model: LearnerModel, trials: pd.DataFrame, start: TwinState | None = None) -> Prediction:
    """Run ``model`` teacher-forced along one animal's trials.

    Args:
        model: the twin.
        trials: canonical trials table of one subject.
        start: continue from this state (the trials follow the twin's last session) instead of
            starting from the twin's initial weights (the trials are the animal's whole history).

    Raises:
        TwinError: empty table or several subjects.
    """
    names = trials["subject"].unique() if len(trials) else []
    if len(names) != 1:
        raise TwinError(f"predict needs the trials of exactly one subject, got {len(names)}")
    return predict_batch(model, make_batch(trials, model.spec.features), start)


@torch.no_grad()
def predict_batch(model: LearnerModel, batch: TrialBatch, start: TwinState | None = None) -> Prediction:
    """:func:`predict` along a one-animal batch (``batch.n_animals == 1``, no padding): the
    twin's rollout then takes the fused batch-1 path (:mod:`twin.models.batch1`)."""
    if batch.n_animals != 1:
        raise TwinError(f"predict needs the trials of exactly one subject, got {batch.n_animals}")
    pre = model.precompute(batch)
    if start is None:
        w, h = model.initial(1)
    else:
        w, h = start.w.reshape(1, -1), start.h.reshape(1, -1)
    fused = batch1.policy_along(model.rule, w, h, pre[:-1], batch.x[0], batch.y[0], rate=model.rate())
    if fused is not None:  # the compiled path: rollout and policy in float64 arithmetic, no tensor made
        weights, p_right, ll_fused = fused
        return Prediction(p_right=p_right, weights=weights, feature_names=model.spec.features.names, log_likelihood=ll_fused, n_trials=int(batch.n_trials))
    ws, _ = model.rollout(w, h, pre[:-1])
    traj = torch.cat([w.unsqueeze(0), ws], 0)[:, 0]  # [T, K]
    logits = (traj * batch.x[0]).sum(-1)
    p = torch.sigmoid(logits)
    y = batch.y[0]
    ll = -torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
    return Prediction(
        p_right=p.numpy().astype(np.float64),
        weights=traj.numpy().astype(np.float64),
        feature_names=model.spec.features.names,
        log_likelihood=float(ll),
        n_trials=int(batch.n_trials),
    )


@torch.no_grad()
def predict_ensemble(ensemble: TwinEnsemble, trials: pd.DataFrame, starts: Sequence[TwinState] | None = None) -> Prediction:
    """Run an ensemble twin teacher-forced along one animal's trials: the mixture
    ``p = Σ_k π_k p_k`` of its components' predictions (each run by :func:`predict`).

    Args:
        ensemble: the twin.
        trials: canonical trials table of one subject.
        starts: one state per component to continue from (see :func:`predict`), or None.

    Returns:
        The mixture's ``p_right`` and log-likelihood; ``weights`` are the components' weights
        averaged with the mixture weights (the features are shared, so the average is the
        ensemble's mean policy weight; the policy itself is the mixture, not ``sigmoid`` of it).

    Raises:
        TwinError: empty table, several subjects, or a wrong number of start states.
    """
    if starts is not None and len(starts) != ensemble.n_components:
        raise TwinError(f"{ensemble.n_components} components need {ensemble.n_components} start states, got {len(starts)}")
    preds = [predict(c.model, trials, None if starts is None else starts[i]) for i, c in enumerate(ensemble.components)]
    pi = ensemble.weights.numpy()
    p = np.einsum("k,kt->t", pi, np.stack([q.p_right for q in preds]))
    w = np.einsum("k,ktj->tj", pi, np.stack([q.weights for q in preds]))
    y = trials["choice"].to_numpy() == 1
    pc = np.clip(p, 1e-12, 1 - 1e-12)
    ll = float(np.sum(np.where(y, np.log(pc), np.log1p(-pc))))
    return Prediction(p_right=p, weights=w, feature_names=preds[0].feature_names, log_likelihood=ll, n_trials=preds[0].n_trials)


__all__ = ["Prediction", "predict", "predict_batch", "predict_ensemble"]
