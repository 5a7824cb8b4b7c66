"""Policy features and the padded trial batch: padding, masks, session flags, history regressors,
and the sub-batch helpers used by the splits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from trial_tables import random_trials_table

from twin.data.batch import make_batch
from twin.data.features import FeatureSpec, StimulusCoding, contrast_transform


trials_table = random_trials_table


LENGTHS = {"bob": [4, 3], "al": [2], "cy": [3, 1, 5]}  # table order: bob, al, cy


@pytest.fixture(scope="module")
def table():
    return trials_table(LENGTHS, seed=0)


# --------------------------------------------------------------------------------------------
# features


def test_contrast_transform_endpoints_and_monotone():
    c = torch.linspace(0, 1, 201)
    g = contrast_transform(c)
    assert g[0].item() == 0.0
    assert g[-1].item() == pytest.approx(1.0, abs=1e-7)
    assert torch.all(torch.diff(g) > 0)
    assert torch.all((g >= 0) & (g <= 1 + 1e-7))
    assert contrast_transform(torch.tensor(0.25)).item() == pytest.approx(math.tanh(1.25) / math.tanh(5.0), rel=1e-6)
    # saturating: the step from 0.5 to 1 is small next to the one from 0 to 0.0625
    assert (contrast_transform(torch.tensor(1.0)) - contrast_transform(torch.tensor(0.5))) < contrast_transform(torch.tensor(0.0625))


@pytest.mark.parametrize(
    "spec, names",
    [
        (FeatureSpec(), ("stimulus", "bias")),
        (FeatureSpec(StimulusCoding.SPLIT), ("contrast_left", "contrast_right", "bias")),
        (FeatureSpec(history=True), ("stimulus", "bias", "prev_choice", "prev_reward_side")),
        (FeatureSpec(StimulusCoding.SPLIT, bias=False, history=True), ("contrast_left", "contrast_right", "prev_choice", "prev_reward_side")),
        (FeatureSpec(bias=False), ("stimulus",)),
    ],
)
def test_feature_names_and_count(spec, names):
    assert spec.names == names
    assert spec.n_features == len(names)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_feature_values_by_hand():
    cl = torch.tensor([0.0, 0.5, 0.0])
    cr = torch.tensor([1.0, 0.0, 0.0])
    pc = torch.tensor([1.0, -1.0, 0.0])
    pr = torch.tensor([0.0, 1.0, 1.0])
    g = contrast_transform
    x = FeatureSpec(history=True).compute(cl, cr, pc, pr)
    assert x.shape == (3, 4)
    torch.testing.assert_close(x[:, 0], g(cr) - g(cl))
    torch.testing.assert_close(x[:, 1], torch.ones(3))
    torch.testing.assert_close(x[:, 2], pc)
    torch.testing.assert_close(x[:, 3], torch.tensor([0.0, -1.0, 0.0]))  # previous rewarded side
    xs = FeatureSpec(StimulusCoding.SPLIT, bias=False).compute(cl, cr)
    torch.testing.assert_close(xs, torch.stack([g(cl), g(cr)], -1))
    with pytest.raises(ValueError, match="prev_choice"):
        FeatureSpec(history=True).compute(cl, cr)


# --------------------------------------------------------------------------------------------
# make_batch


def test_padding_masks_and_lengths(table):
    b = make_batch(table, FeatureSpec(history=True))
    assert b.subjects == ("bob", "al", "cy")
    assert (b.n_animals, b.n_trials) == (3, 9)
    assert b.x.shape == (3, 9, 4)
    assert b.lengths.tolist() == [7, 2, 9]
    assert b.valid.tolist()[1] == [True, True] + [False] * 7
    assert torch.equal(b.mask, b.valid)
    for name in ("x", "y", "reward", "answer", "session_start", "contrast_left", "contrast_right"):
        t = getattr(b, name)
        assert torch.count_nonzero(t[~b.valid]) == 0, name
    assert torch.count_nonzero(b.session[~b.valid]) == 0
    assert b.session.tolist()[0] == [1, 1, 1, 1, 2, 2, 2, 0, 0]
    assert b.session.tolist()[2] == [1, 1, 1, 2, 3, 3, 3, 3, 3]


def test_values_match_the_table(table):
    b = make_batch(table)
    for i, subj in enumerate(b.subjects):
        rows = table[table["subject"] == subj]
        n = len(rows)
        assert b.y[i, :n].tolist() == rows["choice"].astype(float).tolist()
        assert b.reward[i, :n].tolist() == (rows["feedback"] == 1).astype(float).tolist()
        assert b.answer[i, :n].tolist() == rows["correct_side"].astype(float).tolist()
        np.testing.assert_allclose(b.contrast_left[i, :n].numpy(), rows["contrast_left"].to_numpy(), rtol=1e-7)
        expected_s = contrast_transform(torch.tensor(rows["contrast_right"].to_numpy(), dtype=torch.float32)) - contrast_transform(
            torch.tensor(rows["contrast_left"].to_numpy(), dtype=torch.float32)
        )
        torch.testing.assert_close(b.x[i, :n, 0], expected_s)


def test_session_start_flags_the_first_trial_of_each_session(table):
    b = make_batch(table)
    expected = {
        "bob": [1, 0, 0, 0, 1, 0, 0, 0, 0],
        "al": [1, 0, 0, 0, 0, 0, 0, 0, 0],
        "cy": [1, 0, 0, 1, 1, 0, 0, 0, 0],  # a one-trial session: two starts in a row
    }
    for i, subj in enumerate(b.subjects):
        assert b.session_start[i].tolist() == expected[subj], subj
    # consistent with the session index: a start wherever the session changes
    s = b.session
    change = torch.zeros_like(b.session_start, dtype=torch.bool)
    change[:, 0] = True
    change[:, 1:] = s[:, 1:] != s[:, :-1]
    assert torch.equal(b.session_start.bool(), change & b.valid)


def test_history_features_restart_each_session(table):
    b = make_batch(table, FeatureSpec(history=True))
    k_pc, k_prs = 2, 3
    starts = b.session_start.bool()
    assert torch.count_nonzero(b.x[..., k_pc][starts]) == 0
    assert torch.count_nonzero(b.x[..., k_prs][starts]) == 0
    # elsewhere: previous choice as ±1 and previous choice × previous reward
    for i in range(b.n_animals):
        for t in range(1, int(b.lengths[i])):
            if starts[i, t]:
                continue
            prev = 2 * b.y[i, t - 1] - 1
            assert b.x[i, t, k_pc] == prev
            assert b.x[i, t, k_prs] == prev * b.reward[i, t - 1]


def test_dtype_option(table):
    b = make_batch(table, dtype=torch.float64)
    assert b.x.dtype == b.y.dtype == b.session_start.dtype == torch.float64
    assert b.session.dtype == torch.int64 and b.valid.dtype == torch.bool


def test_to_dtype_casts_floats_only(table):
    b = make_batch(table).to_dtype(torch.float64)
    assert b.x.dtype == b.y.dtype == b.reward.dtype == b.contrast_left.dtype == torch.float64
    assert b.session.dtype == torch.int64 and b.valid.dtype == b.mask.dtype == torch.bool
    torch.testing.assert_close(b.x.float(), make_batch(table).x)


# --------------------------------------------------------------------------------------------
# helpers on a batch


def test_select(table):
    b = make_batch(table)
    s = b.select([2, 0])
    assert s.subjects == ("cy", "bob")
    assert s.n_trials == b.n_trials
    assert torch.equal(s.x, b.x[[2, 0]])
    assert torch.equal(s.session, b.session[[2, 0]])
    assert torch.equal(s.mask, b.mask[[2, 0]])
    assert s.lengths.tolist() == [9, 7]
    assert s.select(torch.tensor([1])).subjects == ("bob",)


def test_with_mask_never_scores_padding(table):
    b = make_batch(table)
    m = b.with_mask(torch.ones_like(b.valid))
    assert torch.equal(m.mask, b.valid)
    none = b.with_mask(torch.zeros_like(b.valid))
    assert not none.mask.any()
    assert torch.equal(none.x, b.x) and torch.equal(none.valid, b.valid)


def test_sessions_mask(table):
    b = make_batch(table)
    m = b.sessions_mask(2)
    assert torch.equal(m, (b.session >= 2) & b.valid)
    m = b.sessions_mask(2, 2)
    assert m.sum(1).tolist() == [3, 0, 1]
    # per-animal bounds
    m = b.sessions_mask(torch.tensor([1, 1, 3]), torch.tensor([1, 1, 3]))
    assert m.sum(1).tolist() == [4, 2, 5]
    assert not (m & ~b.valid).any()


def test_truncate_sessions(table):
    b = make_batch(table)
    t = b.truncate_sessions(torch.tensor([1, 5, 2]))
    assert t.lengths.tolist() == [4, 2, 4]
    assert t.n_trials == 4  # trimmed to the longest remaining animal
    assert torch.equal(t.mask, t.valid)
    assert int(t.session[t.valid].max()) == 2
    assert torch.equal(t.x[2, :4], b.x[2, :4])
    assert torch.equal(t.session[0], torch.tensor([1, 1, 1, 1]))
    # an existing mask is kept, restricted to what remains
    masked = b.with_mask(b.sessions_mask(2)).truncate_sessions(torch.tensor([2, 2, 2]))
    assert masked.mask.sum(1).tolist() == [3, 0, 1]


def test_to_device_keeps_values(table):
    b = make_batch(table)
    c = b.to("cpu")
    for name in ("x", "y", "session", "valid", "mask"):
        assert torch.equal(getattr(c, name), getattr(b, name))
    assert c.subjects == b.subjects and c.features == b.features
