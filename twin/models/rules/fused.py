"""Fused teacher-forced rollouts of the network rules, with hand-written backpropagation.

The generic :meth:`LearningRule.rollout <twin.models.rules.base.LearningRule.rollout>` records an
autograd graph of every step: at batch 32 the fit is bound by the per-step dispatch of ~70 small
operations (forward and backward) and the graph's bookkeeping, not by arithmetic. The functions
here compute the same rollouts as one :class:`torch.autograd.Function` each:

* the forward runs without a graph, writing every intermediate into preallocated time-major
  ``[n, B, ·]`` buffers with ``out=`` operations (no per-step allocation, list or stack);
* the backward is a hand-written reverse loop that carries only the gradients of the state
  (``w`` and ``h``) from step to step and stores the per-step gradients of the layers' inputs;
* every parameter gradient is then one large matmul (or sum) over all ``n × B`` steps at once,
  outside the loop.

They are mathematically identical to the step loops of :class:`~twin.models.rules.dnn.DNNRule`
and :class:`~twin.models.rules.rnn.RNNRule` (tests check losses and gradients against them); only
the floating-point summation order of the parameter gradients differs.
"""

from __future__ import annotations

from typing import Any

import torch

from twin.cancel import checkpoint


def _sum_to(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reduce a broadcast gradient ``g`` to the shape of ``like``."""
    return g.sum_to_size(like.shape) if g.shape != like.shape else g


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``[n, B, D]`` → ``[n B, D]``."""
    return t.reshape(-1, t.shape[-1])


class _MLPRollout(torch.autograd.Function):
    """``w_{t+1} = w_t + ρ ⊙ (b3 + relu(b2 + relu(pre_t + w_t W1) W2) W3)`` for ``t < n``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w0: torch.Tensor, pre: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
        w3: torch.Tensor, b3: torch.Tensor, rate: torch.Tensor | None,
    ) -> torch.Tensor:
        n, b, hd = pre.shape
        k = w0.shape[1]
        a1 = pre.new_empty(n, b, hd)
        a2 = pre.new_empty(n, b, hd)
        ws = pre.new_empty(n + 1, b, k)  # ws[t]: weights before step t
        d = pre.new_empty(n, b, k) if rate is not None else None
        ws[0] = w0
        # per-step views made once (unbind), not by indexing inside the loop
        pre_, a1_, a2_, ws_ = pre.unbind(0), a1.unbind(0), a2.unbind(0), ws.unbind(0)
        d_ = d.unbind(0) if d is not None else ()
        for t in range(n):
            checkpoint()  # a caller's deadline or cancellation stops the rollout here
            torch.addmm(pre_[t], ws_[t], w1, out=a1_[t]).relu_()
            torch.addmm(b2, a1_[t], w2, out=a2_[t]).relu_()
            if d is None:
                torch.addmm(b3, a2_[t], w3, out=ws_[t + 1]).add_(ws_[t])
            else:
                torch.addcmul(ws_[t], rate, torch.addmm(b3, a2_[t], w3, out=d_[t]), out=ws_[t + 1])
        ctx.save_for_backward(w0, w1, w2, w3, rate, ws, a1, a2, d)
        return ws[1:].clone()

    @staticmethod
    def backward(ctx: Any, g_ws: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        w0, w1, w2, w3, rate, ws, a1, a2, d = ctx.saved_tensors
        n = g_ws.shape[0]
        m1, m2 = (a1 > 0).to(a1.dtype), (a2 > 0).to(a2.dtype)
        g_w = g_ws.new_empty(g_ws.shape)  # total gradient reaching w_{t+1}
        g_d = g_w if rate is None else g_ws.new_empty(g_ws.shape)  # ... and Δw_t
        g_z2 = torch.empty_like(a2)
        g_z1 = torch.empty_like(a1)
        w1t, w2t, w3t = w1.t(), w2.t(), w3.t()
        gws_, gw_, gd_, gz2_, gz1_, m1_, m2_ = (x.unbind(0) for x in (g_ws, g_w, g_d, g_z2, g_z1, m1, m2))
        g_carry = torch.zeros_like(g_ws[0])
        for t in range(n - 1, -1, -1):
            torch.add(g_carry, gws_[t], out=gw_[t])
            if rate is not None:
                torch.mul(gw_[t], rate, out=gd_[t])
            torch.mm(gd_[t], w3t, out=gz2_[t]).mul_(m2_[t])
            torch.mm(gz2_[t], w2t, out=gz1_[t]).mul_(m1_[t])
            g_carry = torch.addmm(gw_[t], gz1_[t], w1t)
        gd, gz2, gz1 = _flat(g_d), _flat(g_z2), _flat(g_z1)
        g_rate = None
        if rate is not None and ctx.needs_input_grad[7]:
            g_rate = _sum_to((g_w * d).sum(0), rate)
        return (
            g_carry if ctx.needs_input_grad[0] else None,
            g_z1 if ctx.needs_input_grad[1] else None,
            _flat(ws[:-1]).t() @ gz1 if ctx.needs_input_grad[2] else None,
            _flat(a1).t() @ gz2 if ctx.needs_input_grad[3] else None,
            gz2.sum(0) if ctx.needs_input_grad[4] else None,
            _flat(a2).t() @ gd if ctx.needs_input_grad[5] else None,
            gd.sum(0) if ctx.needs_input_grad[6] else None,
            g_rate,
        )


def mlp_rollout(
    w: torch.Tensor, pre: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
    w3: torch.Tensor, b3: torch.Tensor, rate: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DNN rule's rollout ``w_{t+1} = w_t + ρ ⊙ (b3 + relu(b2 + relu(pre_t + w_t W1) W2) W3)``.

    Args:
        w: ``[B, K]`` weights before the first step.
        pre: ``[n, B, H]`` the inputs' part of the first layer, bias included.
        w1: ``[K, H]`` first layer's weights on ``w``.
        w2: ``[H, H]``, b2: ``[H]`` second layer.
        w3: ``[H, K]``, b3: ``[K]`` output layer (the update scale folded in).
        rate: optional ``[K]`` or ``[B, K]`` multiplier ``ρ`` of every update.

    Returns:
        ``[n, B, K]`` the weights after each step.
    """
    w = w.expand(pre.shape[1], -1).contiguous() if w.shape[0] != pre.shape[1] else w.contiguous()
    return _MLPRollout.apply(w, pre.contiguous(), w1.contiguous(), w2.contiguous(), b2, w3.contiguous(), b3, rate)


class _GRURollout(torch.autograd.Function):
    """A GRU state ``h`` and an MLP head on it updating ``w`` (see :func:`gru_rollout`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w0: torch.Tensor, h0: torch.Tensor, p4: torch.Tensor, wc: torch.Tensor, wh1: torch.Tensor,
        bh1: torch.Tensor, wh2: torch.Tensor, bh2: torch.Tensor, rate: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, b, h4 = p4.shape
        hd, k = h4 // 4, w0.shape[1]
        s = p4.new_empty(n + 1, b, k + hd)  # s[t] = [w_t, h_t], the state before step t
        z = p4.new_empty(n, b, 4 * hd)  # [rz pre-activation, gi_n, gh_n]
        rz = p4.new_empty(n, b, 2 * hd)
        nn_ = p4.new_empty(n, b, hd)
        a = p4.new_empty(n, b, hd)
        d = p4.new_empty(n, b, k)
        s[0, :, :k] = w0
        s[0, :, k:] = h0
        # per-step views made once (unbind), not by indexing inside the loop
        p4_, s_, z_, rz_, n_, a_, d_ = (x.unbind(0) for x in (p4, s, z, rz, nn_, a, d))
        sw_, sh_ = s[:, :, :k].unbind(0), s[:, :, k:].unbind(0)
        zrz_, zin_, zhn_ = z[..., : 2 * hd].unbind(0), z[..., 2 * hd : 3 * hd].unbind(0), z[..., 3 * hd :].unbind(0)
        r_, zg_ = rz[..., :hd].unbind(0), rz[..., hd:].unbind(0)
        for t in range(n):
            checkpoint()  # a caller's deadline or cancellation stops the rollout here
            torch.addmm(p4_[t], s_[t], wc, out=z_[t])
            torch.sigmoid(zrz_[t], out=rz_[t])
            torch.addcmul(zin_[t], r_[t], zhn_[t], out=n_[t]).tanh_()
            torch.addcmul(n_[t], zg_[t], sh_[t] - n_[t], out=sh_[t + 1])
            torch.addmm(bh1, sh_[t + 1], wh1, out=a_[t]).relu_()
            torch.addmm(bh2, a_[t], wh2, out=d_[t])
            if rate is None:
                torch.add(sw_[t], d_[t], out=sw_[t + 1])
            else:
                torch.addcmul(sw_[t], rate, d_[t], out=sw_[t + 1])
        ctx.save_for_backward(wc, wh1, wh2, rate, s, z, rz, nn_, a, d)
        return s[1:, :, :k].contiguous(), s[n, :, k:].clone()

    @staticmethod
    def backward(ctx: Any, g_ws: torch.Tensor, g_hn: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        wc, wh1, wh2, rate, s, z, rz, nn_, a, d = ctx.saved_tensors
        n, b, k = g_ws.shape
        hd = a.shape[-1]
        r, zg = rz[..., :hd], rz[..., hd:]
        h_in = s[:-1, :, k:]
        # the factors of each step's Jacobian that do not depend on the carried gradient
        c_n = (1 - zg) * (1 - nn_ * nn_)  # dh'/dn · dn/dzn
        c_z = (h_in - nn_) * zg * (1 - zg)  # dh'/dz · dz/dz_pre
        c_r = z[..., 3 * hd :] * r * (1 - r)  # dzn/dr · dr/dr_pre
        m = (a > 0).to(a.dtype)
        g_w = torch.empty_like(g_ws)
        g_d = g_w if rate is None else torch.empty_like(g_ws)
        g_a = torch.empty_like(a)
        g4 = torch.empty_like(z)
        wct, wh1t, wh2t = wc.t(), wh1.t(), wh2.t()
        gws_, gw_, gd_, ga_, m_, g4_, cn_, cz_, cr_, r_, zg_ = (
            x.unbind(0) for x in (g_ws, g_w, g_d, g_a, m, g4, c_n, c_z, c_r, r, zg)
        )
        g4r_, g4z_, g4n_, g4h_ = (g4[..., i * hd : (i + 1) * hd].unbind(0) for i in range(4))
        back = g_ws.new_empty(b, k + hd)
        gw_carry, gh_carry = back[:, :k].zero_(), back[:, k:].copy_(g_hn)
        for t in range(n - 1, -1, -1):
            torch.add(gw_carry, gws_[t], out=gw_[t])
            if rate is not None:
                torch.mul(gw_[t], rate, out=gd_[t])
            torch.mm(gd_[t], wh2t, out=ga_[t]).mul_(m_[t])
            gh_new = torch.addmm(gh_carry, ga_[t], wh1t)
            torch.mul(gh_new, cn_[t], out=g4n_[t])
            torch.mul(gh_new, cz_[t], out=g4z_[t])
            torch.mul(g4n_[t], cr_[t], out=g4r_[t])
            torch.mul(g4n_[t], r_[t], out=g4h_[t])
            back = torch.mm(g4_[t], wct)
            gw_carry = back[:, :k].add_(gw_[t])
            gh_carry = back[:, k:].addcmul_(gh_new, zg_[t])
        gd, ga = _flat(g_d), _flat(g_a)
        g_rate = None
        if rate is not None and ctx.needs_input_grad[8]:
            g_rate = _sum_to((g_w * d).sum(0), rate)
        return (
            gw_carry.contiguous() if ctx.needs_input_grad[0] else None,
            gh_carry if ctx.needs_input_grad[1] else None,
            g4 if ctx.needs_input_grad[2] else None,
            _flat(s[:-1]).t() @ _flat(g4) if ctx.needs_input_grad[3] else None,
            _flat(s[1:, :, k:]).t() @ ga if ctx.needs_input_grad[4] else None,
            ga.sum(0) if ctx.needs_input_grad[5] else None,
            _flat(a).t() @ gd if ctx.needs_input_grad[6] else None,
            gd.sum(0) if ctx.needs_input_grad[7] else None,
            g_rate,
        )


def gru_rollout(
    w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, w_iw: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
    w_h1: torch.Tensor, b_h1: torch.Tensor, w_h2: torch.Tensor, b_h2: torch.Tensor, rate: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The RNN rule's rollout: ``h_{t+1} = GRU(h_t, [w_t, u_t])``,
    ``w_{t+1} = w_t + ρ ⊙ (b_h2 + relu(b_h1 + h_{t+1} W_h1) W_h2)``.

    The GRU's two input matmuls (from ``w`` and from ``h``) are one: ``[w_t, h_t] W_c`` with
    ``W_c = [[W_iw^{rz}, W_iw^n, 0], [W_hh^{rz}, 0, W_hh^n]]``, whose columns give the reset and
    update gates' pre-activation, ``gi_n`` and ``gh_n``; the input part and the biases come in
    as one precomputed ``[n, B, 4H]`` tensor.

    Args:
        w: ``[B, K]`` weights before the first step.
        h: ``[B, H]`` GRU state before the first step.
        pre: ``[n, B, 3H]`` the inputs' part of the GRU's input gates, ``bias_ih`` included.
        w_iw: ``[K, 3H]`` GRU input weights on ``w``; w_hh: ``[H, 3H]``; b_hh: ``[3H]``.
        w_h1: ``[H, H]``, b_h1: ``[H]`` head's hidden layer.
        w_h2: ``[H, K]``, b_h2: ``[K]`` head's output layer (the update scale folded in).
        rate: optional ``[K]`` or ``[B, K]`` multiplier ``ρ`` of every update.

    Returns:
        ``(ws [n, B, K], h_n [B, H])``: the weights after each step and the final state.
    """
    n, b, h3 = pre.shape
    hd, k = h3 // 3, w_iw.shape[0]
    zeros_k = w_iw.new_zeros(k, hd)
    zeros_h = w_hh.new_zeros(hd, hd)
    wc = torch.cat(
        [torch.cat([w_iw[:, : 2 * hd], w_iw[:, 2 * hd :], zeros_k], 1), torch.cat([w_hh[:, : 2 * hd], zeros_h, w_hh[:, 2 * hd :]], 1)], 0
    )
    p4 = torch.cat([pre[..., : 2 * hd] + b_hh[: 2 * hd], pre[..., 2 * hd :], b_hh[2 * hd :].expand(n, b, hd)], -1)
    w = w.expand(b, -1) if w.shape[0] != b else w
    h = h.expand(b, -1) if h.shape[0] != b else h
    return _GRURollout.apply(w.contiguous(), h.contiguous(), p4, wc, w_h1.contiguous(), b_h1, w_h2.contiguous(), b_h2, rate)


__all__ = ["gru_rollout", "mlp_rollout"]
