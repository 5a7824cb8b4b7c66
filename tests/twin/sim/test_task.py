"""The IBL task environment: contrast phases, debiasing, advancement, biased blocks and session
schedules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from twin.protocol import IBL_DEFAULT, AdvanceKind, AdvanceRule, Curriculum, DebiasSide, FeedbackPolicy, StimulusSchedule, ZeroContrastSide
from twin.sim.task import TaskEnv, session_schedule

_STIMULUS = {f.name for f in dataclasses.fields(StimulusSchedule)}
_FEEDBACK = {f.name for f in dataclasses.fields(FeedbackPolicy)}


def make_protocol(**fields: object) -> Curriculum:
    """The default curriculum with the named stimulus, feedback or session fields changed."""
    stimulus = StimulusSchedule(**{k: v for k, v in fields.items() if k in _STIMULUS})  # type: ignore[arg-type]
    feedback = FeedbackPolicy(**{k: v for k, v in fields.items() if k in _FEEDBACK})  # type: ignore[arg-type]
    rest = {k: v for k, v in fields.items() if k not in _STIMULUS | _FEEDBACK}
    return Curriculum(stimulus=stimulus, feedback=feedback, **rest)  # type: ignore[arg-type]


def env_for(protocol: Curriculum, n: int, seed: int = 0) -> TaskEnv:
    return TaskEnv(protocol, n, torch.Generator().manual_seed(seed))


def close_to(t: torch.Tensor, values: tuple[float, ...]) -> torch.Tensor:
    return torch.stack([torch.isclose(t, torch.tensor(v, dtype=t.dtype)) for v in values]).any(0)


# --------------------------------------------------------------------------------------------
# session schedules


def test_session_schedule_lengths_within_bounds():
    proto = make_protocol(session_trials=(30, 50))
    starts = session_schedule(20, 1000, proto, np.random.default_rng(0))
    assert starts.shape == (20, 1000) and starts.dtype == bool
    assert starts[:, 0].all()
    for row in starts:
        idx = np.flatnonzero(row)
        lengths = np.diff(np.r_[idx, 1000])
        assert (lengths[:-1] >= 30).all() and (lengths[:-1] <= 50).all()
        assert 1 <= lengths[-1] <= 50  # the last session is cut by the end of the run
    all_lengths = np.concatenate([np.diff(np.flatnonzero(r)) for r in starts])
    assert all_lengths.min() == 30 and all_lengths.max() == 50  # both ends are reachable
    again = session_schedule(20, 1000, proto, np.random.default_rng(0))
    assert np.array_equal(starts, again)
    other = session_schedule(20, 1000, proto, np.random.default_rng(1))
    assert not np.array_equal(starts, other)


# --------------------------------------------------------------------------------------------
# stimuli and phases


def run(env: TaskEnv, n_trials: int, correct_fn, session_every: int | None = None):
    """Step the env; returns per-trial tensors [T, B] of phase (the trial's), contrast, side,
    prob_left, debias flag, correct and session start."""
    rec = {k: [] for k in ("phase", "contrast", "side", "pl", "debias", "correct", "start")}
    for t in range(n_trials):
        ss = torch.full((env.b,), t == 0 or (session_every is not None and t % session_every == 0))
        cl, cr, side, pl = env.draw(ss)
        assert torch.all((cl == 0) | (cr == 0))
        seen = (cl + cr) > 0  # at zero contrast the side is not visible
        assert torch.equal(side[seen], (cr[seen] > 0).float())
        ok = correct_fn(t, side)
        for k, v in (("phase", env.phase.clone()), ("contrast", cl + cr), ("side", side), ("pl", pl), ("debias", env.debias_trial.clone()), ("correct", ok), ("start", ss)):
            rec[k].append(v)
        env.observe(ok)
    return {k: torch.stack(v) for k, v in rec.items()}


def iblrig_phases(contrast, side, correct, start, first_phase: int = 0) -> list[int]:
    """The phase of every trial by a line-by-line transcription of iblrig v8's
    ``TrainingChoiceWorldSession.next_trial`` / ``check_training_phase`` / ``compute_performance``
    (iblrig/base_choice_world.py, 8.24.7), replayed on the trials the env drew: a fresh trials
    table and phase counters per session, the check before each draw, ``last_50_perf`` = correct
    among the last 50 trials of a signed contrast / 50, ``> 0.8`` on each of 4 (phase 0) or 2
    (phase 1) signed contrasts, ``>= 200`` counted trials in phases 2-4."""
    phase, out = first_phase, []
    table: list[tuple[float, bool]] = []
    counts = [0] * 6
    for c, s, ok, ss in zip(contrast, side, correct, start):
        if ss:
            table, counts = [], [0] * 6
        counts[phase] += 1
        move = False
        if phase in (0, 1):
            wanted = (-1.0, -0.5, 0.5, 1.0) if phase == 0 else (-0.25, 0.25)
            perf = {}
            for sc in wanted:
                hist = [o for (k, o) in table if k == sc]
                if hist:
                    perf[sc] = sum(hist[-50:]) / 50
            move = len(perf) == len(wanted) and all(v > 0.8 for v in perf.values())
        elif 2 <= phase < 5:
            move = counts[phase] >= 200
        if move:
            phase = min(5, phase + 1)
        out.append(phase)
        table.append(((1.0 if s else -1.0) * round(float(c), 6), bool(ok)))
    return out


def test_ibl_default_advances_exactly_as_iblrig_does():
    """Phase by phase against the transcription of iblrig's code, across session boundaries, for
    learners of different accuracy (some stay in phase 0 or 1, some reach phase 5)."""
    n = 12
    env = env_for(IBL_DEFAULT, n, seed=11)
    p_ok = torch.linspace(0.78, 1.0, n)
    g = torch.Generator().manual_seed(12)
    rec = run(env, 2400, lambda t, side: torch.rand(n, generator=g) < p_ok, session_every=600)
    reached = rec["phase"][-1]
    assert int(reached.min()) <= 1 and int(reached.max()) == 5
    for b in range(n):
        want = iblrig_phases(rec["contrast"][:, b].tolist(), rec["side"][:, b].tolist(), rec["correct"][:, b].tolist(), rec["start"][:, b].tolist())
        assert rec["phase"][:, b].tolist() == want, b


def test_ibl_phase_rules_one_by_one():
    """An always-correct animal: phase 0 lasts until each of ±1, ±.5 has 41 correct (> 80% of
    50), phase 1 until ±.25 have, phases 2-4 200 trials each (counted per session), 5 is last."""
    env = env_for(IBL_DEFAULT, 1, seed=13)
    rec = run(env, 1400, lambda t, side: torch.ones(1, dtype=torch.bool))
    phase, signed = rec["phase"][:, 0], (rec["contrast"][:, 0] * (2 * rec["side"][:, 0] - 1))
    first = [int(torch.nonzero(phase == p)[0]) for p in range(6)]
    # 0 -> 1 on the trial after the one that gives the last of the four signed contrasts its 41st correct
    need = max(int(torch.nonzero(torch.isclose(signed[: first[1]], torch.tensor(sc)))[40]) for sc in (-1.0, -0.5, 0.5, 1.0))
    assert first[1] == need + 1
    need = max(int(torch.nonzero(torch.isclose(signed[: first[2]], torch.tensor(sc)))[40]) for sc in (-0.25, 0.25))
    assert first[2] == need + 1
    assert [first[3] - first[2], first[4] - first[3], first[5] - first[4]] == [200, 200, 200]
    assert torch.all(phase[first[5] :] == 5)
    # one animal that is right on every trial but wrong on left 0.5 stays in phase 0
    env = env_for(IBL_DEFAULT, 1, seed=14)
    rec = run(env, 600, lambda t, side: torch.ones(1, dtype=torch.bool) & ~((env.last_contrast == 0.5) & (side == 0)))
    assert torch.all(rec["phase"] == 0)


def test_phase_counts_restart_each_session_and_phase_carries_over():
    # 150-trial sessions never reach 200 trials of one session in phase 3, though 450 are run in it
    env = TaskEnv(IBL_DEFAULT, 1, torch.Generator().manual_seed(15), start_phase=3)
    rec = run(env, 450, lambda t, side: torch.ones(1, dtype=torch.bool), session_every=150)
    assert torch.all(rec["phase"] == 3)
    # a 250-trial session that opens in phase 3: the 200th trial is the first of phase 4
    env = TaskEnv(IBL_DEFAULT, 1, torch.Generator().manual_seed(15), start_phase=3)
    rec = run(env, 250, lambda t, side: torch.ones(1, dtype=torch.bool))
    phase = rec["phase"][:, 0]
    assert torch.all(phase[:199] == 3) and torch.all(phase[199:] == 4)
    assert env.phase.item() == 4  # the next session starts where this one ended


def test_ibl_proportions_and_zero_contrast_side():
    """Phases 4 and 5 show 0 at half the weight of each other contrast, always rewarded left;
    phase 5 has no 0.5 and no debiasing."""
    n = 4000
    for phase, shown in ((4, (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), (5, (1.0, 0.25, 0.125, 0.0625, 0.0))):
        env = TaskEnv(IBL_DEFAULT, n, torch.Generator().manual_seed(16), start_phase=phase)
        rec = run(env, 3, lambda t, side: torch.ones(n, dtype=torch.bool))
        c = rec["contrast"].reshape(-1)
        freq = torch.tensor([float(torch.isclose(c, torch.tensor(v)).float().mean()) for v in shown])
        want = torch.tensor([0.5 if v == 0 else 1.0 for v in shown])
        assert torch.allclose(freq, want / want.sum(), atol=0.01)
        assert torch.all(rec["side"].reshape(-1)[c == 0] == 0)
    env = TaskEnv(IBL_DEFAULT, n, torch.Generator().manual_seed(17), start_phase=5)
    rec = run(env, 6, lambda t, side: torch.zeros(n, dtype=torch.bool))
    assert not rec["debias"].any()


def test_debiasing_after_easy_errors_against_the_choice_bias():
    """iblrig v8: after an error at >= 0.5 (phases 0-4), the contrast is repeated and the side is
    right with probability Φ((f_left - 0.5) / 0.5), f_left the session's left choices."""
    n = 4000
    env = TaskEnv(IBL_DEFAULT, n, torch.Generator().manual_seed(18), start_phase=1)
    choose_left = lambda t, side: side == 0  # a fully left-biased animal: f_left = 1
    rec = run(env, 4, choose_left)
    dt, c, side, ok = rec["debias"], rec["contrast"], rec["side"], rec["correct"]
    assert not dt[0].any()  # never on a session's first trial
    expect = ~ok[:-1] & (c[:-1] >= 0.5)
    assert torch.equal(dt[1:], expect)
    assert torch.equal(c[1:][dt[1:]], c[:-1][dt[1:]])
    right = side[1:][dt[1:]].mean().item()
    assert abs(right - torch.special.ndtr(torch.tensor(1.0)).item()) < 0.03  # Φ(1) = 0.84
    assert torch.all(rec["pl"] == 0.5)  # iblrig records PROBABILITY_LEFT on debiasing trials too
    hard = ~ok[:-1] & (c[:-1] < 0.5)
    assert hard.any() and not dt[1:][hard].any()
    # the side-repeating variant (iblrig v6, version-1 files) repeats the side
    rep = make_protocol(phases=((1.0, 0.5, 0.25),), proportions=None, advance=(), debias_side=DebiasSide.REPEAT)
    env = env_for(rep, n, seed=19)
    rec = run(env, 3, lambda t, side: torch.zeros(n, dtype=torch.bool))
    dt = rec["debias"][1:]
    assert dt.any() and torch.equal(rec["side"][1:][dt], rec["side"][:-1][dt])
    assert torch.equal(rec["pl"][1:][dt], 1.0 - rec["side"][:-1][dt])
    # switched off: none
    env = env_for(make_protocol(debias=False), n, seed=20)
    assert not run(env, 3, lambda t, side: torch.zeros(n, dtype=torch.bool))["debias"].any()


def test_debias_phases_and_custom_rules():
    """Per-phase debiasing and a custom schedule: a performance rule on one contrast with its own
    window and threshold, then a trial-count rule."""
    proto = make_protocol(
        phases=((1.0,), (1.0, 0.25), (0.25, 0.0)),
        proportions=None,
        advance=(AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0,), window=10, threshold=0.5), AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=30)),
        debias_phases=(1,),
        debias_min_contrast=0.0,
        zero_contrast_side=ZeroContrastSide.RANDOM,
    )
    env = env_for(proto, 200, seed=21)
    rec = run(env, 120, lambda t, side: env.last_contrast == 1.0)  # right on contrast 1 only
    phase = rec["phase"]
    # > 5 of the last 10 on each side of contrast 1: at least 6 left and 6 right trials
    first1 = (phase == 1).float().argmax(0)
    assert torch.all(first1 >= 12)
    assert torch.all(phase[-1] == 2) and torch.all(((phase == 1).sum(0)) == 30)
    dt = rec["debias"]
    assert dt[phase == 1].any() and not dt[phase != 1].any()
    zero = torch.isclose(rec["contrast"], torch.tensor(0.0))
    assert 0.4 < rec["side"][zero].mean().item() < 0.6


