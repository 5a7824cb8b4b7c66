"""The simulator-fidelity experiment (experiments/simulator_fidelity.py) in its smoke mode: one
family end to end, the table's columns and PASS/FAIL flags, the held-out animals' own starts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("experiments_simulator_fidelity", REPO / "experiments" / "simulator_fidelity.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


sf = _load_script()


def test_ratio_interval_brackets_the_point_and_hits_the_ends():
    static, truth = np.array([-100.0, -120.0, -90.0]), np.array([-80.0, -100.0, -70.0])
    idx = np.random.default_rng(0).integers(0, 3, (200, 3))
    assert sf._ratio_interval(truth, static, truth, idx)[0] == pytest.approx(1.0)
    assert sf._ratio_interval(static, static, truth, idx)[0] == pytest.approx(0.0)
    p, lo, hi = sf._ratio_interval((static + truth) / 2 + np.array([1.0, -1.0, 0.5]), static, truth, idx)
    assert lo <= p <= hi


@pytest.mark.slow
def test_smoke_run_writes_the_table(tmp_path):
    out = tmp_path / "sf"
    table = sf.main(["--smoke", "--families", "reinforce", "--out", str(out)])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["held_out"] == sf.SMOKE.test_animals
    for k in ("pass_ensemble_095", "pass_flexible_090", "pass_trials_15pct", "pass_frac_10pt", "pass_cov90"):
        assert isinstance(bool(row[k]), bool)
    assert np.isfinite(row["ll_ensemble"]) and np.isfinite(row["ll_truth"]) and np.isfinite(row["ll_static_own"])
    assert abs(sum(float(row[f"weight_{c}"]) for c in ("static/seed0", "reinforce/seed0", "dnn/seed0")) - 1.0) < 1e-6
    md = (out.with_suffix(".md")).read_text()
    assert "REDUCED" in md and "Done-when 1" in md and "Done-when 2" in md and "--smoke" in md
    animals = pd.read_csv(tmp_path / "sf_animals.csv")
    assert len(animals) == sf.SMOKE.test_animals and {"ll_ensemble", "ll_truth", "obs_trials_1a"} <= set(animals.columns)
    assert "truth, inferred start" in md
    # the full run and --start-reference-only score the same reference on the same cohort
    assert row["ll_truth_inferred"] == pytest.approx(sf.run_start_reference(sf.Family.REINFORCE, sf.SMOKE)["ll_truth_inferred"], abs=1e-9)


def test_start_reference_only_scores_the_true_rule_from_inferred_starts(tmp_path):
    out = tmp_path / "sf"
    ceil = sf.main(["--smoke", "--families", "reinforce", "--start-reference-only", "--out", str(out)])
    row = ceil.iloc[0]
    assert row["held_out"] == sf.SMOKE.test_animals
    # from inferred starts the true rule scores close to itself from the true starts (smoke scale: 1,500 trials)
    assert abs(float(row["ll_truth_inferred"]) - float(row["ll_truth"])) < 0.02
    md = (tmp_path / "sf_start_reference.md").read_text()
    assert "truth, inferred start" in md and "LL/trial lost to the inferred start" in md
    gain = float(row["ll_truth"]) - float(row["ll_static_own"])
    if gain > 0:  # a ratio needs the truth to gain over each animal's own static fit
        assert row["ratio_truth_inferred_lo"] <= row["ratio_truth_inferred"] <= row["ratio_truth_inferred_hi"]
    else:
        assert "undefined" in md and np.isnan(row["ratio_truth_inferred"])
