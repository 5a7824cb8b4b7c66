"""Next-session forecasts: reproducible, coherent, and calibrated against the true learner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.fit.cohort import twin_end_state
from twin.sim.forecast import forecast_session, interval
from twin.sim.simulate import simulate
from twin.models.state import TwinState
from twin.protocol import IBL_DEFAULT


@pytest.fixture(scope="module")
def truth_and_history():
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    sim = simulate(truth, IBL_DEFAULT, 1, 2500, seed=5)
    return truth, sim.trials


def test_forecast_is_reproducible_and_coherent(truth_and_history):
    truth, hist = truth_and_history
    state = twin_end_state(truth, hist)
    a = forecast_session(truth, state, IBL_DEFAULT, 300, n_rollouts=64, seed=1)
    b = forecast_session(truth, state, IBL_DEFAULT, 300, n_rollouts=64, seed=1)
    assert a == b
    assert a.n_trials == 300 and a.n_rollouts == 64
    for iv in [a.accuracy, a.end_phase] + [iv for _, iv in a.by_contrast + a.psychometric + a.learning_curve]:
        assert iv.lo <= iv.mean + 1e-9 and iv.mean <= iv.hi + 1e-9
    p = [iv.mean for _, iv in a.psychometric]
    assert all(np.diff(p) > 0)  # positive stimulus weight: p(right) rises with signed contrast
    assert [e for e, _ in a.learning_curve] == [50, 100, 150, 200, 250, 300]
    acc = dict(a.by_contrast)
    assert acc[1.0].mean > acc[min(acc)].mean


def test_a_naive_twin_forecasts_chance_and_a_trained_one_does_better(truth_and_history):
    truth, hist = truth_and_history
    naive = TwinState(w=torch.zeros(2), h=torch.zeros(0), through_session=0)
    f0 = forecast_session(truth, naive, IBL_DEFAULT, 200, n_rollouts=128, seed=2)
    f1 = forecast_session(truth, twin_end_state(truth, hist), IBL_DEFAULT, 200, n_rollouts=128, seed=2)
    assert f0.learning_curve[0][1].mean == pytest.approx(0.5, abs=0.06)
    assert f1.accuracy.mean > f0.accuracy.mean + 0.1


def test_the_true_learners_next_session_falls_inside_its_forecast():
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    sim = simulate(truth, IBL_DEFAULT, 12, 2600, seed=9)
    inside = placed = 0
    for i, (subject, df) in enumerate(sim.trials.groupby("subject")):
        last = int(df["session"].max())
        if last < 3:
            continue
        hist, nxt = df[df.session < last], df[df.session == last]
        true_phase = int(sim.phase[i, len(hist) - 1])  # where the next session starts
        state = twin_end_state(truth, hist)
        placed += state.phase == true_phase
        f = forecast_session(truth, state, IBL_DEFAULT, len(nxt), n_rollouts=200, seed=0, start_phase=true_phase)
        acc = float((nxt["feedback"] == 1).mean())
        inside += f.accuracy.lo <= acc <= f.accuracy.hi
    assert inside >= 9  # 90% intervals on 12 animals
    # placing an animal from its last trials' contrasts misses some phase changes near a session's end
    assert placed >= 8


def test_interval_and_bad_arguments(truth_and_history):
    iv = interval(np.arange(101.0), 0.9)
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((50.0, 5.0, 95.0))
    assert np.isnan(interval(np.array([np.nan]), 0.9).mean)
    truth, hist = truth_and_history
    with pytest.raises(ValueError, match="interval_level"):
        forecast_session(truth, twin_end_state(truth, hist), IBL_DEFAULT, 10, interval_level=1.5)


def test_an_ensemble_forecast_draws_components_in_proportion(truth_and_history):
    from twin.models.ensemble import TwinEnsemble
    from twin.models.params import TwinModel
    from twin.sim.forecast import forecast_ensemble_session

    truth, hist = truth_and_history
    twin = TwinModel.of(truth)
    naive = TwinState(w=torch.zeros(2), h=torch.zeros(0), through_session=0)
    trained = twin_end_state(truth, hist)
    alone = forecast_session(truth, trained, IBL_DEFAULT, 300, n_rollouts=400, seed=3)
    ens = TwinEnsemble.of([twin, twin], [0.3, 0.7], ["naive", "trained"], [naive, trained])
    f = forecast_ensemble_session(ens, IBL_DEFAULT, 300, n_rollouts=400, seed=3, interval_level=0.9)
    assert f.n_rollouts == 400
    # the mixture's mean accuracy is the weighted mean of its components', its interval holds both
    assert f.accuracy.mean == pytest.approx(0.3 * 0.5 + 0.7 * alone.accuracy.mean, abs=0.03)
    assert f.accuracy.lo < 0.6 < alone.accuracy.lo and f.accuracy.hi >= alone.accuracy.mean - 0.02
    assert f.accuracy.width > 2 * alone.accuracy.width  # between-model spread, not only rollout noise
    # every rollout ran one component: about 30% of them at chance
    g = torch.Generator().manual_seed(3)
    drawn = torch.bincount(ens.sample(400, g), minlength=2)
    assert abs(int(drawn[0]) / 400 - 0.3) < 0.06
    assert f == forecast_ensemble_session(ens, IBL_DEFAULT, 300, n_rollouts=400, seed=3, interval_level=0.9)  # seeded
    with pytest.raises(ValueError, match="end state"):
        forecast_ensemble_session(TwinEnsemble.of([twin], [1.0], ["x"]), IBL_DEFAULT, 100)
