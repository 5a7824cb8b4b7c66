"""Synthetic ground-truth learners with known rules, for recovery experiments.

Each family is one rule with fixed parameters shared by the whole cohort (so that a population
rule fitted on some animals can in principle match it on held-out ones):

* ``reinforce``: REINFORCE with per-weight learning rates and baselines;
* ``asymmetric``: prediction-error learning with different rates after correct and after error
  trials (a REINFORCE baseline cannot mimic it: error updates grow with confidence);
* ``history``: REINFORCE whose step size grows with the run of rewards leading up to a trial
  (non-Markovian): an error that ends a long run is scaled up as much as a reward within one.

Three more stress what one-trial-ahead likelihood does not pin down, each the ``reinforce``
cohort plus one mechanism whose parameter comes from a statistic of the real animals in
``../shared/data`` (``experiments/family_parameters.py``, table in
``experiments/results/family_parameters.md``), not from any fit:

* ``perseveration``: a choice-history kernel on the bias (``reinforce_perseveration``):
  ``c_{t+1} = c_t + η ((2 y_t − 1) − c_t)``, ``w_{t+1} = w_t + Δ^{REINFORCE}_t + φ e_bias (c_{t+1} − c_t)``,
  ``φ = 1.82``, ``η = 0.14``: the median kernel of the 53 IBL mice's last training sessions. Teacher
  forced, the kernel only shifts the bias along the animal's own choices; run free it feeds on the
  twin's own choices (runs of one side lengthen, and ``φ/2 = 0.91`` is close to the value 1 above
  which a streak would lock in), so the choice statistics a twin generates depend on getting it
  right.
* ``plateau``: soft-bounded learning that stops below the criterion (``reinforce_bounded``):
  ``w_{t+1} = w_t + Δ_t ⊙ max(0, 1 − sign(Δ_t) w_t / w_max)`` with a bound on the stimulus weight
  only, ``w_max = 0.59`` (logit of 0.644, rat W053's accuracy on its easiest trials over its last 20
  training sessions); easy accuracy levels off near 64%, below the 80% of ``trained_1a``. Stresses
  the fraction trained and the censored trials to criterion: a twin that extrapolates the early
  rise predicts animals that train.
* ``forgetting``: overnight loss of part of the stimulus weight (``reinforce_forgetting``):
  ``w_{t+1} = (1 − f e_t)(w_t + Δ_t)`` with ``e_t = 1`` on the update into a session's first trial,
  ``f = 0.104`` on the stimulus weight (rat W053's loss of stimulus weight from a session's last 50
  trials to the next session's first 50), none on the bias. Stresses session boundaries: one
  night is one trial of the one-step likelihood, but over a training of 10–40 sessions the losses
  add up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import torch

from twin.data.features import FeatureSpec
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules.reinforce import AsymmetricPredictionErrorRule, ReinforceRule, RewardHistoryReinforceRule
from twin.models.rules.reinforce_variants import BoundedReinforceRule, ForgettingReinforceRule, PerseverationReinforceRule


class Family(enum.Enum):
    """Ground-truth learner families (the module docstring states each one's equations)."""

    REINFORCE = "reinforce"
    ASYMMETRIC = "asymmetric"
    HISTORY = "history"
    PERSEVERATION = "perseveration"
    PLATEAU = "plateau"
    FORGETTING = "forgetting"


_RULE_OF: dict[Family, str] = {
    Family.REINFORCE: "reinforce",
    Family.ASYMMETRIC: "pe_asymmetric",
    Family.HISTORY: "reinforce_history",
    Family.PERSEVERATION: "reinforce_perseveration",
    Family.PLATEAU: "reinforce_bounded",
    Family.FORGETTING: "reinforce_forgetting",
}


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
        choice_kernel: amplitude ``φ`` of the choice kernel on the bias (``perseveration``).
        kernel_rate: its rate ``η`` (the kernel decays as ``(1 − η)^k``; ``perseveration``).
        stimulus_bound: soft bound ``w_max`` on the stimulus weight (``plateau``).
        overnight_forgetting: fraction ``f`` of the stimulus weight lost between sessions
            (``forgetting``).

    ``alpha`` and ``baseline`` also set the REINFORCE part of ``perseveration``, ``plateau`` and
    ``forgetting``. A per-animal learning-rate multiplier (:class:`Individuality`) scales each
    whole step, that family's mechanism included.
    """

    family: Family
    alpha: tuple[float, float] = (0.01, 0.006)
    baseline: tuple[float, float] = (0.5, 0.5)
    alpha_correct: tuple[float, float] = (0.003, 0.002)
    alpha_error: tuple[float, float] = (0.016, 0.01)
    kappa: float = 19.0
    tau: float = 10.0
    w0: tuple[float, float] = (0.0, 0.0)
    choice_kernel: float = 1.82
    kernel_rate: float = 0.14
    stimulus_bound: float = 0.59
    overnight_forgetting: float = 0.104

    @property
    def rule_name(self) -> str:
        return _RULE_OF[self.family]

    def build(self) -> LearnerModel:
        """The learner as a :class:`LearnerModel` with its parameters fixed (weights
        ``[stimulus, bias]``)."""
        model = LearnerModel(ModelSpec(rule=self.rule_name, features=FeatureSpec()))
        rule = model.rule
        if isinstance(rule, RewardHistoryReinforceRule):
            rule.set_parameters(list(self.alpha), list(self.baseline), self.kappa, self.tau)
        elif isinstance(rule, AsymmetricPredictionErrorRule):
            rule.set_parameters(list(self.alpha_correct), list(self.alpha_error))
        elif isinstance(rule, ReinforceRule):
            rule.set_parameters(list(self.alpha), list(self.baseline))
        if isinstance(rule, PerseverationReinforceRule):
            rule.set_kernel([0.0, self.choice_kernel], self.kernel_rate)
        elif isinstance(rule, BoundedReinforceRule):
            rule.set_bound([self.stimulus_bound, UNBOUNDED])
        elif isinstance(rule, ForgettingReinforceRule):
            rule.set_forgetting([self.overnight_forgetting, 0.0])
        with torch.no_grad():
            model.w0.copy_(torch.tensor(self.w0))
        model.requires_grad_(False)
        return model


UNBOUNDED = 1e6
"""The ``plateau`` family's bound on the bias: none in effect."""


DEFAULT_TRUTHS: dict[Family, GroundTruth] = {
    Family.REINFORCE: GroundTruth(Family.REINFORCE),
    Family.ASYMMETRIC: GroundTruth(Family.ASYMMETRIC),
    Family.HISTORY: GroundTruth(Family.HISTORY, alpha=(0.002, 0.0012)),
    Family.PERSEVERATION: GroundTruth(Family.PERSEVERATION),
    Family.PLATEAU: GroundTruth(Family.PLATEAU),
    Family.FORGETTING: GroundTruth(Family.FORGETTING),
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

The ``perseveration``, ``plateau`` and ``forgetting`` cohorts are the REINFORCE cohort (same rates
and baselines) plus their mechanism, whose parameter is a real-data statistic (module docstring),
so each can be compared with the REINFORCE cohort as a matched family without it.
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
