"""Evaluation: likelihood scores by hand and the gain ratio."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from trial_tables import random_trials_table

from twin.data.batch import make_batch
from twin.analysis.evaluate import LN2, Scores, ll_gain_ratio, ll_gain_ratio_gap, score
from twin.models.learner import LearnerModel, ModelSpec


def trials_table(lengths: dict[str, list[int]], seed: int = 0) -> pd.DataFrame:
    return random_trials_table(lengths, seed, contrasts=(0.0, 0.125, 0.5, 1.0))


LENGTHS = {"a": [10, 8, 6, 7], "b": [5, 9, 4], "c": [6, 6, 6, 6, 3]}


@pytest.fixture(scope="module")
def table():
    return trials_table(LENGTHS, seed=3)


# --------------------------------------------------------------------------------------------
# score


def test_score_of_a_static_model_by_hand(table):
    batch = make_batch(table)
    mask = batch.valid & (batch.session != 2)
    batch = batch.with_mask(mask)
    model = LearnerModel(ModelSpec("static"))
    with torch.no_grad():
        model.w0.copy_(torch.tensor([1.5, -0.2]))
    s = score(model, batch)

    from twin.data.features import contrast_transform

    lls, hits, per = [], [], {}
    for subj, g in table.groupby("subject", sort=False):
        g = g[g["session"] != 2]
        stim = contrast_transform(torch.tensor(g["contrast_right"].to_numpy())) - contrast_transform(
            torch.tensor(g["contrast_left"].to_numpy())
        )
        z = 1.5 * stim.numpy() - 0.2
        p = 1 / (1 + np.exp(-z))
        y = g["choice"].to_numpy()
        ll = np.where(y == 1, np.log(p), np.log(1 - p))
        hit = (z > 0).astype(int) == y
        lls.append(ll)
        hits.append(hit)
        per[subj] = (len(g), ll.mean(), hit.mean())
    all_ll, all_hit = np.concatenate(lls), np.concatenate(hits)
    assert s.n_trials == len(all_ll) == int(mask.sum())
    assert s.ll == pytest.approx(all_ll.mean(), abs=1e-6)
    assert s.accuracy == pytest.approx(all_hit.mean(), abs=1e-9)
    assert s.ll_bits == pytest.approx(s.ll / math.log(2), rel=1e-12)
    assert LN2 == math.log(2)
    assert s.per_animal["subject"].tolist() == ["a", "b", "c"]
    for _, row in s.per_animal.iterrows():
        n, ll, acc = per[row["subject"]]
        assert row["n_trials"] == n
        assert row["ll"] == pytest.approx(ll, abs=1e-6)
        assert row["accuracy"] == pytest.approx(acc, abs=1e-6)


def test_score_of_a_learning_model_uses_its_trajectory(table):
    batch = make_batch(table)
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec("reinforce"))
    with torch.no_grad():
        model.w0.copy_(torch.tensor([0.3, 0.1]))
        model.rule.log_alpha.fill_(math.log(0.5))
    s = score(model, batch)
    with torch.no_grad():
        expected = float(model.log_likelihood(batch).sum() / batch.mask.sum())
    assert s.ll == pytest.approx(expected, abs=1e-6)
    static = LearnerModel(ModelSpec("static"))
    with torch.no_grad():
        static.w0.copy_(torch.tensor([0.3, 0.1]))
    assert s.ll != pytest.approx(score(static, batch).ll, abs=1e-6)


def test_score_with_an_empty_mask(table):
    batch = make_batch(table)
    s = score(LearnerModel(ModelSpec("static")), batch.with_mask(torch.zeros_like(batch.valid)))
    assert s.n_trials == 0 and s.ll == 0.0 and s.accuracy == 0.0
    assert (s.per_animal["n_trials"] == 0).all()


# --------------------------------------------------------------------------------------------
# gain ratio


def test_ll_gain_ratio():
    assert ll_gain_ratio(-0.55, -0.6, -0.5) == pytest.approx(0.5)
    assert ll_gain_ratio(-0.5, -0.6, -0.5) == pytest.approx(1.0)
    assert ll_gain_ratio(-0.6, -0.6, -0.5) == 0.0
    assert ll_gain_ratio(-0.65, -0.6, -0.5) == pytest.approx(-0.5)  # worse than static
    assert ll_gain_ratio(-0.45, -0.6, -0.5) == pytest.approx(1.5)  # better than the truth
    assert math.isnan(ll_gain_ratio(-0.55, -0.5, -0.5))  # truth == static
    assert math.isnan(ll_gain_ratio(-0.55, -0.5, -0.6))  # truth < static


def _scores(lls: list[float], n_trials: list[int]) -> Scores:
    per = pd.DataFrame({"subject": [f"s{i}" for i in range(len(lls))], "n_trials": n_trials, "ll": lls, "accuracy": 0.5})
    n = sum(n_trials)
    return Scores(n_trials=n, ll=float(np.dot(lls, n_trials) / n), accuracy=0.5, per_animal=per)


def test_ll_gain_ratio_gap_by_hand():
    n = [100, 200, 100, 100]
    static, truth = _scores([-0.7] * 4, n), _scores([-0.5] * 4, n)
    a = _scores([-0.52, -0.51, -0.53, -0.50], n)
    b = _scores([-0.56, -0.55, -0.57, -0.51], n)
    g = ll_gain_ratio_gap(a, b, static, truth, n_boot=500, seed=0)
    # ratio difference = (sum LL_a - sum LL_b) / (sum LL_truth - sum LL_static)
    expected = (np.dot([-0.52, -0.51, -0.53, -0.50], n) - np.dot([-0.56, -0.55, -0.57, -0.51], n)) / (0.2 * sum(n))
    assert g.gap == pytest.approx(expected)
    assert g.gap == pytest.approx(ll_gain_ratio(a.ll, static.ll, truth.ll) - ll_gain_ratio(b.ll, static.ll, truth.ll))
    assert 0 < g.lo <= g.gap <= g.hi  # a wins on every animal, so every resample favours it
    assert g.wins == 4 and g.n_animals == 4
    swapped = ll_gain_ratio_gap(b, a, static, truth, n_boot=500, seed=0)
    assert swapped.gap == pytest.approx(-g.gap) and swapped.hi < 0 and swapped.wins == 0


def test_ll_gain_ratio_gap_needs_the_same_animals():
    n = [10, 10]
    a, b = _scores([-0.5, -0.6], n), _scores([-0.5, -0.6], n)
    b.per_animal["subject"] = ["x", "y"]
    with pytest.raises(ValueError, match="same animals"):
        ll_gain_ratio_gap(a, b, a, a)


# --------------------------------------------------------------------------------------------
# each animal's own static fit (the strict zero of the LL-gain ratio)


def test_own_static_fit_is_each_animals_maximum_likelihood_constant_policy():
    from twin.analysis.evaluate import own_static_scores

    rng = np.random.default_rng(0)
    rows = []
    for name, (ws, wb) in {"a": (3.0, 1.0), "b": (0.5, -1.0)}.items():
        c = rng.choice([-1.0, -0.5, -0.125, 0.0, 0.125, 0.5, 1.0], 3000)
        p = 1 / (1 + np.exp(-(ws * c + wb)))
        y = (rng.random(3000) < p).astype(int)
        side = np.where(c > 0, 1, np.where(c < 0, 0, rng.integers(0, 2, 3000)))
        rows.append(pd.DataFrame({
            "subject": name, "session": 1 + np.arange(3000) // 1000, "trial": 1 + np.arange(3000) % 1000,
            "contrast_left": np.maximum(-c, 0), "contrast_right": np.maximum(c, 0), "choice": y,
            "feedback": np.where(y == side, 1, -1), "correct_side": side, "prob_left": 0.5,
        }))
    batch = make_batch(pd.concat(rows, ignore_index=True))
    own = own_static_scores(batch)
    # no constant policy does better on an animal: a population static fit, nor the true weights
    model = LearnerModel(ModelSpec("static"))
    for w in ([3.0, 1.0], [0.5, -1.0], [1.5, 0.0]):
        with torch.no_grad():
            model.w0.copy_(torch.tensor(w))
        other = score(model, batch).per_animal["ll"].to_numpy()
        assert np.all(own.per_animal["ll"].to_numpy() >= other - 1e-9)
    # and gradient-fitting a static model to one animal reaches the same optimum
    from twin.fit.train import FitConfig, fit

    res = fit(ModelSpec("static"), batch.select([0]), None, FitConfig(epochs=300, patience=20, learning_rate=0.05), progress=False)
    assert own.per_animal["ll"].iloc[0] == pytest.approx(res.best_val_ll, abs=1e-4)
    # the ratio against it is stricter than against a pooled static fit
    pooled = score(model, batch).ll
    assert ll_gain_ratio(-0.40, own.ll, -0.35) < ll_gain_ratio(-0.40, min(pooled, own.ll - 0.01), -0.35)