# --------------------------------------------------------------------------------------------
# biased blocks


def test_biased_blocks():
    proto = make_protocol(biased_blocks=True, debias=False, unbiased_trials=90, block_length=(20, 100))
    n, session_len, n_sessions = 40, 400, 2
    env = env_for(proto, n, seed=8)
    rec = run(env, session_len * n_sessions, lambda t, side: torch.ones(n, dtype=torch.bool), session_every=session_len)
    pl, side = rec["pl"], rec["side"]
    for s in range(n_sessions):
        a = s * session_len
        assert torch.all(pl[a : a + 90] == 0.5), s  # unbiased start of every session
        biased = pl[a + 90 : a + session_len]
        assert torch.all(close_to(biased, (0.2, 0.8))), s
    # both block types open the biased part; blocks alternate 0.2 <-> 0.8 with bounded lengths
    first = pl[90]
    assert close_to(first, (0.2,)).any() and close_to(first, (0.8,)).any()
    lengths = []
    for b in range(n):
        seq = pl[90:session_len, b].numpy()
        change = np.flatnonzero(np.diff(seq) != 0) + 1
        bounds = np.r_[0, change, len(seq)]
        for i in change:  # 0.2 -> 0.8 or 0.8 -> 0.2
            assert np.isclose(seq[i] + seq[i - 1], 1.0)
        lengths += np.diff(bounds)[:-1].tolist()  # the last block is cut by the session end
    assert lengths and min(lengths) >= 20 and max(lengths) <= 100
    # the side follows the block prior
    in_02 = close_to(pl, (0.2,))
    in_08 = close_to(pl, (0.8,))
    p_left_02 = (side[in_02] == 0).float().mean().item()
    p_left_08 = (side[in_08] == 0).float().mean().item()
    assert 0.15 < p_left_02 < 0.25 and 0.75 < p_left_08 < 0.85


