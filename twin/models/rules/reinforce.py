"""REINFORCE-family rules with a handful of interpretable parameters.

``reinforce`` is the baseline model of Ashwood et al. (NeurIPS 2020). The two other rules are
ground-truth families for recovery experiments (and models in their own right):
``pe_asymmetric`` learns from the signed prediction error with separate rates after correct and
error trials, ``reinforce_history`` scales REINFORCE updates up along runs of rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from twin.models.rules.base import Context, LearningRule, RuleConfig, UpdateInputs
from twin.models.rules.registry import register


@dataclass(frozen=True)
class ReinforceConfig(RuleConfig):
    """Structural hyperparameters of the REINFORCE family (``reinforce``, ``pe_asymmetric``,
    ``reinforce_history``).

    Attributes:
        alpha_init: initial learning rate.
    """

    alpha_init: float = 0.01

    def __post_init__(self) -> None:
        if not self.alpha_init > 0:
            raise ValueError(f"alpha_init must be > 0, got {self.alpha_init}")


def _policy_p(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` p(right) = sigmoid(w · x) for ``w, x`` of shape ``[B, K]``."""
    return torch.sigmoid((w * x).sum(-1, keepdim=True))


@register("reinforce")
class ReinforceRule(LearningRule):
    """REINFORCE with a per-weight baseline.

    ``Δw_t = α ⊙ (r_t − b) ⊙ (y_t − p_t) x_t``, with ``p_t = sigmoid(w_t · x_t)``,
    ``∇_w log π(y_t | x_t, w_t) = (y_t − p_t) x_t``, per-weight learning rates ``α > 0`` and
    baselines ``b``; ``r ∈ {0, 1}``, ``y ∈ {0, 1}``.
    """

    default_learning_rate = 0.03
    config_type = ReinforceConfig
    config: ReinforceConfig

    def __init__(self, n_weights: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(n_weights, config)
        self.log_alpha = nn.Parameter(torch.full((n_weights,), math.log(self.config.alpha_init)))
        self.baseline = nn.Parameter(torch.full((n_weights,), 0.5))

    def set_parameters(self, alpha: list[float], baseline: list[float]) -> "ReinforceRule":
        """Fix the parameters (ground-truth use); returns ``self``."""
        with torch.no_grad():
            self.log_alpha.copy_(torch.log(torch.as_tensor(alpha, dtype=torch.float32)))
            self.baseline.copy_(torch.as_tensor(baseline, dtype=torch.float32))
        return self

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        r = inputs.reward.unsqueeze(-1)
        a = self.log_alpha.exp() * (r - self.baseline) * inputs.x
        return torch.cat([a, inputs.x, inputs.y.unsqueeze(-1)], -1).transpose(0, 1).contiguous()

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_weights
        a, x, y = pre_t[:, :k], pre_t[:, k : 2 * k], pre_t[:, 2 * k :]
        return w + a * (y - _policy_p(w, x)), h


@register("pe_asymmetric")
class AsymmetricPredictionErrorRule(LearningRule):
    """Prediction-error learning with separate rates after correct and after error trials.

    ``Δw_t = α_{r_t} ⊙ (r_t − π_t(y_t)) (2 y_t − 1) x_t = α_{r_t} ⊙ (a_t − p_t) x_t``,
    where ``π_t(y_t)`` is the probability of the choice made, ``a_t`` the rewarded side,
    ``α_1`` the rate after correct and ``α_0`` after error trials. Unlike REINFORCE, the size of an
    error update grows with the confidence of the wrong choice, so no baseline can mimic it.
    """

    default_learning_rate = 0.03
    config_type = ReinforceConfig
    config: ReinforceConfig

    def __init__(self, n_weights: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(n_weights, config)
        self.log_alpha_correct = nn.Parameter(torch.full((n_weights,), math.log(self.config.alpha_init)))
        self.log_alpha_error = nn.Parameter(torch.full((n_weights,), math.log(self.config.alpha_init)))

    def set_parameters(self, alpha_correct: list[float], alpha_error: list[float]) -> "AsymmetricPredictionErrorRule":
        """Fix the parameters (ground-truth use); returns ``self``."""
        with torch.no_grad():
            self.log_alpha_correct.copy_(torch.log(torch.as_tensor(alpha_correct, dtype=torch.float32)))
            self.log_alpha_error.copy_(torch.log(torch.as_tensor(alpha_error, dtype=torch.float32)))
        return self

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        r = inputs.reward.unsqueeze(-1)
        alpha = r * self.log_alpha_correct.exp() + (1 - r) * self.log_alpha_error.exp()
        return torch.cat([alpha * inputs.x, inputs.x, inputs.answer.unsqueeze(-1)], -1).transpose(0, 1).contiguous()

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_weights
        a, x, ans = pre_t[:, :k], pre_t[:, k : 2 * k], pre_t[:, 2 * k :]
        return w + a * (ans - _policy_p(w, x)), h


@register("reinforce_history")
class RewardHistoryReinforceRule(LearningRule):
    """REINFORCE whose step size grows along a run of rewards (history-dependent).

    ``Δw_t = α (1 + κ (1 − exp(−c_{t−1} / τ))) ⊙ (r_t − b) ⊙ (y_t − p_t) x_t``, where ``c_{t−1}``
    counts the consecutive rewarded trials just *before* trial ``t`` (0 after an error); the
    recurrent state carries it (``h_t = c_t = (c_{t−1} + 1) r_t``). The update on trial ``t`` —
    after a reward or an error — is up to ``1 + κ`` times larger when a long run of rewards led up
    to it: an error that ends a long run teaches more than one that follows another error.
    """

    default_learning_rate = 0.03
    config_type = ReinforceConfig
    config: ReinforceConfig

    markovian = False

    def __init__(self, n_weights: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(n_weights, config)
        self.log_alpha = nn.Parameter(torch.full((n_weights,), math.log(self.config.alpha_init)))
        self.baseline = nn.Parameter(torch.full((n_weights,), 0.5))
        self.log_kappa = nn.Parameter(torch.tensor(0.0))
        self.log_tau = nn.Parameter(torch.tensor(math.log(5.0)))

    def set_parameters(self, alpha: list[float], baseline: list[float], kappa: float, tau: float) -> "RewardHistoryReinforceRule":
        """Fix the parameters (ground-truth use); returns ``self``."""
        with torch.no_grad():
            self.log_alpha.copy_(torch.log(torch.as_tensor(alpha, dtype=torch.float32)))
            self.baseline.copy_(torch.as_tensor(baseline, dtype=torch.float32))
            self.log_kappa.fill_(math.log(kappa))
            self.log_tau.fill_(math.log(tau))
        return self

    @property
    def state_size(self) -> int:
        return 1

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        r = inputs.reward.unsqueeze(-1)
        a = self.log_alpha.exp() * (r - self.baseline) * inputs.x
        return torch.cat([a, inputs.x, inputs.y.unsqueeze(-1), r], -1).transpose(0, 1).contiguous()

    def context(self) -> Context:
        return (self.log_kappa.exp(), -torch.exp(-self.log_tau))

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_weights
        kappa, neg_inv_tau = ctx
        a, x, y, r = pre_t[:, :k], pre_t[:, k : 2 * k], pre_t[:, 2 * k : 2 * k + 1], pre_t[:, 2 * k + 1 :]
        gain = 1 + kappa * (1 - torch.exp(h * neg_inv_tau))
        return w + gain * a * (y - _policy_p(w, x)), (h + 1) * r
