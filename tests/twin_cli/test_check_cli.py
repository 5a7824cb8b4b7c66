"""``twin check``: a synthetic family end to end, and a trials file with a model file."""

from __future__ import annotations

import json

import pandas as pd
import torch

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
    # these animals are not the model's fitting cohort: each one's start comes from its own sessions
    assert "model-cutoff1-own-start" in text and "inferred from its own first 1 session" in text
    rc, _, err = run(["check", str(data), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--model or --store" in err


def test_model_file_twins_start_from_each_animals_own_sessions():
    """Past the cut-off each animal's w0 is its own MAP, never silently the population mean;
    ``population`` (or cut-off 0) gives every animal the population's, as the label says."""
    from twin.fit.train import FitConfig, fit
    from twin.data.batch import make_batch
    from twin.data.splits import split_last_sessions
    from twin.models.learner import ModelSpec
    from twin.protocol import IBL_DEFAULT
    from twin.sim.agents import DEFAULT_TRUTHS, Family, Individuality, draw_individuals
    from twin.sim.simulate import simulate
    from twin_cli.commands.check import _model_twins

    gt = DEFAULT_TRUTHS[Family.REINFORCE]
    w0, lr = draw_individuals(gt, 4, Individuality(w0_sd=(0.0, 1.0)), seed=3)
    df = simulate(gt.build(), IBL_DEFAULT, 4, 1200, seed=3, w0=w0, log_rate=lr).trials
    pop = fit(ModelSpec("reinforce"), *split_last_sessions(make_batch(df)), FitConfig(epochs=1, patience=1), progress=False).model
    subjects = list(dict.fromkeys(df["subject"]))
    own, _, _ = _model_twins(pop, df, subjects, 1, "own")
    got = torch.stack([t.params.w0 for t in own])
    assert not torch.allclose(got, pop.w0.detach().float().expand_as(got), atol=1e-3)  # not the population mean
    assert float(got[:, 1].std()) > 0.05  # each animal its own bias start
    for same in (_model_twins(pop, df, subjects, 1, "population")[0], _model_twins(pop, df, subjects, 0, "own")[0]):
        assert all(torch.allclose(t.params.w0, pop.w0.detach().float()) for t in same)


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
