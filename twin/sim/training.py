"""Training from scratch (or from a twin's state) to an IBL criterion, simulated in one batch.

Rows of the batch are learners (twins or ground-truth agents, one shared rule network with
per-row initial weights and learning-rate multipliers) each following its own protocol: candidate
curricula x twins x rollouts in one tensor batch. Sessions run in lock step: session ``s`` of every
row runs at once, each row for its own number of trials (drawn from its protocol's session range;
rows whose session is over are masked). After every session the criterion is judged on the
window of the last sessions (the psychometric fitted to the pooled counts, batched over rows);
rows that reach it stop, and the run ends when all rows are done or ``max_sessions`` is reached.

Only per-session counts by (signed contrast, rewarded side) are kept, not trial-by-trial
records, so memory does not grow with the number of trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twin.analysis.criteria import TRAINED_1A, CriterionConfig, SessionStats, criterion_passes, window_psychometrics
from twin.models.learner import LearnerModel
from twin.models.rules import UpdateInputs
from twin.sim.task import TaskEnv, TaskProtocol


@dataclass(frozen=True)
class TrainingRun:
    """Outcome of a batched training simulation of ``B`` rows over at most ``S`` sessions.

    Attributes:
        stats: ``[B, S, K]`` per-session counts (sessions after a row stopped are empty).
        criterion_session: ``[B]`` long, 0-based session at which the criterion was reached, -1 never.
        trials_to_criterion: ``[B]`` long, trials up to and including that session; the trials done
            (the cap) where never reached.
        reached: ``[B]`` bool.
        end_phase: ``[B]`` long, protocol phase at the end.
        w_min: ``[B, K]`` smallest weights visited.
        w_max: ``[B, K]`` largest weights visited.
    """

    stats: SessionStats
    criterion_session: torch.Tensor
    trials_to_criterion: torch.Tensor
    reached: torch.Tensor
    end_phase: torch.Tensor
    w_min: torch.Tensor
    w_max: torch.Tensor

    @property
    def sessions_to_criterion(self) -> torch.Tensor:
        """``[B]`` sessions done until the criterion (all sessions done where never reached)."""
        return torch.where(self.reached, self.criterion_session + 1, self.stats.n_sessions)


def contrast_bins(protocols: Sequence[TaskProtocol]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count bins of every contrast the protocols can show, on each rewarded side.

    Returns:
        ``(levels [L], signed_pct [2L], side [2L])``: unsigned contrast levels ascending; bin
        ``2 i + side`` holds contrast ``levels[i]`` rewarded on ``side`` (1 = right).
    """
    unique = set(protocols)
    levels = torch.tensor(sorted({round(c, 6) for p in unique for ph in p.phases for c in ph}), dtype=torch.float32)
    side = torch.tensor([0, 1]).repeat(len(levels))
    signed = levels.double().repeat_interleave(2) * 100 * (2 * side - 1)
    return levels, signed, side


