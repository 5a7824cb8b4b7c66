"""The ``twin`` command line: simulate -> fit -> evaluate on a tiny cohort, help, and error exits."""

from __future__ import annotations


import pandas as pd
import pytest

from twin_cli.cli import main
from twin.models.rules import rule_names
from twin.persist.model_files import load_model
from cli_runner import run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = d / "cohort.parquet"
    rc, out, _ = run(["simulate", "--animals", "3", "--trials", "600", "--seed", "0", "--out", str(data)])
    assert rc == 0
    assert "wrote 1800 trials of 3 animals" in out and str(data) in out
    models = {}
    for rule in ("static", "dnn"):
        path = d / f"{rule}.safetensors"
        rc, out, err = run(["fit", str(data), "--rule", rule, "--epochs", "2", "--quiet", "--hidden", "8", "--out", str(path)])
        assert rc == 0, err
        assert f"{rule}: best epoch" in out and str(path) in out
        models[rule] = path
    return d, data, models


def test_simulate_writes_a_cohort(workdir):
    _, data, _ = workdir
    df = pd.read_parquet(data)
    assert len(df) == 1800
    assert df["subject"].unique().tolist() == ["reinforce-000", "reinforce-001", "reinforce-002"]
    # seed 0 gives every animal two sessions, which `fit` needs to hold one out for validation
    assert df.groupby("subject")["session"].max().min() >= 2


def test_simulate_is_seeded(workdir, tmp_path):
    _, data, _ = workdir
    again = tmp_path / "again.csv"
    assert run(["simulate", "--animals", "3", "--trials", "600", "--seed", "0", "--out", str(again)])[0] == 0
    pd.testing.assert_frame_equal(pd.read_csv(again), pd.read_parquet(data))


def test_fit_writes_model_files_with_metadata(workdir):
    _, data, models = workdir
    for rule, path in models.items():
        stored = load_model(path)
        assert stored.model.spec.rule == rule
        meta = stored.metadata
        assert meta["data"] == str(data)
        assert meta["subjects"] == ["reinforce-000", "reinforce-001", "reinforce-002"]
        assert 1 <= meta["best_epoch"] <= 2
        assert meta["fit"]["epochs"] == 2 and meta["device"] == "cpu"
        assert meta["val_ll"] < 0
    assert load_model(models["dnn"]).model.spec.rule_config.hidden_size == 8


def test_fit_dnn_delta_with_structural_constraints_round_trips(workdir, tmp_path):
    _, data, _ = workdir
    path = tmp_path / "sym.safetensors"
    args = ["fit", str(data), "--rule", "dnn_delta", "--epochs", "1", "--quiet", "--hidden", "4", "--out", str(path)]
    rc, _, err = run(args + ["--mirror-symmetric", "--overnight-drift-only"])
    assert rc == 0, err
    model = load_model(path).model
    cfg = model.spec.rule_config
    assert cfg.mirror_symmetric and not cfg.within_session_drift
    assert model.rule.mirror == model.spec.features.mirror()  # rebuilt with its mirror on load


def test_evaluate_prints_a_table(workdir, tmp_path):
    d, data, models = workdir
    csv = tmp_path / "scores.csv"
    rc, out, err = run(["evaluate", str(data), str(models["static"]), str(models["dnn"]), "--out", str(csv)])
    assert rc == 0, err
    for col in ("model", "rule", "trials", "ll_nats", "ll_bits", "accuracy", "gain_vs_static"):
        assert col in out
    table = pd.read_csv(csv)
    assert table["rule"].tolist() == ["static", "dnn"]
    assert (table["trials"] == 1800).all()
    assert table["gain_vs_static"].iloc[0] == 0.0
    assert table["gain_vs_static"].iloc[1] == pytest.approx(table["ll_nats"].iloc[1] - table["ll_nats"].iloc[0])
    assert table["ll_bits"].tolist() == pytest.approx((table["ll_nats"] / 0.6931471805599453).tolist())
    assert ((table["ll_nats"] < 0) & (table["accuracy"] > 0.3)).all()


def test_evaluate_from_session(workdir, tmp_path):
    _, data, models = workdir
    df = pd.read_parquet(data)
    csv = tmp_path / "later.csv"
    rc, _, _ = run(["evaluate", str(data), str(models["dnn"]), "--from-session", "2", "--out", str(csv)])
    assert rc == 0
    table = pd.read_csv(csv)
    assert table["trials"].iloc[0] == int((df["session"] >= 2).sum())
    assert "gain_vs_static" not in table.columns  # no static model to compare with


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "simulate", "fit", "evaluate"):
        assert cmd in out
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--epochs" in out and "rnn" in out


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# errors: exit code 2 and a message naming what is wrong


