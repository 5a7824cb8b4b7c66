"""experiments/refit_diagnostic.py at a tiny size: every fit runs, is scored and written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("experiments_refit_diagnostic", REPO / "experiments" / "refit_diagnostic.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_refit_diagnostic_tiny(tmp_path):
    mod = _load()
    out = tmp_path / "diag.md"
    rows = mod.main(["--family", "reinforce", "--fit-animals", "3", "--test-animals", "2", "--trials", "1500", "--epochs", "2", "--patience", "1", "--out", str(out)])
    assert [r["mode"] for r in rows] == ["last", "late", "last-whole"]
    assert all(1 <= r["best_epoch"] <= r["epochs_run"] <= 2 for r in rows)
    assert all(abs(r["new_animal_ll_minus_static_own"]) < 1.0 for r in rows)
    text = out.read_text()
    assert "| reinforce | 0 | last | 0 | each animal's last session |" in text and "| late | 0 | session " in text and "| last-whole | 0 | each animal's last whole session |" in text


def test_drop_cut_sessions_drops_only_a_final_session_cut_short():
    import pandas as pd

    mod = _load()
    sizes = {("a", 1): 100, ("a", 2): 100, ("a", 3): 20, ("b", 1): 100, ("b", 2): 30, ("b", 3): 90}
    df = pd.DataFrame([{"subject": s, "session": k, "trial": i} for (s, k), n in sizes.items() for i in range(n)])
    kept = mod.drop_cut_sessions(df).groupby(["subject", "session"]).size().to_dict()
    assert kept == {("a", 1): 100, ("a", 2): 100, ("b", 1): 100, ("b", 2): 30, ("b", 3): 90}
