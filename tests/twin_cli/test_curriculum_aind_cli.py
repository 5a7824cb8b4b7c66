"""``twin curriculum export --format aind`` and reading AIND curricula back (``--curriculum aind.json``)."""

from __future__ import annotations

import json
import sys

import pytest

from cli_runner import run
from twin.protocol import IBL_DEFAULT, AdvanceKind, AdvanceRule, Curriculum, DebiasSide, FeedbackPolicy, StimulusSchedule

abc = pytest.importorskip("aind_behavior_curriculum")

CUSTOM = Curriculum(
    name="lab-custom",
    stimulus=StimulusSchedule(
        phases=((1.0, 0.5), (1.0, 0.5, 0.125), (1.0, 0.5, 0.125, 0.0)),
        proportions=((1.0, 1.0), (1.0, 2.0, 2.0), (1.0, 2.0, 2.0, 1.0)),
        advance=(AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=40, threshold=0.75), AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=150)),
    ),
    feedback=FeedbackPolicy(debias_phases=(1,), debias_side=DebiasSide.REPEAT, reward_volume_ul=2.0, error_timeout_s=1.0),
    session_trials=(300, 600),
)


def test_export_is_an_aind_curriculum(tmp_path):
    out = tmp_path / "ibl.json"
    rc, stdout, _ = run(["curriculum", "export", "--format", "aind", "--out", str(out)])
    assert rc == 0 and "wrote" in stdout
    from twin_interop.aind import TwinTask, from_aind

    obj = abc.create_curriculum("ibl-default", "1.0.0", [TwinTask]).model_validate_json(out.read_text())
    assert [s.name for s in obj.see_stages()] == [f"phase {i}" for i in range(6)]
    assert from_aind(obj) == IBL_DEFAULT


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_an_aind_file_given_as_curriculum_is_imported(tmp_path, fmt):
    src = tmp_path / "custom.yaml"
    CUSTOM.save(src)
    aind_file = tmp_path / "custom-aind.json"
    assert run(["curriculum", "export", "--curriculum", str(src), "--format", "aind", "--out", str(aind_file)])[0] == 0
    back = tmp_path / f"back.{fmt}"
    assert run(["curriculum", "export", "--curriculum", str(aind_file), "--format", fmt, "--out", str(back)])[0] == 0
    assert Curriculum.load(back) == CUSTOM


def test_an_aind_file_that_cannot_map_is_a_one_line_error(tmp_path):
    raw = json.loads(run(["curriculum", "export", "--format", "aind"])[1])
    raw["graph"]["nodes"]["4"]["task"]["task_parameters"]["error_timeout_s"] = 5.0
    bad = tmp_path / "lab.json"
    bad.write_text(json.dumps(raw))
    rc, _, err = run(["curriculum", "export", "--curriculum", str(bad), "--format", "yaml"])
    assert rc == 2
    assert f"{bad}: graph.nodes.4.task.task_parameters.error_timeout_s" in err and "Traceback" not in err


def test_without_the_extra_aind_says_what_to_install_and_the_rest_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "aind_behavior_curriculum", None)
    monkeypatch.delitem(sys.modules, "twin_interop.aind", raising=False)
    rc, _, err = run(["curriculum", "export", "--format", "aind"])
    assert rc == 2 and "pip install 'learning-twins[aind]'" in err
    rc, out, _ = run(["curriculum", "export", "--format", "json"])
    assert rc == 0 and Curriculum.from_json(out) == IBL_DEFAULT
