"""``twin curriculum search``: prints the sessions cap, the per-family speed-ups and the
per-change table, and writes them in ``search.json``."""

from __future__ import annotations

import json

import torch

from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel
from twin.persist.store import TwinStore
from twin.protocol import Curriculum, StimulusSchedule
from twin_cli.cli import main


def test_curriculum_search_prints_the_cap_families_and_changes(tmp_path, capsys):
    store = TwinStore(tmp_path / "twins")
    for i in range(3):  # experts: only the session length changes their trials to criterion
        m = LearnerModel(ModelSpec("static"))
        with torch.no_grad():
            m.w0.copy_(torch.tensor([12.0, 0.05 * i]))
        store.put(f"s{i}", TwinModel.of(m.eval()), trained_through_session=3, data_hash="x", alias="serving")
    store.close()
    base = Curriculum(name="lab", stimulus=StimulusSchedule.single((1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)), session_trials=(500, 520))
    base.save(tmp_path / "base.yaml")
    (tmp_path / "constraints.yaml").write_text("session_trials: [210, 520]\n")
    out = tmp_path / "search"
    args = ["curriculum", "search", "--store", str(tmp_path / "twins"), "--base", str(tmp_path / "base.yaml"), "--constraints", str(tmp_path / "constraints.yaml")]
    assert main(args + ["--trials", "4", "--batch", "2", "--rollouts", "1", "--max-sessions", "4", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "sessions cap 4" in said and "static" in said and "predicts" in said
    assert "drop-one" in said and "shortest session (trials)" in said
    summary = json.loads((out / "search.json").read_text())
    assert summary["max_sessions"] == 4 and summary["robust"]["by_family"][0]["family"] == "static"
    kept = [c["axis"] for c in summary["attribution"]["changes"] if c["kept"]]
    assert kept == ["session_trials_low"]  # an expert's trials depend on nothing else
