"""experiments/refit_diagnostic.py at a tiny size: both fits run, are scored and written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_refit_diagnostic_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("experiments_refit_diagnostic", REPO / "experiments" / "refit_diagnostic.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "diag.md"
    rows = mod.main(["--family", "reinforce", "--fit-animals", "3", "--test-animals", "2", "--trials", "1500", "--epochs", "2", "--patience", "1", "--out", str(out)])
    assert [r["mode"] for r in rows] == ["last", "late"]
    assert all(1 <= r["best_epoch"] <= r["epochs_run"] <= 2 for r in rows)
    assert all(abs(r["new_animal_ll_minus_static_own"]) < 1.0 for r in rows)
    text = out.read_text()
    assert "| last | each animal's last session |" in text and "| late | session " in text
