"""CLI checks before any work: output paths of ``twin fit``/``evaluate``/``simulate`` (the folder
must exist and be writable; nothing is created silently) and the store of ``fit-twins`` /
``update-twin``, trials files too large to read into memory (``--max-trials``, counted without
reading the file), and ``twin serve``'s limits and bounds (``--limits``, ``--limit``,
``--show-limits``, ``--max-pending``, ``--leftover-age``; the README lists them all)."""

from __future__ import annotations

import gzip
import os
import time

import pytest
import yaml

from twin_cli.commands.models import trials_in
from cli_runner import run


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("checks")
    data = d / "cohort.parquet"
    assert run(["simulate", "--animals", "2", "--trials", "300", "--out", str(data)])[0] == 0
    return data


def _refused_fast(argv: list[str], words: str) -> str:
    t0 = time.perf_counter()
    rc, _, err = run(argv)
    assert rc == 2 and words in err, err
    assert time.perf_counter() - t0 < 5  # refused before reading or fitting anything
    return err


def test_fit_refuses_an_output_folder_that_does_not_exist(cohort, tmp_path):
    out = tmp_path / "no" / "such" / "folder" / "m.safetensors"
    _refused_fast(["fit", str(cohort), "--rule", "static", "--out", str(out)], "does not exist (create it first)")
    assert not (tmp_path / "no").exists()  # nothing created silently


def test_fit_refuses_outputs_it_cannot_write(cohort, tmp_path):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    _refused_fast(["fit", str(cohort), "--rule", "static", "--out", str(a_file / "m.safetensors")], "does not exist")
    _refused_fast(["fit", str(cohort), "--rule", "static", "--out", str(tmp_path)], "is a folder")
    _refused_fast(["evaluate", str(cohort), "m.safetensors", "--out", str(tmp_path / "gone" / "t.csv")], "does not exist")
    _refused_fast(["simulate", "--out", str(tmp_path / "gone" / "c.parquet")], "does not exist")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write to any folder")
