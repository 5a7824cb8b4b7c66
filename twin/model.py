"""A learner model: a learning rule plus the initial weights it starts from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from twin.batch import TrialBatch
from twin.features import FeatureSpec
from twin.policy import choice_log_likelihood
from twin.rules import RuleConfig, UpdateInputs, make_rule


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's structure (not its fitted values).

    Attributes:
        rule: registered rule name (``static``, ``reinforce``, ``dnn``, ``rnn``, ...).
        features: policy regressors.
        rule_config: structural hyperparameters of the rule.
    """

    rule: str
    features: FeatureSpec = field(default_factory=FeatureSpec)
    rule_config: RuleConfig = field(default_factory=RuleConfig)

    def to_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "features": self.features.to_dict(), "rule_config": asdict(self.rule_config)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "ModelSpec":
        return cls(
            rule=str(d["rule"]),
            features=FeatureSpec.from_dict(d["features"]),  # type: ignore[arg-type]
            rule_config=RuleConfig(**d["rule_config"]),  # type: ignore[arg-type]
        )


class LearnerModel(nn.Module):
    """``p(right on t) = sigmoid(w_t · x_t)``, ``w_0`` learnable, ``w_{t+1} = rule(w_t, h_t, trial t)``.

    Holds structure and parameters; the rule's equation is stated by the rule class.

    Args:
        spec: structure of the model.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        k = spec.features.n_features
        self.rule = make_rule(spec.rule, k, spec.rule_config)
        self.w0 = nn.Parameter(torch.zeros(k))

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
        return w, self.rule.initial_state(batch_size, device=self.w0.device)

    def trajectory(self, batch: TrialBatch, w0: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced weight trajectory along the animal's real trials.

        Args:
            batch: the trials.
            w0: optional ``[B, K]`` or ``[K]`` starting weights.

        Returns:
            ``[B, T, K]`` the weights in force on each trial.
        """
        pre = self.precompute(batch)
        w, h = self.initial(batch.n_animals, w0)
        ws, _ = self.rule.rollout(w, h, pre[:-1])
        return torch.cat([w.unsqueeze(0), ws], 0).transpose(0, 1)

    def log_likelihood(self, batch: TrialBatch, w0: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` per-trial log-likelihood (nats), zero where ``batch.mask`` is False."""
        ll = choice_log_likelihood(self.trajectory(batch, w0), batch.x, batch.y)
        return ll * batch.mask
