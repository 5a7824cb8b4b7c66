"""Trial-by-trial teaching: each trial's stimulus chosen through the animal's twin.

Between two trials the teacher knows the twin's weights ``w`` and rule state ``h`` (updated with
every observed outcome by the twin's own rule step) and the set of stimuli it may show: the
contrasts of the session protocol's current phase (:class:`~twin.sim.task.TaskEnv` keeps the
phase and its advancement rules), intersected with the lab's allowed contrasts, on either side.

**Objective** (one-step lookahead, :func:`lookahead`). For each candidate stimulus ``c`` (an
unsigned contrast and a rewarded side) and each choice ``y`` of the animal (right with the
twin's ``p = sigmoid(w · x_c)``), with its feedback ``r = [y = side]``, the twin's rule gives
the weights ``w'_{c,y}`` after that trial. The updated policy is scored by its accuracy on the
criterion's test set ``A(w') = mean_m p(correct | w', s_m)`` over the test stimuli ``s_m``
(:attr:`TeachingObjective.test_contrasts` on both sides, without history features: the easy
contrasts the IBL criteria check and the low contrasts their psychometric threshold needs).
The expected progress of ``c`` is

    ``G(c) = p · A(w'_{c,right}) + (1 − p) · A(w'_{c,left}) − A(w)``

and the teacher shows the allowed candidate of largest ``G`` (ties broken by a seeded draw).

**Constraints** (:class:`TeachingConstraints`, :func:`constraint_mask`) keep a session sane:
only contrasts of the allowed set; no more than ``max_same_side`` trials in a row on one side;
over the last ``window`` trials, the sides within ``max_side_imbalance`` of each other and at
least ``min_easy_fraction`` of easy trials (contrast ``>= easy_contrast``); and every allowed
stimulus (contrast and side) shown at least once every ``cover_window`` trials (the protocol's
advancement and the criterion judge contrasts a greedy teacher would otherwise never show: a
stimulus not shown for ``cover_window`` trials is due, and due ones are shown first); and, with
``fill_advancement``, the contrasts the current phase's performance rule looks at are shown first
until each has the rule's ``window`` trials on each side in the session (iblrig's advancement
judges the last 50 trials of each; without them the phase never advances). A constraint that
would leave no candidate is dropped for that trial (the allowed set is never dropped).

:class:`TwinTeacher` runs the decision for ``B`` rows; it is an
:class:`~twin.sim.rollout.Environment`, so :func:`~twin.sim.rollout.run_trials` simulates
trial-level teaching with the same loop as every other simulation (the twin inside the teacher
and the learner the loop runs may differ: a fitted twin teaching the true learner). The served
stream (:mod:`service.teaching`) uses the same class with ``B = 1``, the rig reporting each
outcome.

Cost: one decision is one rule step over ``B · N · 2`` rows (``N`` candidates, at most twice the
phase's contrasts) plus a ``[B·N·2, K] x [K, M]`` matmul. With ``B = 1`` and a rule that has a
batch-1 kernel (:func:`twin.models.batch1.step_rows`, the rule's inputs precomputed once per
teacher for the 6 possible histories) it is numpy and one kernel call: the lookahead took
0.05-0.3 ms and the whole decision (constraints and tie-break included) 0.3-0.9 ms on one thread
of a 2-CPU machine at load average 6; the torch path (other rules, ``B > 1``) about 1 ms there.
The protocol's own trial (:class:`~twin.sim.task.TaskEnv` draw and observe at ``B = 1``) costs
about as much again; the served stream takes both off the rig's wait (:mod:`service.teaching`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from twin.models import batch1
from twin.models.learner import LearnerModel
from twin.models.policy import p_right
from twin.models.rules import UpdateInputs
from twin.protocol import Curriculum, ZeroContrastSide
from twin.sim.task import TaskEnv


class TeachingUnsupportedError(ValueError):
    """The twin cannot teach (its features are named stimuli, not IBL contrasts)."""


@dataclass(frozen=True)
class TeachingConstraints:
    """What keeps a taught session sane (see the module docstring).

    Attributes:
        max_same_side: most consecutive trials rewarded on one side.
        window: trials over which side balance and the easy share are judged.
        max_side_imbalance: most ``|right − left|`` trials within the window.
        min_easy_fraction: least share of easy trials within the window (once it has trials).
        easy_contrast: unsigned contrast at and above which a trial is easy.
        allowed_contrasts: the lab's allowed unsigned contrasts (None: every contrast of the
            protocol's phase).
        cover_window: every allowed stimulus is shown at least once in this many trials of a
            session (0: no coverage rule).
        fill_advancement: show the contrasts the phase's performance rule judges first, until
            the session holds its window of trials of each on each side.
    """

    max_same_side: int = 4
    window: int = 20
    max_side_imbalance: int = 6
    min_easy_fraction: float = 0.25
    easy_contrast: float = 0.5
    allowed_contrasts: tuple[float, ...] | None = None
    cover_window: int = 40
    fill_advancement: bool = True

    def __post_init__(self) -> None:
        if self.cover_window < 0:
            raise ValueError(f"cover_window must be >= 0, got {self.cover_window}")
        if self.max_same_side < 1:
            raise ValueError(f"max_same_side must be >= 1, got {self.max_same_side}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.max_side_imbalance < 1:
            raise ValueError(f"max_side_imbalance must be >= 1, got {self.max_side_imbalance}")
        if not 0.0 <= self.min_easy_fraction <= 1.0:
            raise ValueError(f"min_easy_fraction must be in [0, 1], got {self.min_easy_fraction}")
        if not 0.0 < self.easy_contrast <= 1.0:
            raise ValueError(f"easy_contrast must be in (0, 1], got {self.easy_contrast}")
        if self.allowed_contrasts is not None:
            if not self.allowed_contrasts:
                raise ValueError("allowed_contrasts must name at least one contrast (None: the phase's)")
            bad = [c for c in self.allowed_contrasts if not 0.0 <= c <= 1.0]
            if bad:
                raise ValueError(f"allowed_contrasts must be in [0, 1], got {bad}")


@dataclass(frozen=True)
class TeachingObjective:
    """The criterion's test set the lookahead scores a policy on.

    Attributes:
        test_contrasts: unsigned contrasts, each tested on both sides.
    """

    test_contrasts: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625)

    def __post_init__(self) -> None:
        if not self.test_contrasts or any(not 0.0 < c <= 1.0 for c in self.test_contrasts):
            raise ValueError(f"test_contrasts must be a non-empty tuple of contrasts in (0, 1], got {self.test_contrasts}")


@dataclass(frozen=True)
class Candidates:
    """The stimuli a teacher may choose among (``N`` of them).

    Attributes:
        contrast: ``[N]`` unsigned contrast.
        side: ``[N]`` rewarded side (1 = right).
    """

    contrast: torch.Tensor
    side: torch.Tensor

    @classmethod
    def of(cls, contrasts: tuple[float, ...], zero_left: bool) -> "Candidates":
        """Every contrast on both sides (zero contrast on the left only when ``zero_left``)."""
        cs: list[float] = []
        ss: list[float] = []
        for c in sorted(set(round(float(c), 6) for c in contrasts), reverse=True):
            for s in (0.0, 1.0):
                if c == 0.0 and zero_left and s == 1.0:
                    continue
                cs.append(c)
                ss.append(s)
        return cls(torch.tensor(cs), torch.tensor(ss))

    @property
    def n(self) -> int:
        """Number of candidates ``N``."""
        return int(self.contrast.shape[0])

    def sides(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(contrast_left, contrast_right)``, each ``[N]``."""
        return self.contrast * (1 - self.side), self.contrast * self.side


