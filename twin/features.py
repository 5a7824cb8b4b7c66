"""Policy features: the inputs ``x_t`` of the choice policy ``p(right) = sigmoid(w_t · x_t)``.

The stimulus enters through a saturating, continuous transform of contrast so that contrasts
never seen during a fit (0.0625 appearing in later sessions, say) still map to sensible inputs:
``g(c) = tanh(5 c) / tanh(5)`` and the signed stimulus is ``s = g(c_R) - g(c_L)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

_TANH5 = math.tanh(5.0)


def contrast_transform(contrast: torch.Tensor) -> torch.Tensor:
    """Saturating contrast transform ``tanh(5 c) / tanh(5)``, 0 at 0 and 1 at full contrast."""
    return torch.tanh(5.0 * contrast) / _TANH5


class StimulusCoding(enum.Enum):
    """How contrast enters the policy."""

    SIGNED = "signed"
    """One weight on ``s = g(c_R) - g(c_L)``."""
    SPLIT = "split"
    """Separate weights on ``g(c_L)`` and ``g(c_R)``."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which regressors the policy uses.

    Attributes:
        stimulus: signed stimulus (one weight) or separate left/right weights.
        bias: include a constant 1 (choice bias).
        history: include the previous choice (±1) and the previous rewarded side
            (previous choice × previous reward, ±1 or 0); both are 0 on a session's first trial.
    """

    stimulus: StimulusCoding = StimulusCoding.SIGNED
    bias: bool = True
    history: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in column order."""
        names: list[str] = (
            ["stimulus"] if self.stimulus is StimulusCoding.SIGNED else ["contrast_left", "contrast_right"]
        )
        if self.bias:
            names.append("bias")
        if self.history:
            names += ["prev_choice", "prev_reward_side"]
        return tuple(names)

    @property
    def n_features(self) -> int:
        """Number of policy weights ``K``."""
        return len(self.names)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"stimulus": self.stimulus.value, "bias": self.bias, "history": self.history}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "FeatureSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(stimulus=StimulusCoding(d["stimulus"]), bias=bool(d["bias"]), history=bool(d["history"]))

    def compute(
        self,
        contrast_left: torch.Tensor,
        contrast_right: torch.Tensor,
        prev_choice: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Build the feature tensor.

        Args:
            contrast_left: ``[...]`` contrast on the left, 0 when the stimulus is on the right.
            contrast_right: ``[...]`` contrast on the right.
            prev_choice: ``[...]`` previous choice in {-1, 0, +1} (0 = none); needed if ``history``.
            prev_reward: ``[...]`` previous reward in {0, 1}; needed if ``history``.

        Returns:
            ``[..., K]`` features in the order of :attr:`names`.
        """
        gl, gr = contrast_transform(contrast_left), contrast_transform(contrast_right)
        cols = [gr - gl] if self.stimulus is StimulusCoding.SIGNED else [gl, gr]
        if self.bias:
            cols.append(torch.ones_like(gl))
        if self.history:
            if prev_choice is None or prev_reward is None:
                raise ValueError("history features need prev_choice and prev_reward")
            cols += [prev_choice, prev_choice * prev_reward]
        return torch.stack(cols, dim=-1)
