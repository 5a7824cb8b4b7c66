"""End-of-session twin state: equals the generative run's final state; stored with the twin."""

from __future__ import annotations

import pytest
import torch

from trial_tables import random_trials_table
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.errors import ModelFileError, TwinError
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import MODEL_RULES
from twin.sim.simulate import rollout_table, run_task
from twin.models.state import TwinState, end_state
from twin.persist.model_files import load_model, save_model
from twin.protocol import IBL_DEFAULT
from twin.sim.task import TaskEnv


@pytest.mark.parametrize("family", [Family.REINFORCE, Family.HISTORY])
def test_end_state_matches_the_generative_runs_final_state(family):
    truth = DEFAULT_TRUTHS[family].build()
    g = torch.Generator().manual_seed(3)
    starts = torch.zeros(1, 900, dtype=torch.bool)
    starts[0, [0, 300, 650]] = True
    w, h = truth.initial(1)
    run = run_task(truth, TaskEnv(IBL_DEFAULT, 1, g), starts, g, w, h, break_after=True)
    state = end_state(truth, rollout_table(run, starts))
    assert state.through_session == 3
    torch.testing.assert_close(state.w, run.final_w[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.h, run.final_h[0], rtol=1e-5, atol=1e-6)


def test_end_state_rejects_several_subjects():
    df = random_trials_table({"a": [10], "b": [10]})
    with pytest.raises(TwinError, match="exactly one subject"):
        end_state(LearnerModel(ModelSpec("dnn")), df)


@pytest.mark.parametrize("rule", MODEL_RULES)
def test_state_round_trips_through_the_model_file(rule, tmp_path):
    torch.manual_seed(0)
    model = LearnerModel(ModelSpec(rule))
    state = end_state(model, random_trials_table({"a": [30, 20]}), phase=2)
    path = save_model(model, tmp_path / "m.safetensors", state=state)
    back = load_model(path).state
    assert back is not None and back.through_session == 2 and back.phase == 2
    assert torch.equal(back.w, state.w) and torch.equal(back.h, state.h)
    assert load_model(save_model(model, tmp_path / "n.safetensors")).state is None


def test_state_of_the_wrong_shape_is_a_clear_error(tmp_path):
    model = LearnerModel(ModelSpec("reinforce"))
    bad = TwinState(w=torch.zeros(5), h=torch.zeros(0), through_session=1)
    path = save_model(model, tmp_path / "m.safetensors", state=bad)
    with pytest.raises(ModelFileError, match="twin state shapes"):
        load_model(path)
