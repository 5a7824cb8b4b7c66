"""The IBL visual decision task as a vectorised environment (many animals in one batch), running
the mechanics of a :class:`~twin.protocol.Curriculum`.

Mechanics (iblrig v8 ``trainingChoiceWorld`` by default, :data:`twin.protocol.IBL_DEFAULT`):

* contrast phases: the set of contrasts shown grows as the animal improves, each contrast with
  its phase's proportion; the default phases are ``{1, .5}``, then ``.25``, ``.125``, ``.0625`` and
  ``0`` (at half weight) added in turn, and finally ``.5`` dropped;
* advancement (:class:`~twin.protocol.AdvanceRule`, one per phase), checked at the start of every
  trial before its stimulus is drawn, on the current session's trials: a performance rule needs
  ``correct / window > threshold`` over the last ``window`` trials of each of its contrasts on each
  side; a trial-count rule passes on the ``trials``-th trial of the session in the phase. Each
  session starts in the phase the previous one ended in, with fresh counts;
* debiasing: after an error at a contrast ``>= debias_min_contrast``, when the next trial's phase
  has debiasing, it repeats the contrast, on the same side (``REPEAT``) or on the right with
  probability ``Φ((f_left − 0.5) / 0.5)`` (``AGAINST_BIAS``, ``f_left`` the session's fraction of
  left choices); never on a session's first trial;
* zero-contrast trials rewarded on the left (``ZeroContrastSide.LEFT``) or on a random side;
* biased blocks (optional): after ``unbiased_trials`` unbiased trials, blocks with P(left) 0.2 or
  0.8 alternate, lengths drawn from a truncated exponential;
* sessions of a random length in ``session_trials``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from twin.protocol import AdvanceKind, Curriculum, DebiasSide, ZeroContrastSide
from twin.sim import task_kernels

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
    ids = list(map(id, protocols))
    by_object = dict(zip(ids, protocols))  # each object once (hashing by value is slow)
    index = {p: i for i, p in enumerate(dict.fromkeys(by_object[k] for k in dict.fromkeys(ids)))}
    of_object = {k: index[p] for k, p in by_object.items()}
    return list(index), list(map(of_object.__getitem__, ids))


def _stack(rows: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.stack(rows).to(device)


_STATE = ("phase", "count", "perf_ptr", "perf_n", "perf_sum", "pending", "n_left", "n_resp", "debias_trial", "p_left", "block_left", "last_side", "last_contrast")
"""Per-row state; rows that are not active keep all of it."""

_OBSERVED = ("pending", "n_left", "n_resp")
"""What ``observe`` replaces (its buffer writes touch active rows only)."""

_IN_PLACE = ("perf_buf", "perf_ptr", "perf_n", "perf_sum")
"""The buffers ``observe`` writes in place (a snapshot copies them; the rest is replaced)."""


class TaskEnv:
    """Batched task state for ``B`` animals, each following its own protocol (or one for all).

    Every protocol parameter is held per row, so candidate curricula, twins and rollouts share
    one batch and one set of tensor operations per trial. ``draw`` and ``observe`` take an
    optional ``active`` mask: rows that are not active keep their state unchanged (used when
    rows run sessions of different lengths in lock step).

    State (``L`` the contrasts any performance rule looks at, ``K = 2 L`` contrast-side pairs,
    ``M`` the longest window): ``phase`` ``[B]`` (of the trial last drawn), ``count`` ``[B]``
    trials of the session started in that phase, ``perf_buf`` ``[B, K, M]`` the session's last
    outcomes per contrast and side (``k = 2 l + side``; ring buffers at ``perf_ptr``, ``perf_n``
    filled), ``perf_sum`` ``[B, K]`` the correct ones among the last ``window`` (of the current
    phase's rule; kept up to date trial by trial), ``pending`` ``[B]`` an error calling for a
    debiasing trial, ``n_left``/``n_resp`` ``[B]`` the session's left choices and choices,
    ``debias_trial`` ``[B]`` whether the trial last drawn was a debiasing one. In the compiled
    form (``fused``) the state is updated in place, ``perf_buf`` holds the outcomes as bits
    (``[B, K, ceil(M / 64)]`` int64, slot ``j`` in bit ``j % 64`` of word ``j // 64``) and
    ``last_level`` ``[B]`` the performance level of the trial last drawn (-1: none).

    Args:
        protocol: the mechanics, one for every row or a sequence of ``B`` (one per row).
        n_animals: batch size ``B``.
        generator: seeded torch generator for stimulus draws.
        device: where the state lives.
        start_phase: phase each animal starts in (an int or ``[B]``), e.g. where a twin's animal
            left off.
        fused: run each trial's mechanics in the compiled kernels of :mod:`twin.sim.task_kernels`
            (on the CPU, where numba is present and may run now, :func:`task_kernels.usable`; the state is then updated in place); False, or
            another device: the torch form, their reference (the same results for the same seed).
    """

    def __init__(
        self,
        protocol: Curriculum | Sequence[Curriculum],
        n_animals: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        start_phase: int | torch.Tensor = 0,
        fused: bool = True,
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
        perf = [r for p in uniq for r in p.stimulus.advance if r.kind is AdvanceKind.PERFORMANCE]
        levels = sorted({round(c, 6) for r in perf for c in r.contrasts})
        self.window_max = max([r.window for r in perf], default=1)

        def per_protocol(p: Curriculum) -> dict[str, torch.Tensor]:
            s, f = p.stimulus, p.feedback
            table = torch.zeros(n_ph, width)
            cum = torch.ones(n_ph, width)
            counts = torch.ones(n_ph, dtype=torch.long)
            is_perf = torch.zeros(n_ph, dtype=torch.bool)
            is_count = torch.zeros(n_ph, dtype=torch.bool)
            window = torch.ones(n_ph)
            threshold = torch.zeros(n_ph)
            trials = torch.zeros(n_ph, dtype=torch.long)
            needs = torch.zeros(n_ph, max(len(levels), 1), dtype=torch.bool)
            debias_in = torch.zeros(n_ph, dtype=torch.bool)
            for i, ph in enumerate(s.phases):
                table[i, : len(ph)] = torch.tensor(ph)
                weights = torch.tensor(s.weights(i), dtype=torch.float64)
                cum[i, : len(ph)] = (weights.cumsum(0) / weights.sum()).float()
                counts[i] = len(ph)
                debias_in[i] = f.debias_in(i)
            for i, r in enumerate(s.advance):
                is_perf[i] = r.kind is AdvanceKind.PERFORMANCE
                is_count[i] = r.kind is AdvanceKind.TRIAL_COUNT
                window[i], threshold[i], trials[i] = float(r.window), r.threshold, r.trials
                if is_perf[i]:
                    for c in r.contrasts:
                        needs[i, levels.index(round(c, 6))] = True
            return {
                "table": table,
                "cum": cum,
                "counts": counts,
                "n_phases": torch.tensor(len(s.phases)),
                "is_perf": is_perf,
                "is_count": is_count,
                "window": window,
                "threshold": threshold,
                "trials": trials,
                "needs": needs,
                "debias_in": debias_in,
                "debias_min": torch.tensor(f.debias_min_contrast),
                "against_bias": torch.tensor(f.debias_side is DebiasSide.AGAINST_BIAS),
                "zero_left": torch.tensor(s.zero_contrast_side is ZeroContrastSide.LEFT),
                "biased": torch.tensor(f.biased_blocks),
                "p0": torch.tensor(f.block_probs[0]),
                "p1": torch.tensor(f.block_probs[1]),
                "blo": torch.tensor(float(f.block_length[0])),
                "bhi": torch.tensor(float(f.block_length[1])),
                "bmean": torch.tensor(f.block_mean),
                "unbiased": torch.tensor(float(f.unbiased_trials)),
            }

        parts = [per_protocol(p) for p in uniq]
        self._tables = {k: _stack([d[k] for d in parts], dev) for k in parts[0]}  # [U, ...] per distinct protocol
        self._which = which.to(dev)  # [B] each row's protocol
        par = {k: v[self._which] for k, v in self._tables.items()}
        self.table, self.cum, self.counts = par["table"], par["cum"], par["counts"]  # [B, P, W], [B, P, W], [B, P]
        self.n_phases = par["n_phases"]
        self.is_perf, self.is_count = par["is_perf"], par["is_count"]  # [B, P]: the rule that leaves phase p
        self.window, self.threshold, self.trials = par["window"], par["threshold"], par["trials"]  # [B, P]
        self.needs = par["needs"]  # [B, P, L]: contrast level l is looked at when leaving phase p
        self.debias_in, self.debias_min = par["debias_in"], par["debias_min"]  # [B, P], [B]
        self.against_bias, self.zero_left = par["against_bias"], par["zero_left"]
        self.biased = par["biased"]
        self.any_biased = bool(self.biased.any())
        self.p0, self.p1 = par["p0"], par["p1"]
        self.blo, self.bhi, self.bmean, self.unbiased = par["blo"], par["bhi"], par["bmean"], par["unbiased"]
        self.levels = torch.tensor(levels, device=dev)  # [L]
        start = torch.as_tensor(start_phase, dtype=torch.long, device=dev).expand(n_animals).clone()
        if bool((start < 0).any()) or bool((start >= self.n_phases).any()):
            raise ValueError(f"start_phase must be in [0, n_phases - 1] of each row's protocol, got {start_phase}")
        self.phase = start
        z = torch.zeros(n_animals, device=dev)
        n_lv, m = len(levels), self.window_max
        self.count = torch.zeros(n_animals, dtype=torch.long, device=dev)
        self.perf_buf = torch.zeros(n_animals, 2 * n_lv, m, device=dev)
        self.perf_ptr = torch.zeros(n_animals, 2 * n_lv, dtype=torch.long, device=dev)
        self.perf_n = torch.zeros(n_animals, 2 * n_lv, dtype=torch.long, device=dev)
        self.perf_sum = torch.zeros(n_animals, 2 * n_lv, device=dev)
        self.pending = torch.zeros(n_animals, dtype=torch.bool, device=dev)
        self.debias_trial = torch.zeros(n_animals, dtype=torch.bool, device=dev)
        self.n_left = z.clone()
        self.n_resp = z.clone()
        self.last_side = z.clone()
        self.last_contrast = z.clone()
        self.p_left = torch.full((n_animals,), 0.5, device=dev)
        self.block_left = self.unbiased.clone()
        self.arange = torch.arange(n_animals, device=dev)
        self._age = torch.arange(m, device=dev)
        self.fused = bool(fused and task_kernels.usable() and dev.type == "cpu")
        if self.fused:
            self._prepare_kernels()

    @property
    def p(self) -> Curriculum:
        """The protocol of the first row (all rows' when one protocol was given)."""
        return self.protocols[0]

    def _state_names(self) -> tuple[str, ...]:
        return (*_STATE, "perf_buf", *(("last_level",) if self.fused else ()))

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the per-row state, for :meth:`restore` (the generator's state is the caller's
        to keep)."""
        return {k: getattr(self, k).clone() for k in self._state_names()}

    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        """Return to a :meth:`snapshot` (which stays valid: it can be restored again). The
        compiled form's kernels hold views of the state tensors, so it is copied into them in
        place; the torch form replaces them, as its steps do."""
        for k, v in snap.items():
            if self.fused:
                getattr(self, k).copy_(v)
            else:
                setattr(self, k, v.clone())

    def _rand(self) -> torch.Tensor:
        return torch.rand(self.b, generator=self.g, device=self.device)

    def _block_lengths(self) -> torch.Tensor:
        u = self._rand()
        return torch.minimum(torch.maximum(-self.bmean * torch.log1p(-u), self.blo), self.bhi).round()

    def _snapshot(self, names: tuple[str, ...] = _STATE) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in names}

    def _keep_inactive(self, old: dict[str, torch.Tensor], active: torch.Tensor | None) -> None:
        if active is None:
            return
        for k, o in old.items():
            new = getattr(self, k)
            a = active.view(-1, *([1] * (new.dim() - 1)))
            setattr(self, k, torch.where(a, new, o))

    def window_correct(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``[R, K]``: correct trials among the session's last ``window`` trials (of the current
        phase's rule) at each rule contrast and side, recounted from the buffers, for ``rows``
        (``[R]`` indices; None: every row). ``perf_sum`` holds the same, kept trial by trial."""
        rows = self.arange if rows is None else rows
        w = self.window[rows, self.phase[rows]].long()  # [R]
        age = (self.perf_ptr[rows].unsqueeze(-1) - 1 - self._age) % self.window_max  # [R, K, M]: 0 = the newest
        keep = (age < w.view(-1, 1, 1)) & (age < self.perf_n[rows].unsqueeze(-1))
        buf = self.perf_buf[rows]
        if self.fused:  # bits: slot j in bit j % 64 of word j // 64
            buf = ((buf[..., self._age // 64] >> (self._age % 64)) & 1).float()
        return (buf * keep).sum(-1)

    def _advance(self) -> None:
        """iblrig's ``check_training_phase``: at most one phase forward, before the draw."""
        ph = self.phase
        is_perf, is_count = self.is_perf[self.arange, ph], self.is_count[self.arange, ph]
        go = is_count & (self.count >= self.trials[self.arange, ph])
        if self.levels.numel():
            w = self.window[self.arange, ph]
            thr = self.threshold[self.arange, ph]
            passed = self.perf_sum > (thr * w).unsqueeze(1) + 1e-4  # [B, K]
            needs = self.needs[self.arange, ph].repeat_interleave(2, 1)  # [B, K]
            go = go | (is_perf & (passed | ~needs).all(1))
        if bool(go.any()):
            self.phase = ph + go.long()
            self.count = torch.where(go, torch.zeros_like(self.count), self.count)
            if self.levels.numel():  # the new phase's rule may look at another window
                rows = torch.nonzero(go).squeeze(1)
                self.perf_sum = self.perf_sum.clone()
                self.perf_sum[rows] = self.window_correct(rows)

    def _prepare_kernels(self) -> None:
        """Tables and scratch buffers of the kernels, once per environment: thresholds as torch
        computes them in float32, each table entry's performance level (-1: none), numpy views
        of the state (updated in place from now on)."""
        b, tb = self.b, self._tables
        lv = self.levels
        cut = tb["threshold"] * tb["window"] + 1e-4  # [U, P]: what perf_sum must exceed
        debias_cut = tb["debias_min"] - 1e-9  # [U]
        if lv.numel():
            hit = torch.isclose(tb["table"].unsqueeze(-1), lv)  # [U, P, W, L]
            level_of = torch.where(hit.any(-1), hit.byte().argmax(-1), -1)
            z_hit = torch.isclose(torch.zeros(1), lv)
            last_level = int(z_hit.byte().argmax()) if bool(z_hit.any()) else -1
        else:
            level_of = torch.full(tb["table"].shape, -1, dtype=torch.long)
            last_level = -1
        self.last_level = torch.full((b,), last_level, dtype=torch.long)
        self.perf_buf = torch.zeros(b, self.perf_sum.shape[1], (self.window_max + 63) // 64, dtype=torch.long)  # bits
        self.perf_sum = self.perf_sum.contiguous()
        self._scratch_phase = torch.zeros(b, dtype=torch.long)
        self._scratch_rep = torch.zeros(b, dtype=torch.bool)
        self._u = [torch.zeros(b) for _ in range(3)]  # pick (blocks), side, contrast
        self._z = torch.zeros(b)
        self._no_blocks = torch.zeros(b)
        self._all = torch.ones(b, dtype=torch.bool).numpy()
        n = lambda t: t.contiguous().numpy()  # noqa: E731
        self._k_state = tuple(n(t) for t in (self.phase, self.count, self.perf_buf, self.perf_ptr, self.perf_n, self.perf_sum, self.pending, self.n_left, self.n_resp))
        window = tb["window"].long()
        self._k_which = n(self._which)
        self._k_rules = tuple(n(t) for t in (tb["is_perf"], tb["is_count"], tb["trials"], cut, tb["needs"], window, tb["debias_in"], tb["against_bias"]))
        self._k_block = tuple(n(t) for t in (self.p_left, self.block_left, self.last_side, self.last_contrast, self.last_level, self.debias_trial, self.n_left, self.n_resp))
        self._k_table = tuple(n(t) for t in (tb["biased"], tb["unbiased"], tb["p0"], tb["p1"], tb["cum"], tb["counts"], tb["table"], level_of, tb["against_bias"], tb["zero_left"]))
        self._k_obs = tuple(n(t) for t in (self.phase, self.last_side, self.last_contrast, self.last_level, self.pending, self.n_left, self.n_resp, self.perf_buf, self.perf_ptr, self.perf_n, self.perf_sum))
        self._k_window, self._k_debias_cut = n(window), n(debias_cut)
        self._k_scratch = (self._scratch_phase.numpy(), self._scratch_rep.numpy())

    def _mask(self, active: torch.Tensor | None) -> tuple[np.ndarray, bool]:
        if active is None:
            return self._all, False
        return active.to(torch.bool).contiguous().numpy(), True

    def _draw_fused(
        self, session_start: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ss = session_start.to(torch.bool).contiguous().numpy()
        act, has_active = self._mask(active)
        has_levels = bool(self.levels.numel())
        need_normal = task_kernels.draw_pre(ss, act, has_active, has_levels, self.window_max, self._k_which, *self._k_state, *self._k_rules, *self._k_scratch)
        u_pick, u_side, u_idx = self._u
        g, dev = self.g, self.device
        block_len = self._no_blocks
        if self.any_biased:  # the torch form's draws, in its order
            torch.rand(self.b, generator=g, device=dev, out=u_pick)
            block_len = self._block_lengths()
        torch.rand(self.b, generator=g, device=dev, out=u_side)
        torch.rand(self.b, generator=g, device=dev, out=u_idx)
        if need_normal:
            torch.randn(self.b, generator=g, device=dev, out=self._z)
        out = torch.empty(4, self.b)
        task_kernels.draw_post(
            ss, act, has_active, self.any_biased, bool(need_normal), self._k_which,
            u_pick.numpy(), block_len.contiguous().numpy(), u_side.numpy(), u_idx.numpy(), self._z.numpy(),
            *self._k_block, *self._k_scratch, *self._k_table, *out.numpy(),
        )
        return out[0], out[1], out[2], out[3]

    def draw(
        self, session_start: torch.Tensor, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stimuli of the next trial: advancement check, then the draw (iblrig's ``next_trial``).

        Args:
            session_start: ``[B]`` bool, True where this trial opens a session.
            active: optional ``[B]`` bool; inactive rows' state is left unchanged.

        Returns:
            ``(contrast_left, contrast_right, answer, prob_left)``, each ``[B]``; ``answer`` is the
            rewarded side (1 = right). ``self.phase`` is then the phase the trial was drawn in.
        """
        if self.fused:
            return self._draw_fused(session_start, active)
        old = self._snapshot()
        ss = session_start
        # a session starts with a fresh trials table and phase counters (iblrig: one Session each)
        self.count = torch.where(ss, torch.zeros_like(self.count), self.count) + 1
        fresh = ss.view(-1, 1)
        self.perf_n = torch.where(fresh, torch.zeros_like(self.perf_n), self.perf_n)
        self.perf_ptr = torch.where(fresh, torch.zeros_like(self.perf_ptr), self.perf_ptr)
        self.perf_sum = torch.where(fresh, torch.zeros_like(self.perf_sum), self.perf_sum)
        self.pending = self.pending & ~ss
        self.n_left = torch.where(ss, torch.zeros_like(self.n_left), self.n_left)
        self.n_resp = torch.where(ss, torch.zeros_like(self.n_resp), self.n_resp)
        self._advance()
        if self.any_biased:
            sb = ss & self.biased
            self.p_left = torch.where(sb, torch.full_like(self.p_left, 0.5), self.p_left)
            self.block_left = torch.where(sb, self.unbiased, self.block_left)
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
        rep = self.pending & self.debias_in[self.arange, self.phase]
        # against the bias: right when N(f_left, 0.5) >= 0.5
        rep_side = self.last_side
        if bool((rep & self.against_bias).any()):
            f_left = self.n_left / self.n_resp.clamp(min=1)
            away = (f_left + 0.5 * torch.randn(self.b, generator=self.g, device=self.device) >= 0.5).float()
            rep_side = torch.where(self.against_bias, away, self.last_side)
        # P(left) as the rig records it: iblrig v8 keeps PROBABILITY_LEFT; a repeat's side is certain
        rep_p_left = torch.where(self.against_bias, self.p_left, 1.0 - self.last_side)
        side = torch.where(rep, rep_side, side)
        contrast = torch.where(rep, self.last_contrast, contrast)
        prob_left = torch.where(rep, rep_p_left, self.p_left)
        side = torch.where((contrast == 0) & self.zero_left, torch.zeros_like(side), side)
        self.debias_trial = rep
        self.last_side, self.last_contrast = side, contrast
        self._keep_inactive(old, active)
        return contrast * (1 - side), contrast * side, side, prob_left

    def show(self, contrast: torch.Tensor, side: torch.Tensor) -> None:
        """Replace the stimulus of the trial just drawn by the one the rig showed (a teacher's
        choice, or the rig's own record): ``[B]`` unsigned contrast and side (1 = right). Its
        outcome then counts for that stimulus's window; a replaced debiasing repeat no longer
        counts as one. The compiled form's kernels hold views of the state, so it is written in
        place."""
        contrast = contrast.to(self.last_contrast.dtype)
        side = side.to(self.last_side.dtype)
        same = (contrast == self.last_contrast) & (side == self.last_side)
        if self.fused:  # the compiled observe finds the window by the trial's level
            if self.levels.numel():
                hit = torch.isclose(contrast.unsqueeze(1), self.levels)  # [B, L]
                self.last_level.copy_(torch.where(hit.any(1), hit.byte().argmax(1), -1))
            else:
                self.last_level.fill_(-1)
            self.debias_trial.logical_and_(same)
            self.last_contrast.copy_(contrast)
            self.last_side.copy_(side)
        else:
            self.debias_trial = self.debias_trial & same
            self.last_contrast, self.last_side = contrast.clone(), side.clone()

    def observe(self, correct: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Record the outcome ``correct`` (``[B]`` bool) of the trial just drawn.

        Args:
            correct: ``[B]`` bool outcome of the trial just drawn.
            active: optional ``[B]`` bool; inactive rows' state is left unchanged.
        """
        if self.fused:
            act, has_active = self._mask(active)
            ok = correct.to(torch.bool).contiguous().numpy()
            task_kernels.observe(ok, act, has_active, bool(self.levels.numel()), self.window_max, self._k_which, *self._k_obs, self._k_window, self._k_debias_cut)
            return
        old = self._snapshot(_OBSERVED)
        self.pending = (~correct) & (self.last_contrast >= self.debias_min - 1e-9)
        self.n_left = self.n_left + ((self.last_side == 0) == correct).float()
        self.n_resp = self.n_resp + 1
        if self.levels.numel():
            hit = torch.isclose(self.last_contrast.unsqueeze(1), self.levels)  # [B, L]
            on = hit.any(1) if active is None else hit.any(1) & active  # buffers are written in place, active rows only
            row = torch.nonzero(on).squeeze(1)
            n_k, m = self.perf_sum.shape[1], self.window_max
            cell = row * n_k + 2 * hit[row].byte().argmax(1) + self.last_side[row].long()  # flat [B * K] index
            ptr_v, n_v, sum_v, buf_v = self.perf_ptr.view(-1), self.perf_n.view(-1), self.perf_sum.view(-1), self.perf_buf.view(-1)
            ptr, n = ptr_v[cell], n_v[cell]
            w = self.window[row, self.phase[row]].long()
            leaving = buf_v[cell * m + (ptr - w) % m] * (n >= w)
            new = correct[row].float()
            buf_v[cell * m + ptr] = new
            ptr_v[cell] = (ptr + 1) % m
            n_v[cell] = (n + 1).clamp(max=m)
            sum_v[cell] += new - leaving
        self._keep_inactive(old, active)
