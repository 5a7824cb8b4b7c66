"""``twin curriculum export|search|propose`` as a user runs them."""

from __future__ import annotations

import json

import pytest
import yaml

from trial_tables import random_trials_table
from twin.protocol import IBLRIG_TRAINING, Curriculum
from twin_cli.cli import main
from twin.fit.cohort import CohortFitConfig, fit_cohort
from twin.fit.train import FitConfig
from twin.models.learner import ModelSpec
from twin.persist.sessions import SessionStore
from twin.persist.store import ResultKind, TwinStore
from twin.models.params import Adaptation


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    df = random_trials_table({f"m{i}": [220, 230, 240] for i in range(3)}, seed=1)
    store = TwinStore(root)
    fit_cohort(df, store, CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=2, patience=2), adaptation=Adaptation.INITIAL_WEIGHTS), progress=False)
    SessionStore(store).add_table(df)
    return root


def test_export_formats(tmp_path, capsys):
    assert main(["curriculum", "export", "--format", "yaml", "--out", str(tmp_path / "c.yaml")]) == 0
    assert Curriculum.load(tmp_path / "c.yaml").name == "ibl-default"
    capsys.readouterr()
    assert main(["curriculum", "export", "--format", "iblrig", "--phase", "2", "--trials", "500"]) == 0
    text = capsys.readouterr().out
    params = yaml.safe_load(text)  # what iblrig's loader does with the file
    assert params["NTRIALS"] == 500 and params["DEBIAS"] is True and params["REWARD_AMOUNT_UL"] == 3.0
    assert "ADAPTIVE_PHASES" not in params and "REPEAT_ON_ERROR" not in params
    assert "_iblrig_tasks_trainingChoiceWorld" in text and "--training_phase 2 --adaptive_reward 3.0" in text
    # a curriculum stock iblrig cannot run: refused as iblrig, exported only as a custom task
    cur = tmp_path / "fast.yaml"
    d = Curriculum.load(tmp_path / "c.yaml").to_dict()
    d["stimulus"]["advance"][0]["window"] = 20
    cur.write_text(yaml.safe_dump(d))
    assert main(["curriculum", "export", "--curriculum", str(cur), "--format", "iblrig"]) == 2
    err = capsys.readouterr().err
    assert "stimulus.advance[0]" in err and "--format custom-task" in err
    assert main(["curriculum", "export", "--curriculum", str(cur), "--format", "custom-task", "--phase", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# NOT a stock iblrig file")
    doc = yaml.safe_load(text)
    assert doc["profile"] == "custom" and doc["start_phase"] == 1 and Curriculum.from_dict(doc["curriculum"]).stimulus.advance[0].window == 20


def test_export_the_biased_preset_for_stock_iblrig(capsys):
    assert main(["curriculum", "export", "--curriculum", "ibl-biased", "--format", "iblrig", "--trials", "600"]) == 0
    text = capsys.readouterr().out
    params = yaml.safe_load(text)
    assert "_iblrig_tasks_biasedChoiceWorld" in text and "no session arguments" in text
    assert params["BLOCK_PROBABILITY_SET"] == [0.2, 0.8] and params["NTRIALS"] == 600 and "DEBIAS" not in params and "training_phase" not in text
    assert main(["curriculum", "export", "--curriculum", "ibl-biased", "--format", "iblrig", "--phase", "2"]) == 2
    assert "one phase" in capsys.readouterr().err


def test_search_stores_its_result_and_propose_plans_a_session(store_dir, tmp_path, capsys):
    cons = tmp_path / "lab.yaml"
    cons.write_text("session_trials: [300, 700]\nallow_no_debias: false\n")
    out = tmp_path / "search"
    rc = main(["curriculum", "search", "--store", str(store_dir), "--constraints", str(cons), "--trials", "4", "--batch", "2", "--rollouts", "1", "--max-sessions", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert (out / "proposed.yaml").is_file() and "predicted speed-up" in text
    assert "trials to trained_1a" in text and "capped at 3 sessions" in text  # the criterion and the session cap, named
    summary = json.loads((out / "search.json").read_text())
    assert summary["criterion"] == "trained_1a" and summary["max_sessions"] == 3 and "|bias| < 16%" in summary["criterion_description"]
    stored = TwinStore(store_dir).get_result(ResultKind.CURRICULUM_SEARCH, "curriculum-search")
    assert stored.payload["max_sessions"] == 3
    assert stored.payload["best"]["curriculum"]["feedback"]["debias"] is True
    plan = tmp_path / "plan.json"
    assert main(["curriculum", "propose", "m1", "--store", str(store_dir), "--candidates", "2", "--rollouts", "2", "--out", str(plan)]) == 0
    p = json.loads(plan.read_text())
    assert p["subject"] == "m1" and p["twin_version"] == 1 and 0 <= p["predicted_accuracy"]["mean"] <= 1
    assert p["rig_profile"] == "custom" and p["rig_export"]["profile"] == "custom" and "custom task" in p["rig_export"]["requires"]
    # on a stock iblrig rig: only what trainingChoiceWorld runs, exported as its parameters
    assert main(["curriculum", "propose", "m1", "--store", str(store_dir), "--candidates", "2", "--rollouts", "2", "--rig-profile", "iblrig-training", "--out", str(plan)]) == 0
    p = json.loads(plan.read_text())
    ex = p["rig_export"]
    assert p["rig_profile"] == "iblrig-training" and ex["task"] == "_iblrig_tasks_trainingChoiceWorld"
    assert ex["task_parameters"]["REWARD_AMOUNT_UL"] == 3.0 and 0 <= ex["session_arguments"]["training_phase"] <= 5
    assert IBLRIG_TRAINING.runs(Curriculum.from_dict(p["curriculum"]))


def test_bad_constraints_are_a_clean_error(store_dir, tmp_path, capsys):
    cons = tmp_path / "bad.yaml"
    cons.write_text("session_length: [300, 700]\n")
    assert main(["curriculum", "search", "--store", str(store_dir), "--constraints", str(cons)]) == 2
    assert "session_length" in capsys.readouterr().err


def test_propose_names_the_stage_target_and_session_cap(store_dir, tmp_path):
    plan = tmp_path / "plan.json"
    assert main(["curriculum", "propose", "m2", "--store", str(store_dir), "--candidates", "1", "--rollouts", "1", "--max-sessions", "3", "--out", str(plan)]) == 0
    p = json.loads(plan.read_text())
    # random choices: in training, aimed at trained_1a, the forecast capped at 3 sessions
    assert p["stage"] == "training" and p["target_criterion"] == "trained_1a" and p["max_sessions"] == 3
    assert "trained_1a" in p["explanation"] and "capped at 3 sessions" in p["explanation"] and "|bias| < 16%" in p["target_criterion_description"]
    # per-rule-family speed-ups come with a changed plan only
    assert bool(p["family_speedups"]) == p["changed"] and all(f["lo"] <= f["mean"] <= f["hi"] for f in p["family_speedups"])


def test_propose_gives_a_trained_animal_biased_blocks(tmp_path, capsys):
    """A store whose animal ran biased sessions: the plan is biasedChoiceWorld aimed at
    ready_for_recording, exported for stock iblrig as biasedChoiceWorld, with no trials-to-criterion figure."""
    import numpy as np

    df = random_trials_table({"b1": [300, 300, 300, 300]}, seed=3)
    n = (df["session"] >= 3).to_numpy()
    df.loc[n, "prob_left"] = np.where(df.loc[n, "trial"] <= 90, 0.5, np.where((df.loc[n, "trial"] // 60) % 2 == 0, 0.2, 0.8))
    root = tmp_path / "store"
    store = TwinStore(root)
    fit_cohort(df, store, CohortFitConfig(spec=ModelSpec("static"), fit=FitConfig(epochs=1, patience=1), adaptation=Adaptation.INITIAL_WEIGHTS), progress=False)
    SessionStore(store).add_table(df)
    store.close()
    plan = tmp_path / "plan.json"
    assert main(["curriculum", "propose", "b1", "--store", str(root), "--rig-profile", "iblrig-training", "--out", str(plan)]) == 0
    p = json.loads(plan.read_text())
    assert p["stage"] == "biased" and p["target_criterion"] == "ready_for_recording" and p["max_sessions"] is None
    assert p["expected_remaining_trials"] is None and "no trials-to-criterion forecast" in p["explanation"]
    assert p["rig_profile"] == "iblrig-biased" and p["rig_export"]["task"] == "_iblrig_tasks_biasedChoiceWorld"
    assert Curriculum.from_dict(p["curriculum"]).feedback.biased_blocks
