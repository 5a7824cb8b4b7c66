"""DNNGLM: a Markovian learning rule given by a small MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from twin.models.rules.base import Context, LearningRule, NetworkConfig, UpdateInputs, scratch
from twin.models.rules.fused import mlp_rollout
from twin.models.rules.registry import register


@register("dnn")
class DNNRule(LearningRule):
    """DNNGLM (Liu, Geadah & Pillow 2025).

    ``Δw_t = s ⊙ f_θ(w_t, x_t, y_t, r_t, a_t, ss_{t+1})``, where ``f_θ`` is an MLP
    ``(2K + 4) → H → H → K`` with ReLU, the choice ``y``, reward ``r`` and rewarded side ``a`` enter
    as ±1, ``ss_{t+1}`` flags an overnight update into a new session, and ``s = exp(log s)`` is a
    learnable per-weight scale initialised at ``config.scale_init`` (log-parametrised so the first
    optimiser steps cannot collapse it to zero). Markovian: no hidden state.
    """

    config_type = NetworkConfig
    config: NetworkConfig

    def __init__(self, n_weights: int, config: NetworkConfig | None = None) -> None:
        super().__init__(n_weights, config)
        k, hdim = n_weights, self.config.hidden_size
        n_in = 2 * k + 4
        self.fc1 = nn.Linear(n_in, hdim)
        self.fc2 = nn.Linear(hdim, hdim)
        self.fc3 = nn.Linear(hdim, k)
        self.log_scale = nn.Parameter(torch.full((k,), math.log(self.config.scale_init)))

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        u = inputs.standard_vector().transpose(0, 1).contiguous()  # [T, B, K+4], time-major
        w_u = self.fc1.weight[:, self.n_weights :]
        return torch.addmm(self.fc1.bias, u.reshape(-1, u.shape[-1]), w_u.t()).reshape(u.shape[0], u.shape[1], -1)

    def context(self) -> Context:
        s = self.log_scale.exp()
        return (
            self.fc1.weight[:, : self.n_weights].t().contiguous(),
            self.fc2.weight.t().contiguous(),
            self.fc2.bias,
            (self.fc3.weight.t() * s).contiguous(),
            self.fc3.bias * s,
        )

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        w1, w2, b2, w3s, b3s = ctx
        a1 = torch.relu(torch.addmm(pre_t, w, w1))
        a2 = torch.relu(torch.addmm(b2, a1, w2))
        return w + torch.addmm(b3s, a2, w3s), h

    def step_into(
        self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context, work: dict[str, torch.Tensor], slot: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w1, w2, b2, w3s, b3s = ctx
        b = w.shape[0]
        a1 = torch.addmm(pre_t, w, w1, out=scratch(work, "a1", (b, w1.shape[1]), w)).relu_()
        a2 = torch.addmm(b2, a1, w2, out=scratch(work, "a2", (b, w2.shape[1]), w)).relu_()
        dw = torch.addmm(b3s, a2, w3s, out=scratch(work, "dw", (b, w3s.shape[1]), w))
        return torch.add(w, dw, out=scratch(work, f"w{slot}", tuple(w.shape), w)), h

    def fused_rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mlp_rollout(w, pre, *self.context(), rate=rate), h
