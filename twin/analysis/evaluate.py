"""Evaluation: per-trial likelihood metrics of fitted models, and comparisons of them.

Used by the two cross-validation protocols (the splits are :mod:`twin.data.splits`, the fitting
is :mod:`twin.fit`):

* Held-out animals: the population rule is fitted on some animals and scored on others, started
  from the population initial weights (:mod:`twin.fit.recovery`).
* Held-out future sessions (the twin's forecast): fitted on each animal's sessions ``1..k``,
  scored, teacher-forced, on sessions ``k+1..`` (:mod:`twin.fit.heldout`).

The LL-gain ratio's zero is each animal's own static fit (:func:`own_static_scores`); the
population static fit's version is reported beside it, labelled ``pop_static``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.data.batch import TrialBatch
from twin.models.learner import LearnerModel
from twin.models.policy import choice_log_likelihood, logits

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Scores:
    """Likelihood metrics of one model on one batch.

    Attributes:
        n_trials: scored trials.
        ll: mean log-likelihood per trial (nats).
        accuracy: fraction of trials where the more likely choice was the one made.
        per_animal: one row per animal: subject, n_trials, ll (nats/trial), accuracy.
    """

    n_trials: int
    ll: float
    accuracy: float
    per_animal: pd.DataFrame

    @property
    def ll_bits(self) -> float:
        """Mean log-likelihood per trial in bits."""
        return self.ll / LN2


def _scores(ll: torch.Tensor, hit: torch.Tensor, mask: torch.Tensor, subjects: tuple[str, ...] | list[str]) -> Scores:
    """:class:`Scores` of ``[B, T]`` per-trial log-likelihoods and hits on the ``[B, T]`` mask."""
    m = mask.to(ll.dtype)
    n_a = m.sum(1)
    per = pd.DataFrame(
        {
            "subject": list(subjects),
            "n_trials": n_a.long().numpy(),
            "ll": ((ll * m).sum(1) / n_a.clamp(min=1)).double().numpy(),
            "accuracy": ((hit * m).sum(1) / n_a.clamp(min=1)).double().numpy(),
        }
    )
    n = float(m.sum().item())
    return Scores(n_trials=int(n), ll=float((ll * m).sum().item() / max(n, 1.0)), accuracy=float((hit * m).sum().item() / max(n, 1.0)), per_animal=per)


@torch.no_grad()
def score(model: LearnerModel, batch: TrialBatch) -> Scores:
    """Score a model's teacher-forced predictions on the batch's masked trials."""
    model = model.eval()
    w = model.trajectory(batch)
    z = logits(w, batch.x)
    ll = choice_log_likelihood(w, batch.x, batch.y)
    return _scores(ll, ((z > 0).float() == batch.y).float(), batch.mask, batch.subjects)


@torch.no_grad()
def own_static_scores(batch: TrialBatch, ridge: float = 1e-4, iterations: int = 30) -> Scores:
    """Scores of each animal's *own* static fit: constant weights fitted by maximum likelihood to
    that animal's scored trials (in-sample; batched Newton on a logistic regression per animal,
    with a tiny ridge ``ridge`` so that a perfectly separable animal stays finite).

    This is the strict zero of the LL-gain ratio: a learning rule must beat the best constant
    policy *of each animal*, not one population static fit (which also loses what the animals'
    constant weights differ by). ``x`` ``[B, T, K]``, ``y`` and ``mask`` ``[B, T]``.
    """
    x, y, m = batch.x.double(), batch.y.double(), batch.mask.double()
    b, _, k = x.shape
    w = torch.zeros(b, k, dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid((x * w[:, None]).sum(-1))
        g = (((y - p) * m)[..., None] * x).sum(1) - ridge * w  # [B, K]
        h = torch.einsum("btk,btl->bkl", x * (p * (1 - p) * m)[..., None], x) + ridge * eye  # [B, K, K] (negated Hessian)
        step = torch.linalg.solve(h, g[..., None])[..., 0]
        w = w + step
        if float(step.abs().max()) < 1e-10:
            break
    z = (x * w[:, None]).sum(-1)
    ll = -torch.nn.functional.softplus(torch.where(y > 0.5, -z, z))
    return _scores(ll, ((z > 0).double() == y).double(), batch.mask, batch.subjects)


def ll_gain_ratio(model_ll: float, static_ll: float, truth_ll: float) -> float:
    """``(LL(model) − LL(static)) / (LL(truth) − LL(static))``: 1 means the model explains all
    the learning the true rule explains, 0 no more than constant weights.

    The project's ratio takes each animal's own static fit as ``static_ll``
    (:func:`own_static_scores`, the strict zero); the population static fit's LL gives the more
    lenient ratio reported beside it as ``ll_gain_ratio_pop_static``."""
    denom = truth_ll - static_ll
    if denom <= 0:
        return float("nan")
    return (model_ll - static_ll) / denom


@dataclass(frozen=True)
class RatioGap:
    """How much higher one model's LL-gain ratio is than another's on the same held-out animals.

    Attributes:
        gap: ``ratio(model) − ratio(other)`` on all animals.
        lo: lower end of the paired bootstrap interval (animals resampled, the same for every model).
        hi: upper end.
        wins: animals whose per-trial LL is higher under ``model`` than under ``other``.
        n_animals: animals compared.
    """

    gap: float
    lo: float
    hi: float
    wins: int
    n_animals: int


def ll_gain_ratio_gap(
    model: Scores, other: Scores, static: Scores, truth: Scores, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> RatioGap:
    """Paired comparison of two models' LL-gain ratios on the same animals.

    Each bootstrap draw resamples animals with replacement and recomputes every ratio from the
    drawn animals' summed log-likelihoods, so the interval reflects how the gap varies across
    animals, not across trials.
    """
    frames = [model.per_animal, other.per_animal, static.per_animal, truth.per_animal]
    subjects = list(model.per_animal["subject"])
    if any(list(f["subject"]) != subjects for f in frames):
        raise ValueError("paired comparison needs scores of the same animals in the same order")
    m, o, s, t = (f["ll"].to_numpy() * f["n_trials"].to_numpy() for f in frames)
    idx = np.random.default_rng(seed).integers(0, len(m), (n_boot, len(m)))

    def gap(sel: np.ndarray) -> np.ndarray:
        sm, so, ss, st = (v[sel].sum(-1) for v in (m, o, s, t))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (sm - so) / (st - ss)

    q = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(gap(idx), [q, 1.0 - q])
    wins = int((model.per_animal["ll"].to_numpy() > other.per_animal["ll"].to_numpy()).sum())
    return RatioGap(gap=float(gap(np.arange(len(m)))), lo=float(lo), hi=float(hi), wins=wins, n_animals=len(m))
