"""Name → class registry of learning rules."""

from __future__ import annotations

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


def make_rule(name: str, n_weights: int, config: RuleConfig = RuleConfig()) -> LearningRule:
    """Instantiate a registered rule."""
    return get_rule(name)(n_weights, config)
