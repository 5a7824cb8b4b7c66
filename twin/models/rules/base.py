"""The interface every learning rule shares.

A learning rule maps the current policy weights ``w_t``, a recurrent state ``h_t`` and the
inputs of the trial just finished to the next weights: ``(w_{t+1}, h_{t+1}) = step(w_t, h_t, u_t)``.
The choice policy itself is fixed: ``p(right on trial t) = sigmoid(w_t · x_t)``.

To keep the per-trial Python loop thin, each rule splits its work in three:

* :meth:`LearningRule.precompute` does everything that does not depend on ``w`` or ``h`` for all
  trials at once (one batched matmul instead of ``T`` small ones);
* :meth:`LearningRule.context` derives, once per rollout, tensors built from parameters only;
* :meth:`LearningRule.step` does the minimum per trial.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from twin.cancel import checkpoint
from twin.data.features import Mirror


@dataclass(frozen=True)
class RuleConfig:
    """Structural hyperparameters of a rule: each rule states its own subclass, holding only the
    fields it uses (:attr:`LearningRule.config_type`). This base, without fields, is the config of
    rules that have none (``static``)."""


@dataclass(frozen=True)
class NetworkConfig(RuleConfig):
    """Structural hyperparameters of the rules given by a network (``dnn``, ``rnn``).

    Attributes:
        hidden_size: width of the MLP layers and of the GRU state.
        scale_init: initial value of the learnable per-weight update scale ``s``.
    """

    hidden_size: int = 32
    scale_init: float = 1e-3

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if not self.scale_init > 0:
            raise ValueError(f"scale_init must be > 0, got {self.scale_init}")


@dataclass(frozen=True)
class UpdateInputs:
    """What a rule may look at when it updates the weights after trial ``t``.

    All tensors are ``[B, T]`` (``x`` is ``[B, T, K]``); entry ``t`` describes trial ``t`` and
    ``next_session_start[:, t]`` is 1 when trial ``t + 1`` opens a new session (so the update
    into a session's first trial can carry an overnight change).

    Attributes:
        x: ``[B, T, K]`` policy features of trial ``t``.
        y: ``[B, T]`` choice (1 right, 0 left).
        reward: ``[B, T]`` 1 rewarded, 0 error.
        answer: ``[B, T]`` rewarded side (1 right).
        next_session_start: ``[B, T]`` 1.0 if trial ``t + 1`` starts a session.
    """

    x: torch.Tensor
    y: torch.Tensor
    reward: torch.Tensor
    answer: torch.Tensor
    next_session_start: torch.Tensor

    @classmethod
    def from_trials(
        cls, x: torch.Tensor, y: torch.Tensor, reward: torch.Tensor, answer: torch.Tensor, session_start: torch.Tensor
    ) -> "UpdateInputs":
        """Build from per-trial tensors, shifting the session-start flag by one trial."""
        nss = torch.zeros_like(session_start)
        nss[:, :-1] = session_start[:, 1:]
        return cls(x=x, y=y, reward=reward, answer=answer, next_session_start=nss)

    def standard_vector(self) -> torch.Tensor:
        """``[B, T, K + 4]``: ``x``, then choice, reward and answer as ±1, then the session flag."""
        return torch.cat(
            [
                self.x,
                (2 * self.y - 1).unsqueeze(-1),
                (2 * self.reward - 1).unsqueeze(-1),
                (2 * self.answer - 1).unsqueeze(-1),
                self.next_session_start.unsqueeze(-1),
            ],
            dim=-1,
        )


Context = tuple[torch.Tensor, ...]

FUSED_MAX_BATCH = 128
"""Largest batch (animals) that takes a rule's :meth:`LearningRule.fused_rollout`: above it the
fit is no longer dispatch-bound and the per-step loop was as fast or faster on CPU (measured:
``bench/results/fit_throughput_fused.md``: the fused rollout 1.4-2.1x the loop per CPU-second at 32-128
animals; at 200, 0.9-1.2x for ``dnn`` and 0.7-0.95x for ``rnn`` over repeated runs)."""


def scratch(work: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """The buffer ``work[name]`` of ``shape`` (``like``'s dtype and device), made on first use."""
    t = work.get(name)
    if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
        t = work[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return t


class LearningRule(nn.Module, abc.ABC):
    """A learning rule ``(w_{t+1}, h_{t+1}) = step(w_t, h_t, u_t)``; subclasses state their Δw.

    Args:
        n_weights: number of policy weights ``K``.
        config: structural hyperparameters, of the rule's :attr:`config_type` (None: its defaults).

    Raises:
        TypeError: ``config`` is not of the rule's :attr:`config_type`.
    """

    name: ClassVar[str]
    config_type: ClassVar[type[RuleConfig]] = RuleConfig
    """The type of the rule's structural hyperparameters (only the fields it uses)."""
    markovian: ClassVar[bool] = True
    """True when Δw depends on the current weights and trial only (no hidden history)."""
    learns: ClassVar[bool] = True
    """False for rules whose weights never change (``w_t = w_0``)."""
    default_learning_rate: ClassVar[float] = 3e-3
    """Adam step size used when a fit does not set one (few-parameter rules take larger steps)."""

    def __init__(self, n_weights: int, config: RuleConfig | None = None) -> None:
        super().__init__()
        config = self.config_type() if config is None else config
        if type(config) is not self.config_type:
            raise TypeError(f"rule {self.name!r} takes a {self.config_type.__name__}, got a {type(config).__name__}")
        self.n_weights = n_weights
        self.config = config

    @property
    def needs_mirror(self) -> bool:
        """Whether the rule must learn how the features mirror left/right (:meth:`use_mirror`)."""
        return False

    def use_mirror(self, mirror: Mirror) -> None:
        """Learn how the features mirror left/right (:class:`LearnerModel` calls this when
        :attr:`needs_mirror`); rules without a mirror-symmetric form ignore it."""

    @property
    def state_size(self) -> int:
        """Size ``H`` of the recurrent state (0 when there is none)."""
        return 0

    def initial_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``[B, H]`` zeros."""
        return torch.zeros(batch_size, self.state_size, device=device, dtype=dtype)

    @abc.abstractmethod
    def precompute(self, inputs: UpdateInputs) -> torch.Tensor:
        """Everything independent of ``w`` and ``h``.

        Returns:
            ``[T, B, D]`` time-major per-trial tensor that :meth:`step` consumes.
        """

    def context(self) -> Context:
        """Parameter-derived tensors used by every step (computed once per rollout)."""
        return ()

    @abc.abstractmethod
    def step(self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """One update.

        Args:
            w: ``[B, K]`` weights used on trial ``t``.
            h: ``[B, H]`` recurrent state.
            pre_t: ``[B, D]`` slice ``t`` of :meth:`precompute`.
            ctx: output of :meth:`context`.

        Returns:
            ``(w_{t+1} [B, K], h_{t+1} [B, H])``.
        """

    def step_into(
        self, w: torch.Tensor, h: torch.Tensor, pre_t: torch.Tensor, ctx: Context, work: dict[str, torch.Tensor], slot: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step` computed into preallocated buffers (no gradient): the same operations on
        the same values, so the same results, without a fresh ``[B, H]`` buffer (and its page
        faults) per operation. The simulation loop (:func:`twin.sim.rollout.run_trials`) calls it.

        Args:
            w, h, pre_t, ctx: as for :meth:`step`.
            work: the caller's buffers, kept between steps (filled on first use, see :func:`scratch`).
            slot: 0 or 1, alternating from step to step: the returned tensors are slot ``slot``'s
                buffers, so they never alias the step's inputs (the previous step's outputs) and
                stay valid until the step after next.

        Returns:
            ``(w_{t+1}, h_{t+1})``; rules without a buffered form return :meth:`step`'s.
        """
        return self.step(w, h, pre_t, ctx)

    def fused_rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rollout of :meth:`rollout` as one fused autograd function (no graph per step, a
        hand-written backward; :mod:`twin.models.rules.fused`), or None when the rule has none.

        Same arguments and results as :meth:`rollout`; only rules with a fused form override it.
        """
        return None

    def rollout(
        self, w: torch.Tensor, h: torch.Tensor, pre: torch.Tensor, rate: torch.Tensor | None = None, fused: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply :meth:`step` along ``pre``.

        When a gradient is wanted, the batch has at most :data:`FUSED_MAX_BATCH` animals and the
        rule has a :meth:`fused_rollout`, that computes the same rollout (the step loop below,
        recording an autograd graph per step, is its reference).

        Args:
            w: ``[B, K]`` weights before the first step.
            h: ``[B, H]`` state before the first step.
            pre: ``[n, B, D]`` precomputed inputs of ``n`` consecutive trials.
            rate: optional ``[K]`` or ``[B, K]`` multiplier of every update.
            fused: use the fused rollout where there is one (False: always the step loop).

        Returns:
            ``(ws [n, B, K], h)``: the weights after each step and the final state.
        """
        if fused and pre.shape[0] > 0 and pre.shape[1] <= FUSED_MAX_BATCH and torch.is_grad_enabled() and self._wants_grad(w, h, pre, rate):
            out = self.fused_rollout(w, h, pre, rate)
            if out is not None:
                return out
        ctx = self.context()
        out = []
        # unbind, not pre[t]: the backward of T separate index ops would each allocate and
        # zero a full [T, B, D] gradient; unbind's backward stacks the slices' gradients once
        for pre_t in pre.unbind(0):
            checkpoint()  # a caller's deadline or cancellation stops the rollout here
            w_next, h = self.step(w, h, pre_t, ctx)
            w = w_next if rate is None else w + rate * (w_next - w)
            out.append(w)
        if not out:
            return w.new_zeros((0,) + tuple(w.shape)), h
        return torch.stack(out), h

    def _wants_grad(self, *tensors: torch.Tensor | None) -> bool:
        return any(t is not None and t.requires_grad for t in tensors) or any(p.requires_grad for p in self.parameters())

    def extra_repr(self) -> str:
        return f"K={self.n_weights}"
