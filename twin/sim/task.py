"""The IBL visual decision task as a vectorised environment (many animals in one batch), running
the mechanics of a :class:`~twin.protocol.Curriculum`.

Mechanics (the IBL training protocol, ``trainingChoiceWorld``, by default):

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

from collections.abc import Sequence

import numpy as np
import torch

from twin.protocol import Curriculum

def session_schedule(n_animals: int, n_trials: int, protocol: Curriculum, rng: np.random.Generator) -> np.ndarray:
    """``[B, T]`` bool: True on the first trial of each session, lengths drawn per session."""
    lo, hi = protocol.session_trials
    starts = np.zeros((n_animals, n_trials), bool)
    for b in range(n_animals):  # schedule only; cheap, done once
        t = 0
        while t < n_trials:
            starts[b, t] = True
            t += int(rng.integers(lo, hi + 1))
    return starts


def distinct(protocols: Sequence[Curriculum]) -> tuple[list[Curriculum], list[int]]:
    """The distinct protocols (by value, in order of first use) and each row's index into them.

    Rows that share one protocol object are compared once (a batch is mostly a few objects
    repeated over many rows).
    """
    by_object: dict[int, Curriculum] = {}
    for p in protocols:
        by_object.setdefault(id(p), p)
    index = {p: i for i, p in enumerate(dict.fromkeys(by_object.values()))}
    of_object = {k: index[p] for k, p in by_object.items()}
    return list(index), [of_object[id(p)] for p in protocols]


def _stack(rows: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.stack(rows).to(device)


class TaskEnv:
    """Batched task state for ``B`` animals, each following its own protocol (or one for all).

    Every protocol parameter is held per row, so candidate curricula, twins and rollouts share
    one batch and one set of tensor operations per trial. ``draw`` and ``observe`` take an
    optional ``active`` mask: rows that are not active keep their state unchanged (used when
    rows run sessions of different lengths in lock step).

    Args:
        protocol: the mechanics, one for every row or a sequence of ``B`` (one per row).
        n_animals: batch size ``B``.
        generator: seeded torch generator for stimulus draws.
        device: where the state lives.
        start_phase: phase each animal starts in (an int or ``[B]``), e.g. where a twin's animal
            left off.
    """

    def __init__(
        self,
        protocol: Curriculum | Sequence[Curriculum],
        n_animals: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        start_phase: int | torch.Tensor = 0,
    ) -> None:
        protocols = [protocol] * n_animals if isinstance(protocol, Curriculum) else list(protocol)
        if len(protocols) != n_animals:
            raise ValueError(f"got {len(protocols)} protocols for {n_animals} rows")
        self.protocols = protocols
        self.b = n_animals
        self.g = generator
        self.device = dev = torch.device(device)
        uniq, rows = distinct(protocols)
        which = torch.tensor(rows, dtype=torch.long)
        n_ph = max(len(p.stimulus.phases) for p in uniq)
        width = max(len(ph) for p in uniq for ph in p.stimulus.phases)
        easy = sorted({c for p in uniq for c in p.stimulus.easy_contrasts})
        self.window_max = max(p.stimulus.advance_window for p in uniq)

        def per_protocol(p: Curriculum) -> dict[str, torch.Tensor]:
            s, f = p.stimulus, p.feedback
            table = torch.zeros(n_ph, width)
            cum = torch.ones(n_ph, width)
            counts = torch.ones(n_ph, dtype=torch.long)
            for i, ph in enumerate(s.phases):
                table[i, : len(ph)] = torch.tensor(ph)
                weights = torch.tensor(s.proportions[i] if s.proportions else [1.0] * len(ph), dtype=torch.float64)
                cum[i, : len(ph)] = (weights.cumsum(0) / weights.sum()).float()
                counts[i] = len(ph)
            return {
                "table": table,
                "cum": cum,
                "counts": counts,
                "n_phases": torch.tensor(len(s.phases)),
                "easy": torch.tensor([c in s.easy_contrasts for c in easy]),
                "window": torch.tensor(s.advance_window),
                "threshold": torch.tensor(s.advance_threshold),
                "debias": torch.tensor(f.debias),
                "debias_min": torch.tensor(f.debias_min_contrast),
                "biased": torch.tensor(f.biased_blocks),
                "p0": torch.tensor(f.block_probs[0]),
                "p1": torch.tensor(f.block_probs[1]),
                "blo": torch.tensor(float(f.block_length[0])),
                "bhi": torch.tensor(float(f.block_length[1])),
                "bmean": torch.tensor(f.block_mean),
                "unbiased": torch.tensor(float(f.unbiased_trials)),
            }

        parts = [per_protocol(p) for p in uniq]
        par = {k: _stack([d[k] for d in parts], dev)[which.to(dev)] for k in parts[0]}
        self.table, self.cum, self.counts = par["table"], par["cum"], par["counts"]  # [B, P, W], [B, P, W], [B, P]
        self.n_phases = par["n_phases"]
        self.easy_values = torch.tensor(easy, device=dev)
        self.easy_on = par["easy"]  # [B, E]
        self.window, self.threshold = par["window"], par["threshold"]
        self.debias, self.debias_min = par["debias"], par["debias_min"]
        self.biased = par["biased"]
        self.any_biased = bool(self.biased.any())
        self.p0, self.p1 = par["p0"], par["p1"]
        self.blo, self.bhi, self.bmean, self.unbiased = par["blo"], par["bhi"], par["bmean"], par["unbiased"]
        start = torch.as_tensor(start_phase, dtype=torch.long, device=dev).expand(n_animals).clone()
        if bool((start < 0).any()) or bool((start >= self.n_phases).any()):
            raise ValueError(f"start_phase must be in [0, n_phases - 1] of each row's protocol, got {start_phase}")
        self.phase = start
        z = torch.zeros(n_animals, device=dev)
        self.buf_c = torch.full((n_animals, self.window_max), -1.0, device=dev)
        self.buf_ok = torch.zeros(n_animals, self.window_max, device=dev)
        self.ptr = torch.zeros(n_animals, dtype=torch.long, device=dev)
        self.n_in_phase = torch.zeros(n_animals, dtype=torch.long, device=dev)
        self.repeat = torch.zeros(n_animals, dtype=torch.bool, device=dev)
        self.last_side = z.clone()
        self.last_contrast = z.clone()
        self.p_left = torch.full((n_animals,), 0.5, device=dev)
        self.block_left = self.unbiased.clone()
        self.arange = torch.arange(n_animals, device=dev)
        col = torch.arange(width, device=dev)
        shown = (self.table.unsqueeze(-1) == self.easy_values.view(1, 1, 1, -1)) & (col.view(1, 1, -1, 1) < self.counts.unsqueeze(-1).unsqueeze(-1))
        self.easy_in_phase = shown.any(2) & self.easy_on.unsqueeze(1)  # [B, P, E]: easy contrast e is shown in phase p
        self.easy_n = torch.zeros(n_animals, len(easy), device=dev)
        self.easy_ok = torch.zeros(n_animals, len(easy), device=dev)

    @property
    def p(self) -> Curriculum:
        """The protocol of the first row (all rows' when one protocol was given)."""
        return self.protocols[0]

    def _rand(self) -> torch.Tensor:
        return torch.rand(self.b, generator=self.g, device=self.device)

    def _block_lengths(self) -> torch.Tensor:
        u = self._rand()
        return torch.minimum(torch.maximum(-self.bmean * torch.log1p(-u), self.blo), self.bhi).round()

    def draw(
        self, session_start: torch.Tensor, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stimuli of the next trial.

        Args:
            session_start: ``[B]`` bool, True where this trial opens a session.
            active: optional ``[B]`` bool; inactive rows' state is left unchanged.

        Returns:
            ``(contrast_left, contrast_right, answer, prob_left)``, each ``[B]``; ``answer`` is the
            rewarded side (1 = right).
        """
        old = (self.repeat, self.p_left, self.block_left, self.last_side, self.last_contrast)
        self.repeat = self.repeat & ~session_start
        if self.any_biased:
            ss = session_start & self.biased
            self.p_left = torch.where(ss, torch.full_like(self.p_left, 0.5), self.p_left)
            self.block_left = torch.where(ss, self.unbiased, self.block_left)
            switch = (self.block_left <= 0) & self.biased
            first = switch & (self.p_left == 0.5)
            pick = torch.where(self._rand() < 0.5, self.p0, self.p1)
            flipped = torch.where(self.p_left == self.p0, self.p1, self.p0)
            self.p_left = torch.where(first, pick, torch.where(switch, flipped, self.p_left))
            self.block_left = torch.where(switch, self._block_lengths(), self.block_left)
            self.block_left = self.block_left - self.biased.float()
        side = (self._rand() >= self.p_left).float()  # 1 = right
        cum = self.cum[self.arange, self.phase]  # [B, W]
        idx = (self._rand().unsqueeze(1) >= cum).sum(1)
        idx = torch.minimum(idx, self.counts[self.arange, self.phase] - 1)
        contrast = self.table[self.arange, self.phase, idx]
        side = torch.where(self.repeat, self.last_side, side)
        contrast = torch.where(self.repeat, self.last_contrast, contrast)
        prob_left = torch.where(self.repeat, 1.0 - self.last_side, self.p_left)
        self.last_side, self.last_contrast = side, contrast
        if active is not None:
            new = (self.repeat, self.p_left, self.block_left, self.last_side, self.last_contrast)
            self.repeat, self.p_left, self.block_left, self.last_side, self.last_contrast = (
                torch.where(active, n, o) for n, o in zip(new, old)
            )
        return contrast * (1 - side), contrast * side, side, prob_left

    def observe(self, correct: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Update debiasing and advancement with the outcome ``correct`` (``[B]`` bool).

        Args:
            correct: ``[B]`` bool outcome of the trial just drawn.
            active: optional ``[B]`` bool; inactive rows' state is left unchanged.
        """
        rep = (~correct) & (self.last_contrast >= self.debias_min) & self.debias
        slot = self.ptr.unsqueeze(1)
        old_c, old_ok = self.buf_c.gather(1, slot), self.buf_ok.gather(1, slot)  # the outcome leaving the window
        new_c, new_ok = self.last_contrast.unsqueeze(1), correct.float().unsqueeze(1)
        if active is not None:
            a = active.unsqueeze(1)
            new_c, new_ok = torch.where(a, new_c, old_c), torch.where(a, new_ok, old_ok)
            self.repeat = torch.where(active, rep, self.repeat)
            self.ptr = torch.where(active, (self.ptr + 1) % self.window, self.ptr)
            self.n_in_phase = self.n_in_phase + active.long()
        else:
            self.repeat = rep
            self.ptr = (self.ptr + 1) % self.window
            self.n_in_phase = self.n_in_phase + 1
        self.buf_c.scatter_(1, slot, new_c)
        self.buf_ok.scatter_(1, slot, new_ok)
        # running counts, per easy contrast, of the window's trials and of its correct ones
        e_new, e_old = (new_c == self.easy_values).float(), (old_c == self.easy_values).float()  # [B, E]
        self.easy_n += e_new - e_old
        self.easy_ok += e_new * new_ok - e_old * old_ok
        in_phase = self.easy_in_phase[self.arange, self.phase]  # [B, E]
        acc = self.easy_ok / self.easy_n.clamp(min=1)
        ok = (~in_phase | ((self.easy_n > 0) & (acc >= self.threshold.unsqueeze(1) - 1e-6))).all(1)
        advance = ok & (self.n_in_phase >= self.window) & (self.phase < self.n_phases - 1)
        if active is not None:
            advance &= active
        if bool(advance.any()):
            self.phase = self.phase + advance.long()
            self.n_in_phase = torch.where(advance, torch.zeros_like(self.n_in_phase), self.n_in_phase)
            self.buf_c[advance] = -1.0
            self.buf_ok[advance] = 0.0
            self.easy_n[advance] = 0.0
            self.easy_ok[advance] = 0.0
