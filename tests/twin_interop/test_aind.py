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

from twin.data.alf import OptionalDependencyError  # noqa: E402
from twin.protocol import IBL_DEFAULT, Curriculum, CurriculumError, FeedbackPolicy, StimulusSchedule  # noqa: E402
from twin.sim.task import TaskEnv  # noqa: E402
from twin_interop import aind  # noqa: E402

CUSTOM = Curriculum(
    name="lab-fast-start",
    stimulus=StimulusSchedule(
        phases=((1.0,), (1.0, 0.25, 0.0625), (1, 0.25, 0.125, 0.0625, 0)),
        proportions=((1,), (2.0, 1.0, 1.0), (1.0, 1.0, 2.0, 2.0, 0.5)),
        advance_window=35,
        advance_threshold=0.725,
        easy_contrasts=(1.0, 0.25),
    ),
    feedback=FeedbackPolicy(
        debias=False,
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
    # a session that never gets 80% on 0.5: stay
    stay = aind.phase_metrics(task, [1.0, 0.5] * 40, [True, False] * 40)
    assert stay.criterion_met_at is None and stay.stage_trials == 80
    assert trainer.evaluate(state, stay).stage.name == "phase 0"
    # all correct: the rule holds after the 50th trial; the next session is in phase 1
    go = aind.phase_metrics(task, [1.0, 0.5] * 40, [True] * 80)
    assert go.criterion_met_at == 50
    nxt = trainer.evaluate(state, go)
    assert nxt.stage.name == "phase 1" and nxt.stage.task.task_parameters.contrasts == [1.0, 0.5, 0.25]


def test_phase_metrics_fires_where_the_simulated_task_advances():
    """The AIND decision is the twin's: on trials the task environment drew and scored, the
    metrics of each phase left say it was passed on that phase's last trial."""
    cur = Curriculum(name="short", stimulus=StimulusSchedule(advance_window=30, advance_threshold=0.8))
    b, n = 12, 900
    env = TaskEnv(cur, b, torch.Generator().manual_seed(3))
    rng = np.random.default_rng(4)
    skill = np.linspace(0.6, 0.95, b)
    phase, contrast, correct = np.zeros((b, n), int), np.zeros((b, n)), np.zeros((b, n), bool)
    start = torch.zeros(b, dtype=torch.bool)
    for t in range(n):
        phase[:, t] = env.phase.numpy()
        cl, cr, _, _ = env.draw(start)
        ok = rng.random(b) < skill
        contrast[:, t], correct[:, t] = (cl + cr).numpy(), ok
        env.observe(torch.from_numpy(ok))
    tasks = [s.task for s in aind.to_aind(cur).see_stages()]
    checked = passed = 0
    for row in range(b):
        for k in range(len(cur.stimulus.phases) - 1):
            idx = np.flatnonzero(phase[row] == k)
            if idx.size == 0:
                continue
            m = aind.phase_metrics(tasks[k], contrast[row, idx].tolist(), correct[row, idx].tolist())
            left = idx[-1] + 1 < n and phase[row, idx[-1] + 1] == k + 1
            assert m.criterion_met_at == (idx.size if left else None), (row, k)
            checked += 1
            passed += left
    assert passed >= 10 and checked > passed  # both outcomes were exercised


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
        (_edit(["graph", "nodes", "1", "task", "task_parameters", "advance_window"], 80), "graph.nodes.1.task.task_parameters.advance_window", "one advancement rule"),
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
    ids=["feedback-differs", "rule-differs", "unknown-param", "bad-contrast", "foreign-task", "policy", "provider", "foreign-transition", "branch", "loop", "unreachable", "version"],
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
    raw["graph"]["nodes"]["1"]["task"]["task_parameters"]["contrast_proportions"] = [3.0, 1.0, 1.0]
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
