"""Training from scratch (or from a twin's state) to an IBL criterion, simulated in one batch.

Rows of the batch are learners (twins or ground-truth agents, one shared rule network with
per-row initial weights and learning-rate multipliers) each following its own protocol: candidate
curricula x twins x rollouts in one tensor batch. Sessions run in lock step: session ``s`` of every
row runs at once, each row for its own number of trials (drawn from its protocol's session range;
rows whose session is over are masked). After every session the criterion is judged on the
window of the last sessions (the psychometric fitted to the pooled counts, batched over rows);
rows that reach it stop, and the run ends when all rows are done or ``max_sessions`` is reached.

A :class:`SessionPlan` replaces the drawn session lengths with given ones (e.g. an animal's own)
and, optionally, the protocol with one protocol per session (e.g. the contrast set the animal was
shown in that session, replayed by :mod:`twin.sim.check`); each such session then runs in a fresh
environment of its own protocols.

Each session runs through the one trial loop (:func:`twin.sim.rollout.run_trials`); its
:class:`CriterionRecorder` keeps only per-session counts by (signed contrast, rewarded side), not
trial-by-trial records, so memory does not grow with the number of trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twin.analysis.criteria import TRAINED_1A, CriterionConfig, SessionStats, criterion_passes, window_psychometrics
from twin.models.learner import LearnerModel
from twin.protocol import Curriculum
from twin.sim.rollout import Carry, Schedule, Trial, run_trials
from twin.sim import task_kernels
from twin.sim.task import TaskEnv, distinct


@dataclass(frozen=True)
class SessionPlan:
    """Given session lengths (and optionally per-session protocols) instead of drawn ones.

    Attributes:
        lengths: ``[B, S]`` long, trials of each row's sessions; a row's sessions are a prefix
            (positive lengths, then zeros: the row runs no more sessions).
        protocols: None (every session runs the row's protocol, its phase carried across
            sessions), or ``S`` sequences of ``B`` protocols: session ``s`` of row ``b`` runs
            ``protocols[s][b]`` from its first phase, in a fresh environment.
    """

    lengths: torch.Tensor
    protocols: tuple[tuple[Curriculum, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.lengths.dim() != 2:
            raise ValueError(f"lengths must be [B, S], got {tuple(self.lengths.shape)}")
        if bool((self.lengths < 0).any()):
            raise ValueError("lengths must be >= 0")
        pos = self.lengths > 0
        if bool((pos[:, 1:] & ~pos[:, :-1]).any()):
            raise ValueError("a row's sessions must be a prefix: no session after an empty one")
        if self.protocols is not None and (len(self.protocols) != self.lengths.shape[1] or any(len(p) != self.lengths.shape[0] for p in self.protocols)):
            raise ValueError(f"protocols must be {self.lengths.shape[1]} sessions of {self.lengths.shape[0]} rows")


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


def contrast_bins(protocols: Sequence[Curriculum]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count bins of every contrast the protocols can show, on each rewarded side.

    Returns:
        ``(levels [L], signed_pct [2L], side [2L])``: unsigned contrast levels ascending; bin
        ``2 i + side`` holds contrast ``levels[i]`` rewarded on ``side`` (1 = right).
    """
    levels = torch.tensor(sorted({round(c, 6) for p in distinct(protocols)[0] for ph in p.stimulus.phases for c in ph}), dtype=torch.float32)
    side = torch.tensor([0, 1]).repeat(len(levels))
    signed = levels.double().repeat_interleave(2) * 100 * (2 * side - 1)
    return levels, signed, side


