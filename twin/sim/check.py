"""The generative check's rollouts: twins run free from a cut-off under the protocol their animals had.

For each animal, its twin starts at a cut-off session ``c`` (0: from scratch, the held-out-animal
check; ``k``: after its first ``k`` sessions, the held-out-future-sessions check) from its own
state there, and runs ``R`` rollouts of the animal's remaining sessions with *its own sampled
choices*: the same number of sessions, each of the length the animal's was, under

* a known :class:`~twin.protocol.Curriculum` (synthetic cohorts: its advancement reacts to the
  twin's choices, starting from the phase the animal was in at the cut-off), or
* a replay of what the animal was shown (real data): each session runs the contrast set the
  animal saw in that session, in the proportions it saw them (repeat-on-error trials left out of
  the proportions, since the twin's own errors make its own repeats), with repeat-on-error
  debiasing, and biased blocks where the session had them.

Everything runs through :func:`twin.sim.training.simulate_training` (animals x rollouts rows in
one batch; its session plan carries the lengths and replayed protocols), which keeps per-session
counts by contrast and side. The observed sessions before the cut-off are put in front of every
rollout's counts, so criteria judged on a window that spans the cut-off see the animal's real
sessions. Scoring is :func:`twin.analysis.generative.generative_check`. Ensemble twins run by
:func:`run_ensemble_check`: each rollout draws one component by the animal's weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.analysis.criteria import SessionStats
from twin.analysis.psychometrics import DTYPE
from twin.data.trials import validate_trials
from twin.models.ensemble import TwinEnsemble
from twin.models.learner import LearnerModel
from twin.models.params import TwinModel, stack_params
from twin.models.state import end_state
from twin.protocol import Curriculum, DebiasSide, FeedbackPolicy, StimulusSchedule, ZeroContrastSide, phase_of_contrasts
from twin.sim.training import SessionPlan, contrast_bins, simulate_training


@dataclass(frozen=True)
class CheckStart:
    """Where each of ``A`` animals' free runs starts.

    Attributes:
        subjects: the animals, in row order.
        w: ``[A, K]`` weights for the first free trial.
        h: ``[A, H]`` rule state there.
        log_rate: ``[A, K]`` log learning-rate multipliers.
        cutoff: ``[A]`` long, observed sessions consumed before the free run.
        phase: ``[A]`` long, protocol phase at the cut-off (known-protocol runs).
    """

    subjects: tuple[str, ...]
    w: torch.Tensor
    h: torch.Tensor
    log_rate: torch.Tensor
    cutoff: torch.Tensor
    phase: torch.Tensor


@dataclass(frozen=True)
class CheckRun:
    """Observed and free-running per-session counts of ``A`` animals, ``R`` rollouts each.

    Attributes:
        subjects: the animals.
        observed: ``[A, S, K]`` the animals' own counts (all their sessions).
        predicted: ``[A * R, S, K]`` counts of every rollout (row ``a * R + r``): the animal's
            observed sessions before its cut-off, then the twin's free sessions.
        cutoff: ``[A]`` long, first free session (0-based) of each animal.
        n_rollouts: ``R``.
    """

    subjects: tuple[str, ...]
    observed: SessionStats
    predicted: SessionStats
    cutoff: torch.Tensor
    n_rollouts: int


def _session_frames(trials: pd.DataFrame, subjects: Sequence[str]) -> list[list[pd.DataFrame]]:
    """Each subject's sessions in order (one frame each)."""
    by = {s: g for s, g in trials.groupby("subject", sort=False)}
    return [[g for _, g in by[s].groupby("session", sort=True)] for s in subjects]


def repeat_trials(session: pd.DataFrame, debias_min_contrast: float = 0.5) -> np.ndarray:
    """``[T]`` bool: trials that look like repeat-on-error trials (the previous trial was an error
    at a contrast >= ``debias_min_contrast`` and this one shows the same contrast on the same side)."""
    c = (session["contrast_left"] + session["contrast_right"]).to_numpy()
    side = session["correct_side"].to_numpy()
    err = session["feedback"].to_numpy() < 0
    rep = np.zeros(len(c), bool)
    rep[1:] = err[:-1] & (c[:-1] >= debias_min_contrast - 1e-9) & np.isclose(c[1:], c[:-1]) & (side[1:] == side[:-1])
    return rep


