"""The static GLM: weights never change."""

from __future__ import annotations

import torch

from twin.models.rules.base import Context, LearningRule, UpdateInputs
from twin.models.rules.registry import register


@register("static")
class StaticRule(LearningRule):
    """No learning: ``Δw_t = 0``, so ``p(right) = sigmoid(w_0 · x_t)`` on every trial."""

    learns = False
    default_learning_rate = 0.05

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        return inputs.x.new_zeros((inputs.x.shape[1], inputs.x.shape[0], 0))

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        return w, h

    def rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None = None, fused: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return w.unsqueeze(0).expand(pre.shape[0], -1, -1), h
