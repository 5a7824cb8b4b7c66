"""Synthetic ground-truth learners with known rules, for recovery experiments.

Three families, each one rule with fixed parameters shared by the whole cohort (so that a
population rule fitted on some animals can in principle match it on held-out ones):

* ``reinforce``: REINFORCE with per-weight learning rates and baselines;
* ``asymmetric``: prediction-error learning with different rates after correct and after error
  trials (a REINFORCE baseline cannot mimic it: error updates grow with confidence);
* ``history``: REINFORCE whose step size grows with the run of rewards leading up to a trial
  (non-Markovian): an error that ends a long run is scaled up as much as a reward within one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import torch

from twin.data.features import FeatureSpec
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules.reinforce import AsymmetricPredictionErrorRule, ReinforceRule, RewardHistoryReinforceRule


class Family(enum.Enum):
    """Ground-truth learner families."""

    REINFORCE = "reinforce"
    ASYMMETRIC = "asymmetric"
    HISTORY = "history"


@dataclass(frozen=True)
class GroundTruth:
    """Parameters of one ground-truth learner (weights ordered ``[stimulus, bias]``).

    Attributes:
        family: which rule.
        alpha: learning rates (``reinforce``, ``history``).
        baseline: REINFORCE baselines (``reinforce``, ``history``).
        alpha_correct: rates after rewarded trials (``asymmetric``).
        alpha_error: rates after error trials (``asymmetric``).
        kappa: maximal extra gain after a long run of rewards (``history``).
        tau: run length scale of that gain, in trials (``history``).
        w0: initial weights.
    """

    family: Family
    alpha: tuple[float, float] = (0.01, 0.006)
    baseline: tuple[float, float] = (0.5, 0.5)
    alpha_correct: tuple[float, float] = (0.003, 0.002)
    alpha_error: tuple[float, float] = (0.016, 0.01)
    kappa: float = 19.0
    tau: float = 10.0
    w0: tuple[float, float] = (0.0, 0.0)

    @property
    def rule_name(self) -> str:
        return {Family.REINFORCE: "reinforce", Family.ASYMMETRIC: "pe_asymmetric", Family.HISTORY: "reinforce_history"}[self.family]

    def build(self) -> LearnerModel:
        """The learner as a :class:`LearnerModel` with its parameters fixed."""
        model = LearnerModel(ModelSpec(rule=self.rule_name, features=FeatureSpec()))
        rule = model.rule
        if isinstance(rule, RewardHistoryReinforceRule):
            rule.set_parameters(list(self.alpha), list(self.baseline), self.kappa, self.tau)
        elif isinstance(rule, AsymmetricPredictionErrorRule):
            rule.set_parameters(list(self.alpha_correct), list(self.alpha_error))
        elif isinstance(rule, ReinforceRule):
            rule.set_parameters(list(self.alpha), list(self.baseline))
        with torch.no_grad():
            model.w0.copy_(torch.tensor(self.w0))
        model.requires_grad_(False)
        return model


DEFAULT_TRUTHS: dict[Family, GroundTruth] = {
    Family.REINFORCE: GroundTruth(Family.REINFORCE),
    Family.ASYMMETRIC: GroundTruth(Family.ASYMMETRIC),
    Family.HISTORY: GroundTruth(Family.HISTORY, alpha=(0.002, 0.0012)),
}
"""Cohort parameters used by the demo and the recovery experiment.

Easy-contrast accuracy of the REINFORCE cohort under the default protocol rises from ~0.69 over
the first 1,000 trials to ~0.89 over the next 1,000 (a few sessions). Per-trial updates need to be
this large for the rule to be identifiable from choices: with half these rates even the true-form
REINFORCE model, fitted by maximum likelihood, matches the truth's likelihood (LL-gain ratio
0.998) with a wrong correct/error split of the stimulus update (see experiments/results).

The history cohort's gain rises from 1 to up to 20 (``kappa = 19``) over runs of ~10 rewards
(``tau = 10``), at a base rate a fifth of the REINFORCE cohort's. A weaker modulation is not
measurable from choices: with ``kappa = 3, tau = 4`` REINFORCE with constant rates explained
99.6% of the truth's LL gain on held-out animals (``kappa = 9, tau = 8``: 99.2%); with these
values 98.9%, and the RNN 99.6% (experiments/results/recovery_analysis.md).
"""

SLOW_REINFORCE = GroundTruth(Family.REINFORCE, alpha=(0.005, 0.003))
"""A slower REINFORCE cohort, where the stimulus update's correct/error split is not identifiable."""


IBL_PACE = 8.0
"""Rate divisor of :data:`PACED_TRUTHS`: chosen (on the default protocol only) so that the
learners take about as long as IBL mice, a median of ~17 sessions to ``trained_1a``."""


def paced(truth: GroundTruth, divisor: float = IBL_PACE) -> GroundTruth:
    """``truth`` with every learning rate divided by ``divisor``."""
    return replace(
        truth,
        alpha=tuple(a / divisor for a in truth.alpha),  # type: ignore[arg-type]
        alpha_correct=tuple(a / divisor for a in truth.alpha_correct),  # type: ignore[arg-type]
        alpha_error=tuple(a / divisor for a in truth.alpha_error),  # type: ignore[arg-type]
    )


PACED_TRUTHS: dict[Family, GroundTruth] = {f: paced(t) for f, t in DEFAULT_TRUTHS.items()}
"""Ground truths that learn at the pace of IBL mice (closed-loop curriculum experiments)."""


@dataclass(frozen=True)
class Individuality:
    """How animals of one cohort differ: per-animal learning-rate multipliers and starting weights.

    Attributes:
        log_rate_sd: SD of each animal's log learning-rate multiplier (shared by its weights).
        w0_sd: SD of each starting weight (``[stimulus, bias]``) around the family's ``w0``.
    """

    log_rate_sd: float = 0.3
    w0_sd: tuple[float, float] = (0.0, 0.5)


def draw_individuals(truth: GroundTruth, n: int, individuality: Individuality, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-animal ``(w0 [n, 2], log_rate [n, 2])`` of a cohort, seeded."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.tensor(truth.w0) + torch.randn(n, 2, generator=g) * torch.tensor(individuality.w0_sd)
    log_rate = (torch.randn(n, 1, generator=g) * individuality.log_rate_sd).expand(n, 2).clone()
    return w0, log_rate
