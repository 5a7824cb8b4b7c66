"""Search-space axes (:class:`optimizer.space.Param`) as Ray Tune domains."""

from __future__ import annotations

from typing import Any

from optimizer.space import Param, ParamKind


def tune_domain(p: Param) -> Any:
    """The Ray Tune domain that draws axis ``p`` as Optuna would (:func:`optimizer.search.suggest`)."""
    from ray import tune

    if p.kind in (ParamKind.BOOL, ParamKind.CHOICE):
        return tune.choice(list(p.values()))
    if p.kind is ParamKind.INT:
        return tune.randint(int(p.low), int(p.high) + 1)
    if p.kind is ParamKind.LOG_INT:
        return tune.lograndint(int(p.low), int(p.high) + 1)
    if p.kind is ParamKind.LOG_FLOAT:
        return tune.loguniform(p.low, p.high)
    return tune.uniform(p.low, p.high)


__all__ = ["tune_domain"]