def test_unbiased_protocol_never_leaves_half():
    env = env_for(make_protocol(debias=False), 10, seed=9)
    rec = run(env, 300, lambda t, side: torch.ones(10, dtype=torch.bool))
    assert torch.all(rec["pl"] == 0.5)


# --------------------------------------------------------------------------------------------
# per-row protocols, proportions and inactive rows


def test_each_row_follows_its_own_protocol():
    fast = make_protocol(advance=tuple(AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=10) for _ in range(5)), debias=False)
    slow = make_protocol(debias=True)
    other = make_protocol(phases=((0.25,), (0.125, 0.0)), proportions=None, advance=(AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=1000),), debias=False)
    protos = [fast] * 3 + [slow] * 3 + [other] * 2
    env = TaskEnv(protos, 8, torch.Generator().manual_seed(0))
    rec = run(env, 60, lambda t, side: torch.ones(8, dtype=torch.bool))
    assert torch.all(rec["phase"][-1, :3] == 5)  # 10 trials per phase
    assert torch.all(rec["phase"][-1, 3:6] == 0)  # 41 correct of each signed easy contrast take longer
    assert torch.all(close_to(rec["contrast"][:, 6:], (0.25,)))
    # a batch of one protocol equals the same rows run alone, draw for draw
    alone = run(TaskEnv(fast, 3, torch.Generator().manual_seed(4)), 60, lambda t, side: torch.ones(3, dtype=torch.bool))
    mixed = run(TaskEnv([fast] * 3, 3, torch.Generator().manual_seed(4)), 60, lambda t, side: torch.ones(3, dtype=torch.bool))
    for k in alone:
        assert torch.equal(alone[k], mixed[k])
    with pytest.raises(ValueError, match="3 protocols for 4 rows"):
        TaskEnv([fast] * 3, 4, torch.Generator())


