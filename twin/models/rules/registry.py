"""Name → class registry of learning rules, and each rule's config type."""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, TypeVar

from twin.errors import UnknownRuleError
from twin.models.rules.base import LearningRule, RuleConfig

_RULES: dict[str, type[LearningRule]] = {}
R = TypeVar("R", bound=type[LearningRule])


def register(name: str) -> Callable[[R], R]:
    """Class decorator: make a rule available under ``name``."""

    def deco(cls: R) -> R:
        if name in _RULES and _RULES[name] is not cls:
            raise ValueError(f"rule name {name!r} is already registered to {_RULES[name].__name__}")
        cls.name = name
        _RULES[name] = cls
        return cls

    return deco


def rule_names() -> tuple[str, ...]:
    """Registered names, sorted."""
    return tuple(sorted(_RULES))


def get_rule(name: str) -> type[LearningRule]:
    """The class registered under ``name``.

    Raises:
        UnknownRuleError: naming the known rules.
    """
    try:
        return _RULES[name]
    except KeyError:
        raise UnknownRuleError(f"unknown learning rule {name!r}; known rules: {', '.join(rule_names())}") from None


def config_fields() -> frozenset[str]:
    """Every option some registered rule's config has (``hidden_size``, ``alpha_init``, ...)."""
    return frozenset(f.name for cls in _RULES.values() for f in fields(cls.config_type))


def make_config(name: str, **options: object) -> RuleConfig:
    """The config of rule ``name`` from structural options, each taken when the rule uses it.

    One set of options (command-line flags, a hyperparameter search, a stored spec) serves every
    rule: an option of another rule's config (``hidden_size`` for ``reinforce``, say) is ignored.

    Raises:
        UnknownRuleError: ``name`` is not registered.
        TypeError: an option no registered rule's config has.
        ValueError: a value the rule's config rejects.
    """
    config_type = get_rule(name).config_type
    unknown = sorted(set(options) - config_fields())
    if unknown:
        raise TypeError(f"unknown rule option(s) {unknown}; known: {sorted(config_fields())}")
    own = {f.name for f in fields(config_type)}
    return config_type(**{k: v for k, v in options.items() if k in own})


def make_rule(name: str, n_weights: int, config: RuleConfig | None = None) -> LearningRule:
    """Instantiate a registered rule (``config`` of its ``config_type``; None: the defaults)."""
    return get_rule(name)(n_weights, config)
