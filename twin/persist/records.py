"""Typed metadata of a stored twin version: how it was made and how well it fitted.

Both records are kept as JSON objects in the store's database (the ``hyperparameters`` and
``metrics`` columns of a twin version); :meth:`to_json` writes the keys that are set and
:meth:`from_json` reads rows written by any version of the store (missing keys are None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twin.models.learner import ModelSpec
from twin.models.params import Adaptation

JSONScalar = str | int | float | bool | None
"""A JSON value without structure (the fields of an optimisation config)."""


@dataclass(frozen=True)
class TwinHyperparameters:
    """How a twin version was made.

    Attributes:
        spec: the population model's structure.
        fit: the population fit's optimisation settings (the fields of
            :class:`twin.fit.train.FitConfig`, by name).
        adaptation: what was adapted to the animal.
        warm_start_from: the version an update warm-started from (None for a cohort fit).
        cohort: id of the cohort fit the twin descends from (its updates keep it), which
            :func:`twin.persist.integrity.verify_store` checks was switched all at once.
    """

    spec: ModelSpec | None = None
    fit: Mapping[str, JSONScalar] | None = None
    adaptation: Adaptation | None = None
    warm_start_from: int | None = None
    cohort: str | None = None

    def to_json(self) -> dict[str, object]:
        """The JSON object stored in the database."""
        out: dict[str, object] = {}
        if self.spec is not None:
            out["spec"] = self.spec.to_dict()
        if self.fit is not None:
            out["fit"] = dict(self.fit)
        if self.adaptation is not None:
            out["adaptation"] = self.adaptation.value
        if self.warm_start_from is not None:
            out["warm_start_from"] = int(self.warm_start_from)
        if self.cohort is not None:
            out["cohort"] = self.cohort
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "TwinHyperparameters":
        """Read a stored JSON object (unknown keys are ignored)."""
        spec, fit, ad, warm, cohort = d.get("spec"), d.get("fit"), d.get("adaptation"), d.get("warm_start_from"), d.get("cohort")
        return cls(
            spec=ModelSpec.from_dict(spec) if isinstance(spec, dict) else None,  # type: ignore[arg-type]
            fit=dict(fit) if isinstance(fit, dict) else None,
            adaptation=Adaptation(ad) if ad is not None else None,
            warm_start_from=int(warm) if warm is not None else None,  # type: ignore[call-overload]
            cohort=str(cohort) if cohort is not None else None,
        )


@dataclass(frozen=True)
class TwinMetrics:
    """How well a twin version fitted (mean log-likelihood per trial, nats).

    Attributes:
        val_ll: on the animal's validation session(s).
        population_val_ll: the population model's, on every animal's validation sessions.
        warnings: the convergence warnings of the fit that made it (the population fit's for a
            cohort fit; :func:`twin.fit.train.convergence_warnings`), one line each.
    """

    val_ll: float | None = None
    population_val_ll: float | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, float]:
        """The numeric metrics that are set (as the service's ``metrics`` map carries them)."""
        return {k: float(v) for k, v in (("val_ll", self.val_ll), ("population_val_ll", self.population_val_ll)) if v is not None}

    def to_record(self) -> dict[str, object]:
        """The JSON object stored in the database: :meth:`to_json` and the warnings, if any."""
        out: dict[str, object] = dict(self.to_json())
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "TwinMetrics":
        """Read a stored JSON object (unknown keys are ignored; rows without warnings have none)."""
        val, pop, warn = d.get("val_ll"), d.get("population_val_ll"), d.get("warnings")
        warnings = tuple(str(w) for w in warn) if isinstance(warn, (list, tuple)) else ()
        return cls(float(val) if val is not None else None, float(pop) if pop is not None else None, warnings)  # type: ignore[arg-type]


__all__ = ["JSONScalar", "TwinHyperparameters", "TwinMetrics"]
