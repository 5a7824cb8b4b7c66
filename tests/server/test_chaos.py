"""Done-when 1 of issue 18: SIGKILL at random moments during uploads, twin updates and cohort
fits, restart each time: no session lost or stored twice, every stored session in exactly one
twin version, no update done twice, no cohort half-switched, ``verify_store`` clean. A few kills
in the default suite; 50 in the slow one (``-m slow``), which prints its figures."""

from __future__ import annotations

import dataclasses
import json

import pytest
from chaos_env import run_chaos
from server_env import TWIN_SUBJECTS


@pytest.fixture
def chunks(cohort_trials):
    """Per subject, the session-3 trials that uploads slice new sessions from."""
    return {s: cohort_trials[(cohort_trials.subject == s) & (cohort_trials.session == 3)].drop(columns=["subject", "session"]).reset_index(drop=True) for s in TWIN_SUBJECTS}


def _assert_nothing_lost(report) -> None:
    figures = json.dumps(dataclasses.asdict(report), indent=1)
    print(figures)
    assert report.kills > 0 and report.sessions_stored > 0, figures
    assert report.lost_sessions == 0 and report.duplicated_sessions == 0, figures
    assert report.sessions_stored == report.uploads, figures  # every upload stored exactly once
    assert report.uncovered_sessions == 0 and report.multiply_covered_sessions == 0, figures
    assert report.duplicated_updates == 0 and report.update_versions > 0, figures
    assert report.half_switched == 0 and report.failed_operations == 0, figures
    assert report.final_problems == [], figures


def test_chaos_few_kills(store_dir, tmp_path, chunks):
    _assert_nothing_lost(run_chaos(store_dir, tmp_path, chunks, kills=3, seed=1, fit_every=2))


@pytest.mark.slow
def test_chaos_fifty_kills(store_dir, tmp_path, chunks):
    _assert_nothing_lost(run_chaos(store_dir, tmp_path, chunks, kills=50, seed=18, fit_every=4))
