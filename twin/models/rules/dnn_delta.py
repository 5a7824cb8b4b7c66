"""DNN-delta: a Markovian learned rule with the structure of a delta rule.

Every gradient-like learning rule moves each weight in proportion to its input:
REINFORCE's ``α (r − b)(y − p) x``, a prediction-error rule's ``α (a − p) x``. A free MLP
(:mod:`twin.models.rules.dnn`) can represent such updates only approximately, and fitted on choices
alone it tends to settle on a mean drift that ignores what was shown (see
``experiments/results/recovery.md``); a twin that ignores the stimulus cannot tell how a
different curriculum would change learning. This rule keeps the MLP's freedom for the *gain* of
the update and fixes its *direction*: the gain is a learned function of the trial's outcome, the
policy's own p(right) and the current weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from twin.data.features import Mirror
from twin.models.rules.base import Context, LearningRule, NetworkConfig, UpdateInputs
from twin.models.rules.fused import delta_rollout
from twin.models.rules.registry import register


@dataclass(frozen=True)
class DNNDeltaConfig(NetworkConfig):
    """Structural hyperparameters of ``dnn_delta``.

    Attributes:
        hidden_size: width of the MLP layers.
        scale_init: initial value of the learnable per-weight update scale ``s``.
        within_session_drift: add the free drift term after every trial; if False the drift acts
            only overnight, into a session's first trial, and within a session every update is
            proportional to the trial's inputs.
        mirror_symmetric: make the update left/right mirror-equivariant: the update after a trial
            equals the mirror image of the update the mirrored animal would make after the
            mirrored trial, as for REINFORCE and prediction-error rules.
    """

    within_session_drift: bool = True
    mirror_symmetric: bool = False


@register("dnn_delta")
class DNNDeltaRule(LearningRule):
    """Delta-structured DNN rule.

    ``Δw_t = s ⊙ (g_θ(u_t) ⊙ x_t + d_θ(u_t))`` with ``u_t = (w_t, p_t, x_t, y_t, r_t, a_t, ss_{t+1})``,
    ``p_t = sigmoid(w_t · x_t)`` the policy's p(right), ``y, r, a`` as ±1, ``ss_{t+1}`` the
    overnight flag; ``[g_θ, d_θ]`` is one MLP ``(2K + 5) → H → H → 2K`` (ReLU): ``g`` the per-weight
    gain of the input-proportional update, ``d`` a per-weight drift (overnight changes, forgetting).
    ``s = exp(log s)`` is a learnable per-weight scale initialised at ``config.scale_init``. With
    ``config.within_session_drift=False`` the drift is multiplied by ``ss_{t+1}``: it acts only
    overnight, and within a session the update is purely input-proportional.

    With ``config.mirror_symmetric`` the update is made left/right mirror-equivariant by averaging
    it with the mirror image of the update after the mirrored trial (:class:`twin.data.features.Mirror`:
    ``x' = N x``, ``w' = M w``, choice, rewarded side and ``p`` mirrored, reward kept):
    ``Δw^sym(w, u) = ½ (Δw(w, u) + M Δw(M w, u'))``, which keeps the delta form with gain
    ``½ (g(u) − P g(u'))`` (``P`` the feature permutation) and drift ``½ (d(u) + M d(u'))``. Every
    REINFORCE and prediction-error rule is mirror-equivariant; without the constraint, fits on
    choices have been seen to trade a too-large update after correct trials on one side against a
    too-small one on the other side (experiments/results/recovery_analysis.md).
    Markovian: no hidden state. REINFORCE (``g = α (r − b)(y − p)``, ``d = 0``) and prediction-error
    rules are special cases.
    """

    config_type = DNNDeltaConfig
    config: DNNDeltaConfig

    def __init__(self, n_weights: int, config: DNNDeltaConfig | None = None) -> None:
        super().__init__(n_weights, config)
        k, hdim = n_weights, self.config.hidden_size
        self.fc1 = nn.Linear(2 * k + 5, hdim)
        self.fc2 = nn.Linear(hdim, hdim)
        self.fc3 = nn.Linear(hdim, 2 * k)
        self.log_scale = nn.Parameter(torch.full((k,), math.log(self.config.scale_init)))
        self.mirror: Mirror | None = None

    @property
    def needs_mirror(self) -> bool:
        return self.config.mirror_symmetric

    def use_mirror(self, mirror: Mirror) -> None:
        if len(mirror.perm) != self.n_weights:
            raise ValueError(f"mirror of {len(mirror.perm)} features for a rule of {self.n_weights} weights")
        if self.config.mirror_symmetric:
            self.mirror = mirror

    def _hidden_from_inputs(self, u: torch.Tensor) -> torch.Tensor:
        """``[B, T, K + 4]`` standard inputs → ``[T, B, H]`` their part of the first layer."""
        u = u.transpose(0, 1)
        w_u = self.fc1.weight[:, self.n_weights + 1 :]
        return torch.addmm(self.fc1.bias, u.reshape(-1, u.shape[-1]), w_u.t()).reshape(u.shape[0], u.shape[1], -1)

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        u = inputs.standard_vector()  # [B, T, K+4]: x, y, r, a (±1), ss
        parts = [self._hidden_from_inputs(u)]
        if self.config.mirror_symmetric:
            if self.mirror is None:
                raise ValueError("a mirror-symmetric dnn_delta needs its features' mirror: build it as a LearnerModel")
            k = self.n_weights
            flip = u.new_tensor([-1.0, 1.0, -1.0, 1.0])  # choice and rewarded side mirror; reward and ss stay
            parts.append(self._hidden_from_inputs(torch.cat([self.mirror.features(u[..., :k]), u[..., k:] * flip], -1)))
        # where the drift may act: every trial, or only into a new session's first trial
        where = torch.ones_like(inputs.y) if self.config.within_session_drift else inputs.next_session_start
        parts += [inputs.x.transpose(0, 1), where.transpose(0, 1).unsqueeze(-1)]
        return torch.cat(parts, -1).contiguous()  # [T, B, H (+ H mirrored) + K + 1]

    def context(self) -> Context:
        k = self.n_weights
        s = self.log_scale.exp()
        w3 = self.fc3.weight.t()  # [H, 2K]
        b3 = self.fc3.bias
        # the mirror's permutation and weight signs as tensors, built once per rollout, not per step
        mirror: Context = ()
        if self.mirror is not None:
            mirror = (torch.tensor(self.mirror.perm, device=s.device), s.new_tensor(self.mirror.w_sign))
        return (
            self.fc1.weight[:, :k].t().contiguous(),  # from w
            self.fc1.weight[:, k],  # from p
            self.fc2.weight.t().contiguous(),
            self.fc2.bias,
            (w3[:, :k] * s).contiguous(),
            b3[:k] * s,
            (w3[:, k:] * s).contiguous(),
            b3[k:] * s,
        ) + mirror

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        w1w, w1p, w2, b2, wg, bg, wd, bd, *mirror = ctx
        hdim, k = w2.shape[0], self.n_weights
        x, where = pre_t[:, -k - 1 : -1], pre_t[:, -1:]
        p = torch.sigmoid((w * x).sum(-1, keepdim=True))
        if not mirror:
            h_in, w_in = pre_t[:, :hdim] + p * w1p, w
        else:  # the trial and its mirror image in one batch: mirrored weights, p → 1 − p
            perm, w_sign = mirror
            h_in = torch.cat([pre_t[:, :hdim] + p * w1p, pre_t[:, hdim : 2 * hdim] + (1 - p) * w1p])
            w_in = torch.cat([w, w.index_select(1, perm) * w_sign])
        a1 = torch.relu(torch.addmm(h_in, w_in, w1w))
        a2 = torch.relu(torch.addmm(b2, a1, w2))
        gain = torch.addmm(bg, a2, wg)
        drift = torch.addmm(bd, a2, wd)
        if mirror:
            n = w.shape[0]
            gain = 0.5 * (gain[:n] - gain[n:].index_select(1, perm))
            drift = 0.5 * (drift[:n] + drift[n:].index_select(1, perm) * w_sign)
        return w + gain * x + drift * where, h

    def fused_rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.mirror is not None:  # the mirrored pass has no fused form: the step loop runs
            return None
        hdim, k = self.config.hidden_size, self.n_weights
        return delta_rollout(w, pre[..., :hdim], pre[..., hdim : hdim + k], pre[..., hdim + k :], *self.context(), rate=rate), h
