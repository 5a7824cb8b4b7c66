"""Learning rules, found by name in a registry.

Importing this package registers every built-in rule: ``static``, ``reinforce``, ``dnn``, ``dnn_delta``,
``rnn`` and the ground-truth families ``pe_asymmetric`` and ``reinforce_history``.
"""

from twin.models.rules import dnn, dnn_delta, reinforce, rnn, static  # noqa: F401  (registration side effect)
from twin.models.rules.base import LearningRule, RuleConfig, UpdateInputs
from twin.models.rules.registry import get_rule, make_rule, register, rule_names

MODEL_RULES: tuple[str, ...] = ("static", "reinforce", "dnn", "dnn_delta", "rnn")
"""The rules a lab fits as twins; the others exist mainly as ground truths."""

__all__ = ["LearningRule", "RuleConfig", "UpdateInputs", "get_rule", "make_rule", "register", "rule_names", "MODEL_RULES"]
