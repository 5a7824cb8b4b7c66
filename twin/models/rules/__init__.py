"""Learning rules, found by name in a registry, each with its own config type.

Importing this package registers every built-in rule: ``static``, ``reinforce``, ``dnn``, ``dnn_delta``,
``rnn`` and the ground-truth families ``pe_asymmetric``, ``reinforce_history``,
``reinforce_perseveration``, ``reinforce_bounded`` and ``reinforce_forgetting``.
"""

from twin.models.rules import dnn, dnn_delta, reinforce, reinforce_variants, rnn, static  # noqa: F401  (registration side effect)
from twin.models.rules.base import LearningRule, NetworkConfig, RuleConfig, UpdateInputs
from twin.models.rules.dnn_delta import DNNDeltaConfig
from twin.models.rules.registry import config_fields, get_rule, make_config, make_rule, register, rule_names
from twin.models.rules.reinforce import ReinforceConfig

MODEL_RULES: tuple[str, ...] = ("static", "reinforce", "dnn", "dnn_delta", "rnn")
"""The rules a lab fits as twins; the others exist mainly as ground truths."""

__all__ = [
    "LearningRule",
    "RuleConfig",
    "NetworkConfig",
    "DNNDeltaConfig",
    "ReinforceConfig",
    "UpdateInputs",
    "config_fields",
    "get_rule",
    "make_config",
    "make_rule",
    "register",
    "rule_names",
    "MODEL_RULES",
]
