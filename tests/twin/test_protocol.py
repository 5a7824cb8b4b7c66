"""The training protocol (curriculum): the IBL default, validation that names the field,
JSON/YAML/iblrig round trips, placing an animal in a phase."""

from __future__ import annotations

import json

import pytest

from twin.protocol import IBL_DEFAULT, IBL_PHASES, Curriculum, CurriculumError, FeedbackPolicy, StimulusSchedule, phase_of_contrasts


def test_the_ibl_default():
    s, f = IBL_DEFAULT.stimulus, IBL_DEFAULT.feedback
    assert s.phases == IBL_PHASES and IBL_PHASES[0] == (1.0, 0.5)
    assert 0.5 not in IBL_PHASES[-1] and 0.0 in IBL_PHASES[-1]
    assert IBL_DEFAULT.contrasts == (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)
    assert (s.advance_window, s.advance_threshold, s.easy_contrasts) == (50, 0.8, (1.0, 0.5))
    assert f.debias and f.debias_min_contrast == 0.5 and f.biased_blocks is False
    assert f.reward_volume_ul == 3.0 and f.error_timeout_s == 2.0
    assert IBL_DEFAULT.session_trials == (400, 700) and IBL_DEFAULT.name == "ibl-default"
    Curriculum(stimulus=StimulusSchedule(advance_threshold=1.0), session_trials=(5, 5))  # boundaries are allowed


@pytest.mark.parametrize(
    "build, field, pattern",
    [
        (lambda: StimulusSchedule(phases=((1.0, 0.5), (1.0, 1.5))), "stimulus.phases[1][1]", r"contrast 1\.5 outside \[0, 1\]"),
        (lambda: StimulusSchedule(phases=((-0.1,),)), "stimulus.phases[0][0]", r"-0\.1"),
        (lambda: StimulusSchedule(phases=((1.0,), ())), "stimulus.phases[1]", "at least one contrast"),
        (lambda: StimulusSchedule(phases=()), "stimulus.phases", "at least one phase"),
        (lambda: StimulusSchedule(phases=((1.0, 0.5),), proportions=((1.0,),)), "stimulus.proportions[0]", "needs 2 weights"),
        (lambda: StimulusSchedule(phases=((1.0, 0.5),), proportions=((0.0, 0.0),)), "stimulus.proportions[0]", "positive sum"),
        (lambda: StimulusSchedule(advance_threshold=0.0), "stimulus.advance_threshold", r"\(0, 1\]"),
        (lambda: StimulusSchedule(advance_threshold=1.2), "stimulus.advance_threshold", r"\(0, 1\]"),
        (lambda: StimulusSchedule(advance_window=0), "stimulus.advance_window", r"\[1, 1000\]"),
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


def test_json_and_yaml_round_trips(tmp_path):
    cur = Curriculum(
        name="emphasis",
        stimulus=StimulusSchedule(phases=((1.0, 0.5), (1.0, 0.25, 0.0)), proportions=((1.0, 1.0), (2.0, 1.0, 0.5)), advance_window=80),
        feedback=FeedbackPolicy(debias=False, reward_volume_ul=2.5),
        session_trials=(300, 500),
    )
    assert Curriculum.from_json(cur.to_json()) == cur
    assert Curriculum.from_yaml(cur.to_yaml()) == cur
    for suffix in (".json", ".yaml"):
        assert Curriculum.load(cur.save(tmp_path / f"c{suffix}")) == cur
    assert Curriculum.from_json(cur.to_json()).stimulus.proportions == ((1.0, 1.0), (2.0, 1.0, 0.5))


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
        (["stimulus", "advance_threshold"], 1.5, "stimulus.advance_threshold"),
        (["stimulus", "advance_window"], "fifty", "stimulus.advance_window"),
        (["feedback", "debias"], "yes", "feedback.debias"),
        (["feedback", "reward_volume_ul"], 40.0, "feedback.reward_volume_ul"),
        (["feedback", "block_length"], [50, 10], "feedback.block_length"),
        (["session_trials"], [700, 400], "session_trials"),
        (["schema_version"], 2, "schema_version"),
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
    wrong.write_text("stimulus:\n  advance_window: 0\n")
    with pytest.raises(CurriculumError, match=r"wrong.yaml: stimulus.advance_window"):
        Curriculum.load(wrong)


def test_iblrig_task_parameters():
    p = IBL_DEFAULT.to_iblrig(phase=5, n_trials=550)
    assert p["CONTRAST_SET"] == [1.0, 0.25, 0.125, 0.0625, 0.0]
    assert sum(p["CONTRAST_SET_PROBABILITY"]) == pytest.approx(1.0)
    assert p["REWARD_AMOUNT_UL"] == 3.0 and p["ITI_ERROR"] == 2.0 and p["NTRIALS"] == 550
    assert p["REPEAT_ON_ERROR"] is True and p["REPEAT_CONTRASTS"] == [1.0]
    assert p["BLOCKS"] is False and p["ADAPTIVE_WINDOW"] == 50
    json.dumps(p)  # plain types only
    with pytest.raises(CurriculumError, match="phase"):
        IBL_DEFAULT.to_iblrig(phase=6)


def test_phase_of_contrasts():
    assert phase_of_contrasts(IBL_DEFAULT, [1.0, 0.5, 1.0]) == 0
    assert phase_of_contrasts(IBL_DEFAULT, [0.25, 0.125]) == 2
    assert phase_of_contrasts(IBL_DEFAULT, [0.0, 1.0, 0.25]) == 4
    assert phase_of_contrasts(IBL_DEFAULT, [0.3]) == 5  # no phase shows it: the last one