@dataclass(frozen=True)
class Lookahead:
    """The one-step lookahead of every candidate, for ``B`` rows.

    Attributes:
        gain: ``[B, N]`` expected progress ``G(c)`` (module docstring).
        p_correct: ``[B, N]`` the twin's probability of a correct choice on each candidate.
        accuracy: ``[B]`` the current policy's test-set accuracy ``A(w)``.
    """

    gain: torch.Tensor
    p_correct: torch.Tensor
    accuracy: torch.Tensor


def _check_features(model: LearnerModel) -> None:
    if model.spec.features.stimuli:
        raise TeachingUnsupportedError(f"twin features are named stimuli {list(model.spec.features.stimuli)}; teaching chooses IBL contrasts")


def criterion_test_set(model: LearnerModel, objective: TeachingObjective) -> tuple[torch.Tensor, torch.Tensor]:
    """The test set: ``[M, K]`` features (no history) and ``[M]`` rewarded sides (1 = right)."""
    c = torch.tensor(objective.test_contrasts, dtype=torch.float32)
    zero = torch.zeros_like(c)
    cl, cr = torch.cat([c, zero]), torch.cat([zero, c])
    side = torch.cat([zero, torch.ones_like(c)])
    return model.spec.features.compute(cl, cr, torch.zeros_like(cl), torch.zeros_like(cl)), side