def replayed_protocol(session: pd.DataFrame, name: str, debias_min_contrast: float = 0.5) -> Curriculum:
    """One session's protocol as the animal had it: its contrast set in the proportions shown
    (repeats left out), repeat-on-error debiasing on the same side (what the data's repeats are), biased blocks if most trials had P(left) != 0.5."""
    rep = repeat_trials(session, debias_min_contrast)
    c = np.round((session["contrast_left"] + session["contrast_right"]).to_numpy(), 6)
    fresh = c[~rep] if (~rep).any() else c
    levels, counts = np.unique(fresh, return_counts=True)
    pl = session["prob_left"].to_numpy()[~rep] if "prob_left" in session else np.full(1, 0.5)
    biased = bool(np.mean(np.abs(pl - 0.5) > 0.05) > 0.5)
    n = len(session)
    return Curriculum(
        name=name[:100],
        stimulus=StimulusSchedule(phases=(tuple(float(v) for v in levels),), proportions=(tuple(float(v) for v in counts),), advance=(), zero_contrast_side=ZeroContrastSide.RANDOM),
        feedback=FeedbackPolicy(debias=not biased, debias_min_contrast=debias_min_contrast, debias_side=DebiasSide.REPEAT, biased_blocks=biased),
        session_trials=(n, n),
    )


def observed_counts(trials: pd.DataFrame, subjects: Sequence[str], levels: torch.Tensor) -> SessionStats:
    """``[A, S, K]`` counts of the subjects' sessions in the bins of :func:`contrast_bins` (bin
    ``2 i + side`` holds unsigned contrast ``levels[i]`` rewarded on ``side``)."""
    frames = _session_frames(trials, subjects)
    a, s, k = len(subjects), max(len(f) for f in frames), 2 * len(levels)
    n = torch.zeros(a, s, k, dtype=DTYPE)
    r = torch.zeros_like(n)
    lv = levels.double().numpy()
    for i, sessions in enumerate(frames):
        for j, g in enumerate(sessions):
            c = (g["contrast_left"] + g["contrast_right"]).to_numpy()
            idx = np.searchsorted(lv, c - 1e-6)
            if bool((idx >= len(lv)).any()) or not np.allclose(lv[np.minimum(idx, len(lv) - 1)], c, atol=1e-5):
                raise ValueError(f"subject {subjects[i]!r}: a contrast outside the protocol's levels {lv.tolist()}")
            b = torch.from_numpy(2 * idx + g["correct_side"].to_numpy())
            n[i, j].index_add_(0, b, torch.ones(len(g), dtype=DTYPE))
            r[i, j].index_add_(0, b, torch.from_numpy(g["choice"].to_numpy().astype(float)))
    _, signed, side = contrast_bins_of(levels)
    return SessionStats(signed, side, n, r, torch.tensor([len(f) for f in frames], dtype=torch.long))


