"""examples/one_cache_from_trials.py: a trials table written as a ONE cache reads back through ONE as the same trials."""

from __future__ import annotations

import runpy
from pathlib import Path

import pandas as pd
import pytest

from trial_tables import random_trials_table
from twin.data.alf import read_one_cache

pytest.importorskip("one.api")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "one_cache_from_trials.py"


def test_the_cache_reads_back_through_one_as_the_table(tmp_path):
    table = random_trials_table({"m1": [40, 35], "m2": [30]}, seed=3)
    assert runpy.run_path(str(EXAMPLE))["main"]([str(_write(table, tmp_path / "t.parquet")), str(tmp_path / "cache")]) == 0
    back, _ = read_one_cache(tmp_path / "cache")
    cols = ["subject", "contrast_left", "contrast_right", "choice", "feedback", "correct_side", "prob_left"]
    want = table.sort_values(["subject", "session", "trial"])[cols].reset_index(drop=True)
    got = back.sort_values(["subject", "session", "trial"])[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert back.groupby("subject")["session"].nunique().to_dict() == {"m1": 2, "m2": 1}


def _write(table: pd.DataFrame, path: Path) -> Path:
    table.to_parquet(path)
    return path