def test_proportions_set_contrast_frequencies():
    proto = make_protocol(phases=((1.0, 0.25, 0.0),), proportions=((1.0, 1.0, 2.0),), advance=(), debias=False)
    env = env_for(proto, 2000, seed=9)
    rec = run(env, 5, lambda t, side: torch.ones(2000, dtype=torch.bool))
    c = rec["contrast"].reshape(-1)
    freq = [float(torch.isclose(c, torch.tensor(v)).float().mean()) for v in (1.0, 0.25, 0.0)]
    assert freq == pytest.approx([0.25, 0.25, 0.5], abs=0.015)


def test_inactive_rows_keep_their_state():
    proto = make_protocol(advance=(AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=3, threshold=0.5),) + IBL_DEFAULT.stimulus.advance[1:])
    env = env_for(proto, 4, seed=10)
    active = torch.tensor([True, True, False, False])
    for t in range(40):
        env.draw(torch.full((4,), t == 0), active)
        env.observe(torch.zeros(4, dtype=torch.bool) | (torch.arange(4) % 2 == 0), active)
    assert env.count[2:].tolist() == [0, 0] and env.phase[2:].tolist() == [0, 0]
    assert not env.pending[2:].any() and torch.all(env.perf_n[2:] == 0) and torch.all(env.perf_buf[2:] == 0)
    assert env.n_resp[2:].tolist() == [0, 0]
    assert env.phase[0] > 0 and env.phase[1] == 0  # the active rows did move on (row 0 always correct)
