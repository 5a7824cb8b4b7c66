"""Server assembly helpers: the demo round trip and config checks."""

from __future__ import annotations

from twin_cli.service_demo import service_roundtrip


def test_service_roundtrip(cohort_trials, tmp_path):
    rep = service_roundtrip(cohort_trials, tmp_path / "twins", epochs=2, n_subjects=2)
    assert rep.predicted_trials > 0 and rep.plan_trials == 550 and rep.updated_version == 2
    lo = rep.plan_accuracy[1]
    assert 0.0 <= lo <= rep.plan_accuracy[0] <= rep.plan_accuracy[2] <= 1.0
    assert len(rep.lines()) == 3