def contrast_bins_of(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(levels, signed_pct [2L], side [2L])`` of given unsigned levels, as :func:`contrast_bins`."""
    side = torch.tensor([0, 1]).repeat(len(levels))
    return levels, levels.double().repeat_interleave(2) * 100 * (2 * side - 1), side


def twin_starts(
    twins: Sequence[TwinModel], trials: pd.DataFrame, subjects: Sequence[str], cutoff: Sequence[int], protocol: Curriculum | None = None, window: int = 100
) -> CheckStart:
    """Each twin's state at its animal's cut-off: its own ``w0`` at 0, else the teacher-forced
    state after the animal's first ``cutoff`` sessions (the overnight update included).

    Args:
        twins: one twin per subject, all over one population rule.
        trials: the subjects' trials.
        subjects: the animals, in the order of ``twins``.
        cutoff: sessions consumed before the free run, per animal.
        protocol: the known protocol; each animal starts in the phase of ``protocol`` its last
            ``window`` trials before the cut-off were in (0 at cut-off 0 or without a protocol).
        window: trials that place an animal in a phase.
    """
    w0, log_rate = stack_params([t.params for t in twins])
    w, hs, ph = [], [], []
    frames = _session_frames(trials, subjects)
    for i, (twin, c) in enumerate(zip(twins, cutoff)):
        if c <= 0:
            w_i, h_i = twin.model.initial(1)
            w.append(w_i[0].clone())
            hs.append(h_i[0])
            ph.append(0)
        else:
            before = pd.concat(frames[i][:c])
            st = end_state(twin.model, before)
            w.append(st.w)
            hs.append(st.h)
            last = before.tail(window)
            ph.append(phase_of_contrasts(protocol, (last["contrast_left"] + last["contrast_right"]).to_numpy()) if protocol is not None else 0)
    cut = torch.tensor(list(cutoff), dtype=torch.long)
    return CheckStart(tuple(subjects), torch.stack(w), torch.stack(hs), log_rate, cut, torch.tensor(ph, dtype=torch.long))


@torch.no_grad()
def run_check(
    population: LearnerModel,
    start: CheckStart,
    trials: pd.DataFrame,
    protocol: Curriculum | None,
    n_rollouts: int = 100,
    seed: int = 0,
) -> CheckRun:
    """Run every animal's twin free from its cut-off, ``n_rollouts`` times, in one batch.

    Args:
        population: the twins' shared rule (the rows' ``w``/``h``/``log_rate`` come from ``start``).
        start: where each animal's free run starts.
        trials: the animals' trials (canonical table; sessions numbered without gaps).
        protocol: the known protocol (synthetic cohorts), or None to replay each session's
            contrast set.
        n_rollouts: free runs per animal.
        seed: seeds stimuli and choices.

    Raises:
        ValueError: an animal without a session after its cut-off, or bad sizes.
    """
    if n_rollouts < 1:
        raise ValueError("n_rollouts must be >= 1")
    trials = validate_trials(trials)
    subjects, a, rr = start.subjects, len(start.subjects), n_rollouts
    frames = _session_frames(trials, subjects)
    n_sess = [len(f) for f in frames]
    cut = start.cutoff.tolist()
    short = [s for s, n, c in zip(subjects, n_sess, cut) if n <= c]
    if short:
        raise ValueError(f"no session after the cut-off for {len(short)} animal(s): {short[:5]}")
    horizon = max(n - c for n, c in zip(n_sess, cut))
    lengths = torch.zeros(a * rr, horizon, dtype=torch.long)
    replay: list[list[Curriculum]] | None = None if protocol is not None else [[] for _ in range(horizon)]
    for i, (sessions, c) in enumerate(zip(frames, cut)):
        free = sessions[c:]
        lengths[i * rr : (i + 1) * rr, : len(free)] = torch.tensor([len(g) for g in free])
        if replay is not None:
            for j in range(horizon):
                p = replayed_protocol(free[j], f"replay-{subjects[i]}-{j}") if j < len(free) else replayed_protocol(free[-1], "unused")
                replay[j].extend([p] * rr)
    if protocol is not None:
        rows: list[Curriculum] = [protocol] * (a * rr)
    else:
        assert replay is not None
        rows = list(replay[0])
    rep = lambda t: t.repeat_interleave(rr, 0)  # noqa: E731  [A, ...] -> [A * R, ...]
    plan = SessionPlan(lengths, None if replay is None else tuple(tuple(ps) for ps in replay))
    run = simulate_training(
        population, rows, horizon, seed, w0=rep(start.w), log_rate=rep(start.log_rate), h0=rep(start.h),
        start_phase=rep(start.phase) if protocol is not None else 0, stop_when_trained=False, plan=plan,
    )
    # the rollouts' bins cover the protocols they ran; the observed ones every contrast shown
    run_levels = contrast_bins(rows + ([p for ps in replay for p in ps] if replay is not None else []))[0]
    shown = np.round((trials["contrast_left"] + trials["contrast_right"]).to_numpy(), 6)
    levels = torch.tensor(sorted({round(float(v), 6) for v in run_levels.tolist()} | set(shown.tolist())), dtype=torch.float32)
    observed = observed_counts(trials, subjects, levels)
    s_all, k = observed.n.shape[1], observed.n.shape[2]
    to = 2 * torch.searchsorted(levels, run_levels - 1e-6).repeat_interleave(2) + torch.tensor([0, 1]).repeat(len(run_levels))
    free_n = torch.zeros(*run.stats.n.shape[:2], k, dtype=DTYPE).index_add_(2, to, run.stats.n)
    free_r = torch.zeros_like(free_n).index_add_(2, to, run.stats.n_right)
    n = torch.zeros(a * rr, s_all, k, dtype=DTYPE)
    nr = torch.zeros_like(n)
    for i, c in enumerate(cut):
        m = n_sess[i] - c
        rows_i = slice(i * rr, (i + 1) * rr)
        n[rows_i, :c], nr[rows_i, :c] = observed.n[i, :c], observed.n_right[i, :c]
        n[rows_i, c : c + m], nr[rows_i, c : c + m] = free_n[rows_i, :m], free_r[rows_i, :m]
    predicted = SessionStats(observed.contrast, observed.side, n, nr, rep(observed.n_sessions))
    return CheckRun(tuple(subjects), observed, predicted, start.cutoff.clone(), rr)


def run_ensemble_check(
    ensembles: Sequence[TwinEnsemble],
    trials: pd.DataFrame,
    subjects: Sequence[str],
    cutoff: Sequence[int],
    protocol: Curriculum | None,
    n_rollouts: int = 100,
    seed: int = 0,
) -> CheckRun:
    """:func:`run_check` of ensemble twins: each of an animal's rollouts first draws one component
    by the animal's weights, then runs that component free from its own state at the cut-off.

    The ensembles come from one cohort fit: component ``j`` of every animal runs over the same
    population rule, so each component drawn by some rollout runs as one batch over every animal
    (:func:`run_check`), and each rollout keeps the run of the component it drew.

    Args:
        ensembles: one per subject, with the same component labels in the same order.
        trials, subjects, cutoff, protocol, n_rollouts, seed: as :func:`twin_starts` and
            :func:`run_check`.

    Raises:
        ValueError: ensembles with different components, or what :func:`run_check` raises.
    """
    if not ensembles or len(ensembles) != len(subjects):
        raise ValueError("one ensemble per subject is needed")
    labels = ensembles[0].labels
    if any(e.labels != labels for e in ensembles):
        raise ValueError("the ensembles have different components; check one cohort fit at a time")
    if n_rollouts < 1:
        raise ValueError("n_rollouts must be >= 1")
    g = torch.Generator().manual_seed(int(seed))
    drawn = torch.stack([e.sample(n_rollouts, g) for e in ensembles]).reshape(-1)  # [A * R], row a * R + r
    out: CheckRun | None = None
    n = n_right = None
    for j in range(len(labels)):
        rows = drawn == j
        if not bool(rows.any()):
            continue  # no rollout drew it: nothing to run
        twins = [e.components[j] for e in ensembles]
        run = run_check(twins[0].population, twin_starts(twins, trials, subjects, cutoff, protocol), trials, protocol, n_rollouts, seed)
        if out is None:
            out, n, n_right = run, run.predicted.n.clone(), run.predicted.n_right.clone()
        elif run.predicted.n.shape != n.shape:  # type: ignore[union-attr]
            raise ValueError("the components' runs differ in shape")
        n[rows], n_right[rows] = run.predicted.n[rows], run.predicted.n_right[rows]  # type: ignore[index]
    assert out is not None and n is not None and n_right is not None
    predicted = SessionStats(out.predicted.contrast, out.predicted.side, n, n_right, out.predicted.n_sessions)
    return CheckRun(out.subjects, out.observed, predicted, out.cutoff, n_rollouts)


__all__ = ["CheckRun", "CheckStart", "run_ensemble_check", "observed_counts", "repeat_trials", "replayed_protocol", "run_check", "twin_starts"]
