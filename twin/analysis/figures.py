"""PNG figures: weight trajectories, learning curves and Δw maps."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from twin.data.batch import TrialBatch  # noqa: E402
from twin.models.learner import LearnerModel  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@torch.no_grad()
def weight_trajectories(
    batch: TrialBatch,
    models: dict[str, LearnerModel],
    path: Path,
    true_weights: torch.Tensor | None = None,
    animals: int = 3,
) -> Path:
    """Weights in force on each trial for a few animals: each model's teacher-forced trajectory,
    and the true weights when known (``[B, T, K]``). Dotted lines mark session starts."""
    names = batch.features.names
    n_a = min(animals, batch.n_animals)
    fig, axes = plt.subplots(n_a, len(names), figsize=(4.2 * len(names), 2.4 * n_a), squeeze=False, sharex=True)
    trajs = {label: m.trajectory(batch.select(list(range(n_a)))) for label, m in models.items()}
    for a in range(n_a):
        n_t = int(batch.valid[a].sum())
        starts = torch.nonzero(batch.session_start[a, :n_t]).flatten().tolist()
        for k, name in enumerate(names):
            ax = axes[a, k]
            for s in starts[1:]:
                ax.axvline(s, color="0.85", lw=0.5, ls=":")
            if true_weights is not None:
                ax.plot(true_weights[a, :n_t, k].numpy(), color="k", lw=2, label="true")
            for label, w in trajs.items():
                ax.plot(w[a, :n_t, k].numpy(), lw=1.2, label=label)
            ax.set_title(f"{batch.subjects[a]}: w[{name}]", fontsize=9)
            if a == n_a - 1:
                ax.set_xlabel("trial")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("Weight trajectories (teacher-forced)")
    return _save(fig, path)


@torch.no_grad()
def session_accuracy(batch: TrialBatch, model: LearnerModel | None = None) -> pd.DataFrame:
    """Per session index: observed fraction correct and, with a model, its predicted p(correct)
    (mean over animals of the per-animal session means)."""
    hit = (batch.y == batch.answer).float()
    rows = []
    pred = None
    if model is not None:
        w = model.trajectory(batch)
        p = torch.sigmoid((w * batch.x).sum(-1))
        pred = torch.where(batch.answer > 0.5, p, 1 - p)
    m = batch.mask
    for s in sorted(set(batch.session[m].tolist())):
        sel = (batch.session == s) & m
        n = sel.sum(1)
        has = n > 0
        obs = ((hit * sel).sum(1)[has] / n[has]).mean().item()
        row = {"session": s, "observed": obs, "n_animals": int(has.sum())}
        if pred is not None:
            row["predicted"] = ((pred * sel).sum(1)[has] / n[has]).mean().item()
        rows.append(row)
    return pd.DataFrame(rows)


def learning_curves(batch: TrialBatch, models: dict[str, LearnerModel], path: Path, title: str = "Learning curves") -> Path:
    """Observed vs predicted accuracy per session, averaged over animals."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    obs = session_accuracy(batch)
    ax.plot(obs["session"], obs["observed"], "ko-", lw=2, ms=4, label="observed")
    for label, m in models.items():
        acc = session_accuracy(batch, m)
        ax.plot(acc["session"], acc["predicted"], ".-", lw=1.2, label=f"{label} (predicted)")
    ax.set_xlabel("session")
    ax.set_ylabel("fraction correct")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="0.8", lw=0.8)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def delta_w_maps(table: pd.DataFrame, path: Path, title: str = "Δw maps") -> Path:
    """Inferred vs true Δw against signed contrast, for correct and error trials, per weight.

    Args:
        table: :attr:`twin.analysis.dwmap.DeltaWComparison.table` (mean over weight states is plotted,
            with the 10–90% range of the true map shaded).
    """
    weights = list(dict.fromkeys(table["weight"]))
    fig, axes = plt.subplots(2, len(weights), figsize=(4.2 * len(weights), 6), squeeze=False, sharex=True)
    for i, outcome in enumerate(("correct", "error")):
        for k, name in enumerate(weights):
            ax = axes[i, k]
            g = table[(table["outcome"] == outcome) & (table["weight"] == name)].groupby("contrast")
            c = np.asarray(list(g.groups))
            ax.fill_between(c, g["dw_true"].quantile(0.1), g["dw_true"].quantile(0.9), color="0.85", label="true 10–90%")
            ax.plot(c, g["dw_true"].mean(), "k-", lw=2, label="true")
            ax.plot(c, g["dw_model"].mean(), "C1--", lw=1.8, label="inferred")
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"after {outcome}: Δw[{name}]", fontsize=9)
            if i == 1:
                ax.set_xlabel("signed contrast (right > 0)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
