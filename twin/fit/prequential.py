"""Scoring a rule the way its twins are used: re-started as each session arrives.

A twin in service is not frozen at the sessions it joined with: each new session updates it
(:func:`twin.fit.cohort.update_twin`; a new animal's start is the MAP from the sessions it has,
:func:`twin.fit.join.join_cohort`). Scoring a held-out animal's later sessions from a start
inferred once, from its first sessions, charges the twin for start errors that a twin in use
would have corrected from the sessions since.

:func:`session_by_session_log_likelihood` scores it as used. Session ``s`` of an animal is
predicted by the twin whose start (``w0`` and the log rate multipliers ``ρ``) is the MAP from
that animal's sessions ``< s`` under the population prior (:func:`twin.fit.adapt.infer_start`),
teacher-forced from trial 1 through session ``s``. Every trial is scored only from trials of
earlier sessions and its own session's earlier trials (the rule's own update), so the sum over
trials is a prequential (one-step-ahead) log score, comparable across rules and with any
other forecaster that sees the same past.
"""

from __future__ import annotations

import torch

from twin.data.batch import TrialBatch
from twin.fit.adapt import StartPrior, infer_start
from twin.models.learner import LearnerModel


def session_by_session_log_likelihood(
    population: LearnerModel,
    batch: TrialBatch,
    prior: StartPrior,
    first_scored: int,
    iterations: int = 100,
    fit_rate: bool = True,
) -> torch.Tensor:
    """``[B, T]`` per-trial log-likelihood of ``population`` on ``batch``, each session ``s ≥
    first_scored`` scored from the start inferred from the animal's sessions before ``s``
    (module docstring); 0 on earlier sessions and wherever ``batch.mask`` is False.

    One start inference per session index, all animals that have that session in one batch,
    each warm-started from its previous MAP (the same posterior, fewer iterations).

    Args:
        population: the rule (not modified).
        batch: the animals' trials, ``[B, T]``; ``mask`` selects the trials scored.
        prior: the population prior of a start.
        first_scored: the first session scored (``1``: the first session from the prior mean).
        iterations: L-BFGS iterations at most of each inference.
        fit_rate: infer the log rate multipliers as well as ``w0``.

    Raises:
        ValueError: ``first_scored`` is below 1.
    """
    if first_scored < 1:
        raise ValueError(f"first_scored must be >= 1, got {first_scored}")
    k = population.n_weights
    out = torch.zeros(batch.mask.shape, dtype=torch.float32)
    last_session = int(batch.session[batch.valid].max()) if bool(batch.valid.any()) else 0
    w0 = prior.w0_mean.reshape(1, k).expand(batch.n_animals, k).clone().float()
    log_rate = torch.zeros(batch.n_animals, k)
    for s in range(first_scored, last_session + 1):
        has = ((batch.session == s) & batch.mask).any(1)
        if not bool(has.any()):
            continue
        idx = has.nonzero().flatten()
        sub = batch.select(idx)
        if s > 1:
            before = sub.truncate_sessions(torch.full((len(idx),), s - 1, dtype=torch.long))
            starts = infer_start(population, before.with_mask(before.valid), prior, fit_rate=fit_rate, iterations=iterations, init=(w0[idx], log_rate[idx]))
            w0[idx] = torch.stack([starts[subj].params.w0 for subj in sub.subjects]).float()
            log_rate[idx] = torch.stack([starts[subj].params.log_rate for subj in sub.subjects]).float()
        upto = sub.truncate_sessions(torch.full((len(idx),), s, dtype=torch.long))
        upto = upto.with_mask(upto.mask & (upto.session == s))
        with torch.no_grad():
            ll = population.log_likelihood(upto, w0[idx].to(population.w0.dtype), log_rate[idx].to(population.w0.dtype)).float()
        t = ll.shape[1]
        rows = out[idx]
        rows[:, :t] = torch.where(upto.mask, ll, rows[:, :t])
        out[idx] = rows
    return out


__all__ = ["session_by_session_log_likelihood"]