class CriterionRecorder:
    """Per-session counts by (signed contrast, rewarded side), the weight range visited, and the
    training criterion judged on the window of the last sessions.

    Args:
        protocols: one protocol per row (they set the contrast bins).
        max_sessions: sessions ``S`` the counts have room for.
        w: ``[B, K]`` starting weights (the start of the weight range).
        criterion: the training criterion.
        stop_when_trained: a row that reached the criterion runs no more sessions.
        more_protocols: other protocols the rows run (their contrasts get bins too).
    """

    def __init__(
        self, protocols: Sequence[Curriculum], max_sessions: int, w: torch.Tensor, criterion: CriterionConfig, stop_when_trained: bool,
        more_protocols: Sequence[Curriculum] = (),
    ) -> None:
        b = len(protocols)
        self.levels, self.signed, self.side = contrast_bins(list(protocols) + list(more_protocols))
        self.n_bins = n_bins = self.signed.shape[0]
        self.criterion, self.stop_when_trained = criterion, stop_when_trained
        self.n = torch.zeros(b, max_sessions, n_bins, dtype=torch.float64)
        self.n_right = torch.zeros_like(self.n)
        self.done = torch.zeros(b, dtype=torch.bool)
        self.crit = torch.full((b,), -1, dtype=torch.long)
        self.n_sessions = torch.zeros(b, dtype=torch.long)
        self.w_min, self.w_max = w.clone(), w.clone()
        self.row_base = torch.arange(b) * n_bins
        self.ones = torch.ones(b, dtype=torch.float64)
        self._levels_np = self.levels.numpy()
        self._all = np.ones(b, dtype=bool)
        self.sn = self.sr = torch.zeros(0, dtype=torch.float64)

    def start_session(self, runs: torch.Tensor | None = None) -> torch.Tensor:
        """Open a session; returns ``[B]`` bool, the rows that run it (not done, and in ``runs``
        when given)."""
        live = ~self.done if runs is None else ~self.done & runs
        self.n_sessions += live.long()
        b = live.shape[0]
        self.sn = torch.zeros(b * self.n_bins, dtype=torch.float64)
        self.sr = torch.zeros(b * self.n_bins, dtype=torch.float64)
        return live

    def record(self, trial: Trial) -> None:
        if task_kernels.usable():  # the same counts in one compiled pass
            act = self._all if trial.active is None else trial.active.to(torch.bool).contiguous().numpy()
            arrays = (t.to(torch.float32).contiguous().numpy() for t in (trial.contrast_left, trial.contrast_right, trial.answer, trial.choice))
            task_kernels.count_trials(*arrays, act, trial.active is not None, self._levels_np, self.n_bins, self.sn.numpy(), self.sr.numpy())
            torch.minimum(self.w_min, trial.w_next, out=self.w_min)
            torch.maximum(self.w_max, trial.w_next, out=self.w_max)
            return
        k = self.row_base + 2 * torch.searchsorted(self.levels, trial.contrast_left + trial.contrast_right) + trial.answer.long()
        if trial.active is None:
            self.sn.index_add_(0, k, self.ones)
            self.sr.index_add_(0, k, trial.choice.double())
        else:
            af = trial.active.double()
            self.sn.index_add_(0, k, af)
            self.sr.index_add_(0, k, af * trial.choice.double())
        self.w_min, self.w_max = torch.minimum(self.w_min, trial.w_next), torch.maximum(self.w_max, trial.w_next)

    def end_session(self, s: int, live: torch.Tensor) -> None:
        """Store session ``s``'s counts and judge the criterion on the rows in ``live``."""
        b = live.shape[0]
        self.n[:, s], self.n_right[:, s] = self.sn.view(b, self.n_bins), self.sr.view(b, self.n_bins)
        win = self.criterion.window
        if s + 1 < win:
            return
        cand = live.nonzero().squeeze(1)
        if not cand.numel():
            return
        sub = SessionStats(
            contrast=self.signed,
            side=self.side,
            n=self.n[cand, s + 1 - win : s + 1],
            n_right=self.n_right[cand, s + 1 - win : s + 1],
            n_sessions=torch.full((cand.numel(),), win, dtype=torch.long),
        )
        ok = criterion_passes(sub, self.criterion, window_psychometrics(sub, win))[:, -1]
        newly = cand[ok & (self.crit[cand] < 0)]
        self.crit[newly] = s
        if self.stop_when_trained:
            self.done[newly] = True

    @property
    def all_done(self) -> bool:
        """Every row stopped."""
        return self.stop_when_trained and bool(self.done.all())

    def run(self, end_phase: torch.Tensor) -> TrainingRun:
        """The outcome, with ``end_phase`` ``[B]`` the rows' protocol phases at the end."""
        used = int(self.n_sessions.max())
        stats = SessionStats(self.signed, self.side, self.n[:, :used], self.n_right[:, :used], self.n_sessions)
        cum = stats.n_trials.cumsum(1).long()
        rows = torch.arange(cum.shape[0])
        total = cum[rows, (self.n_sessions - 1).clamp(min=0)]
        reached = self.crit >= 0
        ttc = torch.where(reached, cum[rows, self.crit.clamp(min=0)], total)
        return TrainingRun(stats, self.crit, ttc, reached, end_phase, self.w_min, self.w_max)


