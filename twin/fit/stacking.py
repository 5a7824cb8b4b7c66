"""Stacking: the weights of a twin ensemble, chosen by held-out future-session likelihood.

Given ``M`` candidate twins of each animal, each scored teacher-forced on the animal's held-out
*future* sessions (per-trial log-likelihoods ``ll_k,t``), stacking picks the mixture weights
that maximise the held-out log-likelihood of the mixture,

    π* = argmax_{π ∈ simplex} Σ_t log Σ_k π_k exp(ll_k,t)

(Yao, Vehtari, Simpson & Gelman 2018, stacking of predictive distributions). The objective is
concave in ``π``, so the EM iteration used here (responsibilities ``r_k,t ∝ π_k exp(ll_k,t)``,
then ``π_k ∝ Σ_t r_k,t``) climbs to the global maximum; it stays on the simplex by construction.

**Per cohort, or per animal with shrinkage.** Weights are fitted for the cohort (all animals'
held-out trials pooled) and then, per animal, as the MAP under a Dirichlet prior centred on the
cohort weights with ``shrinkage`` pseudo-trials of weight:

    π_a = argmax Σ_{t ∈ a} log Σ_k π_k exp(ll_k,t) + λ Σ_k π_cohort,k log π_k,

whose EM update is ``π_a,k = (Σ_t r_k,t + λ π_cohort,k) / (n_a + λ)``. Why: animals differ in
which rule forecasts them best (on a real mouse REINFORCE forecast best where the flexible rules
won on synthetic cohorts), so one weight vector for everyone leaves likelihood on the table; but
one animal's held-out sessions are a few hundred trials, and near-identical components (seeds of
one rule) are not identifiable from them, so unshrunk per-animal weights would chase noise.
The default ``λ = 100`` is a Dirichlet prior with a weight SD of about 0.05 around the cohort's;
since one held-out trial says little about mixture weights (the components' predictions differ
by a few percent on most trials), an animal needs a few thousand held-out trials with a clear
preference to move far from the cohort. ``shrinkage=None`` gives every animal the cohort weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from twin.models.ensemble import mixture_log_likelihood


@dataclass(frozen=True)
class StackingConfig:
    """How ensemble weights are fitted.

    Attributes:
        shrinkage: per-animal weights as the MAP under a prior of this many pseudo-trials at the
            cohort weights; None: the cohort weights for every animal.
        iterations: EM iterations at most.
        tol: stop when no weight changes by more than this.
    """

    shrinkage: float | None = 100.0
    iterations: int = 5000
    tol: float = 1e-9

    def __post_init__(self) -> None:
        if self.shrinkage is not None and not self.shrinkage >= 0:
            raise ValueError(f"shrinkage must be >= 0 or None, got {self.shrinkage}")
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")


@dataclass(frozen=True)
class StackingResult:
    """Fitted ensemble weights.

    Attributes:
        cohort: ``[M]`` the cohort's weights.
        per_animal: ``[A, M]`` each animal's weights (the cohort's when ``shrinkage`` is None).
        component_ll: ``[M]`` each component's held-out log-likelihood per trial (nats).
        ensemble_ll: the held-out log-likelihood per trial of the per-animal mixtures (nats;
            in-sample for the weights, so optimistic by the few degrees of freedom they spend).
        n_trials: ``[A]`` held-out trials per animal.
    """

    cohort: torch.Tensor
    per_animal: torch.Tensor
    component_ll: torch.Tensor
    ensemble_ll: float
    n_trials: torch.Tensor


def stacking_weights(ll: torch.Tensor, prior: torch.Tensor | None = None, concentration: float = 0.0, iterations: int = 5000, tol: float = 1e-9) -> torch.Tensor:
    """The weights ``π`` maximising ``Σ_t log Σ_k π_k exp(ll[k, t]) + c Σ_k prior_k log π_k``.

    Args:
        ll: ``[M, N]`` per-trial held-out log-likelihoods of ``M`` components on ``N`` trials.
        prior: ``[M]`` centre of the prior (on the simplex); needed when ``concentration > 0``.
        concentration: ``c``, pseudo-trials of prior weight (0: plain stacking).
        iterations: EM iterations at most.
        tol: stop when no weight moves by more than this.

    Returns:
        ``[M]`` float64 weights on the simplex (the prior, or uniform, when ``N`` is 0).

    Raises:
        ValueError: bad shapes, non-finite log-likelihoods, or a prior missing or off the simplex.
    """
    if ll.dim() != 2 or ll.shape[0] < 1:
        raise ValueError(f"ll must be [M, N] with M >= 1, got {tuple(ll.shape)}")
    m, n = ll.shape
    if concentration > 0:
        if prior is None or prior.shape != (m,):
            raise ValueError(f"a concentration > 0 needs an [M] = [{m}] prior")
        prior = prior.double()
        if bool((prior < 0).any()) or abs(float(prior.sum()) - 1.0) > 1e-6:
            raise ValueError("the prior must lie on the simplex")
    if not bool(torch.isfinite(ll).all()):
        raise ValueError("held-out log-likelihoods must be finite")
    start = torch.full((m,), 1.0 / m, dtype=torch.float64) if prior is None else prior.double().clamp(min=1e-12)
    pi = start / start.sum()
    if n == 0:
        return pi
    ll = ll.double()
    ll = ll - ll.max(0, keepdim=True).values  # per-trial shift: responsibilities are unchanged
    lik = ll.exp()  # [M, N], the largest entry of each trial is 1
    pseudo = concentration * prior if concentration > 0 and prior is not None else torch.zeros(m, dtype=torch.float64)
    for _ in range(iterations):
        resp = pi.unsqueeze(1) * lik
        resp = resp / resp.sum(0, keepdim=True).clamp(min=1e-300)
        new = (resp.sum(1) + pseudo) / (n + float(pseudo.sum()))
        done = float((new - pi).abs().max()) < tol
        pi = new
        if done:
            break
    return pi / pi.sum()


def stack(ll: torch.Tensor, mask: torch.Tensor, config: StackingConfig = StackingConfig()) -> StackingResult:
    """Cohort and per-animal ensemble weights from held-out per-trial log-likelihoods.

    Args:
        ll: ``[M, A, T]`` per-trial log-likelihood of each component on each animal's trials.
        mask: ``[A, T]`` bool, the held-out trials (the others are ignored).
        config: per-animal shrinkage and EM settings.

    Raises:
        ValueError: no held-out trial at all, or mismatched shapes.
    """
    if ll.dim() != 3 or ll.shape[1:] != mask.shape:
        raise ValueError(f"ll must be [M, A, T] and mask [A, T], got {tuple(ll.shape)} and {tuple(mask.shape)}")
    mask = mask.bool()
    if not bool(mask.any()):
        raise ValueError("no held-out trials to fit the ensemble weights on")
    m, a, _ = ll.shape
    pooled = ll[:, mask]  # [M, N]
    cohort = stacking_weights(pooled, iterations=config.iterations, tol=config.tol)
    per = torch.empty(a, m, dtype=torch.float64)
    total = 0.0
    for i in range(a):
        lli = ll[:, i, mask[i]]
        if config.shrinkage is None:
            per[i] = cohort
        else:
            per[i] = stacking_weights(lli, cohort, float(config.shrinkage), config.iterations, config.tol)
        total += float(mixture_log_likelihood(lli, per[i]).sum()) if lli.shape[1] else 0.0
    n = float(mask.sum())
    return StackingResult(cohort, per, pooled.double().sum(1) / n, total / n, mask.sum(1))


__all__ = ["StackingConfig", "StackingResult", "stack", "stacking_weights"]
