"""The one rollout loop: recorders see every trial as it ran, inactive rows keep their state, and
``simulate``, ``forecast_session`` and ``simulate_training`` give, for fixed seeds, the outputs
recorded from the two loops they replaced (``run_task`` and ``simulate_training`` of commit
f42128d) for static, REINFORCE-family, DNN and RNN learners, with and without biased blocks,
debiasing and history features."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from twin.data.features import FeatureSpec
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.state import TwinState
from twin.protocol import IBL_ADVANCE, IBL_DEFAULT, AdvanceRule, Curriculum, FeedbackPolicy, StimulusSchedule
from twin.sim.agents import DEFAULT_TRUTHS, Family, Individuality, draw_individuals
from twin.sim.forecast import forecast_session
from twin.sim.rollout import Carry, Schedule, Trial, run_trials
from twin.sim.simulate import simulate
from twin.sim.task import TaskEnv
from twin.sim.training import simulate_training

_STIMULUS = {f.name for f in dataclasses.fields(StimulusSchedule)}
_FEEDBACK = {f.name for f in dataclasses.fields(FeedbackPolicy)}


def _protocol(**fields: object) -> Curriculum:
    stimulus = StimulusSchedule(**{k: v for k, v in fields.items() if k in _STIMULUS})  # type: ignore[arg-type]
    feedback = FeedbackPolicy(**{k: v for k, v in fields.items() if k in _FEEDBACK})  # type: ignore[arg-type]
    return Curriculum(stimulus=stimulus, feedback=feedback, **{k: v for k, v in fields.items() if k not in _STIMULUS | _FEEDBACK})  # type: ignore[arg-type]


SHORT = _protocol(session_trials=(40, 80))
BIASED = _protocol(biased_blocks=True, debias=False, session_trials=(120, 200), unbiased_trials=30)
PROP = _protocol(phases=((1.0, 0.5), (1.0, 0.25, 0.0)), proportions=((1.0, 2.0), (1.0, 1.0, 3.0)), advance=(AdvanceRule(contrasts=(1.0, 0.5), window=10, threshold=0.6),), session_trials=(60, 90))
FULL = _protocol(phases=((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),), proportions=None, advance=(), session_trials=(100, 130))


def _model(rule: str, history: bool = False, seed: int = 0) -> LearnerModel:
    torch.manual_seed(seed)
    m = LearnerModel(ModelSpec(rule, features=FeatureSpec(history=history))).eval()
    if rule == "static":
        with torch.no_grad():
            m.w0.copy_(torch.tensor([12.0, 0.0] + ([0.3, 0.2] if history else [])))
    return m


def _digest(values: np.ndarray | torch.Tensor) -> str:
    a = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return hashlib.sha256(np.ascontiguousarray(a.astype(np.int64)).tobytes()).hexdigest()[:16]


def _simulate_case(name: str) -> dict[str, object]:
    model, protocol, kw = {
        "reinforce": (DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, {}),
        "history_individuals": (DEFAULT_TRUTHS[Family.HISTORY].build(), SHORT, "w0"),
        "dnn_history_proportions": (_model("dnn", history=True), PROP, {}),
        "rnn_biased": (_model("rnn"), BIASED, {}),
    }[name]
    if kw == "w0":
        w0, lr = draw_individuals(DEFAULT_TRUTHS[Family.HISTORY], 3, Individuality(), 3)
        kw = {"w0": w0, "log_rate": lr}
    sim = simulate(model, protocol, 3, 300, seed=11, **kw)  # type: ignore[arg-type]
    t = sim.trials
    return {
        "choice": _digest(t["choice"].to_numpy()),
        "stimulus": _digest(np.round((t["contrast_right"] - t["contrast_left"]).to_numpy() * 1e4)),
        "prob_left": _digest(np.round(t["prob_left"].to_numpy() * 100)),
        "session": _digest(t["session"].to_numpy()),
        "phase": _digest(sim.phase),
        "weights": round(float(sim.weights.double().sum()), 3),
    }


def _forecast_case(name: str) -> list[float]:
    model, protocol, phase = {
        "dnn": (_model("dnn", seed=3), IBL_DEFAULT, None),
        "rnn_biased": (_model("rnn", seed=4), BIASED, 0),
        "reinforce_proportions": (DEFAULT_TRUTHS[Family.REINFORCE].build(), PROP, 1),
    }[name]
    state = TwinState(w=model.w0.detach().clone() + 0.3, h=torch.zeros(model.rule.state_size) + 0.01, through_session=3, phase=2)
    f = forecast_session(model, state, protocol, 200, n_rollouts=16, seed=7, start_phase=phase)  # type: ignore[arg-type]
    return [round(f.accuracy.mean, 6), round(f.end_phase.mean, 6), round(f.psychometric[0][1].mean, 5)]


def _training_case(name: str) -> dict[str, object]:
    mixed = [_protocol(session_trials=(150, 250)), BIASED, FULL, _protocol(debias=False, advance=(AdvanceRule(window=30),) + IBL_ADVANCE[1:], session_trials=(100, 180)), PROP, SHORT]
    model, protocols, kw = {
        "static": (_model("static"), [FULL] * 4, {}),
        "dnn_mixed": (_model("dnn", seed=5), mixed, {}),
        "dnn_history_no_stop": (_model("dnn", history=True, seed=6), mixed, {"stop_when_trained": False}),
        "rnn_h0_start_phase": (_model("rnn", seed=7), mixed, "h0"),
        "asymmetric_biased": (DEFAULT_TRUTHS[Family.ASYMMETRIC].build(), [BIASED] * 3 + [IBL_DEFAULT] * 2 + [FULL], {}),
    }[name]
    if kw == "h0":
        kw = {"h0": torch.full((model.rule.state_size,), 0.05), "start_phase": torch.tensor([0, 1, 0, 2, 1, 3])}
    run = simulate_training(model, protocols, 6, seed=21, **kw)  # type: ignore[arg-type]
    return {
        "criterion_session": run.criterion_session.tolist(),
        "trials_to_criterion": run.trials_to_criterion.tolist(),
        "end_phase": run.end_phase.tolist(),
        "n": _digest(run.stats.n),
        "n_right": _digest(run.stats.n_right),
        "w_range": round(float((run.w_max - run.w_min).double().sum()), 4),
    }


# Recorded from the code of commit f42128d (the two loops before they were merged), on CPU; re-recorded
# on branch rig when the task's mechanics became iblrig v8's (advancement before the draw, per signed
# contrast windows, debiasing against the bias, zero contrast on the left), the loop unchanged;
# "rnn_biased" (biased blocks, no debiasing) still gives f42128d's values, draw for draw.
SIMULATE = {
    "reinforce": {"choice": "f703f7235de72527", "stimulus": "af1a9a4a1be25c54", "prob_left": "d2b9e36f305bfd19", "session": "ff31eed352a6dc52", "phase": "e4331b4b5dff9108", "weights": 328.225},
    "history_individuals": {"choice": "328be46715bae277", "stimulus": "85841232846cdd67", "prob_left": "d2b9e36f305bfd19", "session": "c2e5ba6ff87375b6", "phase": "e4331b4b5dff9108", "weights": -69.178},
    "dnn_history_proportions": {"choice": "fd46413a9a7dc0e0", "stimulus": "64903f6fd03ea6cc", "prob_left": "d2b9e36f305bfd19", "session": "74b8d91ad8f82da1", "phase": "e4331b4b5dff9108", "weights": 37.315},
    "rnn_biased": {"choice": "16c74479bb4816ea", "stimulus": "4f030f51c709d1c6", "prob_left": "46b3f81e15ff1191", "session": "7cb8e6c179fe5c05", "phase": "e4331b4b5dff9108", "weights": 54.433},
}
FORECAST = {
    "dnn": [0.5675, 3.0, 0.49463],
    "rnn_biased": [0.570625, 0.0, 0.50231],
    "reinforce_proportions": [0.515, 1.0, 0.45405],
}
TRAINING = {
    "static": {"criterion_session": [-1, -1, -1, -1], "trials_to_criterion": [720, 693, 693, 719], "end_phase": [0, 0, 0, 0], "n": "4093ad8dc5c73587", "n_right": "3c5916bff3a29330", "w_range": 0.0},
    "dnn_mixed": {"criterion_session": [-1, -1, -1, -1, -1, -1], "trials_to_criterion": [1316, 877, 715, 950, 445, 394], "end_phase": [0, 0, 0, 0, 0, 0], "n": "c2b2a9e3e6f4c2dd", "n_right": "f872255d75320a64", "w_range": 0.6459},
    "dnn_history_no_stop": {"criterion_session": [-1, -1, -1, -1, -1, -1], "trials_to_criterion": [1316, 877, 715, 950, 445, 394], "end_phase": [0, 0, 0, 0, 0, 0], "n": "42fe7d2a459df645", "n_right": "e27ea538a12696a4", "w_range": 3.0256},
    "rnn_h0_start_phase": {"criterion_session": [-1, -1, -1, -1, -1, -1], "trials_to_criterion": [1316, 877, 715, 950, 445, 394], "end_phase": [0, 1, 0, 2, 1, 3], "n": "834a5e882b150c98", "n_right": "74add35175fce35a", "w_range": 0.7704},
    "asymmetric_biased": {"criterion_session": [-1, -1, -1, 3, 3, -1], "trials_to_criterion": [1053, 877, 1024, 2598, 2203, 715], "end_phase": [0, 0, 0, 5, 3, 0], "n": "c87e033b3613c127", "n_right": "057781f41426a63b", "w_range": 12.3304},
}


@pytest.mark.parametrize("name", sorted(SIMULATE))
def test_simulate_gives_the_recorded_outputs(name):
    assert _simulate_case(name) == SIMULATE[name]


@pytest.mark.parametrize("name", sorted(FORECAST))
def test_forecast_gives_the_recorded_outputs(name):
    assert _forecast_case(name) == FORECAST[name]


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_simulate_training_gives_the_recorded_outputs(name):
    assert _training_case(name) == TRAINING[name]


class _Keep:
    def __init__(self) -> None:
        self.trials: list[Trial] = []

    def record(self, trial: Trial) -> None:
        self.trials.append(trial)


def test_recorders_see_every_trial_and_inactive_rows_keep_their_state():
    model = _model("dnn", seed=1)
    b = 4
    g = torch.Generator().manual_seed(0)
    env = TaskEnv(IBL_DEFAULT, b, g)
    w, h = model.initial(b)
    carry = Carry.start(w, h)
    lengths, live = torch.tensor([5, 3, 7, 4]), torch.tensor([True, True, True, False])
    keep = _Keep()
    out = run_trials(model, env, Schedule.session(lengths, live), g, carry, (keep,))
    assert [t.t for t in keep.trials] == list(range(7))
    assert all(t.active is not None for t in keep.trials)  # row 3 never runs: every trial is masked
    for t in keep.trials:
        inactive = ~t.active
        assert torch.equal(t.w_next[inactive], t.w[inactive])
        assert torch.all((t.choice == 0) | (t.choice == 1)) and torch.all((t.p_right > 0) & (t.p_right < 1))
        assert torch.equal(t.reward, (t.choice == t.answer).float())
    assert torch.equal(out.w[3], carry.w[3]) and not torch.equal(out.w[2], carry.w[2])
    assert torch.equal(env.count, lengths * live) and torch.equal(env.n_resp, (lengths * live).float())  # trials of the session in the phase, choices


def test_a_schedule_from_session_starts():
    starts = torch.tensor([[True, False, False, True, False], [True, False, True, False, False]])
    s = Schedule.from_starts(starts)
    assert s.end.tolist() == [[0, 0, 1, 0, 0], [0, 1, 0, 0, 0]] and s.active is None
    assert Schedule.from_starts(starts, break_after=True).end[:, -1].tolist() == [1, 1]
    one = Schedule.session(torch.tensor([2, 3]), torch.tensor([True, True]))
    assert one.start.tolist() == [[True, False, False]] * 2
    assert one.end.tolist() == [[0, 1, 0], [0, 0, 1]] and one.active.tolist() == [[True, True, False], [True, True, True]]
