"""DNN-delta: a Markovian learned rule with the structure of a delta rule.

Every gradient-like learning rule moves each weight in proportion to its input:
REINFORCE's ``α (r − b)(y − p) x``, a prediction-error rule's ``α (a − p) x``. A free MLP
(:mod:`twin.rules.dnn`) can represent such updates only approximately, and fitted on choices
alone it tends to settle on a mean drift that ignores what was shown (see
``experiments/results/recovery.md``); a twin that ignores the stimulus cannot tell how a
different curriculum would change learning. This rule keeps the MLP's freedom for the *gain* of
the update and fixes its *direction*: the gain is a learned function of the trial's outcome, the
policy's own p(right) and the current weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from twin.rules.base import Context, LearningRule, RuleConfig, UpdateInputs
from twin.rules.registry import register


@register("dnn_delta")
class DNNDeltaRule(LearningRule):
    """Delta-structured DNN rule.

    ``Δw_t = s ⊙ (g_θ(u_t) ⊙ x_t + d_θ(u_t))`` with ``u_t = (w_t, p_t, x_t, y_t, r_t, a_t, ss_{t+1})``,
    ``p_t = sigmoid(w_t · x_t)`` the policy's p(right), ``y, r, a`` as ±1, ``ss_{t+1}`` the
    overnight flag; ``[g_θ, d_θ]`` is one MLP ``(2K + 5) → H → H → 2K`` (ReLU): ``g`` the per-weight
    gain of the input-proportional update, ``d`` a per-weight drift (overnight changes, forgetting).
    ``s = exp(log s)`` is a learnable per-weight scale initialised at ``config.scale_init``.
    Markovian: no hidden state. REINFORCE (``g = α (r − b)(y − p)``, ``d = 0``) and prediction-error
    rules are special cases.
    """

    def __init__(self, n_weights: int, config: RuleConfig = RuleConfig()) -> None:
        super().__init__(n_weights, config)
        k, hdim = n_weights, config.hidden_size
        self.fc1 = nn.Linear(2 * k + 5, hdim)
        self.fc2 = nn.Linear(hdim, hdim)
        self.fc3 = nn.Linear(hdim, 2 * k)
        self.log_scale = nn.Parameter(torch.full((k,), math.log(config.scale_init)))

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        u = inputs.standard_vector().transpose(0, 1).contiguous()  # [T, B, K+4]: x, y, r, a, ss
        w_u = self.fc1.weight[:, self.n_weights + 1 :]
        h_u = torch.addmm(self.fc1.bias, u.reshape(-1, u.shape[-1]), w_u.t()).reshape(u.shape[0], u.shape[1], -1)
        x = inputs.x.transpose(0, 1)
        return torch.cat([h_u, x], -1).contiguous()  # [T, B, H + K]

    def context(self) -> Context:
        k = self.n_weights
        s = self.log_scale.exp()
        w3 = self.fc3.weight.t()  # [H, 2K]
        b3 = self.fc3.bias
        return (
            self.fc1.weight[:, :k].t().contiguous(),  # from w
            self.fc1.weight[:, k],  # from p
            self.fc2.weight.t().contiguous(),
            self.fc2.bias,
            (w3[:, :k] * s).contiguous(),
            b3[:k] * s,
            (w3[:, k:] * s).contiguous(),
            b3[k:] * s,
        )

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        w1w, w1p, w2, b2, wg, bg, wd, bd = ctx
        hdim = w2.shape[0]
        h_u, x = pre_t[:, :hdim], pre_t[:, hdim:]
        p = torch.sigmoid((w * x).sum(-1, keepdim=True))
        a1 = torch.relu(torch.addmm(h_u + p * w1p, w, w1w))
        a2 = torch.relu(torch.addmm(b2, a1, w2))
        gain = torch.addmm(bg, a2, wg)
        drift = torch.addmm(bd, a2, wd)
        return w + gain * x + drift, h