def test_fit_refuses_an_unwritable_folder(cohort, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused_fast(["fit", str(cohort), "--rule", "static", "--out", str(ro / "m.safetensors")], "cannot write to folder")
    finally:
        ro.chmod(0o755)


def test_a_trials_file_over_max_trials_is_refused_before_reading(cohort, tmp_path):
    err = _refused_fast(["evaluate", str(cohort), "m.safetensors", "--max-trials", "100"], "600 trials, more than --max-trials 100")
    assert "raise --max-trials" in err
    _refused_fast(["fit", str(cohort), "--rule", "static", "--max-trials", "599", "--out", str(tmp_path / "m.safetensors")], "--max-trials 599")
    assert not (tmp_path / "m.safetensors").exists()


def test_rows_are_counted_without_reading_the_file(tmp_path, cohort):
    assert trials_in(cohort) == 600
    rows = 40_000
    body = "subject,session,trial,contrast_left,contrast_right,choice,feedback,correct_side,prob_left\n" + "m,1,1,0.5,0,0,1,0,0.5\n" * rows
    csv = tmp_path / "t.csv"
    csv.write_text(body)
    gz = tmp_path / "t.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(body)
    assert trials_in(csv, cap=1000) == rows and trials_in(gz, cap=1000) == rows  # the size cannot rule it out: lines counted
    assert rows <= trials_in(csv) <= csv.stat().st_size  # the size shows it is small: a bound from it
    assert trials_in(tmp_path) is None  # folders are left to the reader


def test_serve_reads_limits_from_yaml_and_flags(tmp_path):
    cfg = tmp_path / "limits.yaml"
    cfg.write_text(yaml.safe_dump({"limits": {"max_supplied_trials": 50_000, "max_rollouts": "1_000"}}))
    rc, out, err = run(["serve", "--limits", str(cfg), "--limit", "max_rollouts=500", "--max-message-mb", "4", "--show-limits"])
    assert rc == 0, err
    shown = yaml.safe_load(out)
    assert shown["max_supplied_trials"] == 50_000 and shown["max_rollouts"] == 500 and shown["max_request_bytes"] == 4 * 2**20
    assert shown["max_session_trials"] == 5000  # untouched ones keep their defaults
    for argv, words in (
        (["--limit", "max_rollouts=0"], "positive integer"),
        (["--limit", "no_such_limit=3"], "unknown limit"),
        (["--limit", "max_rollouts"], "NAME=VALUE"),
        (["--limits", str(tmp_path / "missing.yaml")], "missing.yaml"),
    ):
        rc, _, err = run(["serve", *argv, "--show-limits"])
        assert rc == 2 and words in err, (argv, err)


# -- fit-twins and update-twin: the store and the trials file checked before any work ------------


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("twin-store")
    store, data = d / "twins", d / "longer.parquet"
    assert run(["simulate", "--animals", "2", "--trials", "1500", "--out", str(data)])[0] == 0
    rc, _, err = run(["fit-twins", str(data), "--rule", "static", "--epochs", "2", "--adaptation", "w0", "--store", str(store), "--quiet"])
    assert rc == 0, err
    return store


def test_fit_twins_refuses_a_store_it_cannot_create_before_reading(cohort, tmp_path):
    nested = tmp_path / "no" / "such" / "twins"
    _refused_fast(["fit-twins", str(cohort), "--rule", "static", "--store", str(nested)], "does not exist (create it first)")
    assert not (tmp_path / "no").exists()  # no parent folder created silently
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    _refused_fast(["fit-twins", str(cohort), "--rule", "static", "--store", str(a_file)], "is not a folder")


def test_fit_twins_and_update_twin_refuse_a_trials_file_over_max_trials(cohort, twin_store, tmp_path):
    fresh = tmp_path / "twins"
    err = _refused_fast(["fit-twins", str(cohort), "--rule", "static", "--store", str(fresh), "--max-trials", "599"], "600 trials, more than --max-trials 599")
    assert "Traceback" not in err and not fresh.exists()  # refused before the store was made
    _refused_fast(["update-twin", str(cohort), "--subject", "reinforce-000", "--store", str(twin_store), "--max-trials", "100"], "--max-trials 100")


def test_update_twin_checks_the_subject_before_reading_the_trials(twin_store, tmp_path):
    missing = tmp_path / "not-read.parquet"  # never opened: the subject is refused first
    _refused_fast(["update-twin", str(missing), "--subject", "nobody", "--store", str(twin_store)], "no twin stored for subject 'nobody'")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write to any folder")
def test_fit_twins_and_update_twin_refuse_an_unwritable_store(cohort, twin_store, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    twin_store.chmod(0o555)
    try:
        err = _refused_fast(["fit-twins", str(cohort), "--rule", "static", "--store", str(ro / "twins")], "cannot write to folder")
        assert "Traceback" not in err
        _refused_fast(["update-twin", str(cohort), "--subject", "reinforce-000", "--store", str(twin_store)], "cannot write to folder")
    finally:
        ro.chmod(0o755)
        twin_store.chmod(0o755)


def test_an_unwritable_store_is_refused_before_reading_even_as_root(cohort, twin_store, tmp_path, monkeypatch):
    """The same refusal, with the folder's write probe failing as it does for a non-root user."""
    import twin_cli.commands.models as models

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(models.tempfile, "TemporaryFile", denied)
    err = _refused_fast(["fit-twins", str(cohort), "--rule", "static", "--store", str(tmp_path / "twins")], "cannot write to folder")
    assert "Permission denied" in err and "Traceback" not in err and not (tmp_path / "twins").exists()
    _refused_fast(["update-twin", str(cohort), "--subject", "reinforce-000", "--store", str(twin_store)], f"--store {twin_store}: cannot write to folder")


def test_serve_sets_the_operation_queue_bound_and_leftover_age(twin_store, monkeypatch):
    import server.app as app

    seen: dict[str, object] = {}
    real_build = app.build_plane

    def build(*args, **kwargs):
        seen["leftover_min_age_s"] = kwargs.get("leftover_min_age_s")
        return real_build(*args, **kwargs)

    def serve(config, plane, on_started=None):
        seen["max_pending"] = plane.jobs.max_pending
        plane.jobs.shutdown(0.0)
        plane.store.close()
        return 0

    monkeypatch.setattr(app, "build_plane", build)
    monkeypatch.setattr(app, "serve", serve)
    rc, _, err = run(["serve", "--store", str(twin_store), "--local-demo", "--no-optimizer", "--max-pending", "7", "--leftover-age", "12.5"])
    assert rc == 0, err
    assert seen == {"max_pending": 7, "leftover_min_age_s": 12.5}
    for argv, words in (
        (["--max-pending", "0"], "--max-pending must be at least 1"),
        (["--leftover-age", "-1"], "--leftover-age must be a number of seconds >= 0"),
        (["--leftover-age", "nan"], "--leftover-age"),
    ):
        rc, _, err = run(["serve", "--store", str(twin_store), "--local-demo", *argv])
        assert rc == 2 and words in err and "Traceback" not in err, (argv, err)


def test_readme_service_section_lists_every_limit_and_how_to_set_it():
    """Issue 18, done-when 4: each limit of ``Limits`` and each bound ``twin serve`` sets by flag."""
    from pathlib import Path

    from service.limits import Limits
    from twin_cli.cli import build_parser

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Service and reports") :]
    section = section[: section.index("\n### ", 1)]
    missing = [name for name in Limits.names() if f"`{name}`" not in section]
    assert not missing, missing
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # noqa: SLF001
    flags = {o for a in serve._actions for o in a.option_strings if o.startswith("--")}  # noqa: SLF001
    for flag in ("--limits", "--limit", "--max-message-mb", "--max-pending", "--leftover-age", "--max-workers", "--job-workers", "--cache-size", "--grace"):
        assert flag in flags and f"`{flag}" in section, flag
