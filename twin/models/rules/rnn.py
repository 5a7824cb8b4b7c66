"""RNNGLM: a history-dependent learning rule given by a GRU."""

from __future__ import annotations

import math

import torch
from torch import nn

from twin.models.rules.base import Context, LearningRule, NetworkConfig, UpdateInputs, scratch
from twin.models.rules.fused import gru_rollout
from twin.models.rules.registry import register


@register("rnn")
class RNNRule(LearningRule):
    """RNNGLM (Liu, Geadah & Pillow 2025).

    ``h_{t+1} = GRU(h_t, [w_t, x_t, y_t, r_t, a_t, ss_{t+1}])`` and
    ``Δw_t = s ⊙ g_φ(h_{t+1})`` with ``g_φ`` an MLP ``H → H → K`` (ReLU) and ``s = exp(log s)``
    a learnable per-weight scale. Non-Markovian: the update depends on the whole trial history
    through ``h``.
    """

    markovian = False
    config_type = NetworkConfig
    config: NetworkConfig

    def __init__(self, n_weights: int, config: NetworkConfig | None = None) -> None:
        super().__init__(n_weights, config)
        k, hdim = n_weights, self.config.hidden_size
        self.gru = nn.GRUCell(2 * k + 4, hdim)
        self.head1 = nn.Linear(hdim, hdim)
        self.head2 = nn.Linear(hdim, k)
        self.log_scale = nn.Parameter(torch.full((k,), math.log(self.config.scale_init)))

    @property
    def state_size(self) -> int:
        return self.config.hidden_size

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        u = inputs.standard_vector().transpose(0, 1).contiguous()  # [T, B, K+4], time-major
        w_u = self.gru.weight_ih[:, self.n_weights :]
        return torch.addmm(self.gru.bias_ih, u.reshape(-1, u.shape[-1]), w_u.t()).reshape(u.shape[0], u.shape[1], -1)

    def context(self) -> Context:
        s = self.log_scale.exp()
        return (
            self.gru.weight_ih[:, : self.n_weights].t().contiguous(),
            self.gru.weight_hh.t().contiguous(),
            self.gru.bias_hh,
            self.head1.weight.t().contiguous(),
            self.head1.bias,
            (self.head2.weight.t() * s).contiguous(),
            self.head2.bias * s,
        )

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        w_iw, w_hh, b_hh, w_h1, b_h1, w_h2s, b_h2s = ctx
        hd = h.shape[1]
        gi = torch.addmm(pre_t, w, w_iw)
        gh = torch.addmm(b_hh, h, w_hh)
        rz = torch.sigmoid(gi[:, : 2 * hd] + gh[:, : 2 * hd])
        r, z = rz[:, :hd], rz[:, hd:]
        n = torch.tanh(gi[:, 2 * hd :] + r * gh[:, 2 * hd :])
        h_new = n + z * (h - n)
        a = torch.relu(torch.addmm(b_h1, h_new, w_h1))
        return w + torch.addmm(b_h2s, a, w_h2s), h_new

    def step_into(
        self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context, work: dict[str, torch.Tensor], slot: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_iw, w_hh, b_hh, w_h1, b_h1, w_h2s, b_h2s = ctx
        b, hd = h.shape
        gi = torch.addmm(pre_t, w, w_iw, out=scratch(work, "gi", (b, 3 * hd), w))
        gh = torch.addmm(b_hh, h, w_hh, out=scratch(work, "gh", (b, 3 * hd), w))
        rz = torch.add(gi[:, : 2 * hd], gh[:, : 2 * hd], out=scratch(work, "rz", (b, 2 * hd), w)).sigmoid_()
        r, z = rz[:, :hd], rz[:, hd:]
        n = torch.mul(r, gh[:, 2 * hd :], out=scratch(work, "n", (b, hd), w))
        n = torch.add(gi[:, 2 * hd :], n, out=n).tanh_()
        d = torch.sub(h, n, out=scratch(work, "d", (b, hd), w))
        d = torch.mul(z, d, out=d)
        h_new = torch.add(n, d, out=scratch(work, f"h{slot}", (b, hd), w))
        a = torch.addmm(b_h1, h_new, w_h1, out=scratch(work, "a", (b, w_h1.shape[1]), w)).relu_()
        dw = torch.addmm(b_h2s, a, w_h2s, out=scratch(work, "dw", (b, w_h2s.shape[1]), w))
        return torch.add(w, dw, out=scratch(work, f"w{slot}", tuple(w.shape), w)), h_new

    def fused_rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gru_rollout(w, h, pre, *self.context(), rate=rate)
