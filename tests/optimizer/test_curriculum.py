"""Curricula: the IBL default, validation that names the field, JSON/YAML/iblrig round trips."""

from __future__ import annotations

import json

import pytest

from optimizer.curriculum import IBL_DEFAULT_CURRICULUM, Curriculum, CurriculumError, FeedbackPolicy, StimulusSchedule
from twin.sim.task import IBL_DEFAULT


def test_the_default_curriculum_is_the_core_ibl_protocol():
    assert IBL_DEFAULT_CURRICULUM.to_protocol() == IBL_DEFAULT
    assert IBL_DEFAULT_CURRICULUM.contrasts == (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)
    assert IBL_DEFAULT_CURRICULUM.feedback.reward_volume_ul == 3.0 and IBL_DEFAULT_CURRICULUM.feedback.error_timeout_s == 2.0


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
    assert cur.to_protocol().proportions == ((1.0, 1.0), (2.0, 1.0, 0.5))


def _with(path: list, value) -> dict:
    d = IBL_DEFAULT_CURRICULUM.to_dict()
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
    p = IBL_DEFAULT_CURRICULUM.to_iblrig(phase=5, n_trials=550)
    assert p["CONTRAST_SET"] == [1.0, 0.25, 0.125, 0.0625, 0.0]
    assert sum(p["CONTRAST_SET_PROBABILITY"]) == pytest.approx(1.0)
    assert p["REWARD_AMOUNT_UL"] == 3.0 and p["ITI_ERROR"] == 2.0 and p["NTRIALS"] == 550
    assert p["REPEAT_ON_ERROR"] is True and p["REPEAT_CONTRASTS"] == [1.0]
    assert p["BLOCKS"] is False and p["ADAPTIVE_WINDOW"] == 50
    json.dumps(p)  # plain types only
    with pytest.raises(CurriculumError, match="phase"):
        IBL_DEFAULT_CURRICULUM.to_iblrig(phase=6)
