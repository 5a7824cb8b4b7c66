"""Ground-truth families: every family builds, simulates and is paced; each new family's defining
property shows in its simulated data, against the REINFORCE cohort (same rates and baselines,
same seed) as the matched family without the mechanism."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from twin.data.batch import make_batch
from twin.models.policy import p_right
from twin.models.rules import get_rule
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, PACED_TRUTHS, Family, Individuality, draw_individuals
from twin.sim.simulate import Simulation, simulate

N_ANIMALS, N_TRIALS, SEED = 24, 3000, 7
NEW = (Family.PERSEVERATION, Family.PLATEAU, Family.FORGETTING)


@pytest.fixture(scope="module")
def cohorts() -> dict[Family, Simulation]:
    return {f: simulate(DEFAULT_TRUTHS[f].build(), IBL_DEFAULT, N_ANIMALS, N_TRIALS, seed=SEED) for f in (Family.REINFORCE, *NEW)}


@pytest.mark.parametrize("family", list(Family))
def test_every_family_builds_simulates_and_is_paced(family):
    truth = DEFAULT_TRUTHS[family]
    model = truth.build()
    assert model.spec.rule == truth.rule_name and get_rule(truth.rule_name) is type(model.rule)
    assert not any(p.requires_grad for p in model.parameters())
    w0, log_rate = draw_individuals(truth, 3, Individuality(), seed=1)
    sim = simulate(model, IBL_DEFAULT, 3, 400, seed=2, w0=w0, log_rate=log_rate, subject_prefix=family.value)
    assert sim.weights.shape == (3, 400, 2) and torch.isfinite(sim.weights).all()
    assert sim.trials["subject"].str.startswith(family.value).all()
    assert (sim.weights[:, -1] != sim.weights[:, 0]).any()  # it learns
    # the paced cohort: learning rates divided, the family's mechanism unchanged
    paced = PACED_TRUTHS[family]
    assert paced.family is family and paced.alpha[0] < truth.alpha[0]
    assert (paced.choice_kernel, paced.kernel_rate, paced.stimulus_bound, paced.overnight_forgetting) == (
        truth.choice_kernel,
        truth.kernel_rate,
        truth.stimulus_bound,
        truth.overnight_forgetting,
    )


@pytest.mark.parametrize("family", NEW)
def test_new_families_are_the_reinforce_cohort_plus_one_mechanism(family):
    """Same REINFORCE part as the matched cohort, and the mechanism switched off gives back
    REINFORCE exactly (same seed, same trials)."""
    truth, ref = DEFAULT_TRUTHS[family], DEFAULT_TRUTHS[Family.REINFORCE]
    assert (truth.alpha, truth.baseline, truth.w0) == (ref.alpha, ref.baseline, ref.w0)
    model = truth.build()
    rule = model.rule
    with torch.no_grad():
        if family is Family.PERSEVERATION:
            rule.kernel.zero_()
        elif family is Family.PLATEAU:
            rule.log_bound.fill_(50.0)
        else:
            rule.forgetting.zero_()
    a = simulate(model, IBL_DEFAULT, 2, 900, seed=3)
    b = simulate(ref.build(), IBL_DEFAULT, 2, 900, seed=3)
    pd.testing.assert_frame_equal(a.trials, b.trials)


def repeat_probability(sim: Simulation) -> float:
    """P(choice on trial t = choice on t − 1) within sessions."""
    df = sim.trials
    same_session = df.groupby("subject")["session"].diff() == 0
    repeat = df.groupby("subject")["choice"].diff() == 0
    return float(repeat[same_session].mean())


def test_perseveration_raises_the_probability_of_repeating_a_choice(cohorts):
    pers, ref = repeat_probability(cohorts[Family.PERSEVERATION]), repeat_probability(cohorts[Family.REINFORCE])
    assert pers > ref + 0.03, (pers, ref)


def easy_accuracy_by_animal(trials: pd.DataFrame, last: int) -> pd.Series:
    """Each animal's accuracy on easy (>= 0.5) contrasts over its last ``last`` trials."""
    df = trials.groupby("subject").tail(last)
    easy = df[(df["contrast_left"] + df["contrast_right"]) >= 0.5]
    return (easy["feedback"] > 0).groupby(easy["subject"]).mean()


def test_plateau_keeps_easy_accuracy_below_the_criterion(cohorts):
    trials = cohorts[Family.PLATEAU].trials
    plateau = easy_accuracy_by_animal(trials, 1000)
    ref = easy_accuracy_by_animal(cohorts[Family.REINFORCE].trials, 1000)
    assert (plateau < 0.8).all(), plateau.max()  # trained_1a asks for > 80% on easy contrasts
    assert ref.mean() > 0.9  # the matched cohort without the bound passes it
    # a plateau, not slow learning: the last two 1,000-trial blocks are as good as each other
    earlier = easy_accuracy_by_animal(trials.groupby("subject").head(2000), 1000)
    assert abs(plateau.mean() - earlier.mean()) < 0.02


def boundary_change(sim: Simulation, window: int = 20) -> float:
    """Mean change in expected easy-contrast accuracy (``p`` of the correct choice at full contrast,
    from the true weights) from a session's last ``window`` trials to the next session's first."""
    batch = make_batch(sim.trials)
    w = sim.weights
    x = torch.tensor([1.0, 1.0])
    acc = 0.5 * (p_right(w, x) + 1 - p_right(w, x * torch.tensor([-1.0, 1.0])))  # [B, T], both sides
    starts = batch.session_start.bool()
    changes = []
    for i in range(w.shape[0]):
        idx = torch.nonzero(starts[i]).flatten().tolist()
        for a in idx[1:]:
            if a >= window and a + window <= w.shape[1]:
                changes.append(float(acc[i, a : a + window].mean() - acc[i, a - window : a].mean()))
    return sum(changes) / len(changes)


def test_forgetting_drops_accuracy_from_a_sessions_end_to_the_next_start(cohorts):
    forget, ref = boundary_change(cohorts[Family.FORGETTING]), boundary_change(cohorts[Family.REINFORCE])
    assert forget < -0.005, forget
    assert ref > -0.002, ref  # without forgetting the weights keep learning across the night
    assert forget < ref - 0.005
