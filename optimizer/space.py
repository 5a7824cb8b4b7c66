"""The search space of curricula, and the constraints a lab sets on it.

A candidate curriculum is the lab's base curriculum (the IBL default unless given) changed
along a few interpretable axes, each bounded by :class:`Constraints`:

* ``advance_threshold``, ``advance_window``: how good and for how long an animal must be on the
  easy contrasts before the next contrast phase;
* ``easy_weight``: relative frequency of easy contrasts (>= 0.5) against harder ones in every phase;
* ``zero_weight``: relative frequency of zero contrast where it is shown;
* ``keep_half``: keep 0.5 in the final phase (the IBL default drops it);
* ``debias``: repeat-on-error debiasing on or off (if the lab allows switching it off);
* ``session_trials_low``: the low end of the session length range (the range keeps the base's
  width, clipped to the lab's bounds).

Reward volume, error timeout and biased blocks are kept from the base curriculum: the twins do
not model their effect, so the optimizer does not move them (biased blocks before criterion are
refused when the constraints forbid them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from twin.protocol import IBL_DEFAULT, Curriculum, CurriculumError


@dataclass(frozen=True)
class Constraints:
    """What a lab allows.

    Attributes:
        session_trials: bounds on trials per session (inclusive).
        allowed_contrasts: contrasts the rig may show.
        biased_blocks_before_criterion: allow biased blocks before the animal is trained.
        allow_no_debias: allow switching repeat-on-error debiasing off.
        advance_threshold: bounds of the advancement accuracy.
        advance_window: bounds of the advancement window (trials).
        weight_range: bounds of the relative frequency multipliers (``easy_weight``, ``zero_weight``).
    """

    session_trials: tuple[int, int] = (400, 700)
    allowed_contrasts: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)
    biased_blocks_before_criterion: bool = False
    allow_no_debias: bool = True
    advance_threshold: tuple[float, float] = (0.6, 0.95)
    advance_window: tuple[int, int] = (20, 150)
    weight_range: tuple[float, float] = (0.25, 4.0)

    def __post_init__(self) -> None:
        lo, hi = self.session_trials
        if not 1 <= lo <= hi:
            raise CurriculumError("constraints.session_trials", f"must satisfy 1 <= low <= high, got {self.session_trials}")
        if not 0 < self.advance_threshold[0] <= self.advance_threshold[1] <= 1:
            raise CurriculumError("constraints.advance_threshold", f"must be an increasing pair in (0, 1], got {self.advance_threshold}")
        if not 1 <= self.advance_window[0] <= self.advance_window[1]:
            raise CurriculumError("constraints.advance_window", f"must be an increasing pair >= 1, got {self.advance_window}")
        if not 0 < self.weight_range[0] <= 1 <= self.weight_range[1]:
            raise CurriculumError("constraints.weight_range", f"must bracket 1 with a positive low end, got {self.weight_range}")
        if not self.allowed_contrasts:
            raise CurriculumError("constraints.allowed_contrasts", "needs at least one contrast")

    def check(self, curriculum: Curriculum) -> None:
        """Raise :class:`CurriculumError` naming the first field that breaks a constraint."""
        lo, hi = curriculum.session_trials
        if lo < self.session_trials[0] or hi > self.session_trials[1]:
            raise CurriculumError("session_trials", f"{curriculum.session_trials} outside the lab's bounds {self.session_trials}")
        allowed = {round(c, 6) for c in self.allowed_contrasts}
        for i, ph in enumerate(curriculum.stimulus.phases):
            for j, c in enumerate(ph):
                if round(c, 6) not in allowed:
                    raise CurriculumError(f"stimulus.phases[{i}][{j}]", f"contrast {c} is not allowed on this rig")
        if curriculum.feedback.biased_blocks and not self.biased_blocks_before_criterion:
            raise CurriculumError("feedback.biased_blocks", "biased blocks before criterion are not allowed")
        if not curriculum.feedback.debias and not self.allow_no_debias:
            raise CurriculumError("feedback.debias", "debiasing may not be switched off")


class ParamKind(enum.Enum):
    """How one axis of a search space is drawn."""

    FLOAT = "float"
    """Uniform in ``[low, high]``."""
    LOG_FLOAT = "log_float"
    """Log-uniform in ``[low, high]``."""
    INT = "int"
    """An integer in ``[low, high]``, uniform."""
    LOG_INT = "log_int"
    """An integer in ``[low, high]``, log-uniform."""
    BOOL = "bool"
    """False or True."""
    CHOICE = "choice"
    """One of ``choices``."""


@dataclass(frozen=True)
class Param:
    """One axis of a search space (of curricula, :class:`CurriculumSpace`, or of a rule fit's
    hyperparameters, :data:`optimizer.hparams.HYPERPARAMETER_SPACE`).

    Attributes:
        name: the axis.
        kind: how it is drawn.
        low: lowest value (numeric kinds).
        high: highest value (numeric kinds).
        choices: the values of a ``CHOICE`` axis, in order.
    """

    name: str
    kind: ParamKind
    low: float = 0.0
    high: float = 1.0
    choices: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        if (self.kind is ParamKind.CHOICE) != bool(self.choices):
            raise ValueError(f"{self.name}: choices are given for a CHOICE axis and only for one")

    def values(self) -> tuple[object, ...]:
        """The values of a categorical axis (``BOOL``: False, True; ``CHOICE``: its choices)."""
        if self.kind is ParamKind.BOOL:
            return (False, True)
        if self.kind is ParamKind.CHOICE:
            return self.choices
        raise ValueError(f"{self.name} is a numeric axis ({self.kind.value}), not a categorical one")

    def contains(self, value: object) -> bool:
        """Whether ``value`` lies on this axis."""
        if self.kind in (ParamKind.BOOL, ParamKind.CHOICE):
            return value in self.values()
        return self.low <= value <= self.high  # type: ignore[operator]


@dataclass(frozen=True)
class CurriculumSpace:
    """Curricula reachable from ``base`` within ``constraints``.

    Args:
        constraints: the lab's bounds.
        base: the curriculum every candidate starts from.
    """

    constraints: Constraints = field(default_factory=Constraints)
    base: Curriculum = IBL_DEFAULT

    @property
    def params(self) -> tuple[Param, ...]:
        c = self.constraints
        width = self.base.session_trials[1] - self.base.session_trials[0]
        out = [
            Param("advance_threshold", ParamKind.FLOAT, *c.advance_threshold),
            Param("advance_window", ParamKind.INT, *c.advance_window),
            Param("easy_weight", ParamKind.LOG_FLOAT, *c.weight_range),
            Param("zero_weight", ParamKind.LOG_FLOAT, *c.weight_range),
            Param("keep_half", ParamKind.BOOL),
            Param("session_trials_low", ParamKind.INT, c.session_trials[0], max(c.session_trials[0], c.session_trials[1] - width)),
        ]
        if c.allow_no_debias:
            out.append(Param("debias", ParamKind.BOOL))
        return tuple(p for p in out if p.kind is ParamKind.BOOL or p.high > p.low)  # fixed axes are not searched

    def _base_axes(self) -> dict[str, float | int | bool]:
        s, f = self.base.stimulus, self.base.feedback
        return {
            "advance_threshold": s.advance_threshold,
            "advance_window": s.advance_window,
            "easy_weight": 1.0,
            "zero_weight": 1.0,
            "keep_half": 0.5 in s.phases[-1],
            "session_trials_low": self.base.session_trials[0],
            "debias": f.debias,
        }

    def base_values(self) -> dict[str, float | int | bool]:
        """The searched parameters' values that reproduce the base curriculum (clipped to the bounds)."""
        values = self._base_axes()
        out: dict[str, float | int | bool] = {}
        for p in self.params:
            v = values[p.name]
            if p.kind is not ParamKind.BOOL:
                v = type(v)(min(max(v, p.low), p.high))  # type: ignore[call-overload]
            out[p.name] = v
        return out

    def build(self, values: dict[str, float | int | bool], name: str = "candidate") -> Curriculum:
        """The curriculum at ``values`` (missing axes keep the base's value).

        Raises:
            CurriculumError: an unknown axis, or a result that breaks the constraints.
        """
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CurriculumError(unknown[0], f"not an axis of this search space (axes: {sorted(known)})")
        v = {**self._base_axes(), **self.base_values(), **values}
        base = self.base
        allowed = {round(c, 6) for c in self.constraints.allowed_contrasts}
        phases = [tuple(c for c in ph if round(c, 6) in allowed) for ph in base.stimulus.phases]
        phases = [ph for ph in phases if ph]
        if bool(v["keep_half"]) and phases and 0.5 not in phases[-1] and any(0.5 in ph for ph in phases):
            phases[-1] = tuple(sorted(set(phases[-1]) | {0.5}, reverse=True))
        if not bool(v["keep_half"]) and len(phases) > 1 and 0.5 in phases[-1] and len(phases[-1]) > 1:
            phases[-1] = tuple(c for c in phases[-1] if c != 0.5)
        phases = [ph for i, ph in enumerate(phases) if i == 0 or ph != phases[i - 1]]
        ew, zw = float(v["easy_weight"]), float(v["zero_weight"])
        proportions = tuple(tuple((ew if c >= 0.5 else 1.0) * (zw if c == 0.0 else 1.0) for c in ph) for ph in phases)
        uniform = all(len(set(w)) == 1 for w in proportions)
        width = base.session_trials[1] - base.session_trials[0]
        lo = int(v["session_trials_low"])
        session = (lo, min(lo + width, self.constraints.session_trials[1]))
        stimulus = replace(
            base.stimulus,
            phases=tuple(phases),
            proportions=None if uniform else proportions,
            advance_threshold=float(v["advance_threshold"]),
            advance_window=int(v["advance_window"]),
        )
        feedback = replace(base.feedback, debias=bool(v.get("debias", base.feedback.debias)))
        cur = replace(base, name=name, stimulus=stimulus, feedback=feedback, session_trials=session, description=f"{base.name} with {_describe(v)}")
        self.constraints.check(cur)
        return cur


def _describe(values: dict[str, float | int | bool]) -> str:
    parts = []
    for k, v in values.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


__all__ = ["Constraints", "CurriculumSpace", "Param", "ParamKind"]
