"""The IBL visual decision task as a vectorised environment (many animals in one batch).

Mechanics (IBL training protocol, ``trainingChoiceWorld``):

* contrast phases: the set of contrasts shown grows as the animal improves; the default phases are
  ``{1, .5}``, then ``.25``, ``.125``, ``.0625`` and ``0`` are added in turn, and finally ``.5`` is dropped;
* advancement within and across sessions: once the last ``advance_window`` trials of the current
  phase reach ``advance_threshold`` accuracy on every easy contrast shown, the next phase starts;
* repeat-on-error debiasing: after an error at a contrast ``>= debias_min_contrast``, the same side
  and contrast are shown again;
* biased blocks (optional): after 90 unbiased trials, blocks with P(left) 0.2 or 0.8 alternate,
  lengths drawn from a truncated exponential;
* sessions of a random length in ``session_trials``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IBL_PHASES: tuple[tuple[float, ...], ...] = (
    (1.0, 0.5),
    (1.0, 0.5, 0.25),
    (1.0, 0.5, 0.25, 0.125),
    (1.0, 0.5, 0.25, 0.125, 0.0625),
    (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),
    (1.0, 0.25, 0.125, 0.0625, 0.0),
)


@dataclass(frozen=True)
class TaskProtocol:
    """A training protocol: the stimulus and feedback mechanics of the task.

    Attributes:
        phases: contrast sets, in order of advancement (each non-empty, values in [0, 1]).
        advance_window: trials of the current phase looked at by the advancement rule.
        advance_threshold: accuracy needed on each easy contrast to advance.
        easy_contrasts: contrasts the advancement rule looks at.
        debias: repeat the stimulus after an error at an easy contrast.
        debias_min_contrast: smallest contrast whose errors are repeated.
        session_trials: inclusive range of trials per session.
        biased_blocks: use P(left) 0.2/0.8 blocks (after ``unbiased_trials`` per session).
        block_probs: P(left) of the two block types.
        block_length: inclusive range of block lengths.
        block_mean: mean of the exponential the block lengths are drawn from (then truncated).
        unbiased_trials: trials at P(left) = 0.5 that open a biased session.
    """

    phases: tuple[tuple[float, ...], ...] = IBL_PHASES
    advance_window: int = 50
    advance_threshold: float = 0.8
    easy_contrasts: tuple[float, ...] = (1.0, 0.5)
    debias: bool = True
    debias_min_contrast: float = 0.5
    session_trials: tuple[int, int] = (400, 700)
    biased_blocks: bool = False
    block_probs: tuple[float, float] = (0.2, 0.8)
    block_length: tuple[int, int] = (20, 100)
    block_mean: float = 60.0
    unbiased_trials: int = 90

    def __post_init__(self) -> None:
        if not self.phases or any(len(p) == 0 for p in self.phases):
            raise ValueError("phases: every phase needs at least one contrast")
        for i, ph in enumerate(self.phases):
            for c in ph:
                if not 0.0 <= c <= 1.0:
                    raise ValueError(f"phases[{i}]: contrast {c} outside [0, 1]")
        if self.advance_window < 1:
            raise ValueError("advance_window must be >= 1")
        if not 0.0 < self.advance_threshold <= 1.0:
            raise ValueError("advance_threshold must be in (0, 1]")
        lo, hi = self.session_trials
        if not 1 <= lo <= hi:
            raise ValueError(f"session_trials must satisfy 1 <= low <= high, got {self.session_trials}")
        blo, bhi = self.block_length
        if not 1 <= blo <= bhi:
            raise ValueError(f"block_length must satisfy 1 <= low <= high, got {self.block_length}")


IBL_DEFAULT = TaskProtocol()
"""The default IBL training protocol (no biased blocks before criterion)."""


def session_schedule(n_animals: int, n_trials: int, protocol: TaskProtocol, rng: np.random.Generator) -> np.ndarray:
    """``[B, T]`` bool: True on the first trial of each session, lengths drawn per session."""
    lo, hi = protocol.session_trials
    starts = np.zeros((n_animals, n_trials), bool)
    for b in range(n_animals):  # schedule only; cheap, done once
        t = 0
        while t < n_trials:
            starts[b, t] = True
            t += int(rng.integers(lo, hi + 1))
    return starts


class TaskEnv:
    """Batched task state for ``B`` animals following one protocol.

    Args:
        protocol: the mechanics.
        n_animals: batch size ``B``.
        generator: seeded torch generator for stimulus draws.
        device: where the state lives.
        start_phase: phase each animal starts in (an int or ``[B]``), e.g. where a twin's animal
            left off.
    """

    def __init__(
        self,
        protocol: TaskProtocol,
        n_animals: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        start_phase: int | torch.Tensor = 0,
    ) -> None:
        self.p = protocol
        self.b = n_animals
        self.g = generator
        self.device = torch.device(device)
        n_ph = len(protocol.phases)
        width = max(len(ph) for ph in protocol.phases)
        table = torch.zeros(n_ph, width)
        counts = torch.zeros(n_ph, dtype=torch.long)
        for i, ph in enumerate(protocol.phases):
            table[i, : len(ph)] = torch.tensor(ph)
            counts[i] = len(ph)
        self.table, self.counts = table.to(self.device), counts.to(self.device)
        self.easy = torch.tensor(protocol.easy_contrasts, device=self.device)
        z = torch.zeros(n_animals, device=self.device)
        start = torch.as_tensor(start_phase, dtype=torch.long, device=self.device)
        if bool((start < 0).any()) or bool((start >= n_ph).any()):
            raise ValueError(f"start_phase must be in [0, {n_ph - 1}] for a protocol with {n_ph} phases")
        self.phase = start.expand(n_animals).clone()
        self.buf_c = torch.full((n_animals, protocol.advance_window), -1.0, device=self.device)
        self.buf_ok = torch.zeros(n_animals, protocol.advance_window, device=self.device)
        self.ptr = torch.zeros(n_animals, dtype=torch.long, device=self.device)
        self.n_in_phase = torch.zeros(n_animals, dtype=torch.long, device=self.device)
        self.repeat = torch.zeros(n_animals, dtype=torch.bool, device=self.device)
        self.last_side = z.clone()
        self.last_contrast = z.clone()
        self.p_left = torch.full((n_animals,), 0.5, device=self.device)
        self.block_left = torch.full((n_animals,), float(protocol.unbiased_trials), device=self.device)
        self.arange = torch.arange(n_animals, device=self.device)

    def _rand(self) -> torch.Tensor:
        return torch.rand(self.b, generator=self.g, device=self.device)

    def _block_lengths(self) -> torch.Tensor:
        lo, hi = self.p.block_length
        u = self._rand()
        return (-self.p.block_mean * torch.log1p(-u)).clamp(lo, hi).round()

    def draw(self, session_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stimuli of the next trial.

        Args:
            session_start: ``[B]`` bool, True where this trial opens a session.

        Returns:
            ``(contrast_left, contrast_right, answer, prob_left)``, each ``[B]``; ``answer`` is the
            rewarded side (1 = right).
        """
        p = self.p
        self.repeat &= ~session_start
        if p.biased_blocks:
            self.p_left = torch.where(session_start, torch.full_like(self.p_left, 0.5), self.p_left)
            self.block_left = torch.where(session_start, torch.full_like(self.block_left, float(p.unbiased_trials)), self.block_left)
            switch = self.block_left <= 0
            first = switch & (self.p_left == 0.5)
            pick = torch.where(self._rand() < 0.5, p.block_probs[0], p.block_probs[1])
            flipped = torch.where(self.p_left == p.block_probs[0], p.block_probs[1], p.block_probs[0])
            self.p_left = torch.where(first, pick, torch.where(switch, flipped, self.p_left))
            self.block_left = torch.where(switch, self._block_lengths(), self.block_left)
            self.block_left -= 1
        side = (self._rand() >= self.p_left).float()  # 1 = right
        idx = (self._rand() * self.counts[self.phase]).long().clamp(max=self.table.shape[1] - 1)
        contrast = self.table[self.phase, idx]
        side = torch.where(self.repeat, self.last_side, side)
        contrast = torch.where(self.repeat, self.last_contrast, contrast)
        prob_left = torch.where(self.repeat, 1.0 - self.last_side, self.p_left)
        self.last_side, self.last_contrast = side, contrast
        return contrast * (1 - side), contrast * side, side, prob_left

    def observe(self, correct: torch.Tensor) -> None:
        """Update debiasing and advancement with the outcome ``correct`` (``[B]`` bool)."""
        p = self.p
        if p.debias:
            self.repeat = (~correct) & (self.last_contrast >= p.debias_min_contrast)
        w = p.advance_window
        self.buf_c[self.arange, self.ptr] = self.last_contrast
        self.buf_ok[self.arange, self.ptr] = correct.float()
        self.ptr = (self.ptr + 1) % w
        self.n_in_phase += 1
        shown = self.table[self.phase]  # [B, width]
        ok = torch.ones(self.b, dtype=torch.bool, device=self.device)
        for c in self.easy.tolist():
            in_phase = ((shown == c) & (torch.arange(shown.shape[1], device=self.device) < self.counts[self.phase, None])).any(1)
            sel = self.buf_c == c
            n = sel.sum(1)
            acc = (self.buf_ok * sel).sum(1) / n.clamp(min=1)
            ok &= ~in_phase | ((n > 0) & (acc >= p.advance_threshold))
        advance = ok & (self.n_in_phase >= w) & (self.phase < len(p.phases) - 1)
        if bool(advance.any()):
            self.phase = self.phase + advance.long()
            self.n_in_phase = torch.where(advance, torch.zeros_like(self.n_in_phase), self.n_in_phase)
            self.buf_c[advance] = -1.0
            self.buf_ok[advance] = 0.0


def phase_of_contrasts(protocol: TaskProtocol, contrasts: np.ndarray | list[float]) -> int:
    """The first phase of ``protocol`` whose contrast set holds every contrast in ``contrasts``
    (unsigned); the last phase when none does. Used to place an animal in a protocol from the
    contrasts of its latest trials."""
    seen = {round(float(c), 6) for c in np.asarray(contrasts, dtype=float).ravel()}
    for i, ph in enumerate(protocol.phases):
        if seen <= {round(c, 6) for c in ph}:
            return i
    return len(protocol.phases) - 1
