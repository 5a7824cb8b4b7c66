"""The training protocol (curriculum): the IBL default, validation that names the field,
JSON/YAML/iblrig round trips, placing an animal in a phase."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from twin.protocol import (
    CUSTOM_TASK,
    IBL_DEFAULT,
    IBL_PHASES,
    IBLRIG_TRAINING,
    AdvanceKind,
    AdvanceRule,
    Curriculum,
    CurriculumError,
    DebiasSide,
    FeedbackPolicy,
    StimulusSchedule,
    ZeroContrastSide,
    phase_of_contrasts,
    rig_profile,
)


def test_the_ibl_default_is_iblrig_v8_training_choice_world():
    """Field by field against iblrig 8.24.7 (iblrig/choiceworld.py, iblrig/base_choice_world.py)."""
    s, f = IBL_DEFAULT.stimulus, IBL_DEFAULT.feedback
    assert s.phases == IBL_PHASES and IBL_PHASES[0] == (1.0, 0.5)
    assert [set(p) for p in IBL_PHASES] == [{1, 0.5}, {1, 0.5, 0.25}, {1, 0.5, 0.25, 0.125}, {1, 0.5, 0.25, 0.125, 0.0625}, {1, 0.5, 0.25, 0.125, 0.0625, 0}, {1, 0.25, 0.125, 0.0625, 0}]
    # signed contrasts drawn uniformly: zero (one signed value) at half the weight of the others (two)
    for ph, w in zip(s.phases, s.proportions):
        assert all(v == (0.5 if c == 0 else 1.0) for c, v in zip(ph, w))
    assert s.advance == (
        AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=50, threshold=0.8),
        AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(0.25,), window=50, threshold=0.8),
        AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=200),
        AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=200),
        AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=200),
    )
    assert s.zero_contrast_side is ZeroContrastSide.LEFT
    assert f.debias and f.debias_min_contrast == 0.5 and f.debias_phases == (0, 1, 2, 3, 4) and f.debias_side is DebiasSide.AGAINST_BIAS
    assert [f.debias_in(i) for i in range(6)] == [True] * 5 + [False]
    assert f.biased_blocks is False and f.reward_volume_ul == 3.0 and f.error_timeout_s == 2.0
    assert IBL_DEFAULT.contrasts == (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)
    assert IBL_DEFAULT.session_trials == (400, 700) and IBL_DEFAULT.name == "ibl-default"
    assert StimulusSchedule() == s  # the schedule's defaults are iblrig's
    Curriculum(stimulus=StimulusSchedule(phases=((1.0,),), proportions=None, advance=()), session_trials=(5, 5))  # boundaries are allowed


@pytest.mark.parametrize(
    "build, field, pattern",
    [
        (lambda: StimulusSchedule(phases=((1.0, 0.5), (1.0, 1.5)), proportions=None, advance=(RULE,)), "stimulus.phases[1][1]", r"contrast 1\.5 outside \[0, 1\]"),
        (lambda: StimulusSchedule(phases=((-0.1,),), proportions=None, advance=()), "stimulus.phases[0][0]", r"-0\.1"),
        (lambda: StimulusSchedule(phases=((1.0,), ()), proportions=None, advance=(RULE,)), "stimulus.phases[1]", "at least one contrast"),
        (lambda: StimulusSchedule(phases=(), proportions=None, advance=()), "stimulus.phases", "at least one phase"),
        (lambda: StimulusSchedule(phases=((1.0, 0.5),), proportions=((1.0,),), advance=()), "stimulus.proportions[0]", "needs 2 weights"),
        (lambda: StimulusSchedule(phases=((1.0, 0.5),), proportions=((0.0, 0.0),), advance=()), "stimulus.proportions[0]", "positive sum"),
        (lambda: StimulusSchedule(advance=IBL_DEFAULT.stimulus.advance[:4]), "stimulus.advance", "one rule per phase but the last"),
        (lambda: StimulusSchedule(advance=(AdvanceRule(threshold=1.0),) + IBL_DEFAULT.stimulus.advance[1:]), "stimulus.advance[0].threshold", r"\[0, 1\)"),
        (lambda: StimulusSchedule(advance=(AdvanceRule(window=0),) + IBL_DEFAULT.stimulus.advance[1:]), "stimulus.advance[0].window", r"\[1, 1000\]"),
        (lambda: StimulusSchedule(advance=(AdvanceRule(contrasts=(1.0, 0.25)),) + IBL_DEFAULT.stimulus.advance[1:]), "stimulus.advance[0].contrasts[1]", "not shown in phase 0"),
        (lambda: StimulusSchedule(advance=(AdvanceRule(contrasts=()),) + IBL_DEFAULT.stimulus.advance[1:]), "stimulus.advance[0].contrasts", "at least one contrast"),
        (lambda: StimulusSchedule(advance=IBL_DEFAULT.stimulus.advance[:2] + (AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=0),) * 3), "stimulus.advance[2].trials", r"\[1, 100000\]"),
        (lambda: Curriculum(feedback=FeedbackPolicy(debias_phases=(0, 6))), "feedback.debias_phases[1]", "phase 6 does not exist"),
        (lambda: FeedbackPolicy(debias_phases=(1, 1)), "feedback.debias_phases", "repeated phase"),
        (lambda: FeedbackPolicy(block_length=(50, 10)), "feedback.block_length", "1 <= low <= high"),
        (lambda: FeedbackPolicy(reward_volume_ul=0.2), "feedback.reward_volume_ul", r"\[0\.5, 10\] µL"),
        (lambda: Curriculum(session_trials=(0, 10)), "session_trials", r"\(0, 10\)"),
        (lambda: Curriculum(session_trials=(500, 400)), "session_trials", r"\(500, 400\)"),
    ],
)
def test_building_checks_every_field_and_names_it(build, field, pattern):
    with pytest.raises(CurriculumError, match=pattern) as err:
        build()
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")
    assert isinstance(err.value, ValueError)


RULE = AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=100)


def test_json_and_yaml_round_trips(tmp_path):
    cur = Curriculum(
        name="emphasis",
        stimulus=StimulusSchedule(
            phases=((1.0, 0.5), (1.0, 0.25, 0.0)),
            proportions=((1.0, 1.0), (2.0, 1.0, 0.5)),
            advance=(AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(0.5,), window=80, threshold=0.7),),
            zero_contrast_side=ZeroContrastSide.RANDOM,
        ),
        feedback=FeedbackPolicy(debias=False, reward_volume_ul=2.5, debias_phases=(0,), debias_side=DebiasSide.REPEAT),
        session_trials=(300, 500),
    )
    assert Curriculum.from_json(cur.to_json()) == cur
    assert Curriculum.from_yaml(cur.to_yaml()) == cur
    for suffix in (".json", ".yaml"):
        assert Curriculum.load(cur.save(tmp_path / f"c{suffix}")) == cur
    assert Curriculum.from_json(cur.to_json()).stimulus.proportions == ((1.0, 1.0), (2.0, 1.0, 0.5))
    assert Curriculum.from_yaml(IBL_DEFAULT.to_yaml()) == IBL_DEFAULT
    assert cur.to_dict()["stimulus"]["advance"][0]["kind"] == "performance" and cur.to_dict()["schema_version"] == 2


def test_version_1_files_are_read_as_the_closest_version_2_rules():
    v1 = {
        "name": "old",
        "schema_version": 1,
        "stimulus": {"phases": [[1.0, 0.5], [1.0, 0.5, 0.25], [0.25, 0.125]], "proportions": None, "advance_window": 40, "advance_threshold": 0.75, "easy_contrasts": [1.0, 0.5]},
        "feedback": {"debias": True, "debias_min_contrast": 0.5, "reward_volume_ul": 2.0},
        "session_trials": [300, 500],
    }
    cur = Curriculum.from_dict(v1)
    s, f = cur.stimulus, cur.feedback
    assert s.advance == (
        AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=40, threshold=0.75 - 0.5 / 40),
        AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=40, threshold=0.75 - 0.5 / 40),
    )
    assert s.zero_contrast_side is ZeroContrastSide.RANDOM and f.debias_side is DebiasSide.REPEAT and f.debias_phases is None
    assert cur.schema_version == 2 and f.reward_volume_ul == 2.0
    v1["stimulus"]["phases"] = [[0.25], [0.125]]  # no easy contrast shown: the phase lasted one window
    assert Curriculum.from_dict(v1).stimulus.advance == (AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=40),)
    v1["stimulus"]["advance_window"] = "forty"
    with pytest.raises(CurriculumError) as err:
        Curriculum.from_dict(v1)
    assert err.value.field == "stimulus.advance_window"


def _with(path: list, value) -> dict:
    d = IBL_DEFAULT.to_dict()
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


@pytest.mark.parametrize(
    "path, value, field",
    [
        (["stimulus", "phases"], [[1.0, 0.5], [1.0, 1.5]], "stimulus.phases[1][1]"),
        (["stimulus", "phases"], [[]], "stimulus.phases[0]"),
        (["stimulus", "proportions"], [[1.0]], "stimulus.proportions"),
        (["stimulus", "advance"], "fast", "stimulus.advance"),
        (["stimulus", "advance", 1, "threshold"], 1.5, "stimulus.advance[1].threshold"),
        (["stimulus", "advance", 0, "window"], "fifty", "stimulus.advance[0].window"),
        (["stimulus", "advance", 2, "kind"], "sometimes", "stimulus.advance[2].kind"),
        (["stimulus", "advance", 2, "speed"], 1, "stimulus.advance[2].speed"),
        (["stimulus", "zero_contrast_side"], "up", "stimulus.zero_contrast_side"),
        (["feedback", "debias_side"], "random", "feedback.debias_side"),
        (["feedback", "debias_phases"], [0, 1.5], "feedback.debias_phases[1]"),
        (["feedback", "debias"], "yes", "feedback.debias"),
        (["feedback", "reward_volume_ul"], 40.0, "feedback.reward_volume_ul"),
        (["feedback", "block_length"], [50, 10], "feedback.block_length"),
        (["session_trials"], [700, 400], "session_trials"),
        (["schema_version"], 3, "schema_version"),
        (["stimulus", "colour"], "red", "stimulus.colour"),
    ],
)
def test_bad_fields_are_named(path, value, field):
    with pytest.raises(CurriculumError) as err:
        Curriculum.from_dict(_with(path, value))
    assert err.value.field == field, str(err.value)


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CurriculumError, match="bad.json"):
        Curriculum.load(bad)
    with pytest.raises(CurriculumError, match="no such file"):
        Curriculum.load(tmp_path / "missing.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("stimulus:\n  zero_contrast_side: up\n")
    with pytest.raises(CurriculumError, match=r"wrong.yaml: stimulus.zero_contrast_side"):
        Curriculum.load(wrong)


def test_rig_profiles_name_what_stock_iblrig_cannot_run():
    assert IBLRIG_TRAINING.runs(IBL_DEFAULT) and CUSTOM_TASK.runs(IBL_DEFAULT)
    settable = dataclasses.replace(IBL_DEFAULT, feedback=dataclasses.replace(IBL_DEFAULT.feedback, debias=False, reward_volume_ul=2.0, error_timeout_s=1.0), session_trials=(300, 900))
    assert IBLRIG_TRAINING.runs(settable)
    s = IBL_DEFAULT.stimulus
    cases = [
        (dataclasses.replace(s, phases=s.phases[:5] + ((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),), proportions=s.proportions[:5] + ((1.0,) * 6,)), "stimulus.phases[5]"),
        (dataclasses.replace(s, proportions=((2.0, 1.0),) + s.proportions[1:]), "stimulus.proportions[0]"),
        (dataclasses.replace(s, advance=(AdvanceRule(threshold=0.7),) + s.advance[1:]), "stimulus.advance[0]"),
        (dataclasses.replace(s, zero_contrast_side=ZeroContrastSide.RANDOM), "stimulus.zero_contrast_side"),
        (StimulusSchedule(phases=s.phases[:5], proportions=s.proportions[:5], advance=s.advance[:4]), "stimulus.phases"),
    ]
    for stim, field in cases:
        cur = dataclasses.replace(IBL_DEFAULT, stimulus=stim)
        assert not IBLRIG_TRAINING.runs(cur) and CUSTOM_TASK.runs(cur)
        with pytest.raises(CurriculumError) as err:
            IBLRIG_TRAINING.check(cur)
        assert err.value.field == field and "trainingChoiceWorld" in err.value.reason
    for fb, field in ((dataclasses.replace(IBL_DEFAULT.feedback, debias_min_contrast=0.25), "feedback.debias_min_contrast"), (dataclasses.replace(IBL_DEFAULT.feedback, debias_side=DebiasSide.REPEAT), "feedback.debias_side"), (dataclasses.replace(IBL_DEFAULT.feedback, biased_blocks=True), "feedback.biased_blocks")):
        with pytest.raises(CurriculumError) as err:
            IBLRIG_TRAINING.check(dataclasses.replace(IBL_DEFAULT, feedback=fb))
        assert err.value.field == field
    # a debiasing rule iblrig does not have is no problem once debiasing is off
    assert IBLRIG_TRAINING.runs(dataclasses.replace(IBL_DEFAULT, feedback=dataclasses.replace(IBL_DEFAULT.feedback, debias=False, debias_side=DebiasSide.REPEAT)))
    assert rig_profile("custom") is CUSTOM_TASK and rig_profile("iblrig-training") is IBLRIG_TRAINING
    with pytest.raises(CurriculumError, match="unknown rig profile 'bpod'"):
        rig_profile("bpod")


def test_phase_of_contrasts():
    assert phase_of_contrasts(IBL_DEFAULT, [1.0, 0.5, 1.0]) == 0
    assert phase_of_contrasts(IBL_DEFAULT, [0.25, 0.125]) == 2
    assert phase_of_contrasts(IBL_DEFAULT, [0.0, 1.0, 0.25, 0.5]) == 4
    assert phase_of_contrasts(IBL_DEFAULT, [0.0, 1.0, 0.25, 0.125, 0.0625]) == 5  # 0.5 dropped: phase 5, not 4
    assert phase_of_contrasts(IBL_DEFAULT, [0.3]) == 5  # no phase shows it: the last one


# --------------------------------------------------------------------------------------------
# rig exports: what iblrig v8's loader reads (tests/twin/fixtures/iblrig_v8_training_parameters.yaml)

IBLRIG_V8 = yaml.safe_load((Path(__file__).parent / "fixtures" / "iblrig_v8_training_parameters.yaml").read_text())

_TYPES = {
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list_of_float": lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v),
}


def _holds(spec: dict, key: str, value: object) -> None:
    assert _TYPES[spec["type"]](value), f"{key}: {value!r} is not {spec['type']} ({spec['file']})"
    if "choices" in spec:
        assert value in spec["choices"], key
    if "range" in spec:
        lo, hi = spec["range"]
        assert lo <= value <= hi, key


@pytest.mark.parametrize("phase", range(6))
def test_iblrig_export_is_what_iblrig_v8_reads(phase, tmp_path):
    cur = dataclasses.replace(IBL_DEFAULT, feedback=dataclasses.replace(IBL_DEFAULT.feedback, reward_volume_ul=2.5, error_timeout_s=1.5, debias=phase != 3))
    out = cur.to_iblrig(phase=phase, n_trials=550)
    assert out["task"] == IBLRIG_V8["task"] and out["profile"] == "iblrig-training"
    params, args = out["task_parameters"], out["session_arguments"]
    known = IBLRIG_V8["task_parameters"]
    for key, value in params.items():
        assert key in known, f"{key} is not a parameter iblrig v8 reads"
        _holds(known[key], key, value)
    # the exported file replaces the task's own task_parameters.yaml: every key of it is there
    own = {k for k, spec in known.items() if spec["file"] == IBLRIG_V8["task_file"]}
    assert own <= set(params)
    assert not set(params) & set(IBLRIG_V8["obsolete_or_invented"])
    for key, value in args.items():
        assert key in IBLRIG_V8["session_arguments"], key
        _holds(IBLRIG_V8["session_arguments"][key], key, value)
    assert params["DEBIAS"] is (phase != 3) and params["REWARD_AMOUNT_UL"] == 2.5 and params["FEEDBACK_ERROR_DELAY_SECS"] == 1.5 and params["NTRIALS"] == 550
    assert args == {"training_phase": phase, "adaptive_reward": 2.5}
    # as a file: what iblrig's loader does with it (yaml.safe_load, then dict.update over the base)
    f = tmp_path / "task_parameters.yaml"
    f.write_text(yaml.safe_dump(params))
    assert yaml.safe_load(f.read_text()) == params
    json.dumps(out)  # plain types only


def test_what_stock_iblrig_cannot_run_exports_only_as_a_custom_task():
    s = IBL_DEFAULT.stimulus
    custom = dataclasses.replace(IBL_DEFAULT, name="faster", stimulus=dataclasses.replace(s, advance=(AdvanceRule(threshold=0.7, window=30),) + s.advance[1:]))
    with pytest.raises(CurriculumError) as err:
        custom.to_iblrig(phase=0)
    assert err.value.field == "stimulus.advance[0]"
    with pytest.raises(CurriculumError):
        custom.export(IBLRIG_TRAINING)
    out = custom.export(CUSTOM_TASK, phase=1, n_trials=400)
    assert out["profile"] == "custom" and "custom task" in out["requires"] and "trainingChoiceWorld" in out["requires"]
    assert "task_parameters" not in out and Curriculum.from_dict(out["curriculum"]) == custom
    assert (out["start_phase"], out["n_trials"]) == (1, 400)
    assert IBL_DEFAULT.export(IBLRIG_TRAINING, phase=2)["session_arguments"]["training_phase"] == 2
    with pytest.raises(CurriculumError, match="phase"):
        IBL_DEFAULT.to_iblrig(phase=6)
