"""Evaluation: per-trial likelihood metrics and the two cross-validation protocols.

* Held-out animals: the population rule is fitted on some animals and scored on others, started
  from the population initial weights.
* Held-out future sessions (the twin's forecast): fitted on each animal's sessions ``1..k``,
  scored, teacher-forced, on sessions ``k+1..``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from typing import TYPE_CHECKING

from twin.data.batch import TrialBatch
from twin.models.learner import LearnerModel

if TYPE_CHECKING:
    from twin.fit.train import FitConfig

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Scores:
    """Likelihood metrics of one model on one batch.

    Attributes:
        n_trials: scored trials.
        ll: mean log-likelihood per trial (nats).
        accuracy: fraction of trials where the more likely choice was the one made.
        per_animal: one row per animal: subject, n_trials, ll (nats/trial), accuracy.
    """

    n_trials: int
    ll: float
    accuracy: float
    per_animal: pd.DataFrame

    @property
    def ll_bits(self) -> float:
        """Mean log-likelihood per trial in bits."""
        return self.ll / LN2


@torch.no_grad()
def score(model: LearnerModel, batch: TrialBatch) -> Scores:
    """Score a model's teacher-forced predictions on the batch's masked trials."""
    model = model.eval()
    w = model.trajectory(batch)
    z = (w * batch.x).sum(-1)
    ll = -torch.nn.functional.binary_cross_entropy_with_logits(z, batch.y, reduction="none")
    m = batch.mask.float()
    hit = ((z > 0).float() == batch.y).float()
    n_a = m.sum(1)
    per = pd.DataFrame(
        {
            "subject": list(batch.subjects),
            "n_trials": n_a.long().numpy(),
            "ll": ((ll * m).sum(1) / n_a.clamp(min=1)).numpy(),
            "accuracy": ((hit * m).sum(1) / n_a.clamp(min=1)).numpy(),
        }
    )
    n = float(m.sum().item())
    return Scores(
        n_trials=int(n),
        ll=float((ll * m).sum().item() / max(n, 1.0)),
        accuracy=float((hit * m).sum().item() / max(n, 1.0)),
        per_animal=per,
    )


def ll_gain_ratio(model_ll: float, static_ll: float, truth_ll: float) -> float:
    """``(LL(model) − LL(static)) / (LL(truth) − LL(static))``: 1 means the model explains all
    the learning the true rule explains, 0 no more than constant weights."""
    denom = truth_ll - static_ll
    if denom <= 0:
        return float("nan")
    return (model_ll - static_ll) / denom


@dataclass(frozen=True)
class RatioGap:
    """How much higher one model's LL-gain ratio is than another's on the same held-out animals.

    Attributes:
        gap: ``ratio(model) − ratio(other)`` on all animals.
        lo: lower end of the paired bootstrap interval (animals resampled, the same for every model).
        hi: upper end.
        wins: animals whose per-trial LL is higher under ``model`` than under ``other``.
        n_animals: animals compared.
    """

    gap: float
    lo: float
    hi: float
    wins: int
    n_animals: int


def ll_gain_ratio_gap(
    model: Scores, other: Scores, static: Scores, truth: Scores, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> RatioGap:
    """Paired comparison of two models' LL-gain ratios on the same animals.

    Each bootstrap draw resamples animals with replacement and recomputes every ratio from the
    drawn animals' summed log-likelihoods, so the interval reflects how the gap varies across
    animals, not across trials.
    """
    frames = [model.per_animal, other.per_animal, static.per_animal, truth.per_animal]
    subjects = list(model.per_animal["subject"])
    if any(list(f["subject"]) != subjects for f in frames):
        raise ValueError("paired comparison needs scores of the same animals in the same order")
    m, o, s, t = (f["ll"].to_numpy() * f["n_trials"].to_numpy() for f in frames)
    idx = np.random.default_rng(seed).integers(0, len(m), (n_boot, len(m)))

    def gap(sel: np.ndarray) -> np.ndarray:
        sm, so, ss, st = (v[sel].sum(-1) for v in (m, o, s, t))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (sm - so) / (st - ss)

    q = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(gap(idx), [q, 1.0 - q])
    wins = int((model.per_animal["ll"].to_numpy() > other.per_animal["ll"].to_numpy()).sum())
    return RatioGap(gap=float(gap(np.arange(len(m)))), lo=float(lo), hi=float(hi), wins=wins, n_animals=len(m))


@dataclass(frozen=True)
class AnimalSplit:
    """Held-out-animals split: indices into a batch."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def split_animals(n_animals: int, n_test: int, val_fraction: float, seed: int) -> AnimalSplit:
    """Random split into train / validation (for early stopping) / held-out test animals."""
    if not 0 < n_test < n_animals:
        raise ValueError(f"n_test must be in 1..{n_animals - 1}, got {n_test}")
    perm = np.random.default_rng(seed).permutation(n_animals)
    test = sorted(perm[:n_test].tolist())
    rest = perm[n_test:]
    n_val = max(1, int(round(val_fraction * len(rest)))) if val_fraction > 0 else 0
    if n_val >= len(rest):
        raise ValueError("not enough animals left to train after the validation split")
    return AnimalSplit(train=tuple(sorted(rest[n_val:].tolist())), val=tuple(sorted(rest[:n_val].tolist())), test=tuple(test))


