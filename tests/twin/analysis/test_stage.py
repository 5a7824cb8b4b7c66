"""The training stage from an animal's sessions: synthetic observers, the recording-readiness
criterion on biased blocks, and the real 53-mouse file (skipped when it is absent)."""

from __future__ import annotations

from math import erf

import numpy as np
import pandas as pd
import pytest

from twin.analysis.criteria import READY_FOR_RECORDING, TRAINED_1A, TRAINED_1B, CriterionConfig, criteria_sessions
from twin.analysis.stage import StageAssessment, TrainingStage, assess_stage, assess_stages, new_animal
from trial_tables import ibl_export_subset

TRAINING_SET = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)
BIASED_SET = (1.0, 0.25, 0.125, 0.0625, 0.0)


def _p_right(x: np.ndarray, bias: np.ndarray, threshold: float, lapse: float) -> np.ndarray:
    z = (x - bias) / threshold
    return lapse + (1 - 2 * lapse) * (1 + np.vectorize(erf)(z)) / 2


def session(n: int, *, biased: bool, rng: np.random.Generator, threshold: float = 8.0, lapse: float = 0.02, shift: float = 0.0, bias: float = 0.0) -> pd.DataFrame:
    """One session of an erf observer. Biased sessions: 90 trials at P(left) 0.5, then blocks of
    0.2 / 0.8 (alternating every 60 trials); the observer's bias moves by ``+shift/2`` in 0.8
    blocks (more left choices: the curve of p(right) moves right) and ``-shift/2`` in 0.2 blocks."""
    pl = np.full(n, 0.5)
    if biased:
        k = np.arange(n) - 90
        pl = np.where(k < 0, 0.5, np.where((k // 60) % 2 == 0, 0.2, 0.8))
    contrasts = BIASED_SET if biased else TRAINING_SET
    c = rng.choice(contrasts, n)
    side = (rng.random(n) >= pl).astype(int)  # 1 = right
    x = 100 * c * np.where(side == 1, 1, -1)
    b = bias + np.where(pl == 0.8, shift / 2, np.where(pl == 0.2, -shift / 2, 0.0))
    choice = (rng.random(n) < _p_right(x, b, threshold, lapse)).astype(int)
    return pd.DataFrame(
        dict(trial=np.arange(1, n + 1), contrast_left=c * (1 - side), contrast_right=c * side, choice=choice, feedback=np.where(choice == side, 1, -1), correct_side=side, prob_left=pl)
    )


def table(spec: list[dict], subject: str = "m1", seed: int = 0) -> pd.DataFrame:
    """A canonical table of one subject's sessions, ``spec[i]`` the keyword arguments of session i+1."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, kw in enumerate(spec, start=1):
        kw = dict(kw)
        s = session(kw.pop("n", 600), rng=rng, **kw)
        s.insert(0, "session", i)
        s.insert(0, "subject", subject)
        parts.append(s)
    return pd.concat(parts, ignore_index=True)


NOVICE = dict(biased=False, threshold=60.0, lapse=0.3)
GOOD = dict(biased=False, threshold=8.0, lapse=0.02)  # passes trained_1a and trained_1b
FAIR = dict(biased=False, threshold=10.0, lapse=0.15, n=300)  # trained_1a only (lapses, 300 trials)
BLOCKS = dict(biased=True, threshold=8.0, lapse=0.02, shift=20.0)  # ready for recording
NO_SHIFT = dict(biased=True, threshold=8.0, lapse=0.02, shift=0.0)  # ignores the blocks


def test_stages_in_order_and_their_targets():
    assert [s.rank for s in TrainingStage] == [0, 1, 2, 3, 4]
    assert TrainingStage.TRAINING.target is TRAINED_1A and TrainingStage.TRAINED_1A.target is TRAINED_1B
    assert TrainingStage.TRAINED_1B.target is READY_FOR_RECORDING and TrainingStage.BIASED.target is READY_FOR_RECORDING
    assert TrainingStage.READY_FOR_RECORDING.target is None
    assert [s.trained for s in TrainingStage] == [False, False, True, True, True]
    a = new_animal("x")
    assert a.stage is TrainingStage.TRAINING and a.target is TRAINED_1A and "next criterion trained_1a" in a.summary()


def test_a_novice_is_in_training():
    a = assess_stage(table([NOVICE] * 4), "m1")
    assert a.stage is TrainingStage.TRAINING and a.trained_1a_session is None and a.n_sessions == 4
    assert a.target is TRAINED_1A


@pytest.mark.parametrize("n_sessions", [1, 2])
def test_fewer_sessions_than_a_criterion_window(n_sessions):
    """One or two sessions (a window is three): in training, no criterion met, no error."""
    a = assess_stage(table([GOOD] * n_sessions), "m1")
    assert a.stage is TrainingStage.TRAINING and a.trained_1a_session is None and a.n_sessions == n_sessions


def test_trained_1a_then_trained_1b():
    a = assess_stage(table([NOVICE, FAIR, FAIR, FAIR]), "m1")
    assert (a.stage, a.trained_1a_session, a.trained_1b_session) == (TrainingStage.TRAINED_1A, 4, None)
    assert a.target is TRAINED_1B
    b = assess_stage(table([NOVICE, FAIR, FAIR, FAIR, GOOD, GOOD, GOOD]), "m1")
    assert (b.stage, b.trained_1a_session, b.trained_1b_session) == (TrainingStage.TRAINED_1B, 4, 7)
    assert b.target is READY_FOR_RECORDING and "trained_1b at session 7" in b.summary()


def test_biased_sessions_put_the_animal_on_biased_blocks_and_readiness_needs_the_bias_shift():
    # three biased sessions that ignore the block prior: on biased blocks, not ready
    a = assess_stage(table([GOOD] * 3 + [NO_SHIFT] * 3), "m1")
    assert (a.stage, a.trained_1b_session, a.biased_session, a.ready_session) == (TrainingStage.BIASED, 3, 4, None)
    assert a.target is READY_FOR_RECORDING
    # the same with a 20 % bias shift between blocks: ready at the third biased session
    b = assess_stage(table([GOOD] * 3 + [BLOCKS] * 3), "m1")
    assert (b.stage, b.biased_session, b.ready_session) == (TrainingStage.READY_FOR_RECORDING, 4, 6)
    assert b.target is None and "keep it on biased blocks" in b.summary()
    # two biased sessions are not a window of three
    c = assess_stage(table([GOOD] * 3 + [BLOCKS] * 2), "m1")
    assert c.stage is TrainingStage.BIASED


def test_biased_sessions_without_the_training_sessions_still_count_as_trained():
    a = assess_stage(table([NOVICE] + [NO_SHIFT] * 2), "m1")  # the lab moved it on: biased blocks
    assert a.stage is TrainingStage.BIASED and a.trained_1b_session is None and a.stage.trained


def test_readiness_fails_on_lapses_and_on_one_short_session():
    base = [GOOD] * 3
    lapsy = dict(BLOCKS, lapse=0.15)
    assert assess_stage(table(base + [lapsy] * 3), "m1").stage is TrainingStage.BIASED  # lapses pooled over the window
    a = assess_stage(table(base + [BLOCKS, dict(BLOCKS, n=350), BLOCKS]), "m1")  # > 400 trials in each session
    assert a.stage is TrainingStage.BIASED
    b = assess_stage(table(base + [BLOCKS, dict(BLOCKS, n=350), BLOCKS, BLOCKS, BLOCKS]), "m1")
    assert (b.stage, b.ready_session) == (TrainingStage.READY_FOR_RECORDING, 8)
    # a training window that holds a biased session is no training window
    t = criteria_sessions(table([NOVICE, NOVICE, BLOCKS, GOOD, GOOD]), (TRAINED_1A, TRAINED_1B, READY_FOR_RECORDING))
    assert t["biased"].tolist() == [False, False, True, False, False]


def test_block_criterion_needs_block_counts_and_describes_itself():
    from twin.analysis.criteria import criterion_passes, session_stats
    import torch

    x = torch.tensor([[100.0, -100.0, 0.0, 0.0]])
    side = torch.tensor([[1, 0, 1, 0]])
    stats = session_stats(x, side, side, torch.tensor([[True, False, False, False]]))
    with pytest.raises(ValueError, match="per-block counts"):
        criterion_passes(stats, READY_FOR_RECORDING)
    d = READY_FOR_RECORDING.describe()
    assert d.startswith("ready_for_recording: over 3 biased sessions") and "bias shift between those blocks > 5%" in d and "|bias|" not in d
    assert TRAINED_1B.describe().startswith("trained_1b: over 3 consecutive sessions, |bias| < 10%")
    with pytest.raises(ValueError, match="bias_blocks"):
        CriterionConfig("x", 1, 1, 0.1, 1, 0.5, bias_blocks=(0.8, 0.2))
    with pytest.raises(ValueError, match="block criterion"):
        assess_stages(table([GOOD]), ready=TRAINED_1B)


def test_subjects_are_assessed_together_in_table_order():
    df = pd.concat([table([GOOD] * 3 + [BLOCKS] * 3, "b", seed=1), table([NOVICE] * 3, "a", seed=2)], ignore_index=True)
    out = assess_stages(df)
    assert list(out) == ["b", "a"]
    assert out["b"].stage is TrainingStage.READY_FOR_RECORDING and out["a"].stage is TrainingStage.TRAINING
    assert isinstance(out["a"], StageAssessment)
    assert assess_stage(df, "nobody").stage is TrainingStage.TRAINING


# -- the real 53-mouse file -------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory) -> pd.DataFrame:
    """Six mice of the 53-mouse file: 3 training sessions, then 9 biased ones."""
    return ibl_export_subset(tmp_path_factory.mktemp("ibl"), n_subjects=6, max_biased_sessions=9)


def test_trained_mice_of_the_real_file_come_out_trained(real):
    out = assess_stages(real)
    assert len(out) == 6
    for a in out.values():
        # endtrain sessions 1-3, biased from session 4 on (the file's README)
        assert a.stage.trained and a.stage.rank >= TrainingStage.BIASED.rank, a
        assert a.biased_session == 4, a
        assert a.target in (READY_FOR_RECORDING, None)
        assert a.ready_session is None or a.ready_session >= 6
    assert any(a.stage is TrainingStage.READY_FOR_RECORDING for a in out.values())
    # the training sessions alone: the last three training sessions of a trained mouse pass trained_1a at least
    train_only = assess_stages(real[real["session"] <= 3])
    assert all(not a.stage.trained or a.stage is TrainingStage.TRAINED_1B for a in train_only.values())
    assert sum(a.stage.rank >= TrainingStage.TRAINED_1A.rank for a in train_only.values()) >= 4
