"""The example rig client (examples/rig_client.py): plan before a session, upload after it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from server_env import RIG, TWIN_SUBJECTS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rig_client.py"


def _load():
    spec = importlib.util.spec_from_file_location("rig_client_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_then_upload(server, cohort_trials, tmp_path, monkeypatch, capsys):
    rig = _load()
    monkeypatch.setenv("TWIN_TOKEN", RIG)
    subject = TWIN_SUBJECTS[1]
    out = tmp_path / "plan.json"
    assert rig.main(["--target", server.target, "plan", "--subject", subject, "--max-trials", "400", "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["subject"] == subject and plan["n_trials"] == 400 and plan["rig"]["reward_volume_ul"] == 3.0
    text = capsys.readouterr().out
    assert "predicted accuracy" in text and "stage: training" in text and "target criterion: trained_1a: over 3 consecutive sessions" in text
    assert plan["stage"] == "TRAINING_STAGE_TRAINING" and plan["target_criterion"] == "trained_1a"
    session = cohort_trials[(cohort_trials.subject == subject) & (cohort_trials.session == 3)].drop(columns=["subject", "session"])
    path = tmp_path / "session.csv"
    session.to_csv(path, index=False)
    assert rig.main(["--target", server.target, "upload", "--subject", subject, "--trials", str(path), "--label", "day3", "--wait"]) == 0
    text = capsys.readouterr().out
    assert "stored sim-001 session 3" in text and "twin v2 now serves" in text
    bad = session.copy()
    bad.loc[bad.index[4], "feedback"] = -bad.loc[bad.index[4], "feedback"]
    bad.to_csv(path, index=False)
    assert rig.main(["--target", server.target, "upload", "--subject", subject, "--trials", str(path)]) == 1
    assert "trials[4].feedback" in capsys.readouterr().err
