"""Policy features: the inputs ``x_t`` of the choice policy ``p(right) = sigmoid(w_t · x_t)``.

The stimulus enters through a saturating, continuous transform of contrast so that contrasts
never seen during a fit (0.0625 appearing in later sessions, say) still map to sensible inputs:
``g(c) = tanh(5 c) / tanh(5)`` and the signed stimulus is ``s = g(c_R) - g(c_L)``.

Tasks other than IBL's (the Akrami rat's two tones, say) use *named stimuli* instead: numeric
table columns ``stim_<name>`` that enter the policy as they are, one weight each
(``FeatureSpec(stimuli=("s_a", "s_b"))``); see :mod:`twin.data.generic`.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

import torch

_TANH5 = math.tanh(5.0)

#: table column prefix of a named stimulus: the stimulus ``s_a`` lives in column ``stim_s_a``.
STIMULUS_COLUMN_PREFIX = "stim_"
_STIMULUS_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_RESERVED_NAMES = ("bias", "prev_choice", "prev_reward_side")


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
class Mirror:
    """The policy's features and weights in the left/right mirror image of the task.

    Swapping left and right maps the features ``x' = N x`` and the weights ``w' = M w`` so that
    ``w' · x' = −w · x``: the mirrored animal chooses left exactly as often as the original one
    chooses right. Both maps permute the features (left and right contrasts swap places) and flip
    signs: ``x'[k] = x_sign[k] x[perm[k]]``, ``w'[k] = w_sign[k] w[perm[k]]``. A signed stimulus
    flips and its weight stays; the bias stays 1 and its weight flips; the previous-choice and
    previous-rewarded-side regressors flip and their weights stay. ``perm`` is an involution, so
    each map is its own inverse.

    Attributes:
        perm: feature permutation.
        x_sign: sign of each mirrored feature (±1).
        w_sign: sign of each mirrored weight (±1); ``x_sign[k] · w_sign[k] = −1``.
    """

    perm: tuple[int, ...]
    x_sign: tuple[float, ...]
    w_sign: tuple[float, ...]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` mirrored features."""
        return x[..., list(self.perm)] * x.new_tensor(self.x_sign)

    def weights(self, w: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` mirrored weights (or weight updates)."""
        return w[..., list(self.perm)] * w.new_tensor(self.w_sign)


@dataclass(frozen=True)
class FeatureSpec:
    """Which regressors the policy uses.

    Attributes:
        stimulus: signed stimulus (one weight) or separate left/right weights.
        bias: include a constant 1 (choice bias).
        history: include the previous choice (±1) and the previous rewarded side
            (previous choice × previous reward, ±1 or 0); both are 0 on a session's first trial.
        stimuli: named stimulus inputs used instead of the contrast coding (empty: IBL
            contrasts). Feature ``name`` is the table column ``stim_<name>``, taken as it is (no
            transform), one weight each; ``stimulus`` must then stay at its default.
    """

    stimulus: StimulusCoding = StimulusCoding.SIGNED
    bias: bool = True
    history: bool = False
    stimuli: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.stimuli, tuple):
            raise TypeError(f"stimuli must be a tuple of names, got {type(self.stimuli).__name__}")
        bad = [n for n in self.stimuli if not isinstance(n, str) or not _STIMULUS_NAME_RE.fullmatch(n)]
        if bad:
            raise ValueError(f"stimulus names must be non-empty [A-Za-z0-9_] strings, got {bad}")
        if len(set(self.stimuli)) != len(self.stimuli):
            raise ValueError(f"stimulus names repeat: {list(self.stimuli)}")
        clash = [n for n in self.stimuli if n in _RESERVED_NAMES]
        if clash:
            raise ValueError(f"stimulus names {clash} clash with the features {list(_RESERVED_NAMES)}")
        if self.stimuli and self.stimulus is not StimulusCoding.SIGNED:
            raise ValueError("the contrast coding does not apply to named stimuli; leave `stimulus` at its default")

    @property
    def stimulus_columns(self) -> tuple[str, ...]:
        """Table columns of the named stimuli (``stim_<name>``), empty for contrasts."""
        return tuple(STIMULUS_COLUMN_PREFIX + n for n in self.stimuli)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in column order."""
        names: list[str]
        if self.stimuli:
            names = list(self.stimuli)
        elif self.stimulus is StimulusCoding.SIGNED:
            names = ["stimulus"]
        else:
            names = ["contrast_left", "contrast_right"]
        if self.bias:
            names.append("bias")
        if self.history:
            names += ["prev_choice", "prev_reward_side"]
        return tuple(names)

    @property
    def n_features(self) -> int:
        """Number of policy weights ``K``."""
        return len(self.names)

    def mirror(self) -> Mirror:
        """The left/right mirror of these features (see :class:`Mirror`).

        Raises:
            ValueError: for named stimuli, which have no known left/right mirror.
        """
        if self.stimuli:
            raise ValueError(f"named stimuli {list(self.stimuli)} have no known left/right mirror")
        perm: list[int] = []
        x_sign: list[float] = []
        if self.stimulus is StimulusCoding.SIGNED:
            perm, x_sign = [0], [-1.0]
        else:
            perm, x_sign = [1, 0], [1.0, 1.0]  # left and right contrasts swap places
        k = len(perm)
        if self.bias:
            perm, x_sign = perm + [k], x_sign + [1.0]
        if self.history:
            n = len(perm)
            perm, x_sign = perm + [n, n + 1], x_sign + [-1.0, -1.0]
        return Mirror(perm=tuple(perm), x_sign=tuple(x_sign), w_sign=tuple(-v for v in x_sign))

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``stimuli`` only when there are named stimuli, so older forms stay
        byte-identical)."""
        d: dict[str, object] = {"stimulus": self.stimulus.value, "bias": self.bias, "history": self.history}
        if self.stimuli:
            d["stimuli"] = list(self.stimuli)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "FeatureSpec":
        """Inverse of :meth:`to_dict`."""
        stimuli = tuple(str(n) for n in d.get("stimuli", ()))  # type: ignore[union-attr]
        return cls(
            stimulus=StimulusCoding(d["stimulus"]), bias=bool(d["bias"]), history=bool(d["history"]), stimuli=stimuli
        )

    def compute(
        self,
        contrast_left: torch.Tensor,
        contrast_right: torch.Tensor,
        prev_choice: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
        stimuli: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Build the feature tensor.

        Args:
            contrast_left: ``[...]`` contrast on the left, 0 when the stimulus is on the right
                (unused with named stimuli, but it sets the shape).
            contrast_right: ``[...]`` contrast on the right.
            prev_choice: ``[...]`` previous choice in {-1, 0, +1} (0 = none); needed if ``history``.
            prev_reward: ``[...]`` previous reward in {0, 1}; needed if ``history``.
            stimuli: ``[..., S]`` values of the named stimuli in the order of :attr:`stimuli`;
                needed if there are named stimuli.

        Returns:
            ``[..., K]`` features in the order of :attr:`names`.
        """
        if self.stimuli:
            if stimuli is None or stimuli.shape != (*contrast_left.shape, len(self.stimuli)):
                got = None if stimuli is None else tuple(stimuli.shape)
                raise ValueError(
                    f"features use the named stimuli {list(self.stimuli)}: need `stimuli` of shape "
                    f"{(*contrast_left.shape, len(self.stimuli))}, got {got}"
                )
            cols = list(stimuli.unbind(-1))
        else:
            gl, gr = contrast_transform(contrast_left), contrast_transform(contrast_right)
            cols = [gr - gl] if self.stimulus is StimulusCoding.SIGNED else [gl, gr]
        if self.bias:
            cols.append(torch.ones_like(cols[0]))
        if self.history:
            if prev_choice is None or prev_reward is None:
                raise ValueError("history features need prev_choice and prev_reward")
            cols += [prev_choice, prev_choice * prev_reward]
        return torch.stack(cols, dim=-1)