def _accuracy(w: torch.Tensor, x_test: torch.Tensor, side_test: torch.Tensor) -> torch.Tensor:
    """``[...]`` mean test-set p(correct) of weights ``[..., K]``."""
    p = torch.sigmoid(w @ x_test.T)  # [..., M]
    return torch.where(side_test > 0.5, p, 1 - p).mean(-1)


def rule_step(
    model: LearnerModel, w: torch.Tensor, h: torch.Tensor, x: torch.Tensor, y: torch.Tensor, reward: torch.Tensor, answer: torch.Tensor,
    rate: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The twin's update after one trial within a session, for ``R`` rows.

    Args:
        model: the twin.
        w: ``[R, K]`` weights in force on the trial; ``h``: ``[R, H]`` rule state.
        x: ``[R, K]`` the trial's features; ``y``, ``reward``, ``answer``: ``[R]`` choice (1 right),
            reward (0/1) and rewarded side (1 right).
        rate: ``[K]`` or ``[R, K]`` learning-rate multiplier (None: 1).

    Returns:
        ``(w_next [R, K], h_next [R, H])``.
    """
    inp = UpdateInputs(x[:, None], y[:, None], reward[:, None], answer[:, None], torch.zeros(x.shape[0], 1))
    w_next, h_next = model.rule.step(w, h, model.rule.precompute(inp)[0], model.rule.context())
    if rate is not None:
        w_next = w + rate * (w_next - w)
    return w_next, h_next


@torch.no_grad()
def lookahead(
    model: LearnerModel,
    w: torch.Tensor,
    h: torch.Tensor,
    prev_choice: torch.Tensor,
    prev_reward: torch.Tensor,
    candidates: Candidates,
    objective: TeachingObjective = TeachingObjective(),
    rate: torch.Tensor | None = None,
    test_set: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Lookahead:
    """Expected progress of every candidate (module docstring), one batched rule step.

    Args:
        model: the twin.
        w: ``[B, K]`` weights for the next trial; ``h``: ``[B, H]`` rule state.
        prev_choice: ``[B]`` previous choice in {-1, 0, +1}; ``prev_reward``: ``[B]`` in {0, 1}.
        candidates: the ``N`` stimuli.
        objective: the test set.
        rate: ``[K]`` or ``[B, K]`` learning-rate multiplier (None: 1).
        test_set: :func:`criterion_test_set` precomputed (None: computed here).

    Returns:
        The lookahead, ``[B, N]``.

    Raises:
        TeachingUnsupportedError: the twin's features are named stimuli.
    """
    _check_features(model)
    b, k = w.shape
    n = candidates.n
    x_test, side_test = test_set if test_set is not None else criterion_test_set(model, objective)
    cl, cr = candidates.sides()
    pc = prev_choice.view(b, 1).expand(b, n)
    pr = prev_reward.view(b, 1).expand(b, n)
    x = model.spec.features.compute(cl.expand(b, n), cr.expand(b, n), pc, pr).to(w.dtype)  # [B, N, K]
    pright = p_right(w.unsqueeze(1), x)  # [B, N]
    # rows (b, n, y) with y = 0 (left), 1 (right)
    rows = b * n * 2
    xr = x.unsqueeze(2).expand(b, n, 2, k).reshape(rows, k)
    y = torch.tensor([0.0, 1.0]).expand(b, n, 2).reshape(rows)
    ans = candidates.side.view(1, n, 1).expand(b, n, 2).reshape(rows)
    rew = (y == ans).to(y.dtype)
    wr = w.unsqueeze(1).expand(b, n * 2, k).reshape(rows, k)
    hr = h.unsqueeze(1).expand(b, n * 2, h.shape[1]).reshape(rows, h.shape[1])
    rate_r = rate.unsqueeze(1).expand(b, n * 2, k).reshape(rows, k) if rate is not None and rate.dim() == 2 else rate
    w_next, _ = rule_step(model, wr, hr, xr, y, rew, ans, rate_r)
    acc = _accuracy(w_next, x_test.to(w.dtype), side_test).view(b, n, 2)
    base = _accuracy(w, x_test.to(w.dtype), side_test)  # [B]
    gain = pright * acc[..., 1] + (1 - pright) * acc[..., 0] - base.unsqueeze(1)
    p_correct = torch.where(candidates.side.view(1, n) > 0.5, pright, 1 - pright)
    return Lookahead(gain, p_correct, base)


class SideHistory:
    """The last ``window`` trials' sides and easiness of ``B`` rows (for the constraints; numpy:
    a handful of values, where torch's per-op cost would dominate).

    Args:
        n_rows: ``B``.
        window: trials kept.
    """

    def __init__(self, n_rows: int, window: int) -> None:
        self.window = window
        self.side = np.zeros((n_rows, window))  # newest last
        self.easy = np.zeros((n_rows, window), dtype=bool)
        self.contrast = np.full((n_rows, window), -1.0)
        self.n = np.zeros(n_rows, dtype=np.int64)

    def push(self, side: torch.Tensor | np.ndarray, easy: torch.Tensor | np.ndarray, contrast: torch.Tensor | np.ndarray | None = None) -> None:
        """Append one trial (``[B]`` side 1 = right, ``[B]`` bool easy, ``[B]`` contrast)."""
        self.side[:, :-1] = self.side[:, 1:]
        self.side[:, -1] = np.asarray(side, dtype=np.float64)
        self.easy[:, :-1] = self.easy[:, 1:]
        self.easy[:, -1] = np.asarray(easy, dtype=bool)
        self.contrast[:, :-1] = self.contrast[:, 1:]
        self.contrast[:, -1] = -1.0 if contrast is None else np.asarray(contrast, dtype=np.float64)
        self.n = np.minimum(self.n + 1, self.window)

    def reset(self, rows: torch.Tensor | np.ndarray) -> None:
        """Forget the history of ``rows`` (``[B]`` bool: a new session)."""
        self.n = np.where(rows.numpy() if isinstance(rows, torch.Tensor) else rows, 0, self.n)


def constraint_mask(candidates: Candidates, allowed: torch.Tensor, history: SideHistory, constraints: TeachingConstraints) -> torch.Tensor:
    """``[B, N]`` bool: the candidates the constraints allow (module docstring).

    Args:
        candidates: the ``N`` stimuli.
        allowed: ``[B, N]`` bool, the allowed set (phase and lab contrasts); never relaxed.
        history: the recent trials.
        constraints: the constraints.
    """
    return torch.from_numpy(_constraint_mask(candidates.side.numpy() > 0.5, candidates.contrast.numpy(), np.asarray(allowed, dtype=bool), history, constraints))


def _constraint_mask(side: np.ndarray, contrast: np.ndarray, allowed: np.ndarray, history: SideHistory, constraints: TeachingConstraints) -> np.ndarray:
    """:func:`constraint_mask` on numpy arrays: ``[N]`` bool right side, ``[N]`` contrast, ``[B, N]`` allowed."""
    w = min(constraints.window, history.window)
    age_all = np.arange(history.window - 1, -1, -1)  # 0 = the newest
    seen = age_all[None, :] < history.n[:, None]  # [B, W_history]
    valid = seen[:, -w:]
    age = age_all[-w:]
    is_right = history.side[:, -w:] > 0.5
    right = (is_right & valid).sum(1)
    left = (~is_right & valid).sum(1)
    run = min(constraints.max_same_side, w)
    in_run = valid & (age < run)[None, :]
    full_run = in_run.sum(1) >= run
    all_right = full_run & (is_right | ~in_run).all(1)
    all_left = full_run & (~is_right | ~in_run).all(1)
    too_right = (right - left >= constraints.max_side_imbalance) | all_right  # [B]
    too_left = (left - right >= constraints.max_side_imbalance) | all_left
    sides_ok = ~((side[None, :] & too_right[:, None]) | (~side[None, :] & too_left[:, None]))
    n_easy = (history.easy[:, -w:] & valid).sum(1)
    n_w = valid.sum(1)
    need_easy = (n_w > 0) & (n_easy < constraints.min_easy_fraction * n_w)
    is_easy = contrast[None, :] >= constraints.easy_contrast - 1e-9
    mask = allowed & sides_ok & (is_easy | ~need_easy[:, None])
    cw = min(constraints.cover_window, history.window)
    if cw > 0:
        recent = seen[:, -cw:]
        shown = (np.abs(history.contrast[:, -cw:, None] - contrast[None, None, :]) < 1e-6) & ((history.side[:, -cw:, None] > 0.5) == side[None, None, :]) & recent[:, :, None]
        due = allowed & ~shown.any(1) & (history.n >= cw)[:, None]  # [B, N]: not shown for cover_window trials
        due_ok = mask & due
        mask = np.where(due_ok.any(1, keepdims=True), due_ok, mask)
    for relaxed in (allowed & sides_ok, allowed):  # drop the easy share, then the side rules
        empty = ~mask.any(1, keepdims=True)
        mask = np.where(empty, relaxed, mask)
    return mask


def choose(gain: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, tol: float = 1e-9) -> torch.Tensor:
    """``[B]`` index of the allowed candidate of largest gain, ties broken by a seeded draw.

    Args:
        gain: ``[B, N]`` expected progress.
        mask: ``[B, N]`` bool, at least one True per row.
        generator: seeded generator of the tie-break.
        tol: gains within ``tol`` of the best count as ties.
    """
    g = torch.where(mask, gain, torch.full_like(gain, -torch.inf))
    best = g.max(1, keepdim=True).values
    u = torch.rand(gain.shape, generator=generator)
    key = torch.where(mask & (g >= best - tol), u, torch.full_like(u, -1.0))
    return key.argmax(1)


class _Tables:
    """The compiled decision's inputs of one teacher (``B = 1``), precomputed once: for each of
    the 6 histories (previous choice −1/0/+1, previous reward 0/1), the candidates' features
    ``x [6, N, K]`` and the rule's precomputed inputs of every (candidate, choice) row
    ``pre [6, 2N, D]`` (row ``2n + y``), as :func:`lookahead` builds them."""

    def __init__(self, model: LearnerModel, candidates: Candidates, test_set: tuple[torch.Tensor, torch.Tensor], rate: torch.Tensor | None) -> None:
        n, k = candidates.n, model.n_weights
        pc = torch.tensor([-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]).view(6, 1).expand(6, n)
        pr = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]).view(6, 1).expand(6, n)
        cl, cr = candidates.sides()
        x = model.spec.features.compute(cl.expand(6, n), cr.expand(6, n), pc, pr)  # [6, N, K]
        xr = x.unsqueeze(2).expand(6, n, 2, k).reshape(6 * n * 2, k)
        y = torch.tensor([0.0, 1.0]).expand(6, n, 2).reshape(-1)
        ans = candidates.side.view(1, n, 1).expand(6, n, 2).reshape(-1)
        rew = (y == ans).float()
        with torch.no_grad():
            inp = UpdateInputs(xr[:, None], y[:, None], rew[:, None], ans[:, None], torch.zeros(xr.shape[0], 1))
            pre = model.rule.precompute(inp)[0]
        self.x = np.ascontiguousarray(x.numpy(), dtype=np.float64)
        self.pre = np.ascontiguousarray(pre.reshape(6, 2 * n, -1).numpy(), dtype=np.float64)
        self.side = candidates.side.numpy() > 0.5
        self.contrast = candidates.contrast.numpy().astype(np.float64)
        self.x_test = np.ascontiguousarray(test_set[0].numpy(), dtype=np.float64)
        self.right_test = test_set[1].numpy() > 0.5
        r = None if rate is None else np.asarray(rate.detach().numpy(), dtype=np.float64).reshape(-1)
        self.rate_rows = None if r is None else np.ascontiguousarray(np.broadcast_to(r, (2 * n, k)))
        self.rate_one = None if r is None else np.ascontiguousarray(r.reshape(1, k))

    @staticmethod
    def history(prev_choice: float, prev_reward: float) -> int:
        """Index of a history among the 6."""
        return (int(round(prev_choice)) + 1) * 2 + int(round(prev_reward))

    def accuracy(self, w: np.ndarray) -> np.ndarray:
        """``[R]`` test-set accuracy of weights ``[R, K]``."""
        p = 1.0 / (1.0 + np.exp(-(w @ self.x_test.T)))
        return np.where(self.right_test, p, 1.0 - p).mean(-1)


@dataclass(frozen=True)
class Decision:
    """The teacher's choice for the next trial of ``B`` rows.

    Attributes:
        contrast: ``[B]`` unsigned contrast; ``side``: ``[B]`` rewarded side (1 = right).
        p_correct: ``[B]`` the twin's probability of a correct choice on it.
        gain: ``[B]`` its expected progress.
    """

    contrast: torch.Tensor
    side: torch.Tensor
    p_correct: torch.Tensor
    gain: torch.Tensor


class TwinTeacher:
    """A session protocol whose stimuli a twin chooses, trial by trial, for ``B`` rows.

    The protocol's :class:`~twin.sim.task.TaskEnv` keeps the phase (its advancement rules run on
    the trials actually shown) and draws the fallback stimulus each trial; :meth:`decide`
    chooses the twin's; :meth:`show` tells the protocol which one was shown; :meth:`record`
    feeds the outcome to the protocol and to the twin (its rule step). As an
    :class:`~twin.sim.rollout.Environment`, :meth:`draw` and :meth:`observe` do all of it.

    Args:
        model: the twin (policy features of IBL contrasts).
        w: ``[B, K]`` the twin's weights at the start; ``h``: ``[B, H]`` its rule state.
        protocol: the session protocol (phases, advancement, the fallback's draw).
        generator: seeded generator (protocol draws and tie-breaks).
        start_phase: phase to start in (an int or ``[B]``).
        constraints: what keeps the session sane.
        objective: the test set the lookahead scores on.
        rate: ``[K]`` or ``[B, K]`` the twin's learning-rate multiplier (None: 1).

    Raises:
        TeachingUnsupportedError: the twin's features are named stimuli.
    """

    def __init__(
        self,
        model: LearnerModel,
        w: torch.Tensor,
        h: torch.Tensor,
        protocol: Curriculum,
        generator: torch.Generator,
        start_phase: int | torch.Tensor = 0,
        constraints: TeachingConstraints = TeachingConstraints(),
        objective: TeachingObjective = TeachingObjective(),
        rate: torch.Tensor | None = None,
    ) -> None:
        _check_features(model)
        b = w.shape[0]
        self.model, self.g, self.rate = model, generator, rate
        self.constraints, self.objective = constraints, objective
        self.env = TaskEnv(protocol, b, generator, start_phase=start_phase)
        self.w, self.h = w.detach().clone(), h.detach().clone()
        self.prev_choice, self.prev_reward = torch.zeros(b), torch.zeros(b)
        self.history = SideHistory(b, max(constraints.window, constraints.cover_window))
        self.candidates = Candidates.of(protocol.contrasts, protocol.stimulus.zero_contrast_side is ZeroContrastSide.LEFT)
        self.test_set = criterion_test_set(model, objective)
        # [B, P, N]: candidate n is in phase p's contrasts (and the lab's allowed set)
        table, counts = self.env.table, self.env.counts
        valid = torch.arange(table.shape[2]).view(1, 1, -1) < counts.unsqueeze(2)
        hit = torch.isclose(table.unsqueeze(3), self.candidates.contrast.view(1, 1, 1, -1), atol=1e-6) & valid.unsqueeze(3)
        in_phase = hit.any(2)
        if constraints.allowed_contrasts is not None:
            lab = torch.tensor(constraints.allowed_contrasts)
            in_lab = torch.isclose(self.candidates.contrast.view(-1, 1), lab.view(1, -1), atol=1e-6).any(1)
            in_phase = in_phase & in_lab.view(1, 1, -1)
        self._in_phase_only = hit.any(2).numpy()
        self._in_phase = in_phase.numpy()
        self._side_np, self._contrast_np = self.candidates.side.numpy() > 0.5, self.candidates.contrast.numpy()
        # candidate n → its performance-rule cell k = 2 l + side of the protocol (-1: no rule looks at it)
        lv = self.env.levels
        cell = torch.full((self.candidates.n,), -1, dtype=torch.long)
        if lv.numel():
            hit_l = torch.isclose(self.candidates.contrast.view(-1, 1), lv.view(1, -1), atol=1e-6)
            has = hit_l.any(1)
            cell = torch.where(has, 2 * hit_l.byte().argmax(1) + self.candidates.side.long(), cell)
        self._cell = cell
        self.shown_contrast, self.shown_side = torch.zeros(b), torch.zeros(b)
        # the compiled decision (one rule step of every candidate x choice on batch1's kernel)
        self._tables = _Tables(model, self.candidates, self.test_set, rate) if b == 1 and batch1.supports(model.rule) and model.rule.learns else None

    @property
    def phase(self) -> torch.Tensor:
        """``[B]`` protocol phase of the trial last drawn."""
        return self.env.phase

    def allowed(self) -> np.ndarray:
        """``[B, N]`` bool: candidates of the current phase within the lab's allowed contrasts.
        A row whose phase has none of them keeps the phase's own set (the lab set is relaxed)."""
        rows, ph = np.arange(self.phase.shape[0]), self.phase.numpy()
        a = self._in_phase[rows, ph]
        return np.where(a.any(1, keepdims=True), a, self._in_phase_only[rows, ph])

    def advancement_due(self) -> torch.Tensor:
        """``[B, N]`` bool: candidates the current phase's performance rule judges whose side has
        fewer than the rule's window of trials in the session."""
        env, b = self.env, self.phase.shape[0]
        if not env.levels.numel():
            return torch.zeros(b, self.candidates.n, dtype=torch.bool)
        rows = torch.arange(b)
        ph = env.phase
        on = self._cell >= 0
        k = self._cell.clamp(min=0)
        level = torch.div(k, 2, rounding_mode="floor")
        needed = env.needs[rows, ph][:, level] & env.is_perf[rows, ph].unsqueeze(1)  # [B, N]
        short = env.perf_n[:, k] < env.window[rows, ph].long().unsqueeze(1)
        return needed & short & on.unsqueeze(0)

    def compiled(self) -> bool:
        """Whether the next decision takes the compiled path (``B = 1``, a rule with a kernel,
        kernels compiled); otherwise :func:`lookahead`'s torch ops."""
        return self._tables is not None and batch1.why_not_rows(self.model.rule) is None

    def _compiled_lookahead(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`lookahead` of the one row on the compiled path: ``([N] gain, [N] p_correct)``."""
        t = self._tables
        assert t is not None
        c = t.history(float(self.prev_choice[0]), float(self.prev_reward[0]))
        w = self.w[0].numpy().astype(np.float64)
        n, k = t.x.shape[1], t.x.shape[2]
        pright = 1.0 / (1.0 + np.exp(-(t.x[c] @ w)))
        ws = np.ascontiguousarray(np.broadcast_to(w, (2 * n, k)))
        hs = np.ascontiguousarray(np.broadcast_to(self.h[0].numpy().astype(np.float64), (2 * n, self.h.shape[1])))
        w_next, _ = batch1.step_rows(self.model.rule, ws, hs, t.pre[c], t.rate_rows)
        acc = t.accuracy(w_next).reshape(n, 2)
        base = float(t.accuracy(w[None])[0])
        gain = pright * acc[:, 1] + (1.0 - pright) * acc[:, 0] - base
        return gain, np.where(t.side, pright, 1.0 - pright)

    def fallback_draw(self, session_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The protocol's own trial (advancement check, then its draw): ``(contrast_left,
        contrast_right, answer, prob_left)``, each ``[B]``; it counts as shown until :meth:`show`."""
        ss = session_start.bool()
        out = self.env.draw(ss)
        self.prev_choice = torch.where(ss, torch.zeros_like(self.prev_choice), self.prev_choice)
        self.history.reset(ss)
        self.shown_contrast, self.shown_side = self.env.last_contrast.clone(), self.env.last_side.clone()
        return out

    def decide(self) -> Decision:
        """The twin's choice for the trial just drawn (its phase), within the constraints."""
        if self.compiled():
            g_np, p_np = self._compiled_lookahead()
            gain, p_correct = torch.from_numpy(g_np).float().unsqueeze(0), torch.from_numpy(p_np).float().unsqueeze(0)
        else:
            look = lookahead(self.model, self.w, self.h, self.prev_choice, self.prev_reward, self.candidates, self.objective, self.rate, self.test_set)
            gain, p_correct = look.gain, look.p_correct
        mask = torch.from_numpy(_constraint_mask(self._side_np, self._contrast_np, self.allowed(), self.history, self.constraints))
        if self.constraints.fill_advancement:
            due = self.advancement_due() & mask
            mask = torch.where(due.any(1, keepdim=True), due, mask)
        idx = choose(gain, mask, self.g)
        rows = torch.arange(idx.shape[0])
        return Decision(self.candidates.contrast[idx], self.candidates.side[idx], p_correct[rows, idx], gain[rows, idx])

    def show(self, contrast: torch.Tensor, side: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """The stimulus shown on the trial just drawn (``[B]`` unsigned contrast and side), for
        ``rows`` (``[B]`` bool; None: all); the others keep the protocol's draw."""
        if rows is not None:
            contrast = torch.where(rows, contrast, self.shown_contrast)
            side = torch.where(rows, side, self.shown_side)
        self.shown_contrast, self.shown_side = contrast.clone(), side.clone()
        self.env.show(self.shown_contrast, self.shown_side)  # a replaced repeat is no debiasing trial

    def record_protocol(self, rewarded: torch.Tensor) -> None:
        """Feed the outcome (``[B]`` bool) of the trial shown to the protocol and the history."""
        self.env.observe(rewarded.bool())
        self.history.push(self.shown_side.numpy(), (self.shown_contrast >= self.constraints.easy_contrast - 1e-9).numpy(), self.shown_contrast.numpy())

    @torch.no_grad()
    def record_twin(self, choice: torch.Tensor, rewarded: torch.Tensor, responded: torch.Tensor | None = None) -> None:
        """Update the twin with the trial shown: ``[B]`` choice (1 right), ``[B]`` reward;
        rows that did not respond (``[B]`` bool False) keep their state."""
        if self.compiled() and self._record_compiled(choice, rewarded, responded):
            return
        feats = self.model.spec.features
        cl, cr = self.shown_contrast * (1 - self.shown_side), self.shown_contrast * self.shown_side
        x = feats.compute(cl, cr, self.prev_choice, self.prev_reward).to(self.w.dtype)
        y, r = choice.to(self.w.dtype), rewarded.to(self.w.dtype)
        w_next, h_next = rule_step(self.model, self.w, self.h, x, y, r, self.shown_side.to(self.w.dtype), self.rate)
        pc, pr = 2 * y - 1, r
        if responded is not None:
            a = responded.view(-1, 1)
            w_next = torch.where(a, w_next, self.w)
            h_next = torch.where(a, h_next, self.h) if self.h.numel() else h_next
            pc = torch.where(responded, pc, self.prev_choice)
            pr = torch.where(responded, pr, self.prev_reward)
        self.w, self.h, self.prev_choice, self.prev_reward = w_next, h_next, pc, pr

    def _record_compiled(self, choice: torch.Tensor, rewarded: torch.Tensor, responded: torch.Tensor | None) -> bool:
        """:meth:`record_twin` of the one row on the compiled path, when the trial is one of the
        precomputed rows (a candidate stimulus, reward = choice on the rewarded side); False
        (nothing done) otherwise."""
        t = self._tables
        assert t is not None
        if responded is not None and not bool(responded[0]):
            return True
        side, y, r = float(self.shown_side[0]), float(choice[0]), float(rewarded[0])
        if r != float(y == side):
            return False
        hit = np.nonzero((np.abs(t.contrast - float(self.shown_contrast[0])) < 1e-6) & (t.side == (side > 0.5)))[0]
        if not hit.size:
            return False
        c = t.history(float(self.prev_choice[0]), float(self.prev_reward[0]))
        row = 2 * int(hit[0]) + int(y)
        w = np.ascontiguousarray(self.w.numpy(), dtype=np.float64)
        h = np.ascontiguousarray(self.h.numpy(), dtype=np.float64)
        w_next, h_next = batch1.step_rows(self.model.rule, w, h, t.pre[c][row : row + 1], t.rate_one)
        self.w = torch.from_numpy(w_next).to(self.w.dtype)
        self.h = torch.from_numpy(h_next).to(self.h.dtype)
        self.prev_choice = torch.tensor([2 * y - 1])
        self.prev_reward = torch.tensor([r])
        return True

    def snapshot(self) -> dict[str, object]:
        """Everything a trial changes (protocol, generator, twin, history), for :meth:`restore`."""
        hist = self.history
        return {
            "env": self.env.snapshot(),
            "g": self.g.get_state(),
            "twin": (self.w, self.h, self.prev_choice, self.prev_reward, self.shown_contrast, self.shown_side),
            "history": (hist.side.copy(), hist.easy.copy(), hist.contrast.copy(), hist.n.copy()),
        }

    def restore(self, snap: dict[str, object]) -> None:
        """Return to a :meth:`snapshot` (which stays valid: it can be restored again)."""
        self.env.restore(snap["env"])  # type: ignore[arg-type]
        self.g.set_state(snap["g"])  # type: ignore[arg-type]
        self.w, self.h, self.prev_choice, self.prev_reward, self.shown_contrast, self.shown_side = snap["twin"]  # type: ignore[misc]
        side, easy, contrast, n = snap["history"]  # type: ignore[misc]
        self.history.side, self.history.easy, self.history.contrast, self.history.n = side.copy(), easy.copy(), contrast.copy(), n.copy()

    # -- Environment -------------------------------------------------------------------------

    def draw(self, session_start: torch.Tensor, active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:class:`~twin.sim.rollout.Environment`: the twin's stimulus for every row (``active``
        must be None: the teacher runs every row every trial)."""
        if active is not None:
            raise ValueError("TwinTeacher runs every row on every trial (active must be None)")
        self.fallback_draw(session_start)
        d = self.decide()
        self.show(d.contrast, d.side)
        c, s = self.shown_contrast, self.shown_side
        return c * (1 - s), c * s, s.clone(), torch.full_like(c, 0.5)

    def observe(self, correct: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """:class:`~twin.sim.rollout.Environment`: the outcome; the choice follows from it and
        the side shown."""
        if active is not None:
            raise ValueError("TwinTeacher runs every row on every trial (active must be None)")
        choice = torch.where(correct.bool(), self.shown_side, 1 - self.shown_side)
        self.record_protocol(correct)
        self.record_twin(choice, correct.float())


__all__ = [
    "Candidates",
    "Decision",
    "Lookahead",
    "SideHistory",
    "TeachingConstraints",
    "TeachingObjective",
    "TeachingUnsupportedError",
    "TwinTeacher",
    "choose",
    "constraint_mask",
    "lookahead",
    "rule_step",
    "criterion_test_set",
]
