"""A twin's own parameters, and the twin: a shared population rule plus one animal's parameters.

A cohort fit gives one population :class:`~twin.models.learner.LearnerModel` (structure, rule
network, population ``w_0``). Each animal's twin adapts only its initial weights ``w_0`` and its
per-weight log learning-rate multipliers ``ρ`` to that animal, so a twin is that one population
model plus a :class:`TwinParams`; the rule network is held (and stored) once, not per animal.
Twins over the same rule run as one batch: stack their parameters (:func:`stack_params`) and pass
them to the learner as ``[B, K]`` ``w0``/``log_rate``.

Full fine-tuning (:attr:`Adaptation.FULL`) changes the rule itself: such a twin's parameters
reference the animal's own rule, which is then its population model of one.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from twin.models.learner import LearnerModel


class Adaptation(enum.Enum):
    """What of the population model a twin fits to its animal."""

    NONE = "none"
    """The population model as is."""
    INITIAL_WEIGHTS = "w0"
    """The animal's initial weights."""
    INITIAL_WEIGHTS_AND_RATE = "w0+rate"
    """Initial weights and per-weight learning-rate multipliers."""
    FULL = "full"
    """Every parameter, warm-started from the population (one rule per animal)."""


def rule_ref(model: LearnerModel) -> str:
    """The content reference of a model's rule: SHA-256 of its spec and rule tensors.

    Computed once per population model (a fit, a load); twins carry it in
    :attr:`TwinParams.rule`. The model's own ``w0``/``log_rate`` are not part of it.
    """
    h = hashlib.sha256(json.dumps(model.spec.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.rule.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TwinParams:
    """One animal's parameters over a population rule.

    Attributes:
        w0: ``[K]`` initial weights.
        log_rate: ``[K]`` log learning-rate multipliers ``ρ`` (0: the population's rate).
        rule: reference of the rule they apply to (:func:`rule_ref` of the population model).
    """

    w0: torch.Tensor
    log_rate: torch.Tensor
    rule: str

    def __post_init__(self) -> None:
        if self.w0.ndim != 1 or self.w0.shape != self.log_rate.shape:
            raise ValueError(f"w0 and log_rate must both be [K], got {tuple(self.w0.shape)} and {tuple(self.log_rate.shape)}")

    @classmethod
    def of(cls, model: LearnerModel, rule: str) -> "TwinParams":
        """A model's own ``w0``/``log_rate`` (detached CPU copies) over rule ``rule``."""
        return cls(model.w0.detach().cpu().clone(), model.log_rate.detach().cpu().clone(), rule)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors, keyed for a safetensors file."""
        return {"twin.w0": self.w0.detach().cpu().contiguous(), "twin.log_rate": self.log_rate.detach().cpu().contiguous()}


def stack_params(params: Sequence[TwinParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, K] w0, [B, K] log_rate)`` of twins over one rule, for a batched run of the learner.

    Raises:
        ValueError: no parameters, or parameters over different rules.
    """
    if not params:
        raise ValueError("no twin parameters to stack")
    rules = {p.rule for p in params}
    if len(rules) > 1:
        raise ValueError(f"twins over {len(rules)} different rules cannot run in one batch")
    return torch.stack([p.w0 for p in params]), torch.stack([p.log_rate for p in params])


def _learner(population: LearnerModel, params: TwinParams) -> LearnerModel:
    """The twin as a learner: ``population``'s rule module (shared, not copied) with the animal's
    ``w0``/``log_rate``; eval mode, no gradients."""
    with torch.random.fork_rng(devices=[]):  # the throwaway rule's initialisation must not move the global RNG
        m = LearnerModel(population.spec)
    m.rule = population.rule
    dev = population.w0.device
    m.w0 = torch.nn.Parameter(params.w0.detach().to(dev, population.w0.dtype).clone(), requires_grad=False)
    m.log_rate = torch.nn.Parameter(params.log_rate.detach().to(dev, population.log_rate.dtype).clone(), requires_grad=False)
    return m.eval()


@dataclass(frozen=True, eq=False)
class TwinModel:
    """One animal's twin: a population model and the animal's parameters over its rule.

    Attributes:
        population: the population model whose rule the twin runs (shared by every twin of the
            cohort; for a fully fine-tuned twin, the animal's own model).
        params: the animal's parameters; ``params.rule`` references ``population``'s rule.
        model: the twin as a :class:`LearnerModel` (``population``'s rule module, shared; the
            animal's ``w0``/``log_rate``), for code that runs one animal.
    """

    population: LearnerModel
    params: TwinParams
    model: LearnerModel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.params.w0.shape != (self.population.n_weights,):
            raise ValueError(f"twin parameters of shape {tuple(self.params.w0.shape)} do not fit a model of {self.population.n_weights} weights")
        object.__setattr__(self, "model", _learner(self.population, self.params))

    @classmethod
    def of(cls, model: LearnerModel, rule: str | None = None) -> "TwinModel":
        """``model`` as a twin of its own: its rule (reference ``rule``, else computed) and its
        own ``w0``/``log_rate``."""
        return cls(model, TwinParams.of(model, rule or rule_ref(model)))


__all__ = ["Adaptation", "TwinModel", "TwinParams", "rule_ref", "stack_params"]
