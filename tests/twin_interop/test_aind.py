"""Curricula to and from aind-behavior-curriculum objects (twin_interop.aind), through AIND's own types,
serialization and Trainer."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
import torch

abc = pytest.importorskip("aind_behavior_curriculum")

from twin.errors import OptionalDependencyError  # noqa: E402
from twin.protocol import (  # noqa: E402
    IBL_DEFAULT,
    AdvanceKind,
    AdvanceRule,
    Curriculum,
    CurriculumError,
    DebiasSide,
    FeedbackPolicy,
    StimulusSchedule,
    ZeroContrastSide,
)
from twin.sim.task import TaskEnv, session_schedule  # noqa: E402
from twin_interop import aind  # noqa: E402

CUSTOM = Curriculum(
    name="lab-fast-start",
    stimulus=StimulusSchedule(
        phases=((1.0,), (1.0, 0.25, 0.0625), (1, 0.25, 0.125, 0.0625, 0)),
        proportions=((1,), (2.0, 1.0, 1.0), (1.0, 1.0, 2.0, 2.0, 0.5)),
        advance=(
            AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0,), window=35, threshold=0.725, trials=150),
            AdvanceRule(AdvanceKind.TRIAL_COUNT, contrasts=(0.25,), window=20, threshold=0.5, trials=120),
        ),
        zero_contrast_side=ZeroContrastSide.RANDOM,
    ),
    feedback=FeedbackPolicy(
        debias=True,
        debias_phases=(2, 0),
        debias_side=DebiasSide.REPEAT,
        debias_min_contrast=0.25,
        biased_blocks=True,
        block_probs=(0.1, 0.9),
        block_length=(15, 80),
        block_mean=45.5,
        unbiased_trials=60,
        reward_volume_ul=2.25,
        error_timeout_s=1.5,
    ),
    session_trials=(250, 900),
    description="a custom protocol: one easy contrast first",
)


@pytest.mark.parametrize("cur", [IBL_DEFAULT, CUSTOM], ids=["ibl-default", "custom"])
def test_round_trip_through_objects_and_json_is_exact(cur):
    obj = aind.to_aind(cur)
    assert [s.name for s in obj.see_stages()] == [aind.stage_name(i) for i in range(len(cur.stimulus.phases))]
    assert aind.from_aind(obj) == cur
    assert aind.from_aind_json(aind.to_aind_json(cur)) == cur


def test_each_stage_holds_its_phase_and_one_transition_to_the_next():
    obj = aind.to_aind(CUSTOM)
    stages = obj.see_stages()
    for i, stage in enumerate(stages):
        p = stage.task.task_parameters
        assert p.contrasts == list(CUSTOM.stimulus.phases[i])
        assert p.contrast_proportions == list(CUSTOM.stimulus.proportions[i])
        assert (p.reward_volume_ul, p.error_timeout_s, p.session_trials) == (2.25, 1.5, [250, 900])
        assert p.debias is CUSTOM.feedback.debias_in(i) and p.debias == (i != 1)
        assert (p.debias_side, p.zero_contrast_side) == ("repeat", "random")
        if i + 1 < len(stages):
            r = CUSTOM.stimulus.advance[i]
            assert (p.advance_kind, p.advance_contrasts, p.advance_window, p.advance_threshold, p.advance_trials) == (r.kind.value, list(r.contrasts), r.window, r.threshold, r.trials)
        else:
            assert (p.advance_kind, p.advance_contrasts, p.advance_window, p.advance_threshold, p.advance_trials) == (None,) * 5
        transitions = obj.see_stage_transitions(stage)
        if i + 1 < len(stages):
            assert [(t.name, s.name) for t, s in transitions] == [(aind.TRANSITION, stages[i + 1].name)]
        else:
            assert transitions == []
        assert stage.metrics_provider.name == aind.METRICS_PROVIDER


def test_json_written_by_aind_export_json_reads_back(tmp_path):
    path = tmp_path / "curriculum.json"
    abc.export_json(aind.to_aind(CUSTOM), path)  # AIND's own writer
    assert aind.from_aind_json(path.read_text(), source=str(path)) == CUSTOM


def test_aind_reads_the_export_and_its_trainer_advances_on_the_metrics():
    text = aind.to_aind_json(IBL_DEFAULT)
    model = abc.create_curriculum("ibl-default", "1.0.0", [aind.TwinTask])
    obj = model.model_validate_json(text)  # AIND's own reader
    trainer = abc.Trainer(obj)
    state = trainer.create_enrollment()
    assert state.stage.name == "phase 0"
    task = state.stage.task
    # iblrig's phase 0 rule: > 80% of the last 50 trials at each of -1, -.5, .5, 1
    contrasts, sides = [1.0, 1.0, 0.5, 0.5] * 60, [0, 1, 0, 1] * 60
    # a session that never gets over 80% on the right at 0.5: stay
    stay = aind.phase_metrics(task, contrasts, [k % 4 != 3 or k % 8 == 3 for k in range(240)], sides)
    assert stay.criterion_met_at is None and stay.stage_trials == 240
    assert trainer.evaluate(state, stay).stage.name == "phase 0"
    # all correct: 41 of 50 at every signed contrast after trial 164, so the rule holds at the start of trial 165
    go = aind.phase_metrics(task, contrasts, [True] * 240, sides)
    assert go.criterion_met_at == 165
    # the counts restart each session: two sessions of 120 never reach 41 at each
    assert aind.phase_metrics(task, contrasts, [True] * 240, sides, sessions=[0] * 120 + [1] * 120).criterion_met_at is None
    nxt = trainer.evaluate(state, go)
    assert nxt.stage.name == "phase 1" and nxt.stage.task.task_parameters.contrasts == [1.0, 0.5, 0.25]
    # phase 2 advances once the stage's trials in one session reach 200, whatever the animal does
    state = abc.TrainerState(stage=obj.see_stages()[2], curriculum=obj, is_on_curriculum=True)
    task2 = state.stage.task
    assert aind.phase_metrics(task2, [1.0] * 199, [False] * 199).criterion_met_at is None
    assert aind.phase_metrics(task2, [1.0] * 300, [False] * 300, sessions=[0] * 150 + [1] * 150).criterion_met_at is None
    last = aind.phase_metrics(task2, [1.0] * 200, [False] * 200)
    assert last.criterion_met_at == 200 and trainer.evaluate(state, last).stage.name == "phase 3"
    # the last stage has no rule
    assert aind.phase_metrics(obj.see_stages()[5].task, [0.0] * 500, [True] * 500, [0] * 500).criterion_met_at is None


def test_phase_metrics_arguments_are_checked():
    task = aind.to_aind(IBL_DEFAULT).see_stages()[0].task
    with pytest.raises(CurriculumError, match="each side") as err:
        aind.phase_metrics(task, [1.0], [True])
    assert err.value.field == "phase_metrics.sides"
    with pytest.raises(CurriculumError) as err:
        aind.phase_metrics(task, [1.0, 1.0], [True], [0, 1])
    assert err.value.field == "phase_metrics.correct"
    with pytest.raises(CurriculumError) as err:
        aind.phase_metrics(task, [1.0], [True], [0], lead_in=2)
    assert err.value.field == "phase_metrics.lead_in"


SIM = Curriculum(
    name="short",
    stimulus=StimulusSchedule(
        phases=((1.0,), (1.0, 0.5), (1.0, 0.5, 0.25), (1.0, 0.5, 0.25, 0.0), (0.5, 0.25, 0.0)),
        proportions=((1.0,), (1.0, 2.0), (1.0, 1.0, 2.0), (1.0, 1.0, 1.0, 0.5), (1.0, 1.0, 0.5)),
        advance=(
            AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0,), window=12, threshold=0.7),
            # 1.0 was shown in phase 0 too: the session's trials before the phase count
            AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=10, threshold=0.65),
            AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=45),
            AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(0.0,), window=8, threshold=0.5),
        ),
        zero_contrast_side=ZeroContrastSide.LEFT,
    ),
    feedback=FeedbackPolicy(debias_phases=(0, 2, 3), debias_side=DebiasSide.AGAINST_BIAS),
    session_trials=(40, 110),
)


def test_phase_metrics_fires_where_the_simulated_task_advances():
    """The AIND decision is the twin's: on trials the task environment drew and scored, over
    sessions of random length, the metrics of each phase say the rule held at the start of the
    trial the environment drew in the next phase, and never where it stayed."""
    b, n = 16, 1500
    env = TaskEnv(SIM, b, torch.Generator().manual_seed(3))
    rng = np.random.default_rng(4)
    starts = session_schedule(b, n, SIM, rng)
    session = np.cumsum(starts, axis=1)
    skill = np.linspace(0.55, 0.97, b)
    phase, contrast, side, correct = np.zeros((b, n), int), np.zeros((b, n)), np.zeros((b, n), int), np.zeros((b, n), bool)
    for t in range(n):
        cl, cr, answer, _ = env.draw(torch.from_numpy(starts[:, t]))
        ok = rng.random(b) < skill
        phase[:, t], contrast[:, t], side[:, t], correct[:, t] = env.phase.numpy(), (cl + cr).numpy(), answer.numpy(), ok
        env.observe(torch.from_numpy(ok))
    tasks = [s.task for s in aind.to_aind(SIM).see_stages()]
    left = {kind: 0 for kind in AdvanceKind}
    stayed = mid_session = 0
    for row in range(b):
        for k, rule in enumerate(SIM.stimulus.advance):
            idx = np.flatnonzero(phase[row] == k)
            if idx.size == 0:
                continue
            first = np.flatnonzero(starts[row, : idx[0] + 1])[-1]  # the session the phase began in
            lead = int(idx[0] - first)
            end = min(idx[-1] + 2, n)  # with the trial drawn in the next phase, if any
            m = aind.phase_metrics(tasks[k], contrast[row, first:end].tolist(), correct[row, first:end].tolist(), side[row, first:end].tolist(), session[row, first:end].tolist(), lead_in=lead)
            went = idx[-1] + 1 < n
            assert went == (went and phase[row, idx[-1] + 1] == k + 1)
            assert m.criterion_met_at == (idx.size + 1 if went else None), (row, k)
            assert m.stage_trials == end - first - lead
            left[rule.kind] += went
            stayed += not went
            mid_session += went and lead > 0
    assert min(left.values()) >= 5 and stayed >= 3 and mid_session >= 5  # both outcomes, both kinds, phases entered mid-session


def _raw():
    return json.loads(aind.to_aind_json(IBL_DEFAULT))


def _edit(path, value):
    def apply(d):
        *keys, last = path
        for k in keys:
            d = d[k]
        d[last] = value(d[last]) if callable(value) else value

    return apply


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (_edit(["graph", "nodes", "2", "task", "task_parameters", "reward_volume_ul"], 2.0), "graph.nodes.2.task.task_parameters.reward_volume_ul", "one feedback policy"),
        (_edit(["graph", "nodes", "3", "task", "task_parameters", "debias_side"], "repeat"), "graph.nodes.3.task.task_parameters.debias_side", "one feedback policy"),
        (_edit(["graph", "nodes", "4", "task", "task_parameters", "zero_contrast_side"], "random"), "graph.nodes.4.task.task_parameters.zero_contrast_side", "one zero-contrast side"),
        (_edit(["graph", "nodes", "5", "task", "task_parameters", "debias"], True), "graph.nodes.5.task.task_parameters.debias", "contradicts debias_enabled=True"),
        (_edit(["graph", "nodes", "1", "task", "task_parameters", "advance_threshold"], 1.0), "stimulus.advance[1].threshold", "graph.nodes.1.task.task_parameters.advance_threshold"),
        (_edit(["graph", "nodes", "1", "task", "task_parameters", "advance_kind"], "by_eye"), "graph.nodes.1.task.task_parameters.advance_kind", "performance"),
        (_edit(["graph", "nodes", "2", "task", "task_parameters", "advance_trials"], None), "graph.nodes.2.task.task_parameters.advance_trials", "needs advance_trials"),
        (_edit(["graph", "nodes", "5", "task", "task_parameters", "advance_kind"], "trial_count"), "graph.nodes.5.task.task_parameters.advance_kind", "no advancement rule"),
        (_edit(["graph", "nodes", "0", "task", "version"], "1.0.0"), "graph.nodes.0.task.version", "2.0.0"),
        (_edit(["graph", "nodes", "3", "task", "task_parameters", "lick_spout_offset"], 1.0), "graph.nodes.3.task.task_parameters.lick_spout_offset", "Extra inputs"),
        (_edit(["graph", "nodes", "2", "task", "task_parameters", "contrasts"], [1.0, 1.5]), "stimulus.phases[2][1]", "graph.nodes.2.task.task_parameters.contrasts"),
        (_edit(["graph", "nodes", "1", "task", "name"], "OtherTask"), "graph.nodes.1.task.name", "only TwinIblChoiceTask"),
        (_edit(["graph", "nodes", "1", "start_policies"], ["os.getcwd"]), "graph.nodes.1.start_policies[0]", "no within-stage parameter updates"),
        (_edit(["graph", "nodes", "0", "metrics_provider"], "os.getcwd"), "graph.nodes.0.metrics_provider", "metrics provider"),
        (_edit(["graph", "graph", "1", 0, 0], "os.system"), "graph.graph.1[0]", "stage transition 'os.system'"),
        (_edit(["graph", "graph", "1"], lambda e: e + [[aind.TRANSITION, 4]]), "graph.graph.1", "2 transitions"),
        (_edit(["graph", "graph", "5"], [[aind.TRANSITION, 2]]), "graph.graph.5[0]", "only advances"),
        (_edit(["graph", "graph", "2"], []), "graph.nodes.3", "not on the chain"),
        (_edit(["version"], "v1"), "version", "semantic version"),
    ],
    ids=["feedback-differs", "debias-side-differs", "zero-side-differs", "stage-debias-contradicts", "bad-threshold", "bad-kind", "rule-missing", "rule-on-last-stage", "old-task-version", "unknown-param", "bad-contrast", "foreign-task", "policy", "provider", "foreign-transition", "branch", "loop", "unreachable", "version"],
)
def test_what_cannot_map_is_a_field_named_error(edit, field, reason):
    raw = _raw()
    edit(raw)
    with pytest.raises(CurriculumError) as err:
        aind.from_aind_json(json.dumps(raw), source="lab.json")
    assert err.value.field == f"lab.json: {field}"
    assert reason in err.value.reason


def test_foreign_callables_are_refused_before_aind_imports_them(monkeypatch):
    raw = _raw()
    raw["graph"]["graph"]["0"][0][0] = "not_a_module_anyone_has.fn"
    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    with pytest.raises(CurriculumError, match="cannot map"):
        aind.from_aind_json(json.dumps(raw))
    assert "not_a_module_anyone_has" not in imported


def test_a_graduated_stage_cannot_map():
    obj = aind.to_aind(IBL_DEFAULT)
    model = abc.create_curriculum("with-graduation", "1.0.0", [aind.TwinTask, abc.Graduated])
    cur = model()
    stages = obj.see_stages()
    for a, b in zip(stages, stages[1:] + [abc.GRADUATED]):
        cur.add_stage_transition(a, b, abc.StageTransition(aind.advance_criterion_met))
    with pytest.raises(CurriculumError, match="GRADUATED") as err:
        aind.from_aind(cur)
    assert err.value.field == "graph.nodes.6.task.name"


def test_stages_without_proportions_are_uniform():
    raw = _raw()
    nodes = raw["graph"]["nodes"]
    for key in ("0", "5"):
        nodes[key]["task"]["task_parameters"]["contrast_proportions"] = None
    nodes["1"]["task"]["task_parameters"]["contrast_proportions"] = [3.0, 1.0, 1.0]
    cur = aind.from_aind_json(json.dumps(raw))
    assert cur.stimulus.proportions[1] == (3.0, 1.0, 1.0)
    assert cur.stimulus.proportions[0] == (1.0, 1.0) and cur.stimulus.proportions[5] == (1.0,) * 5


def test_without_the_extra_the_import_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "aind_behavior_curriculum", None)
    monkeypatch.delitem(sys.modules, "twin_interop.aind")
    with pytest.raises(OptionalDependencyError, match=r"pip install 'learning-twins\[aind\]'"):
        importlib.import_module("twin_interop.aind")



def test_every_curriculum_the_optimizer_proposes_round_trips():
    from optimizer.space import Constraints, CurriculumSpace, ParamKind

    space = CurriculumSpace(Constraints(allow_no_debias=True))
    rng = np.random.default_rng(7)
    for i in range(40):
        values = {}
        for p in space.params:
            if p.kind is ParamKind.BOOL:
                values[p.name] = bool(rng.random() < 0.5)
            elif p.kind is ParamKind.INT:
                values[p.name] = int(rng.integers(p.low, p.high + 1))
            elif p.kind is ParamKind.LOG_FLOAT:
                values[p.name] = float(np.exp(rng.uniform(np.log(p.low), np.log(p.high))))
            else:
                values[p.name] = float(rng.uniform(p.low, p.high))
        cur = space.build(values, name=f"candidate-{i}")
        assert aind.from_aind_json(aind.to_aind_json(cur)) == cur, values
