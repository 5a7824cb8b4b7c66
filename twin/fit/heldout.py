"""The held-out-future-sessions protocol for several rules: fit on early sessions, score the rest.

Each rule is fitted (population, all animals) on sessions ``1..k-1`` with session ``k`` for early
stopping (:func:`twin.data.splits.split_sessions`), then scored teacher-forced on sessions
``k+1..`` (:func:`twin.analysis.evaluate.score`).
"""

from __future__ import annotations

import pandas as pd

from twin.analysis.evaluate import score
from twin.data.batch import TrialBatch
from twin.data.splits import split_sessions
from twin.fit.train import FitConfig, fit
from twin.models.learner import ModelSpec


def forecast_table(batch: TrialBatch, rules: tuple[str, ...], k: int, config: FitConfig, progress: bool = False) -> pd.DataFrame:
    """The held-out-future-sessions protocol for several rules.

    Each rule is fitted (population, all animals) on sessions ``1..k-1`` with session ``k`` for
    early stopping, then scored teacher-forced on sessions ``k+1..``.

    Returns:
        One row per rule: forecast LL (nats, bits), accuracy, gain over ``static`` when fitted.
    """
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
