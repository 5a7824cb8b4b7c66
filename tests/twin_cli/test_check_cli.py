"""``twin check``: a synthetic family end to end, and a trials file with a model file."""

from __future__ import annotations

import json

import pandas as pd

from cli_runner import run


def test_check_on_a_family_writes_tables_and_figures(tmp_path):
    out = tmp_path / "chk"
    rc, text, err = run(["check", "--family", "reinforce", "--animals", "6", "--test", "3", "--trials", "1500", "--epochs", "2", "--rollouts", "5", "--cutoff", "1", "--quiet", "--out", str(out)])
    assert rc == 0, err
    assert "reinforce/reinforce" in text and "reinforce/truth" in text and "reinforce/reinforce-future" in text
    summary = json.loads((out / "check_summary.json").read_text())
    assert set(summary) == {"reinforce/reinforce", "reinforce/truth", "reinforce/reinforce-future", "reinforce/reinforce-map-future"}
    animals = pd.read_csv(out / "check_animals.csv")
    assert len(animals) == 12 and {"crps_1a", "nls_1a", "cov95_1a"} <= set(animals.columns)
    assert (out / "check_reinforce_reinforce.png").stat().st_size > 1000


def test_check_on_a_trials_file_and_model_replays_the_sessions(tmp_path):
    data, model = tmp_path / "c.parquet", tmp_path / "m.safetensors"
    assert run(["simulate", "--animals", "3", "--trials", "1200", "--seed", "1", "--out", str(data)])[0] == 0
    assert run(["fit", str(data), "--rule", "reinforce", "--epochs", "2", "--quiet", "--out", str(model)])[0] == 0
    rc, text, err = run(["check", str(data), "--model", str(model), "--cutoff", "1", "--rollouts", "4", "--out", str(tmp_path / "o")])
    assert rc == 0, err
    sessions = pd.read_csv(tmp_path / "o" / "check_sessions.csv")
    assert sessions["session"].min() == 2  # the free run starts after the cut-off
    rc, _, err = run(["check", str(data), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--model or --store" in err


def test_check_on_a_store_starts_each_twin_after_its_trained_through_session(tmp_path):
    from twin.data.readers import write_trials
    from twin.fit.cohort import CohortFitConfig, fit_cohort
    from twin.fit.train import FitConfig
    from twin.models.learner import ModelSpec
    from twin.models.params import Adaptation
    from twin.persist.store import TwinStore
    from twin.protocol import IBL_DEFAULT
    from twin.sim.agents import DEFAULT_TRUTHS, Family
    from twin.sim.simulate import simulate

    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 3, 2000, seed=2).trials
    last = trials.groupby("subject")["session"].transform("max")
    before = trials[trials["session"] < last]
    cfg = CohortFitConfig(spec=ModelSpec("reinforce"), fit=FitConfig(epochs=2, patience=2), adaptation=Adaptation.INITIAL_WEIGHTS)
    fit_cohort(before, TwinStore(tmp_path / "twins"), cfg, progress=False)
    data = write_trials(trials, tmp_path / "all.parquet")
    rc, text, err = run(["check", str(data), "--store", str(tmp_path / "twins"), "--rollouts", "4", "--out", str(tmp_path / "o")])
    assert rc == 0, err
    sessions = pd.read_csv(tmp_path / "o" / "check_sessions.csv")
    # one free session per animal: the one after its twin's training
    assert sessions.groupby("subject")["session"].apply(list).to_dict() == {s: [int(m)] for s, m in trials.groupby("subject")["session"].max().items()}


def test_check_on_a_new_family(tmp_path):
    out = tmp_path / "chk"
    rc, text, err = run(["check", "--family", "plateau", "--animals", "5", "--test", "2", "--trials", "1000", "--epochs", "2", "--rollouts", "4", "--quiet", "--out", str(out)])
    assert rc == 0, err
    summary = json.loads((out / "check_summary.json").read_text())
    assert set(summary) == {"plateau/reinforce", "plateau/truth"}
    assert "warning: " in text and "epoch cap 2" in text  # two epochs: the fit's convergence warning is printed
    # the true rule plateaus below the criterion: its held-out animals and rollouts never train
    assert summary["plateau/truth"]["obs_frac_trained_1a"] == 0.0
