"""A twin ensemble: several twins of one animal (rule families, seeds, bootstraps) and their weights.

Model averaging turns one animal's twins over different rules into one predictive distribution,

    p(y_t | history) = Σ_k π_k p_k(y_t | history),   π on the simplex,

where ``p_k`` is component ``k`` run teacher-forced along the animal's history (its own rule, its
own ``w_0``/``ρ``). The weights ``π`` come from stacking on held-out future sessions
(:mod:`twin.fit.stacking`). For simulation the ensemble is a two-level generative model: each
rollout first draws one component ``k ~ Categorical(π)`` and then runs that component free, so the
spread of simulated futures holds the between-model (and, with seeds/bootstraps, parameter)
uncertainty as well as the rollout noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from twin.data.batch import TrialBatch
from twin.data.features import FeatureSpec
from twin.models.params import TwinModel
from twin.models.state import TwinState

ENSEMBLE_RULE = "ensemble"
"""The rule name an ensemble twin version carries in the store and the API."""


@dataclass(frozen=True, eq=False)
class TwinEnsemble:
    """One animal's twin as a mixture ``p(y_t) = Σ_k π_k p_k(y_t)`` of ``M`` component twins.

    Each component runs its own rule and parameters teacher-forced along the same history; the
    mixture is taken per trial. Every component uses the same policy features.

    Attributes:
        components: the ``M`` component twins.
        weights: ``[M]`` mixture weights ``π`` (non-negative, summing to 1).
        labels: ``M`` names of the components (``dnn/seed1``, ``reinforce``, ...).
        states: each component's end-of-session state (where it continues from), or None.

    Raises:
        ValueError: no components, mismatched lengths, weights off the simplex, or components
            with different features.
    """

    components: tuple[TwinModel, ...]
    weights: torch.Tensor
    labels: tuple[str, ...]
    states: tuple[TwinState, ...] | None = None

    def __post_init__(self) -> None:
        m = len(self.components)
        if m == 0:
            raise ValueError("an ensemble needs at least one component")
        w = torch.as_tensor(self.weights, dtype=torch.float64).detach().cpu().reshape(-1)
        if w.shape != (m,) or len(self.labels) != m:
            raise ValueError(f"{m} components need {m} weights and labels, got {tuple(w.shape)} and {len(self.labels)}")
        if self.states is not None and len(self.states) != m:
            raise ValueError(f"{m} components need {m} states, got {len(self.states)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"ensemble weights must be non-negative and sum to 1, got {w.tolist()}")
        feats = {c.population.spec.features for c in self.components}
        if len(feats) > 1:
            raise ValueError("the components of an ensemble must share their policy features")
        object.__setattr__(self, "weights", w)

    @classmethod
    def of(cls, components: Sequence[TwinModel], weights: Sequence[float] | torch.Tensor, labels: Sequence[str], states: Sequence[TwinState] | None = None) -> "TwinEnsemble":
        """An ensemble from sequences; ``weights`` are normalised to sum to 1."""
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if float(w.sum()) <= 0:
            raise ValueError("ensemble weights must have a positive sum")
        return cls(tuple(components), w / w.sum(), tuple(labels), None if states is None else tuple(states))

    @property
    def features(self) -> FeatureSpec:
        """The policy features every component uses."""
        return self.components[0].population.spec.features

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def main(self) -> int:
        """Index of the component with the largest weight."""
        return int(torch.argmax(self.weights))

    @torch.no_grad()
    def component_log_likelihood(self, batch: TrialBatch) -> torch.Tensor:
        """``[M, B, T]`` each component's per-trial log-likelihood of the observed choices (zero
        where ``batch.mask`` is False), teacher-forced from each component's own ``w_0``."""
        return torch.stack([c.model.log_likelihood(batch) for c in self.components])

    @torch.no_grad()
    def log_likelihood(self, batch: TrialBatch) -> torch.Tensor:
        """``[B, T]`` per-trial log-likelihood of the mixture, ``log Σ_k π_k p_k(y_t)`` (zero where
        ``batch.mask`` is False)."""
        return (mixture_log_likelihood(self.component_log_likelihood(batch), self.weights) * batch.mask).to(batch.x.dtype)

    @torch.no_grad()
    def p_right(self, batch: TrialBatch) -> torch.Tensor:
        """``[B, T]`` the mixture's probability of a right choice on each trial."""
        ps = []
        for c in self.components:
            traj = c.model.trajectory(batch)  # [B, T, K]
            ps.append(torch.sigmoid((traj * batch.x).sum(-1)).double())
        return (torch.stack(ps) * self.weights.reshape(-1, 1, 1)).sum(0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``[n]`` long: a component drawn for each of ``n`` rollouts, ``k ~ Categorical(π)``."""
        if n < 1:
            raise ValueError("n must be >= 1")
        return torch.multinomial(self.weights.float(), n, replacement=True, generator=generator)


def mixture_log_likelihood(component_ll: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``log Σ_k π_k exp(ll_k)`` over the first axis: ``[M, ...]`` component log-likelihoods and
    ``[M]`` weights (or ``[M, B]``, one mixture per row ``b`` of the second axis) to ``[...]``
    (float64)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    return torch.logsumexp(component_ll.double() + w.log().reshape(w.shape + (1,) * (component_ll.dim() - w.dim())), 0)


__all__ = ["ENSEMBLE_RULE", "TwinEnsemble", "mixture_log_likelihood"]
