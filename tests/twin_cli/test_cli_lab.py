"""What the ``twin`` command owes a lab's shell and logs: ``--quiet``/``--verbose`` on every
command, progress as log records off a terminal, a quiet end on a closed pipe, read commands that
never create a store, plain numbers in errors, sessions named by the data's own labels, and
``fit-twins`` keeping the sessions that ``report`` reads."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_runner import run
from twin_cli.cli import EXIT_BROKEN_PIPE, build_parser

REPO = Path(__file__).resolve().parents[2]


def leaf_parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: p}
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, q in subs[0].choices.items():
        out.update(leaf_parsers(q, (*path, name)))
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lab")
    data = d / "cohort.parquet"
    assert run(["simulate", "--animals", "2", "--trials", "900", "--seed", "0", "--out", str(data)])[0] == 0
    return data


def test_every_command_takes_quiet_and_verbose():
    leaves = leaf_parsers(build_parser())
    assert ("update-twin",) in leaves and ("curriculum", "propose") in leaves
    for path, q in leaves.items():
        flags = {s for a in q._actions for s in a.option_strings}
        assert {"--quiet", "-q", "--verbose", "-v"} <= flags, path
    args = build_parser().parse_args(["update-twin", "x.parquet", "--subject", "a", "--quiet"])
    assert args.verbosity.value == "quiet"
    # before the command name too, and not undone by the command's own (unset) flag
    assert build_parser().parse_args(["--verbose", "twins"]).verbosity.value == "verbose"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["twins", "--quiet", "--verbose"])


def test_fit_logs_progress_as_lines_and_quiet_still_reports(cohort, tmp_path):
    rc, out, err = run(["fit", str(cohort), "--rule", "static", "--epochs", "3", "--out", str(tmp_path / "m.safetensors")])
    assert rc == 0, err
    assert "\r" not in err  # stderr is not a terminal: log records, not bar frames
    assert "fit static: done, " in err
    rc, out, err = run(["fit", str(cohort), "--rule", "static", "--epochs", "3", "--quiet", "--out", str(tmp_path / "q.safetensors")])
    assert rc == 0 and err == ""
    assert "static: best epoch" in out  # the fit's result still prints at the end


def test_a_closed_pipe_ends_quietly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "twin_cli", "curriculum", "export", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written (as `| head` after its lines)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["twins"],
        ["report", "someone"],
        ["update-twin", "TRIALS", "--subject", "someone"],
        ["curriculum", "propose", "someone"],
        ["curriculum", "search"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_read_commands_never_create_a_store(cohort, tmp_path, argv):
    typo = tmp_path / "typo"
    argv = [str(cohort) if a == "TRIALS" else a for a in argv]
    rc, _, err = run([*argv, "--store", str(typo)])
    assert rc == 2 and f"no twin store at {typo}" in err
    assert not typo.exists()


def test_errors_quote_plain_numbers(tmp_path):
    df = pd.DataFrame(
        {"subject": "m", "session": 1, "trial": [1, 2], "contrast_left": [0.5, 0.0], "contrast_right": [0.0, 0.5],
         "choice": [0.0, 2.0], "feedback": [1, 1], "correct_side": [0, 1], "prob_left": 0.5}
    )
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    rc, _, err = run(["fit", str(path), "--out", str(tmp_path / "m.safetensors")])
    assert rc == 2
    assert "row 2, column 'choice': unknown code 2; expected one of (0, 1)" in err
    assert "np." not in err


def alf_table(path: Path) -> Path:
    """An ALF-style table: sessions numbered 0..3 (``session_number``), trials from 0."""
    rng = np.random.default_rng(1)
    parts = []
    for number in range(4):
        n = 120
        side = rng.integers(0, 2, n)
        correct = rng.random(n) < 0.75
        choice01 = np.where(correct, side, 1 - side)
        parts.append(pd.DataFrame({
            "subject": "ALF-1", "session_number": number, "trial": np.arange(n),
            "contrastLeft": np.where(side == 0, 1.0, np.nan), "contrastRight": np.where(side == 1, 1.0, np.nan),
            "choice": np.where(choice01 == 1, -1.0, 1.0), "feedbackType": np.where(correct, 1.0, -1.0), "probabilityLeft": 0.5,
        }))
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_evaluate_from_session_uses_the_datas_own_labels(tmp_path):
    data = alf_table(tmp_path / "alf.csv")
    model = tmp_path / "m.safetensors"
    assert run(["fit", str(data), "--rule", "static", "--epochs", "1", "--quiet", "--out", str(model)])[0] == 0
    rc, out, err = run(["evaluate", str(data), str(model), "--from-session", "2"])
    assert rc == 0, err
    assert "from the one labelled '2' on (the data's own session labels; first scored: 2)" in out
    table = pd.read_fwf(io.StringIO("\n".join(out.strip().splitlines()[-2:])))
    assert int(table["trials"].iloc[0]) == 240  # sessions labelled 2 and 3, not 1..3
    rc, _, err = run(["evaluate", str(data), str(model), "--from-session", "endtrain-9"])
    assert rc == 2 and "no session labelled 'endtrain-9'" in err and "0, 1, 2, 3" in err


def test_fit_twins_keeps_the_sessions_report_reads(cohort, tmp_path):
    from twin.persist.sessions import SessionStore
    from twin.persist.store import TwinStore

    store = tmp_path / "twins"
    rc, out, err = run(["fit-twins", str(cohort), "--rule", "static", "--epochs", "2", "--adaptation", "w0", "--store", str(store), "--quiet"])
    assert rc == 0, err
    df = pd.read_parquet(cohort)
    n_sessions = int(df.groupby("subject")["session"].max().sum())
    assert f"and {n_sessions} new session(s)" in out
    sessions = SessionStore(TwinStore(store))
    subject = df["subject"].iloc[0]
    pd.testing.assert_frame_equal(
        sessions.trials(subject)[["session", "trial", "choice"]], df[df["subject"] == subject][["session", "trial", "choice"]].reset_index(drop=True)
    )
    rc, out, err = run(["report", subject, "--store", str(store), "--rollouts", "4", "--out", str(tmp_path / "r.html")])
    assert rc == 0, err
    assert (tmp_path / "r.html").stat().st_size > 0
    # a second fit on the same data stores no session twice
    rc, out, _ = run(["fit-twins", str(cohort), "--rule", "static", "--epochs", "2", "--adaptation", "w0", "--store", str(store), "--quiet"])
    assert rc == 0 and "and 0 new session(s)" in out
