"""A learner model: a learning rule plus the initial weights it starts from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from twin.data.batch import TrialBatch
from twin.data.features import FeatureSpec
from twin.models import batch1
from twin.models.policy import choice_log_likelihood
from twin.models.rules import RuleConfig, UpdateInputs, get_rule, make_config, make_rule


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's structure (not its fitted values).

    Attributes:
        rule: registered rule name (``static``, ``reinforce``, ``dnn``, ``rnn``, ...).
        features: policy regressors.
        rule_config: structural hyperparameters of the rule, of its ``config_type``
            (:func:`twin.models.rules.make_config` builds one from options); None on construction
            stands for the rule's defaults and is replaced by them.

    Raises:
        UnknownRuleError: ``rule`` is not registered.
        TypeError: ``rule_config`` is not of the rule's config type.
    """

    rule: str
    features: FeatureSpec = field(default_factory=FeatureSpec)
    rule_config: RuleConfig | None = None

    def __post_init__(self) -> None:
        config_type = get_rule(self.rule).config_type
        if self.rule_config is None:
            object.__setattr__(self, "rule_config", config_type())
        elif type(self.rule_config) is not config_type:
            raise TypeError(f"rule {self.rule!r} takes a {config_type.__name__}, got a {type(self.rule_config).__name__}")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (stored in model files and metadata)."""
        return {"rule": self.rule, "features": self.features.to_dict(), "rule_config": asdict(self.rule_config)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "ModelSpec":
        """Inverse of :meth:`to_dict`; also reads specs stored when one config held every rule's
        options (the options this rule does not use are dropped)."""
        rule = str(d["rule"])
        return cls(
            rule=rule,
            features=FeatureSpec.from_dict(d["features"]),  # type: ignore[arg-type]
            rule_config=make_config(rule, **d["rule_config"]),  # type: ignore[arg-type]
        )


class LearnerModel(nn.Module):
    """``p(right on t) = sigmoid(w_t · x_t)``, ``w_{t+1} = w_t + exp(ρ) ⊙ Δw_t``, ``w_0`` learnable.

    ``Δw_t`` is the rule's update (its class states the equation) and ``ρ`` (``log_rate``) a
    per-weight log learning-rate multiplier, 0 (no change) in population fits; a per-animal twin
    adapts ``w_0`` and ``ρ`` to its animal. Holds structure and parameters.

    Args:
        spec: structure of the model.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        k = spec.features.n_features
        self.rule = make_rule(spec.rule, k, spec.rule_config)
        if self.rule.needs_mirror:
            self.rule.use_mirror(spec.features.mirror())
        self.w0 = nn.Parameter(torch.zeros(k))
        self.log_rate = nn.Parameter(torch.zeros(k), requires_grad=False)

    @property
    def n_weights(self) -> int:
        return self.spec.features.n_features

    def precompute(self, batch: TrialBatch) -> torch.Tensor:
        """``[T, B, D]`` rule inputs for the whole batch."""
        inp = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)
        return self.rule.precompute(inp)

    def initial(self, batch_size: int, w0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Starting weights ``[B, K]`` (population ``w0`` unless ``w0`` is given) and state ``[B, H]``."""
        w = (self.w0 if w0 is None else w0).expand(batch_size, -1)
        return w, self.rule.initial_state(batch_size, device=self.w0.device, dtype=self.w0.dtype)

    def rate(self, log_rate: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per-weight update multiplier ``[K]`` or ``[B, K]``; None when it is exactly 1."""
        lr = self.log_rate if log_rate is None else log_rate
        if log_rate is None and not lr.requires_grad and not bool(lr.any()):
            return None
        return lr.exp()

    def rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, log_rate: torch.Tensor | None = None, fused: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rule's rollout (``[n, B, K]`` weights after each step, final state) with the
        learning-rate multiplier applied: the compiled batch-1 loop of :mod:`twin.models.batch1`
        when no gradient is needed and it has the rule, the rule's torch rollout otherwise (its
        fused training rollout when a gradient is wanted); ``fused=False`` forces the rule's step
        loop, the reference of both (:meth:`LearningRule.rollout`)."""
        return batch1.dispatch(self.rule, w, h, pre, rate=self.rate(log_rate), fused=fused)

    def trajectory(
        self, batch: TrialBatch, w0: torch.Tensor | None = None, log_rate: torch.Tensor | None = None, fused: bool = True
    ) -> torch.Tensor:
        """Teacher-forced weight trajectory along the animal's real trials.

        Args:
            batch: the trials.
            w0: optional ``[B, K]`` or ``[K]`` starting weights.
            log_rate: optional ``[B, K]`` or ``[K]`` log learning-rate multipliers.
            fused: see :meth:`rollout`.

        Returns:
            ``[B, T, K]`` the weights in force on each trial.
        """
        pre = self.precompute(batch)
        w, h = self.initial(batch.n_animals, w0)
        ws, _ = self.rollout(w, h, pre[:-1], log_rate, fused)
        return torch.cat([w.unsqueeze(0), ws], 0).transpose(0, 1)

    def log_likelihood(
        self, batch: TrialBatch, w0: torch.Tensor | None = None, log_rate: torch.Tensor | None = None, fused: bool = True
    ) -> torch.Tensor:
        """``[B, T]`` per-trial log-likelihood (nats), zero where ``batch.mask`` is False."""
        ll = choice_log_likelihood(self.trajectory(batch, w0, log_rate, fused), batch.x, batch.y)
        return ll * batch.mask