@torch.no_grad()
def simulate_training(
    model: LearnerModel,
    protocols: Sequence[Curriculum],
    max_sessions: int,
    seed: int,
    w0: torch.Tensor | None = None,
    log_rate: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    start_phase: int | torch.Tensor = 0,
    criterion: CriterionConfig = TRAINED_1A,
    stop_when_trained: bool = True,
    plan: SessionPlan | None = None,
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
        plan: given session lengths (and per-session protocols) instead of drawn ones; at most
            its ``S`` sessions run.

    Returns:
        Counts, criterion sessions and trials to criterion per row.
    """
    b = len(protocols)
    if b == 0 or max_sessions < 1:
        raise ValueError("need at least one row and one session")
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    env = TaskEnv(list(protocols), b, g, start_phase=start_phase)
    lo = np.array([p.session_trials[0] for p in protocols])
    hi = np.array([p.session_trials[1] for p in protocols])
    if plan is not None:
        if plan.lengths.shape[0] != b:
            raise ValueError(f"the plan has {plan.lengths.shape[0]} rows for {b} protocols")
        max_sessions = min(max_sessions, plan.lengths.shape[1])
    more = [p for ps in plan.protocols for p in ps] if plan is not None and plan.protocols is not None else []
    rate = model.rate(log_rate)
    w, h = model.initial(b, w0 if w0 is None or w0.dim() == 2 else w0.expand(b, -1))
    carry = Carry.start(w.expand(b, -1), h if h0 is None else h0.expand(b, -1).clone())
    recorder = CriterionRecorder(protocols, max_sessions, carry.w, criterion, stop_when_trained, more)
    for s in range(max_sessions):
        if plan is None:
            lengths, live = torch.from_numpy(rng.integers(lo, hi + 1)), recorder.start_session()
        else:
            lengths = plan.lengths[:, s].long()
            live = recorder.start_session(lengths > 0)
            if plan.protocols is not None:
                env = TaskEnv(list(plan.protocols[s]), b, g)
        if not bool(live.any()):
            break
        carry = run_trials(model, env, Schedule.session(lengths, live), g, carry, (recorder,), rate)
        recorder.end_session(s, live)
        if recorder.all_done:
            break
    return recorder.run(env.phase.clone())


__all__ = ["CriterionRecorder", "SessionPlan", "TrainingRun", "contrast_bins", "simulate_training", "warm_up"]


def warm_up() -> bool:
    """Compile (or load from numba's on-disk cache) the task environment's kernels
    (:mod:`twin.sim.task_kernels`: draws, outcomes, per-session counts) by one tiny simulated
    session, so that a server's first forecast or teaching decision compiles nothing.

    Returns:
        Whether the compiled kernels are available (False: numba is missing; the torch form runs).
    """
    if not task_kernels.AVAILABLE:
        return False
    from twin.models.learner import ModelSpec
    from twin.protocol import IBL_DEFAULT

    model = LearnerModel(ModelSpec("static")).eval()
    short = Curriculum(session_trials=(20, 20))
    with torch.random.fork_rng(devices=[]), task_kernels.compiling():
        simulate_training(model, [IBL_DEFAULT, short], 1, seed=0, stop_when_trained=False)
    return True

