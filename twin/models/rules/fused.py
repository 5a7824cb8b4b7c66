"""Fused teacher-forced rollouts of the network rules, with hand-written backpropagation.

The generic :meth:`LearningRule.rollout <twin.models.rules.base.LearningRule.rollout>` records an
autograd graph of every step: at batch 32 the fit is bound by the per-step dispatch of small
operations (36 aten operations per trial step forward + backward for ``dnn``, 81 for ``dnn_delta``,
78 for ``rnn``) and the graph's bookkeeping, not by arithmetic. The functions here compute the same
rollouts as one :class:`torch.autograd.Function` each (10, 22 and 17 operations per step;
``bench/fit_throughput.py --fused-only`` counts them):

* the forward runs without a graph, writing every intermediate into preallocated time-major
  ``[n, B, ·]`` buffers with ``out=`` operations (no per-step allocation, list or stack);
* the backward is a hand-written reverse loop that carries only the gradients of the state
  (``w`` and ``h``) from step to step and stores the per-step gradients of the layers' inputs;
* every parameter gradient is then one large matmul (or sum) over all ``n × B`` steps at once,
  outside the loop.

Above ~100 animals per batch the fit is no longer dispatch-bound, and the large passes over the
``[n, B, H]`` buffers cost about what they save (measured on CPU: no gain for ``dnn`` at 200
animals, a loss for ``rnn``; see ``bench/results/fit_throughput_fused.md``), so batches above
:data:`~twin.models.rules.base.FUSED_MAX_BATCH` animals take the step loop.

They are mathematically identical to the step loops of :class:`~twin.models.rules.dnn.DNNRule`,
:class:`~twin.models.rules.dnn_delta.DNNDeltaRule` (without its mirror symmetry, which keeps the
loop) and :class:`~twin.models.rules.rnn.RNNRule` (tests check losses and gradients against them); only
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
    """``w_{t+1} = w_t + ρ ⊙ ([a2_t, 1] W3')``, ``a2_t = relu(b2 + relu(pre_t + w_t W1) W2)``,
    ``W3' = [W3; b3]`` (the output bias as the weight of a constant-1 column of ``a2``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w0: torch.Tensor, pre: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
        w3b: torch.Tensor, rate: torch.Tensor | None,
    ) -> torch.Tensor:
        n, b, hd = pre.shape
        k = w0.shape[1]
        a1 = pre.new_empty(n, b, hd)
        a2 = pre.new_empty(n, b, hd + 1)
        a2[..., hd] = 1.0
        ws = pre.new_empty(n + 1, b, k)  # ws[t]: weights before step t
        d = pre.new_empty(n, b, k) if rate is not None else None
        ws[0] = w0
        # per-step views made once (unbind), not by indexing inside the loop
        pre_, a1_, a2_, ws_ = pre.unbind(0), a1.unbind(0), a2.unbind(0), ws.unbind(0)
        a2h_ = a2[..., :hd].unbind(0)
        d_ = d.unbind(0) if d is not None else ()
        for t in range(n):
            checkpoint()  # a caller's deadline or cancellation stops the rollout here
            torch.addmm(pre_[t], ws_[t], w1, out=a1_[t]).relu_()
            torch.addmm(b2, a1_[t], w2, out=a2h_[t]).relu_()
            if d is None:
                torch.addmm(ws_[t], a2_[t], w3b, out=ws_[t + 1])
            else:
                torch.addcmul(ws_[t], rate, torch.mm(a2_[t], w3b, out=d_[t]), out=ws_[t + 1])
        ctx.save_for_backward(w1, w2, w3b, rate, ws, a1, a2, d)
        return ws[1:].clone()

    @staticmethod
    def backward(ctx: Any, g_ws: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        w1, w2, w3b, rate, ws, a1, a2, d = ctx.saved_tensors
        n, b, k = g_ws.shape
        hd = a1.shape[-1]
        m1, m2 = a1 > 0, a2[..., :hd] > 0  # the ReLUs' derivatives, as bool masks
        w1t, w2t, w3t = w1.t(), w2.t(), w3b[:hd].t()
        # the gradient reaching w_{t+1} is G_t (every later output's, through the identity
        # carry: a reversed cumulative sum) plus E_t (through the later steps' networks), and
        # only E_t needs the loop: g_z2_t = ((G_t + E_t) ρ) W3ᵀ ⊙ m2_t with (G ρ) W3ᵀ precomputed
        g_cum = g_ws.flip(0).cumsum(0).flip(0)
        gr = g_cum if rate is None else g_cum * rate
        p = (_flat(gr) @ w3t).reshape(n, b, hd)
        e = g_ws.new_zeros(n + 1, b, k)  # e[t + 1] = E_t; e[0] reaches w_0
        g_z2 = torch.empty_like(a1)
        g_z1 = torch.empty_like(a1)
        p_, e_, gz2_, gz1_, m1_, m2_ = (x.unbind(0) for x in (p, e, g_z2, g_z1, m1, m2))
        for t in range(n - 1, -1, -1):
            e_t = e_[t + 1] if rate is None else e_[t + 1] * rate
            torch.addmm(p_[t], e_t, w3t, out=gz2_[t]).mul_(m2_[t])
            torch.mm(gz2_[t], w2t, out=gz1_[t]).mul_(m1_[t])
            torch.addmm(e_[t + 1], gz1_[t], w1t, out=e_[t])
        g_w = g_cum + e[1:]
        g_d = g_w if rate is None else g_w * rate
        gz2, gz1 = _flat(g_z2), _flat(g_z1)
        g_rate = None
        if rate is not None and ctx.needs_input_grad[6]:
            g_rate = _sum_to((g_w * d).sum(0), rate)
        return (
            g_cum[0] + e[0] if ctx.needs_input_grad[0] else None,
            g_z1 if ctx.needs_input_grad[1] else None,
            _flat(ws[:-1]).t() @ gz1 if ctx.needs_input_grad[2] else None,
            _flat(a1).t() @ gz2 if ctx.needs_input_grad[3] else None,
            gz2.sum(0) if ctx.needs_input_grad[4] else None,
            _flat(a2).t() @ _flat(g_d) if ctx.needs_input_grad[5] else None,
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
    w3b = torch.cat([w3, b3.unsqueeze(0)], 0)  # [H + 1, K]
    return _MLPRollout.apply(w, pre.contiguous(), w1.contiguous(), w2.contiguous(), b2, w3b, rate)


class _GRURollout(torch.autograd.Function):
    """A GRU state ``h`` and an MLP head on it updating ``w`` (see :func:`gru_rollout`).

    ``z_t = P4_t + [w_t, h_t] W_c`` holds, in blocks of ``H`` columns, ``gi_n``, the update and
    reset gates' pre-activations and ``gh_n``; the head's output bias is the weight of a
    constant-1 column of its hidden layer ``a``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w0: torch.Tensor, h0: torch.Tensor, p4: torch.Tensor, wc: torch.Tensor, wh1: torch.Tensor,
        bh1: torch.Tensor, wh2b: torch.Tensor, rate: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, b, h4 = p4.shape
        hd, k = h4 // 4, w0.shape[1]
        s = p4.new_empty(n + 1, b, k + hd)  # s[t] = [w_t, h_t], the state before step t
        z = p4.new_empty(n, b, 4 * hd)
        zr = p4.new_empty(n, b, 2 * hd)  # update gate, reset gate
        nn_ = p4.new_empty(n, b, hd)
        a = p4.new_empty(n, b, hd + 1)
        a[..., hd] = 1.0
        d = p4.new_empty(n, b, k) if rate is not None else None
        s[0, :, :k] = w0
        s[0, :, k:] = h0
        # per-step views made once (unbind), not by indexing inside the loop
        p4_, s_, z_, zr_, n_, a_ = (x.unbind(0) for x in (p4, s, z, zr, nn_, a))
        d_ = d.unbind(0) if d is not None else ()
        sw_, sh_, ah_ = s[:, :, :k].unbind(0), s[:, :, k:].unbind(0), a[..., :hd].unbind(0)
        zin_, zzr_, zhn_ = z[..., :hd].unbind(0), z[..., hd : 3 * hd].unbind(0), z[..., 3 * hd :].unbind(0)
        ug_, r_ = zr[..., :hd].unbind(0), zr[..., hd:].unbind(0)
        for t in range(n):
            checkpoint()  # a caller's deadline or cancellation stops the rollout here
            torch.addmm(p4_[t], s_[t], wc, out=z_[t])
            torch.sigmoid(zzr_[t], out=zr_[t])
            torch.addcmul(zin_[t], r_[t], zhn_[t], out=n_[t]).tanh_()
            torch.addcmul(n_[t], ug_[t], sh_[t] - n_[t], out=sh_[t + 1])
            torch.addmm(bh1, sh_[t + 1], wh1, out=ah_[t]).relu_()
            if d is None:
                torch.addmm(sw_[t], a_[t], wh2b, out=sw_[t + 1])
            else:
                torch.addcmul(sw_[t], rate, torch.mm(a_[t], wh2b, out=d_[t]), out=sw_[t + 1])
        ctx.save_for_backward(wc, wh1, wh2b, rate, s, z, zr, nn_, a, d)
        return s[1:, :, :k].contiguous(), s[n, :, k:].clone()

    @staticmethod
    def backward(ctx: Any, g_ws: torch.Tensor, g_hn: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        wc, wh1, wh2b, rate, s, z, zr, nn_, a, d = ctx.saved_tensors
        n, b, k = g_ws.shape
        hd = wh1.shape[0]
        ug, r = zr[..., :hd], zr[..., hd:]
        h_in = s[:-1, :, k:]
        # the factors of each step's Jacobian that do not depend on the carried gradient:
        # [∂h'/∂gi_n, ∂h'/∂(update pre-act.)] and [∂zn/∂(reset pre-act.), ∂zn/∂gh_n]
        c1 = nn_.new_empty(n, b, 2, hd)
        torch.mul(1 - ug, 1 - nn_ * nn_, out=c1[:, :, 0])
        torch.mul((h_in - nn_) * ug, 1 - ug, out=c1[:, :, 1])
        c2 = nn_.new_empty(n, b, 2, hd)
        torch.mul(z[..., 3 * hd :] * r, 1 - r, out=c2[:, :, 0])
        c2[:, :, 1] = r
        m = a[..., :hd] > 0  # the ReLU's derivative, as a bool mask
        wct, wh1t, wh2t = wc.t(), wh1.t(), wh2b[:hd].t()
        # as in _MLPRollout: the w-gradient is G_t (reversed cumulative sum of the outputs')
        # plus E_t (through the later steps), and only E_t, with the h-gradient, needs the loop;
        # x[t + 1] = [E_t, gradient reaching h_{t+1} from later steps]
        g_cum = g_ws.flip(0).cumsum(0).flip(0)
        gr = g_cum if rate is None else g_cum * rate
        p = (_flat(gr) @ wh2t).reshape(n, b, hd)
        x = g_ws.new_zeros(n + 1, b, k + hd)
        x[n, :, k:] = g_hn
        g_a = torch.empty_like(nn_)
        g4 = torch.empty_like(z)
        g4v = g4.view(n, b, 4, hd)
        p_, x_, ga_, m_, g4_, c1_, c2_, ug_ = (y.unbind(0) for y in (p, x, g_a, m, g4, c1, c2, ug))
        xw_, xh_ = x[..., :k].unbind(0), x[..., k:].unbind(0)
        g4a_, g4b_, g4n_ = g4v[:, :, 0:2].unbind(0), g4v[:, :, 2:4].unbind(0), g4v[:, :, 0:1].unbind(0)
        for t in range(n - 1, -1, -1):
            e_t = xw_[t + 1] if rate is None else xw_[t + 1] * rate
            torch.addmm(p_[t], e_t, wh2t, out=ga_[t]).mul_(m_[t])
            gh_new = torch.addmm(xh_[t + 1], ga_[t], wh1t)
            torch.mul(gh_new.unsqueeze(1), c1_[t], out=g4a_[t])
            torch.mul(g4n_[t], c2_[t], out=g4b_[t])
            torch.mul(gh_new, ug_[t], out=xh_[t + 1])
            torch.addmm(x_[t + 1], g4_[t], wct, out=x_[t])
        g_w = g_cum + x[1:, :, :k]
        g_d = g_w if rate is None else g_w * rate
        ga = _flat(g_a)
        g_rate = None
        if rate is not None and ctx.needs_input_grad[7]:
            g_rate = _sum_to((g_w * d).sum(0), rate)
        return (
            g_cum[0] + x[0, :, :k] if ctx.needs_input_grad[0] else None,
            x[0, :, k:].clone() if ctx.needs_input_grad[1] else None,
            g4 if ctx.needs_input_grad[2] else None,
            _flat(s[:-1]).t() @ _flat(g4) if ctx.needs_input_grad[3] else None,
            _flat(s[1:, :, k:]).t() @ ga if ctx.needs_input_grad[4] else None,
            ga.sum(0) if ctx.needs_input_grad[5] else None,
            _flat(a).t() @ _flat(g_d) if ctx.needs_input_grad[6] else None,
            g_rate,
        )


def gru_rollout(
    w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, w_iw: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
    w_h1: torch.Tensor, b_h1: torch.Tensor, w_h2: torch.Tensor, b_h2: torch.Tensor, rate: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The RNN rule's rollout: ``h_{t+1} = GRU(h_t, [w_t, u_t])``,
    ``w_{t+1} = w_t + ρ ⊙ (b_h2 + relu(b_h1 + h_{t+1} W_h1) W_h2)``.

    The GRU's two input matmuls (from ``w`` and from ``h``) are one: ``[w_t, h_t] W_c`` with
    ``W_c = [[W_iw^n, W_iw^z, W_iw^r, 0], [0, W_hh^z, W_hh^r, W_hh^n]]``, whose column blocks give
    ``gi_n``, the update and reset gates' pre-activations and ``gh_n``; the input part and the
    biases come in as one precomputed ``[n, B, 4H]`` tensor.

    Args:
        w: ``[B, K]`` weights before the first step.
        h: ``[B, H]`` GRU state before the first step.
        pre: ``[n, B, 3H]`` the inputs' part of the GRU's input gates (PyTorch's order: reset,
            update, new), ``bias_ih`` included.
        w_iw: ``[K, 3H]`` GRU input weights on ``w``; w_hh: ``[H, 3H]``; b_hh: ``[3H]``.
        w_h1: ``[H, H]``, b_h1: ``[H]`` head's hidden layer.
        w_h2: ``[H, K]``, b_h2: ``[K]`` head's output layer (the update scale folded in).
        rate: optional ``[K]`` or ``[B, K]`` multiplier ``ρ`` of every update.

    Returns:
        ``(ws [n, B, K], h_n [B, H])``: the weights after each step and the final state.
    """
    n, b, h3 = pre.shape
    hd, k = h3 // 3, w_iw.shape[0]
    r_, z_, n_ = slice(0, hd), slice(hd, 2 * hd), slice(2 * hd, 3 * hd)
    wc = torch.cat(
        [
            torch.cat([w_iw[:, n_], w_iw[:, z_], w_iw[:, r_], w_iw.new_zeros(k, hd)], 1),
            torch.cat([w_hh.new_zeros(hd, hd), w_hh[:, z_], w_hh[:, r_], w_hh[:, n_]], 1),
        ],
        0,
    )
    p4 = torch.cat([pre[..., n_], pre[..., z_] + b_hh[z_], pre[..., r_] + b_hh[r_], b_hh[n_].expand(n, b, hd)], -1)
    w = w.expand(b, -1) if w.shape[0] != b else w
    h = h.expand(b, -1) if h.shape[0] != b else h
    wh2b = torch.cat([w_h2, b_h2.unsqueeze(0)], 0)  # [H + 1, K]
    return _GRURollout.apply(w.contiguous(), h.contiguous(), p4, wc, w_h1.contiguous(), b_h1, wh2b, rate)


class _DeltaRollout(torch.autograd.Function):
    """``w_{t+1} = w_t + ρ ⊙ (g_t ⊙ x_t + d_t · c_t)``, ``[g_t, d_t] = [a2_t, 1] W3'``,
    ``a2_t = relu(b2 + relu(pre_t + p_t v + w_t W1) W2)``, ``p_t = sigmoid(w_t · x_t)``
    (see :func:`delta_rollout`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w0: torch.Tensor, pre: torch.Tensor, x: torch.Tensor, where: torch.Tensor, w1: torch.Tensor,
        v: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w3b: torch.Tensor, rate: torch.Tensor | None,
    ) -> torch.Tensor:
        n, b, hd = pre.shape
        k = w0.shape[1]
        ws = pre.new_empty(n + 1, b, k)  # ws[t]: weights before step t
        ps = pre.new_empty(n, b, 1)  # p(right) at step t
        a1 = pre.new_empty(n, b, hd)
        a2 = pre.new_empty(n, b, hd + 1)
        a2[..., hd] = 1.0
        gd = pre.new_empty(n, b, 2 * k)  # [gain, drift]
        delta = pre.new_empty(n, b, k)  # the update before the rate
        wx = pre.new_empty(b, k)
        ws[0] = w0
        # per-step views made once (unbind), not by indexing inside the loop
        pre_, x_, c_, ws_, ps_, a1_, a2_, gd_, dl_ = (t.unbind(0) for t in (pre, x, where, ws, ps, a1, a2, gd, delta))
        a2h_, g_, d_ = a2[..., :hd].unbind(0), gd[..., :k].unbind(0), gd[..., k:].unbind(0)
        for t in range(n):
            checkpoint()  # a caller's deadline or cancellation stops the rollout here
            torch.mul(ws_[t], x_[t], out=wx)
            torch.sum(wx, -1, keepdim=True, out=ps_[t]).sigmoid_()
            torch.addmm(pre_[t], ws_[t], w1, out=a1_[t]).addcmul_(ps_[t], v).relu_()
            torch.addmm(b2, a1_[t], w2, out=a2h_[t]).relu_()
            torch.mm(a2_[t], w3b, out=gd_[t])
            torch.mul(g_[t], x_[t], out=dl_[t]).addcmul_(d_[t], c_[t])
            if rate is None:
                torch.add(ws_[t], dl_[t], out=ws_[t + 1])
            else:
                torch.addcmul(ws_[t], rate, dl_[t], out=ws_[t + 1])
        ctx.save_for_backward(x, where, w1, v, w2, w3b, rate, ws, ps, a1, a2, gd, delta)
        return ws[1:].clone()

    @staticmethod
    def backward(ctx: Any, g_ws: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, where, w1, v, w2, w3b, rate, ws, ps, a1, a2, gd, delta = ctx.saved_tensors
        n, b, k = g_ws.shape
        hd = a1.shape[-1]
        m1, m2 = a1 > 0, a2[..., :hd] > 0  # the ReLUs' derivatives, as bool masks
        dp = ps * (1 - ps)  # the sigmoid's derivative
        w1t, w2t, w3t = w1.t(), w2.t(), w3b[:hd].t()  # w3t: [2K, H]
        vc = v.unsqueeze(1)  # [H, 1]
        # as in _MLPRollout: the gradient reaching w_{t+1} is G_t (a reversed cumulative sum of
        # the outputs') plus E_t (through the later steps' networks); only E_t needs the loop.
        # The update is linear in [g, d] with per-step factors [x_t, c_t], so the G part of
        # every step's network input gradient is one matmul outside the loop.
        xc = torch.stack([x, where.expand(n, b, k)], 2)  # [n, B, 2, K]
        g_cum = g_ws.flip(0).cumsum(0).flip(0)
        gr = g_cum if rate is None else g_cum * rate
        p = (_flat((gr.unsqueeze(2) * xc).reshape(n, b, 2 * k)) @ w3t).reshape(n, b, hd)
        e = g_ws.new_zeros(n + 1, b, k)  # e[t + 1] = E_t; e[0] reaches w_0
        g_z2 = torch.empty_like(a1)
        g_z1 = torch.empty_like(a1)
        g_s = torch.empty_like(ps)  # the gradient of w_t · x_t
        g_out = g_ws.new_empty(b, 2, k)
        p_, e_, gz2_, gz1_, gs_, m1_, m2_, dp_, x_, xc_ = (
            t.unbind(0) for t in (p, e, g_z2, g_z1, g_s, m1, m2, dp, x, xc)
        )
        g_outf = g_out.view(b, 2 * k)
        for t in range(n - 1, -1, -1):
            e_t = e_[t + 1] if rate is None else e_[t + 1] * rate
            torch.mul(e_t.unsqueeze(1), xc_[t], out=g_out)
            torch.addmm(p_[t], g_outf, w3t, out=gz2_[t]).mul_(m2_[t])
            torch.mm(gz2_[t], w2t, out=gz1_[t]).mul_(m1_[t])
            torch.mm(gz1_[t], vc, out=gs_[t]).mul_(dp_[t])
            torch.addmm(e_[t + 1], gz1_[t], w1t, out=e_[t]).addcmul_(gs_[t], x_[t])
        g_w = g_cum + e[1:]  # the whole gradient reaching w_{t+1}
        g_dl = g_w if rate is None else g_w * rate  # ... reaching the update
        g_gd = (g_dl.unsqueeze(2) * xc).reshape(n, b, 2 * k)
        gz2, gz1 = _flat(g_z2), _flat(g_z1)
        g_pre = g_x = g_where = g_rate = None
        if ctx.needs_input_grad[1]:
            g_pre = g_z1
        if ctx.needs_input_grad[2]:
            g_x = g_dl * gd[..., :k] + g_s * ws[:-1]
        if ctx.needs_input_grad[3]:
            g_where = _sum_to((g_dl * gd[..., k:]).sum(-1, keepdim=True), where)
        if rate is not None and ctx.needs_input_grad[9]:
            g_rate = _sum_to((g_w * delta).sum(0), rate)
        return (
            g_cum[0] + e[0] if ctx.needs_input_grad[0] else None,
            g_pre,
            g_x,
            g_where,
            _flat(ws[:-1]).t() @ gz1 if ctx.needs_input_grad[4] else None,
            (gz1 * _flat(ps)).sum(0) if ctx.needs_input_grad[5] else None,
            _flat(a1).t() @ gz2 if ctx.needs_input_grad[6] else None,
            gz2.sum(0) if ctx.needs_input_grad[7] else None,
            _flat(a2).t() @ _flat(g_gd) if ctx.needs_input_grad[8] else None,
            g_rate,
        )


def delta_rollout(
    w: torch.Tensor, pre: torch.Tensor, x: torch.Tensor, where: torch.Tensor, w1: torch.Tensor, v: torch.Tensor,
    w2: torch.Tensor, b2: torch.Tensor, wg: torch.Tensor, bg: torch.Tensor, wd: torch.Tensor, bd: torch.Tensor,
    rate: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DNN-delta rule's rollout ``w_{t+1} = w_t + ρ ⊙ (g_t ⊙ x_t + d_t c_t)`` with
    ``[g_t, d_t] = [bg, bd] + a2_t [Wg, Wd]``, ``a2_t = relu(b2 + relu(pre_t + p_t v + w_t W1) W2)``
    and ``p_t = sigmoid(w_t · x_t)`` (:class:`~twin.models.rules.dnn_delta.DNNDeltaRule`, without
    its mirror symmetry).

    Args:
        w: ``[B, K]`` weights before the first step.
        pre: ``[n, B, H]`` the trial inputs' part of the first layer, bias included.
        x: ``[n, B, K]`` the trials' features; where: ``[n, B, 1]`` where the drift acts (``c_t``).
        w1: ``[K, H]`` first layer's weights on ``w``; v: ``[H]`` its weights on ``p``.
        w2: ``[H, H]``, b2: ``[H]`` second layer.
        wg, wd: ``[H, K]``, bg, bd: ``[K]`` the gain and drift heads (the update scale folded in).
        rate: optional ``[K]`` or ``[B, K]`` multiplier ``ρ`` of every update.

    Returns:
        ``[n, B, K]`` the weights after each step.
    """
    w = w.expand(pre.shape[1], -1).contiguous() if w.shape[0] != pre.shape[1] else w.contiguous()
    w3b = torch.cat([torch.cat([wg, wd], 1), torch.cat([bg, bd]).unsqueeze(0)], 0)  # [H + 1, 2K]
    return _DeltaRollout.apply(
        w, pre.contiguous(), x.contiguous(), where.contiguous(), w1.contiguous(), v, w2.contiguous(), b2, w3b, rate
    )


__all__ = ["delta_rollout", "gru_rollout", "mlp_rollout"]
