"""``twin fit-twins --ensemble`` and the commands that read its ensemble twins."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import run


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("ens") / "cohort.parquet"
    assert run(["simulate", "--animals", "3", "--trials", "3000", "--seed", "1", "--out", str(data)])[0] == 0
    return data


def test_fit_twins_ensemble_then_list_and_check(cohort, tmp_path):
    import pandas as pd

    store = tmp_path / "twins"
    early = tmp_path / "early.parquet"
    df = pd.read_parquet(cohort)
    df[df["session"] <= 3].to_parquet(early)
    rc, out, err = run(["fit-twins", str(early), "--ensemble", "static,reinforce", "--epochs", "3", "--patience", "2", "--no-refit", "--store", str(store), "--quiet"])
    assert rc == 0, err
    assert "static/seed0" in out and "reinforce/seed0" in out and "stored 3 ensemble twins (2 components" in out
    rc, out, err = run(["twins", "--store", str(store)])
    assert rc == 0 and out.count("ensemble") == 3, out
    rc, out, err = run(["check", str(cohort), "--store", str(store), "--rollouts", "4", "--out", str(tmp_path / "check")])
    assert rc == 0, err  # each animal's ensemble runs free from session 4 on
    assert "store-ensemble" in out and (tmp_path / "check" / "check_summary.json").is_file()
    subject = str(df["subject"].iloc[0])
    rc, out, err = run(["report", subject, "--store", str(store), "--trials", str(cohort), "--rollouts", "8", "--out", str(tmp_path / "r.html")])
    assert rc == 0, err
    assert "is an ensemble" in (tmp_path / "r.html").read_text()


def test_fit_twins_ensemble_errors(cohort, tmp_path):
    rc, _, err = run(["fit-twins", str(cohort), "--ensemble", "static,nosuchrule", "--store", str(tmp_path / "t")])
    assert rc == 2 and "nosuchrule" in err
    rc, _, err = run(["fit-twins", str(cohort), "--ensemble", "static", "--epochs", "0", "--store", str(tmp_path / "t")])
    assert rc == 2 and "epochs must be >= 1" in err  # an optimisation setting out of range, named
    import pandas as pd

    short = tmp_path / "short.parquet"
    df = pd.read_parquet(cohort)
    df[df["session"] <= 2].to_parquet(short)
    rc, _, err = run(["fit-twins", str(short), "--ensemble", "static", "--epochs", "1", "--store", str(tmp_path / "t")])
    assert rc == 2 and "--ensemble" in err and "sessions" in err, err


def test_the_default_twin_is_the_ensemble_and_rule_and_ensemble_exclude_each_other(cohort, tmp_path):
    """``fit-twins`` without ``--rule`` fits the default ensemble (every default rule, new-animal
    weights beside the cohort's); ``--rule`` fits one rule; both at once is refused."""
    store = tmp_path / "twins"
    rc, out, err = run(["fit-twins", str(cohort), "--epochs", "1", "--patience", "1", "--no-refit", "--store", str(store), "--quiet"])
    assert rc == 0, err
    assert "fitting the default twin, an ensemble of static, reinforce, dnn, dnn_delta, rnn" in out
    assert "stored 3 ensemble twins (5 components" in out and "new_animal_weight" in out, out
    rc, out, _ = run(["twins", "--store", str(store)])
    assert rc == 0 and out.count("ensemble") == 3, out
    rc, _, err = run(["fit-twins", str(cohort), "--rule", "dnn", "--ensemble", "static", "--store", str(tmp_path / "t")])
    assert rc == 2 and "--rule" in err and "--ensemble" in err