def test_missing_data_file(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert main(["fit", str(missing), "--rule", "static", "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "twin fit: error" in err and str(missing) in err and "no such file" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_unrecognised_data_file(tmp_path, capsys):
    bad = tmp_path / "notes.csv"
    bad.write_text("hello,world\n1,2\n")
    assert main(["evaluate", str(bad), str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "twin evaluate: error" in err and str(bad) in err and "layout" in err


def test_invalid_trials_name_file_row_and_column(workdir, tmp_path, capsys):
    _, data, models = workdir
    df = pd.read_parquet(data)
    df.loc[4, "choice"] = 5
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    assert main(["evaluate", str(bad), str(models["static"])]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "row 5" in err and "'choice'" in err


def test_missing_model_file(workdir, tmp_path, capsys):
    _, data, _ = workdir
    missing = tmp_path / "ghost.safetensors"
    assert main(["evaluate", str(data), str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such model file" in err


def test_unknown_rule(workdir, tmp_path, capsys):
    _, data, _ = workdir
    assert main(["fit", str(data), "--rule", "transformer", "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "transformer" in err
    for name in rule_names():
        assert name in err
    assert not (tmp_path / "m.safetensors").exists()


def test_fit_needs_sessions_to_hold_out(tmp_path, capsys):
    data = tmp_path / "short.csv"
    assert main(["simulate", "--animals", "2", "--trials", "300", "--out", str(data)]) == 0  # one session each
    capsys.readouterr()
    assert main(["fit", str(data), "--rule", "static", "--epochs", "1", "--quiet", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--val-sessions 0" in capsys.readouterr().err
    # ...and works without a validation hold-out
    assert main(["fit", str(data), "--rule", "static", "--epochs", "1", "--quiet", "--val-sessions", "0", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert (tmp_path / "m.safetensors").exists()


def test_fit_twins_list_and_update_refusal(tmp_path, capsys):
    from twin_cli.cli import main as cli_main

    data = tmp_path / "c.parquet"
    store = tmp_path / "store"
    assert cli_main(["simulate", "--animals", "3", "--trials", "1500", "--seed", "0", "--out", str(data)]) == 0
    assert cli_main(["fit-twins", str(data), "--rule", "reinforce", "--epochs", "3", "--adaptation", "w0", "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "stored 3 twins (w0)" in out
    assert cli_main(["twins", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("serving") == 3 and "reinforce-000" in listing
    assert cli_main(["update-twin", str(data), "--subject", "reinforce-000", "--store", str(store)]) == 2
    assert "up to date" in capsys.readouterr().err
    assert cli_main(["update-twin", str(data), "--subject", "nobody", "--store", str(store)]) == 2
    assert "no twin stored for subject 'nobody'" in capsys.readouterr().err


def test_search_with_optuna_writes_result(tmp_path, capsys):
    import json

    from twin_cli.cli import main as cli_main

    data = tmp_path / "c.parquet"
    assert cli_main(["simulate", "--animals", "2", "--trials", "900", "--seed", "0", "--out", str(data)]) == 0
    out = tmp_path / "search.json"
    assert cli_main(["search", str(data), "--rule", "reinforce", "--trials", "2", "--epochs", "2", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"best", "best_val_ll", "default_val_ll", "trials"} and len(res["trials"]) == 2
    assert "validation LL" in capsys.readouterr().out


def test_demo_runs_end_to_end_on_a_tiny_cohort(tmp_path, capsys):
    from twin.protocol import Curriculum
    from twin.persist.store import TwinStore

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--animals", "4", "--trials", "2000", "--epochs", "2", "--curricula", "2", "--quiet"]) == 0
    for name in ("trials.parquet", "summary.csv", "forecast.csv", "curriculum/proposed.yaml", "curriculum/trials.csv"):
        assert (out / name).is_file(), name
    assert len(list((out / "figures").glob("*.png"))) >= 3
    store = TwinStore(out / "twins")
    assert len(store.subjects()) == 4 and store.load_twin(store.subjects()[0]).state is not None
    Curriculum.load(out / "curriculum" / "proposed.yaml")
    assert list((out / "curriculum").glob("next_session_*.yaml"))
    said = capsys.readouterr().out
    assert "[7/7]" in said and "Predict " in said and "NextSession " in said and "server stopped cleanly" in said
    # the demo's cohort is the REINFORCE family; each Δw map's verdict is printed and drawn in its figure
    assert "Δw map of reinforce: " in said and "Δw map of dnn: " in said
    assert {"reinforce_dw_reinforce.png", "reinforce_dw_dnn.png"} <= {p.name for p in (out / "figures").glob("*.png")}


def test_fit_exposes_the_hyperparameters_and_reports_convergence(workdir, tmp_path):
    _, data, _ = workdir
    path = tmp_path / "d.safetensors"
    rc, out, err = run(["fit", str(data), "--rule", "dnn", "--hidden", "8", "--epochs", "1", "--scale-lr-multiplier", "10", "--lr-patience", "3",
                        "--grad-clip", "5", "--quiet", "--out", str(path)])
    assert rc == 0, err
    meta = load_model(path).metadata
    assert meta["fit"]["scale_lr_multiplier"] == 10 and meta["fit"]["lr_patience"] == 3 and meta["fit"]["grad_clip"] == 5
    # one epoch of one allowed: the best epoch is at the cap, said in the output and the file
    assert meta["warnings"] and "raise --epochs" in meta["warnings"][0]
    assert "warning: best epoch 1 is the epoch cap 1" in out


def test_families_offered_are_the_ground_truth_families():
    from twin.sim.agents import Family
    from twin_cli.commands.common import FAMILIES

    assert FAMILIES == [f.value for f in Family]


@pytest.mark.parametrize("family", ["perseveration", "plateau", "forgetting"])
def test_simulate_each_new_family(tmp_path, family):
    data = tmp_path / f"{family}.csv"
    rc, out, err = run(["simulate", "--family", family, "--animals", "2", "--trials", "300", "--seed", "1", "--out", str(data)])
    assert rc == 0, err
    df = pd.read_csv(data)
    assert len(df) == 600 and df["subject"].str.startswith(f"{family}-").all()


def test_fit_twins_twins_and_update_twin_report_convergence_warnings(tmp_path, capsys):
    from twin_cli.cli import main as cli_main

    data, before, store = tmp_path / "c.parquet", tmp_path / "before.parquet", tmp_path / "store"
    assert cli_main(["simulate", "--animals", "2", "--trials", "1500", "--seed", "0", "--out", str(data)]) == 0
    df = pd.read_parquet(data)
    last = df.groupby("subject")["session"].transform("max")
    df[~((df["subject"] == "reinforce-000") & (df["session"] == last))].to_parquet(before)
    capsys.readouterr()
    # one epoch: the population fit stops at its cap while improving
    assert cli_main(["fit-twins", str(before), "--rule", "reinforce", "--epochs", "1", "--adaptation", "w0", "--store", str(store), "--quiet"]) == 0
    out = capsys.readouterr().out
    cap = "population fit: best epoch 1 is the epoch cap 1: the fit was still improving (raise --epochs)"
    assert f"warning: every twin: {cap}" in out
    assert "warnings" in out.splitlines()[next(i for i, line in enumerate(out.splitlines()) if "subject" in line)]
    assert cli_main(["twins", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "warnings" in listing and f"warning: every twin: {cap}" in listing
    assert cli_main(["update-twin", str(data), "--subject", "reinforce-000", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"warning: reinforce-000 v2: {cap}" in out  # the update keeps the rule, and its warning


@pytest.mark.parametrize("command", [["fit", "cohort.parquet", "--out", "m.safetensors"], ["fit-twins", "cohort.parquet", "--store", "twins"]])
def test_fit_and_fit_twins_take_the_same_optimisation_settings(command):
    """The hyperparameters that matter (the update scales' step size included) reach the fit's
    config from either command; an out-of-range one is a clear error."""
    from twin.errors import TwinError
    from twin_cli.cli import build_parser
    from twin_cli.commands.common import fit_config

    args = build_parser().parse_args([*command, "--scale-lr-multiplier", "10", "--lr", "0.01", "--tbptt", "300", "--lbfgs-rounds", "2", "--fixed-w0"])
    cfg = fit_config(args)
    assert (cfg.scale_lr_multiplier, cfg.learning_rate, cfg.tbptt, cfg.lbfgs_rounds, cfg.fit_w0) == (10.0, 0.01, 300, 2, False)
    with pytest.raises(TwinError, match="epochs must be >= 1"):
        fit_config(build_parser().parse_args([*command, "--epochs", "0"]))
