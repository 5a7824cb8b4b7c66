"""REINFORCE with one added mechanism each: the rules behind the ground-truth families that stress
what one-step likelihood does not pin down (issue 16, item 6).

Each rule is REINFORCE with per-weight baselines (:class:`~twin.models.rules.reinforce.ReinforceRule`,
``Δ_t = α ⊙ (r_t − b) ⊙ (y_t − p_t) x_t``) plus one mechanism with per-weight parameters, so that a
cohort can switch it on for one weight only (the bias, say) and a fit can find where it acts:

* ``reinforce_perseveration``: an exponential choice-history kernel carried by the weights;
* ``reinforce_bounded``: soft bounds on the weights, so learning plateaus;
* ``reinforce_forgetting``: part of the weights is lost between sessions.

They are models in their own right (fittable like ``reinforce``), but exist mainly as ground truths
(:mod:`twin.sim.agents`).
"""

from __future__ import annotations

import torch
from torch import nn

from twin.models.rules.base import Context, UpdateInputs
from twin.models.rules.registry import register
from twin.models.rules.reinforce import ReinforceConfig, ReinforceRule, _policy_p


def _as_weights(values: list[float] | float, n_weights: int) -> torch.Tensor:
    """``[K]`` float tensor of per-weight values (a scalar is repeated)."""
    t = torch.as_tensor(values, dtype=torch.float32)
    return t.expand(n_weights).clone() if t.dim() == 0 else t


@register("reinforce_perseveration")
class PerseverationReinforceRule(ReinforceRule):
    """REINFORCE plus an exponential choice-history kernel (perseveration).

    ``c_{t+1} = c_t + η ((2 y_t − 1) − c_t)`` is a trace of past choices (±1; the recurrent state,
    carried across sessions), and

    ``w_{t+1} = w_t + α ⊙ (r_t − b) ⊙ (y_t − p_t) x_t + φ ⊙ (c_{t+1} − c_t)``,

    so that ``w_t = u_t + φ c_t``: weights ``u`` learnt by REINFORCE plus ``φ`` times the trace
    (starting at ``c_0 = 0``). On the bias, choice ``t − k`` adds ``φ η (1 − η)^{k−1}`` to the
    log-odds of repeating it, whatever its outcome. Per-weight ``φ`` (0.1 at initialisation), one
    ``η ∈ [0, 1]``.
    """

    markovian = False

    def __init__(self, n_weights: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(n_weights, config)
        self.kernel = nn.Parameter(torch.full((n_weights,), 0.1))
        self.kernel_rate = nn.Parameter(torch.tensor(0.2))

    def set_kernel(self, kernel: list[float] | float, kernel_rate: float) -> "PerseverationReinforceRule":
        """Fix the kernel (ground-truth use; :meth:`set_parameters` sets ``α`` and ``b``); returns ``self``."""
        with torch.no_grad():
            self.kernel.copy_(_as_weights(kernel, self.n_weights))
            self.kernel_rate.fill_(kernel_rate)
        return self

    @property
    def state_size(self) -> int:
        return 1

    def context(self) -> Context:
        return (self.kernel, self.kernel_rate.clamp(0.0, 1.0))

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_weights
        phi, eta = ctx
        a, x, y = pre_t[:, :k], pre_t[:, k : 2 * k], pre_t[:, 2 * k :]
        c_next = h + eta * ((2 * y - 1) - h)
        return w + a * (y - _policy_p(w, x)) + phi * (c_next - h), c_next


@register("reinforce_bounded")
class BoundedReinforceRule(ReinforceRule):
    """REINFORCE with soft bounds on the weights: learning slows down and plateaus at ``±w_max``.

    ``Δ_t = α ⊙ (r_t − b) ⊙ (y_t − p_t) x_t``,
    ``w_{t+1} = w_t + Δ_t ⊙ max(0, 1 − sign(Δ_t) ⊙ w_t / w_max)``:

    a step towards a bound shrinks in proportion to the distance left to it (none beyond it), a
    step away from it is enlarged (the soft-bound form of synaptic plasticity models). Per-weight
    ``w_max > 0`` (fitted in log; 3 at initialisation).
    """

    def __init__(self, n_weights: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(n_weights, config)
        self.log_bound = nn.Parameter(torch.full((n_weights,), 3.0).log())

    def set_bound(self, bound: list[float] | float) -> "BoundedReinforceRule":
        """Fix the bounds ``w_max`` (ground-truth use); returns ``self``."""
        with torch.no_grad():
            self.log_bound.copy_(_as_weights(bound, self.n_weights).log())
        return self

    def context(self) -> Context:
        return (self.log_bound.exp(),)

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_weights
        (bound,) = ctx
        a, x, y = pre_t[:, :k], pre_t[:, k : 2 * k], pre_t[:, 2 * k :]
        delta = a * (y - _policy_p(w, x))
        room = (1 - torch.sign(delta) * w / bound).clamp(min=0.0)
        return w + delta * room, h


@register("reinforce_forgetting")
class ForgettingReinforceRule(ReinforceRule):
    """REINFORCE whose weights lose a fraction between sessions (overnight forgetting).

    ``w_{t+1} = (1 − f ⊙ e_t) ⊙ (w_t + α ⊙ (r_t − b) ⊙ (y_t − p_t) x_t)``, where ``e_t = 1`` when
    trial ``t + 1`` opens a new session (the update into a session's first trial) and 0 otherwise:
    within a session it is REINFORCE, at each session boundary every weight shrinks towards 0 by
    its fraction ``f ∈ [0, 1]`` (0.05 at initialisation).
    """

    def __init__(self, n_weights: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(n_weights, config)
        self.forgetting = nn.Parameter(torch.full((n_weights,), 0.05))

    def set_forgetting(self, forgetting: list[float] | float) -> "ForgettingReinforceRule":
        """Fix the overnight fractions ``f`` (ground-truth use); returns ``self``."""
        with torch.no_grad():
            self.forgetting.copy_(_as_weights(forgetting, self.n_weights))
        return self

    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        pre = super().precompute(inputs)
        return torch.cat([pre, inputs.next_session_start.transpose(0, 1).unsqueeze(-1)], -1)

    def context(self) -> Context:
        return (self.forgetting.clamp(0.0, 1.0),)

    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_weights
        (f,) = ctx
        a, x, y, e = pre_t[:, :k], pre_t[:, k : 2 * k], pre_t[:, 2 * k : 2 * k + 1], pre_t[:, 2 * k + 1 :]
        return (1 - f * e) * (w + a * (y - _policy_p(w, x))), h
