"""Cooperative cancellation: checkpoint() is free outside a cancellable block, raises the
block's error inside one (outer blocks' checks too), per thread; the rollout loop, a rule's
teacher-forced rollout and a fit stop at their next trial or epoch."""

from __future__ import annotations

import threading

import pytest
import torch

from twin.analysis.predict import predict
from twin.cancel import cancellable, checkpoint
from twin.fit.train import FitConfig, fit
from twin.data.batch import make_batch
from twin.models.learner import ModelSpec
from twin.models.state import TwinState
from twin.protocol import IBL_DEFAULT
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.forecast import forecast_session
from twin.sim.simulate import simulate


class Stop(Exception):
    pass


def after(n: int):
    """A check that lets ``n`` checkpoints pass, then raises; ``calls[0]`` counts them."""
    calls = [0]

    def check() -> None:
        calls[0] += 1
        if calls[0] > n:
            raise Stop

    return check, calls


def test_checkpoint_outside_a_block_does_nothing():
    checkpoint()


def test_blocks_nest_and_end():
    order = []
    with cancellable(lambda: order.append("outer")):
        with cancellable(lambda: order.append("inner")):
            checkpoint()
        checkpoint()
    checkpoint()
    assert order == ["outer", "inner", "outer"]


def test_a_block_is_per_thread():
    seen = []
    with cancellable(lambda: (_ for _ in ()).throw(Stop())):
        t = threading.Thread(target=lambda: seen.append(checkpoint() is None))
        t.start()
        t.join()
        with pytest.raises(Stop):
            checkpoint()
    assert seen == [True]


@pytest.fixture(scope="module")
def twin():
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    return truth, simulate(truth, IBL_DEFAULT, 1, 600, seed=1).trials


def test_a_forecast_stops_at_the_next_trial(twin):
    model, _ = twin
    state = TwinState(w=torch.zeros(model.n_weights), h=torch.zeros(model.rule.state_size), through_session=0)
    check, calls = after(25)
    with cancellable(check), pytest.raises(Stop):
        forecast_session(model, state, IBL_DEFAULT, n_trials=500, n_rollouts=8)
    assert calls[0] == 26  # one checkpoint per trial: it stopped at trial 26 of 500


def test_a_prediction_stops_within_its_rollout(twin):
    """On the torch loop, one checkpoint per trial (the compiled batch-1 path checks between chunks
    of trials: tests/twin/models/test_batch1.py)."""
    from twin.models import batch1

    model, trials = twin
    check, calls = after(100)
    with batch1.torch_path(), cancellable(check), pytest.raises(Stop):
        predict(model, trials)
    assert calls[0] == 101 < len(trials)


def test_a_fit_stops(twin):
    _, trials = twin
    spec = ModelSpec("reinforce")
    batch = make_batch(trials, spec.features)
    check, calls = after(3)
    with cancellable(check), pytest.raises(Stop):
        fit(spec, batch, config=FitConfig(epochs=50), progress=False)
    assert calls[0] == 4  # one before the first epoch, then one per trial of its rollout: it stopped three trials in