@torch.no_grad()
def simulate_training(
    model: LearnerModel,
    protocols: Sequence[TaskProtocol],
    max_sessions: int,
    seed: int,
    w0: torch.Tensor | None = None,
    log_rate: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    start_phase: int | torch.Tensor = 0,
    criterion: CriterionConfig = TRAINED_1A,
    stop_when_trained: bool = True,
) -> TrainingRun:
    """Run ``B = len(protocols)`` learners session by session until they reach ``criterion``.

    Args:
        model: the shared structure and rule (its ``w0``/``log_rate`` unless given per row).
        protocols: one protocol per row.
        max_sessions: cap on sessions.
        seed: seeds session lengths, stimuli and choices.
        w0: ``[B, K]`` or ``[K]`` starting weights (default the model's).
        log_rate: ``[B, K]`` or ``[K]`` log learning-rate multipliers (default the model's).
        h0: ``[B, H]`` starting rule state (default zeros).
        start_phase: phase each row starts in.
        criterion: the training criterion judged after every session.
        stop_when_trained: stop a row once it reached the criterion (else run all sessions).

    Returns:
        Counts, criterion sessions and trials to criterion per row.
    """
    b = len(protocols)
    if b == 0 or max_sessions < 1:
        raise ValueError("need at least one row and one session")
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    env = TaskEnv(list(protocols), b, g, start_phase=start_phase)
    levels, signed, side_k = contrast_bins(protocols)
    n_bins = signed.shape[0]
    lo = np.array([p.session_trials[0] for p in protocols])
    hi = np.array([p.session_trials[1] for p in protocols])
    feats, rule = model.spec.features, model.rule
    ctx = rule.context()
    rate = model.rate(log_rate)
    w, h = model.initial(b, w0 if w0 is None or w0.dim() == 2 else w0.expand(b, -1))
    w = w.expand(b, -1).clone()
    if h0 is not None:
        h = h0.expand(b, -1).clone()
    n = torch.zeros(b, max_sessions, n_bins, dtype=torch.float64)
    n_right = torch.zeros_like(n)
    done = torch.zeros(b, dtype=torch.bool)
    crit = torch.full((b,), -1, dtype=torch.long)
    n_sessions = torch.zeros(b, dtype=torch.long)
    w_min, w_max = w.clone(), w.clone()
    rows = torch.arange(b)
    row_base = rows * n_bins
    ones = torch.ones(b, dtype=torch.float64)
    history = feats.history
    for s in range(max_sessions):
        lengths = torch.from_numpy(rng.integers(lo, hi + 1))
        live = ~done
        t_s = int(lengths[live].max())
        n_sessions += live.long()
        sn = torch.zeros(b * n_bins, dtype=torch.float64)
        sr = torch.zeros(b * n_bins, dtype=torch.float64)
        prev_choice = torch.zeros(b)
        prev_reward = torch.zeros(b)
        # every live row is active until the shortest live session ends: no masking needed there
        all_live = bool(live.all())
        t_all = int(lengths[live].min()) if all_live else 0
        for t in range(t_s):
            masked = t >= t_all
            active = live & (t < lengths)
            mask = active if masked else None
            ss = torch.full((b,), t == 0)
            cl, cr, ans, _ = env.draw(ss, mask)
            x = feats.compute(cl, cr, prev_choice, prev_reward)
            p = torch.sigmoid((w * x).sum(-1))
            y = (torch.rand(b, generator=g) < p).float()
            r = (y == ans).float()
            env.observe(r.bool(), mask)
            k = row_base + 2 * torch.searchsorted(levels, cl + cr) + ans.long()
            if masked:
                af = active.double()
                sn.index_add_(0, k, af)
                sr.index_add_(0, k, af * y.double())
            else:
                sn.index_add_(0, k, ones)
                sr.index_add_(0, k, y.double())
            last = (t == lengths - 1).float()
            inp = UpdateInputs(x[:, None], y[:, None], r[:, None], ans[:, None], last[:, None])
            w_next, h_next = rule.step(w, h, rule.precompute(inp)[0], ctx)
            if rate is not None:
                w_next = w + rate * (w_next - w)
            if masked:
                a = active.unsqueeze(1)
                w = torch.where(a, w_next, w)
                h = torch.where(a, h_next, h) if h.numel() else h
            else:
                w, h = w_next, h_next
            w_min, w_max = torch.minimum(w_min, w), torch.maximum(w_max, w)
            if history:
                prev_choice = torch.where(active, 2 * y - 1, prev_choice) if masked else 2 * y - 1
                prev_reward = torch.where(active, r, prev_reward) if masked else r
        sn, sr = sn.view(b, n_bins), sr.view(b, n_bins)
        n[:, s], n_right[:, s] = sn, sr
        win = criterion.window
        if s + 1 >= win:
            cand = live.nonzero().squeeze(1)
            if cand.numel():
                sub = SessionStats(
                    contrast=signed,
                    side=side_k,
                    n=n[cand, s + 1 - win : s + 1],
                    n_right=n_right[cand, s + 1 - win : s + 1],
                    n_sessions=torch.full((cand.numel(),), win, dtype=torch.long),
                )
                ok = criterion_passes(sub, criterion, window_psychometrics(sub, win))[:, -1]
                newly = cand[ok & (crit[cand] < 0)]
                crit[newly] = s
                if stop_when_trained:
                    done[newly] = True
        if stop_when_trained and bool(done.all()):
            break
    used = int(n_sessions.max())
    stats = SessionStats(signed, side_k, n[:, :used], n_right[:, :used], n_sessions)
    cum = stats.n_trials.cumsum(1).long()
    total = cum[rows, (n_sessions - 1).clamp(min=0)]
    reached = crit >= 0
    ttc = torch.where(reached, cum[rows, crit.clamp(min=0)], total)
    return TrainingRun(stats, crit, ttc, reached, env.phase.clone(), w_min, w_max)


__all__ = ["TrainingRun", "contrast_bins", "simulate_training"]
