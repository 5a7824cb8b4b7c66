"""Δw maps: a rule's update as a function of stimulus and weights, after correct and error trials.

For a Markovian rule the update after a trial is a function ``Δw(w, stimulus, outcome)``; the map
evaluates it on weight states an animal actually visits (sampled from a trajectory) crossed with
every signed contrast, once for correct and once for error outcomes. Comparing an inferred rule's
map with the true rule's map on the same points measures how well the rule was recovered.

The grid weighs every (state, contrast, outcome) cell alike, including cells an animal almost
never visits (an error on a full-contrast trial late in training). :func:`compare_on_trials`
compares the two rules instead on the updates the animals actually made: the true weight states,
stimuli and outcomes of sampled held-out trials, so each cell counts as often as it occurs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from twin.data.batch import TrialBatch
from twin.models.learner import LearnerModel
from twin.models.rules import UpdateInputs

SIGNED_CONTRASTS: tuple[float, ...] = (-1.0, -0.5, -0.25, -0.125, -0.0625, 0.0, 0.0625, 0.125, 0.25, 0.5, 1.0)


@torch.no_grad()
def _one_step(model: LearnerModel, w: torch.Tensor, inp: UpdateInputs, h: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, K]`` update of ``N`` independent one-trial steps (``inp`` is ``[N, 1]``) from weights
    ``w`` and states ``h`` (zeros if None)."""
    rule = model.rule
    pre = rule.precompute(inp)[0]  # [N, D]: one trial for each of N "animals"
    h0 = rule.initial_state(w.shape[0]) if h is None else h
    w_new, _ = rule.step(w, h0, pre, rule.context())
    return w_new - w


@torch.no_grad()
def delta_w(
    model: LearnerModel,
    w: torch.Tensor,
    signed_contrast: torch.Tensor,
    correct: bool,
    h: torch.Tensor | None = None,
) -> torch.Tensor:
    """The update the model's rule makes after one trial.

    Args:
        model: the learner (stimulus + bias features without history regressors).
        w: ``[N, K]`` weight states.
        signed_contrast: ``[M]`` contrasts, negative = left; at 0 the right side is rewarded.
        correct: evaluate after a rewarded (True) or an error (False) trial.
        h: ``[N, H]`` recurrent states (zeros if None).

    Returns:
        ``[N, M, K]`` Δw for every (weight state, contrast) pair.
    """
    n, m = w.shape[0], signed_contrast.shape[0]
    c = signed_contrast.to(w.dtype)
    cl = (-c).clamp(min=0).expand(n, m)
    cr = c.clamp(min=0).expand(n, m)
    answer = (c >= 0).to(w.dtype).expand(n, m)
    y = answer if correct else 1 - answer
    r = torch.full_like(y, 1.0 if correct else 0.0)
    zeros = torch.zeros_like(y)
    x = model.spec.features.compute(cl, cr, zeros, zeros)  # [N, M, K]
    rule = model.rule
    inp = UpdateInputs(
        x=x.reshape(n * m, 1, -1),
        y=y.reshape(-1, 1),
        reward=r.reshape(-1, 1),
        answer=answer.reshape(-1, 1),
        next_session_start=zeros.reshape(-1, 1),
    )
    w_rep = w.repeat_interleave(m, 0)
    return _one_step(model, w_rep, inp, None if h is None else h.repeat_interleave(m, 0)).reshape(n, m, -1)


@dataclass(frozen=True)
class DeltaWComparison:
    """Inferred vs true Δw on the same points.

    Attributes:
        table: one row per (state, contrast, outcome, weight): columns ``state``, ``contrast``,
            ``outcome`` (correct/error), ``weight`` (feature name), ``dw_true``, ``dw_model``.
        correlation: Pearson correlation per weight over all points, and ``"all"`` pooled after
            dividing each weight's updates by the true updates' standard deviation.
    """

    table: pd.DataFrame
    correlation: dict[str, float]

    @property
    def min_correlation(self) -> float:
        """The weakest per-weight correlation."""
        return min(v for k, v in self.correlation.items() if k != "all")


def sample_states(weights: torch.Tensor, valid: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``[n, K]`` weight states drawn uniformly from the valid trials of ``[B, T, K]`` trajectories."""
    flat = weights[valid]
    idx = np.random.default_rng(seed).choice(flat.shape[0], size=min(n, flat.shape[0]), replace=False)
    return flat[torch.from_numpy(np.sort(idx))]


def compare_delta_w(
    truth: LearnerModel,
    model: LearnerModel,
    states: torch.Tensor,
    contrasts: tuple[float, ...] = SIGNED_CONTRASTS,
) -> DeltaWComparison:
    """Compare two Markovian rules' maps on the same weight states (see module docstring)."""
    c = torch.tensor(contrasts)
    names = truth.spec.features.names
    rows = []
    for correct in (True, False):
        dt = delta_w(truth, states, c, correct)
        dm = delta_w(model, states, c, correct)
        n, m, k = dt.shape
        rows.append(
            pd.DataFrame(
                {
                    "state": np.repeat(np.arange(n), m * k),
                    "contrast": np.tile(np.repeat(np.asarray(contrasts), k), n),
                    "outcome": "correct" if correct else "error",
                    "weight": np.tile(np.asarray(names), n * m),
                    "dw_true": dt.reshape(-1).numpy(),
                    "dw_model": dm.reshape(-1).numpy(),
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    corr: dict[str, float] = {}
    pooled_t, pooled_m = [], []
    for name, g in table.groupby("weight", sort=False):
        corr[str(name)] = float(np.corrcoef(g["dw_true"], g["dw_model"])[0, 1])
        sd = g["dw_true"].std() or 1.0
        pooled_t.append(g["dw_true"] / sd)
        pooled_m.append(g["dw_model"] / sd)
    corr["all"] = float(np.corrcoef(pd.concat(pooled_t), pd.concat(pooled_m))[0, 1])
    return DeltaWComparison(table=table, correlation=corr)




def compare_on_trials(
    truth: LearnerModel, model: LearnerModel, weights: torch.Tensor, batch: TrialBatch, n: int, seed: int
) -> dict[str, float]:
    """Per-weight correlation of the true and inferred updates on trials the animals made.

    Args:
        truth: the Markovian ground-truth learner.
        model: a Markovian fitted rule with the same features.
        weights: ``[B, T, K]`` true weights in force on each trial of ``batch``.
        batch: the animals' trials.
        n: trials sampled (uniformly among valid within-session trials).
        seed: seeds the sample.

    Returns:
        Pearson correlation per weight name over the sampled trials.
    """
    inp = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)
    ok = batch.valid & (inp.next_session_start == 0)
    b_idx, t_idx = torch.nonzero(ok, as_tuple=True)
    pick = np.sort(np.random.default_rng(seed).choice(len(b_idx), size=min(n, len(b_idx)), replace=False))
    b_idx, t_idx = b_idx[pick], t_idx[pick]
    one = UpdateInputs(**{f.name: getattr(inp, f.name)[b_idx, t_idx].unsqueeze(1) for f in fields(inp)})
    w = weights[b_idx, t_idx]
    dt, dm = _one_step(truth, w, one), _one_step(model, w, one)
    return {str(name): float(np.corrcoef(dt[:, k].numpy(), dm[:, k].numpy())[0, 1]) for k, name in enumerate(truth.spec.features.names)}
