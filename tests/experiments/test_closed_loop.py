"""The closed-loop experiment's across-families summary: intervals, error, coverage, never-trained
fractions and the issue's done-when checks, from per-family result rows; and merging runs made
apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))

import closed_loop  # noqa: E402


def _row(family: str, pred: tuple[float, float, float], real: tuple[float, float, float], reached: tuple[float, float], harmful: bool = False, changes: str = "shorter sessions") -> dict[str, object]:
    return {
        "family": family,
        "predicted_speedup": pred[0], "predicted_speedup_lo90": pred[1], "predicted_speedup_hi90": pred[2],
        "realised_speedup": real[0], "realised_speedup_lo95": real[1], "realised_speedup_hi95": real[2],
        "default_reached": reached[0], "proposed_reached": reached[1],
        "proposed_changes": changes, "proposed_change_effects": "", "dropped_changes": "", "kept_change_harmful_90": harmful, "search_note": "",
        "default_mean_trials": 10_000.0, "proposed_mean_trials": 8000.0, "max_sessions": 40, "n_fresh_animals": 300, "total_seconds": 60.0,
    }


ROWS = [
    _row("reinforce", (0.30, 0.20, 0.40), (0.28, 0.22, 0.34), (0.95, 0.97)),  # every check met
    _row("asymmetric", (0.30, 0.28, 0.32), (0.15, 0.10, 0.20), (0.95, 0.97)),  # 15 points off, not covered
    _row("plateau", (0.10, 0.00, 0.20), (0.05, -0.01, 0.11), (0.90, 0.85), harmful=True),  # interval spans 0, more never-trained
]


def test_the_summary_judges_every_family():
    t = closed_loop.summary_rows(ROWS).set_index("family")
    assert list(t["dw1"]) == ["met", "met", "not met"] and list(t["dw2"]) == ["met", "not met", "met"] and list(t["dw4"]) == ["met", "met", "not met"]
    assert t.loc["asymmetric", "abs_error_points"] == pytest.approx(15.0) and t.loc["asymmetric", "interval_covers"] == "no"
    assert t.loc["plateau", "never_trained_default"] == "10.0%" and t.loc["plateau", "never_trained_proposed"] == "15.0%"
    assert t.loc["reinforce", "predicted"] == "+30.0% [+20.0%, +40.0%]" and t.loc["reinforce", "realised"] == "+28.0% [+22.0%, +34.0%]"


def test_the_markdown_states_the_mean_and_the_cap():
    t = closed_loop.summary_rows(ROWS)
    md = closed_loop.families_markdown(t, ROWS, "python experiments/closed_loop.py --families all", closed_loop.MEDIUM, 120.0)
    assert f"Mean realised speed-up across families: {(0.28 + 0.15 + 0.05) / 3:+.1%}" in md and "not met" in md
    assert "One sessions cap, 40" in md and "`python experiments/closed_loop.py --families all` (2 min)" in md


def test_runs_made_apart_merge_in_family_order(tmp_path):
    for name, rows in (("a", ROWS[2:]), ("b", ROWS[:2])):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame(rows).to_csv(d / "closed_loop_medium_dnn.csv", index=False)
        (d / "closed_loop_medium_dnn.md").write_text(f"# x\n\nCommand: `python experiments/closed_loop.py --families {name}`. Config: ...\n")
    out = closed_loop.merge_runs([tmp_path / "a" / "closed_loop_medium_dnn.csv", tmp_path / "b" / "closed_loop_medium_dnn.csv"], tmp_path / "out", "fam", "merge", closed_loop.MEDIUM)
    assert list(out["family"]) == ["reinforce", "asymmetric", "plateau"] and list(out["dw4"]) == ["met", "met", "not met"]
    md = (tmp_path / "out" / "fam.md").read_text()
    assert "`python experiments/closed_loop.py --families a`" in md and "(3 min of per-family wall time in all)" in md


def test_fresh_runs_share_animals_and_random_numbers():
    """Common random numbers: the same curriculum twice gives identical runs (so a kept default
    realises exactly zero), and the paired difference is computed on the same animals."""
    from dataclasses import replace

    import numpy as np
    from twin.protocol import IBL_DEFAULT
    from twin.sim.agents import Family

    cfg = replace(closed_loop.QUICK, n_fresh=6, search=replace(closed_loop.QUICK.search, max_sessions=3))
    a, b = closed_loop.fresh_runs(Family.REINFORCE, [IBL_DEFAULT, IBL_DEFAULT], cfg)
    assert np.array_equal(a.trials_to_criterion.numpy(), b.trials_to_criterion.numpy())
    assert np.array_equal(a.reached.numpy(), b.reached.numpy())
    diff = closed_loop.paired_difference(a.trials_to_criterion.double().numpy(), b.trials_to_criterion.double().numpy())
    assert (diff.mean, diff.lo, diff.hi) == (0.0, 0.0, 0.0)
