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
        new_animal_weights: of an ensemble cohort fit, the weights of its components for an
            animal outside the cohort (:func:`twin.fit.join.join_cohort`), in component order.
    """

    spec: ModelSpec | None = None
    fit: Mapping[str, JSONScalar] | None = None
    adaptation: Adaptation | None = None
    warm_start_from: int | None = None
    cohort: str | None = None
    new_animal_weights: tuple[float, ...] | None = None

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
        if self.new_animal_weights is not None:
            out["new_animal_weights"] = [float(w) for w in self.new_animal_weights]
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
            new_animal_weights=tuple(float(w) for w in naw) if isinstance(naw := d.get("new_animal_weights"), list) else None,  # type: ignore[union-attr]
        )


@dataclass(frozen=True)
class TwinMetrics:
    """How well a twin version fitted (mean log-likelihood per trial, nats), and whether the fits
    that made it converged.

    Attributes:
        val_ll: on the animal's validation session(s).
        population_val_ll: the population model's, on every animal's validation sessions.
        population_warnings: convergence warnings of the population fit the twin rests on
            (:func:`twin.fit.train.convergence_warnings`; an update keeps them, the rule being the
            same); empty when it converged.
        adaptation_warnings: convergence warnings of the fit that adapted the twin to its animal.
    """

    val_ll: float | None = None
    population_val_ll: float | None = None
    population_warnings: tuple[str, ...] = ()
    adaptation_warnings: tuple[str, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every convergence warning, labelled ``population fit: ...`` or ``adaptation: ...``."""
        return tuple(f"population fit: {m}" for m in self.population_warnings) + tuple(f"adaptation: {m}" for m in self.adaptation_warnings)

    def scores(self) -> dict[str, float]:
        """The numeric metrics that are set, by name (the service's ``metrics`` map)."""
        return {k: float(v) for k, v in (("val_ll", self.val_ll), ("population_val_ll", self.population_val_ll)) if v is not None}

    def to_json(self) -> dict[str, object]:
        """The JSON object stored in the database (the metrics that are set, and the warnings
        when there are any)."""
        out: dict[str, object] = dict(self.scores())
        for key in ("population_warnings", "adaptation_warnings"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "TwinMetrics":
        """Read a stored JSON object (unknown keys are ignored; rows stored before warnings were
        recorded read as having none)."""
        val, pop = d.get("val_ll"), d.get("population_val_ll")

        def messages(key: str) -> tuple[str, ...]:
            got = d.get(key)
            return tuple(str(m) for m in got) if isinstance(got, list) else ()

        return cls(
            float(val) if val is not None else None,  # type: ignore[arg-type]
            float(pop) if pop is not None else None,  # type: ignore[arg-type]
            messages("population_warnings"),
            messages("adaptation_warnings"),
        )


__all__ = ["JSONScalar", "TwinHyperparameters", "TwinMetrics"]
