"""``twin join-cohort``: a new animal's first twin from a fitted cohort, from the command line."""

from __future__ import annotations

import pandas as pd

from cli_runner import run


def test_join_cohort_then_update_and_errors(tmp_path):
    data = tmp_path / "all.parquet"
    assert run(["simulate", "--animals", "4", "--trials", "1500", "--seed", "3", "--out", str(data)])[0] == 0
    df = pd.read_parquet(data)
    names = list(dict.fromkeys(df["subject"]))
    cohort, new = tmp_path / "cohort.parquet", tmp_path / "new.parquet"
    df[df["subject"] != names[-1]].to_parquet(cohort)
    df[(df["subject"] == names[-1]) & (df["session"] <= 2)].to_parquet(new)
    store = tmp_path / "twins"
    rc, _, err = run(["fit-twins", str(cohort), "--rule", "reinforce", "--epochs", "2", "--adaptation", "w0+rate", "--store", str(store), "--quiet"])
    assert rc == 0, err
    rc, out, err = run(["join-cohort", str(new), "--subject", names[-1], "--cohort-of", names[0], "--store", str(store)])
    assert rc == 0, err
    assert "under the prior of 3 cohort twins" in out and f"{names[-1]}: stored version 1 (reinforce, through session 2) and 2 session(s)" in out, out
    rc, out, _ = run(["twins", "--store", str(store)])
    assert rc == 0 and names[-1] in out
    rc, _, err = run(["join-cohort", str(new), "--subject", names[-1], "--cohort-of", names[0], "--store", str(store)])
    assert rc == 2 and "already has a twin" in err
    rc, _, err = run(["join-cohort", str(new), "--subject", "x", "--cohort-of", "nobody", "--store", str(store)])
    assert rc == 2 and "nobody" in err