@dataclass(frozen=True)
class SessionSplit:
    """Held-out-future-sessions split of the same animals.

    Attributes:
        train: sessions ``1..k-1`` (to fit).
        val: sessions ``1..k``, scoring session ``k`` only (early stopping).
        test: all sessions, scoring ``k+1..`` only (the forecast).
    """

    train: TrialBatch
    val: TrialBatch
    test: TrialBatch


def split_sessions(batch: TrialBatch, k: int) -> SessionSplit:
    """Split each animal at session ``k`` (fit on ``< k``, validate on ``k``, forecast ``> k``).

    Raises:
        ValueError: if some animal has no session after ``k``.
    """
    n_sess = torch.where(batch.valid, batch.session, torch.zeros_like(batch.session)).max(1).values
    short = [s for s, n in zip(batch.subjects, n_sess.tolist()) if n <= k]
    if k < 2 or short:
        raise ValueError(f"need k >= 2 and more than k sessions per animal; too few sessions: {short[:5]}")
    kk = torch.full((batch.n_animals,), k, dtype=torch.long)
    train = batch.truncate_sessions(kk - 1)
    val = batch.truncate_sessions(kk)
    val = val.with_mask(val.sessions_mask(k, k))
    test = batch.with_mask(batch.sessions_mask(k + 1))
    return SessionSplit(train=train, val=val, test=test)


def forecast_table(
    batch: TrialBatch, rules: tuple[str, ...], k: int, config: "FitConfig", progress: bool = False
) -> pd.DataFrame:
    """The held-out-future-sessions protocol for several rules.

    Each rule is fitted (population, all animals) on sessions ``1..k-1`` with session ``k`` for
    early stopping, then scored teacher-forced on sessions ``k+1..``.

    Returns:
        One row per rule: forecast LL (nats, bits), accuracy, gain over ``static`` when fitted.
    """
    from twin.fit.train import fit
    from twin.models.learner import ModelSpec

    split = split_sessions(batch, k)
    rows = []
    for rule in rules:
        res = fit(ModelSpec(rule, batch.features), split.train, split.val, config, progress=progress, description=f"forecast: {rule}")
        s = score(res.model, split.test)
        rows.append({"model": rule, "forecast_ll_nats": s.ll, "forecast_ll_bits": s.ll_bits, "accuracy": s.accuracy, "trials": s.n_trials})
    table = pd.DataFrame(rows)
    if "static" in rules:
        table["gain_vs_static"] = table["forecast_ll_nats"] - float(table.loc[table["model"] == "static", "forecast_ll_nats"].iloc[0])
    return table


def split_last_sessions(batch: TrialBatch, n: int = 1) -> tuple[TrialBatch, TrialBatch]:
    """Hold out each animal's last ``n`` sessions for validation.

    Returns:
        ``(train, val)``: the earlier sessions, and the whole batch scoring only the last ``n``
        sessions (run through the earlier ones first).

    Raises:
        TwinError: if some animal has ``n`` sessions or fewer.
    """
    from twin.errors import TwinError

    last = batch.session.max(1).values
    if int(last.min()) <= n:
        raise TwinError(f"every animal needs more than {n} session(s) to hold the last {n} out for validation")
    return batch.truncate_sessions(last - n), batch.with_mask(batch.sessions_mask(last - n + 1))
