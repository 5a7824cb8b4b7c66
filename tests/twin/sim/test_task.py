"""The IBL task environment: contrast phases, debiasing, advancement, biased blocks and session
schedules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from twin.protocol import IBL_PHASES, Curriculum, FeedbackPolicy, StimulusSchedule
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
    """Step the env; returns per-trial tensors [T, B] of phase, contrast, side, prob_left, repeat."""
    rec = {k: [] for k in ("phase", "contrast", "side", "pl", "repeat")}
    for t in range(n_trials):
        ss = torch.full((env.b,), t == 0 or (session_every is not None and t % session_every == 0))
        rec["phase"].append(env.phase.clone())
        rec["repeat"].append(env.repeat & ~ss)
        cl, cr, side, pl = env.draw(ss)
        assert torch.all((cl == 0) | (cr == 0))
        seen = (cl + cr) > 0  # at zero contrast the side is not visible
        assert torch.equal(side[seen], (cr[seen] > 0).float())
        rec["contrast"].append(cl + cr)
        rec["side"].append(side)
        rec["pl"].append(pl)
        env.observe(correct_fn(t, side))
    return {k: torch.stack(v) for k, v in rec.items()}


def test_contrasts_belong_to_the_current_phase():
    proto = make_protocol(debias=False, advance_window=20)
    env = env_for(proto, 16, seed=1)
    g = torch.Generator().manual_seed(2)
    rec = run(env, 400, lambda t, side: torch.rand(16, generator=g) < 0.95)
    assert int(rec["phase"].max()) >= 3  # good learners advanced through several phases
    for ph in range(len(proto.stimulus.phases)):
        sel = rec["phase"] == ph
        if sel.any():
            shown = set(np.round(rec["contrast"][sel].numpy(), 6).tolist())
            assert shown <= set(proto.stimulus.phases[ph]), (ph, shown)
    # the phase never goes back
    assert torch.all(torch.diff(rec["phase"], dim=0) >= 0)
    # both sides at P(left) = 0.5
    assert 0.4 < rec["side"].mean().item() < 0.6
    assert torch.all(rec["pl"] == 0.5)


def test_debiasing_repeats_after_an_easy_error_only():
    proto = make_protocol(phases=((1.0, 0.5, 0.25),), debias=True, debias_min_contrast=0.5)
    n = 300
    env = env_for(proto, n, seed=3)
    cl, cr, side, _ = env.draw(torch.ones(n, dtype=torch.bool))
    c0 = cl + cr
    env.observe(torch.zeros(n, dtype=torch.bool))  # everyone wrong
    easy = c0 >= 0.5
    assert easy.any() and (~easy).any()
    assert torch.equal(env.repeat, easy)
    cl, cr, side1, pl = env.draw(torch.zeros(n, dtype=torch.bool))
    c1 = cl + cr
    assert torch.equal(side1[easy], side[easy])
    assert torch.equal(c1[easy], c0[easy])
    # on a repeat the side is certain; recorded as P(left) 0 or 1
    assert torch.equal(pl[easy], 1.0 - side[easy])
    # hard errors are not repeated: fresh draws, which differ from the last trial for many animals
    hard = ~easy
    assert ((side1[hard] != side[hard]) | (c1[hard] != c0[hard])).float().mean() > 0.3
    assert torch.all(pl[hard] == 0.5)

    # after a correct trial: no repeat
    env.observe(torch.ones(n, dtype=torch.bool))
    assert not env.repeat.any()
    cl, cr, side2, _ = env.draw(torch.zeros(n, dtype=torch.bool))
    assert 0.3 < (side2 != side1).float().mean() < 0.7


def test_debiasing_stops_at_a_session_start_and_can_be_disabled():
    n = 300
    env = env_for(make_protocol(), n, seed=4)
    _, _, side, _ = env.draw(torch.ones(n, dtype=torch.bool))
    env.observe(torch.zeros(n, dtype=torch.bool))
    assert env.repeat.all()  # phase 0 only has easy contrasts
    _, _, side1, pl = env.draw(torch.ones(n, dtype=torch.bool))  # new session
    assert 0.3 < (side1 != side).float().mean() < 0.7
    assert torch.all(pl == 0.5)

    env = env_for(make_protocol(debias=False), n, seed=4)
    _, _, side, _ = env.draw(torch.ones(n, dtype=torch.bool))
    env.observe(torch.zeros(n, dtype=torch.bool))
    assert not env.repeat.any()
    _, _, side1, _ = env.draw(torch.zeros(n, dtype=torch.bool))
    assert 0.3 < (side1 != side).float().mean() < 0.7


def test_always_correct_advances_through_every_phase():
    proto = make_protocol(advance_window=50)
    env = env_for(proto, 4, seed=5)
    n_ph = len(proto.stimulus.phases)
    rec = run(env, 50 * n_ph + 30, lambda t, side: torch.ones(4, dtype=torch.bool), session_every=120)
    phase = rec["phase"]  # in force when each trial was drawn
    # exactly one window per phase, across session boundaries, then it stays in the last phase
    expected = torch.clamp(torch.arange(phase.shape[0]) // 50, max=n_ph - 1)
    assert torch.equal(phase, expected.unsqueeze(1).expand_as(phase))
    assert torch.all(env.phase == n_ph - 1)


def test_always_wrong_stays_in_the_first_phase():
    env = env_for(make_protocol(advance_window=20), 4, seed=6)
    rec = run(env, 300, lambda t, side: torch.zeros(4, dtype=torch.bool))
    assert torch.all(rec["phase"] == 0)
    assert torch.all(close_to(rec["contrast"], IBL_PHASES[0]))


def test_threshold_must_hold_on_every_easy_contrast():
    """Right on all 1.0 trials but wrong on every 0.5 trial: no advancement."""
    proto = make_protocol(advance_window=30, debias=False)
    env = env_for(proto, 8, seed=7)
    phases = []
    for t in range(200):
        phases.append(env.phase.clone())
        cl, cr, _, _ = env.draw(torch.full((8,), t == 0))
        env.observe((cl + cr) == 1.0)
    assert torch.all(torch.stack(phases) == 0)


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
    fast = make_protocol(advance_window=10, advance_threshold=0.5, debias=False)
    slow = make_protocol(advance_window=80, debias=True)
    other = make_protocol(phases=((0.25,), (0.125, 0.0)), debias=False)
    protos = [fast] * 3 + [slow] * 3 + [other] * 2
    env = TaskEnv(protos, 8, torch.Generator().manual_seed(0))
    rec = run(env, 60, lambda t, side: torch.ones(8, dtype=torch.bool))
    assert torch.all(rec["phase"][-1, :3] >= 3)  # 10-trial windows: through most phases in 60 trials
    assert torch.all(rec["phase"][-1, 3:6] == 0)  # 80-trial window not yet full
    assert torch.all(close_to(rec["contrast"][:, 6:], (0.25, 0.125, 0.0)))
    # a batch of one protocol equals the same rows run alone, draw for draw
    alone = run(TaskEnv(fast, 3, torch.Generator().manual_seed(4)), 60, lambda t, side: torch.ones(3, dtype=torch.bool))
    mixed = run(TaskEnv([fast] * 3, 3, torch.Generator().manual_seed(4)), 60, lambda t, side: torch.ones(3, dtype=torch.bool))
    for k in alone:
        assert torch.equal(alone[k], mixed[k])
    with pytest.raises(ValueError, match="3 protocols for 4 rows"):
        TaskEnv([fast] * 3, 4, torch.Generator())


def test_proportions_set_contrast_frequencies():
    proto = make_protocol(phases=((1.0, 0.25, 0.0),), proportions=((1.0, 1.0, 2.0),), debias=False)
    env = env_for(proto, 2000, seed=9)
    rec = run(env, 5, lambda t, side: torch.ones(2000, dtype=torch.bool))
    c = rec["contrast"].reshape(-1)
    freq = [float(torch.isclose(c, torch.tensor(v)).float().mean()) for v in (1.0, 0.25, 0.0)]
    assert freq == pytest.approx([0.25, 0.25, 0.5], abs=0.015)


def test_inactive_rows_keep_their_state():
    proto = make_protocol(advance_window=5, advance_threshold=0.5)
    env = env_for(proto, 4, seed=10)
    active = torch.tensor([True, True, False, False])
    for t in range(30):
        env.draw(torch.full((4,), t == 0), active)
        env.observe(torch.zeros(4, dtype=torch.bool) | (torch.arange(4) % 2 == 0), active)
    assert env.n_in_phase[2:].tolist() == [0, 0] and env.phase[2:].tolist() == [0, 0]
    assert not env.repeat[2:].any() and torch.all(env.buf_c[2:] == -1)
    assert env.phase[0] > 0 and env.phase[1] == 0  # the active rows did move on (row 0 always correct)
