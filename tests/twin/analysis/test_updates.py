"""The twin's updates read off for one animal: run lengths, history dependence, Δw maps."""

from __future__ import annotations

import numpy as np
import torch

from twin.analysis.dwmap import SIGNED_CONTRASTS, delta_w
from twin.analysis.predict import predict
from twin.analysis.updates import delta_w_map, history_dependence, run_lengths
from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.sim.simulate import simulate
from twin.protocol import IBL_DEFAULT


def test_run_lengths_restart_at_outcome_changes_and_sessions() -> None:
    outcome = np.array([1, 1, 1, 0, 0, 1, 1, 1, 0])
    start = np.array([1, 0, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
    assert run_lengths(outcome, start).tolist() == [1, 2, 3, 1, 2, 1, 1, 2, 1]


def test_history_dependence_of_a_known_rule() -> None:
    """Asymmetric prediction-error truth: Δw[stimulus] >= 0 always, larger after errors (larger
    rate, larger prediction error); the bias moves toward the chosen side after rewards and away
    from it after errors."""
    truth = DEFAULT_TRUTHS[Family.ASYMMETRIC].build()
    trials = simulate(truth, IBL_DEFAULT, 1, 1500, seed=5).trials
    h = history_dependence(predict(truth, trials), trials, max_run=4)
    assert len(h) == 2 * 4 * 2
    first = h[h.run_length == 1].set_index(["outcome", "weight"])["mean_dw"]
    assert first["error", "stimulus"] > first["reward", "stimulus"] > 0
    assert first["reward", "bias"] > 0 > first["error", "bias"]
    assert (h["n"] > 0).all()


def test_delta_w_map_applies_the_twins_rate() -> None:
    model = DEFAULT_TRUTHS[Family.REINFORCE].build()
    with torch.no_grad():
        model.log_rate.copy_(torch.tensor([0.5, -1.0]))
    w = np.array([[0.5, 0.1], [1.5, -0.2], [2.0, 0.3]])
    table = delta_w_map(model, w, n_states=3, seed=0)
    assert len(table) == 3 * len(SIGNED_CONTRASTS) * 2 * 2
    got = table[table.outcome == "error"]["dw"].to_numpy().reshape(3, len(SIGNED_CONTRASTS), 2)
    raw = delta_w(model, torch.as_tensor(w, dtype=torch.float32), torch.tensor(SIGNED_CONTRASTS), correct=False)
    np.testing.assert_allclose(got, (raw * torch.tensor([0.5, -1.0]).exp()).numpy(), rtol=1e-6)
