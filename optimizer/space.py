"""The search space of curricula, and the constraints a lab sets on it.

A candidate curriculum is the lab's base curriculum (the IBL default unless given) changed
along a few interpretable axes, each bounded by :class:`Constraints`:

* ``advance_threshold``, ``advance_window``: how good, over how many trials of each contrast and
  side, an animal must be to leave a phase with a performance rule (one value for every such
  rule of the base);
* ``advance_trials``: trials after which a phase with a trial-count rule ends (one value for all);
* ``easy_weight``: relative frequency of easy contrasts (>= 0.5) against harder ones in every phase
  (a multiplier of the base's proportions);
* ``zero_weight``: relative frequency of zero contrast where it is shown (likewise);
* ``keep_half``: keep 0.5 in the final phase (the IBL default drops it);
* ``debias``: debiasing on or off (if the lab allows switching it off);
* ``session_trials_low``: the low end of the session length range (the range keeps the base's
  width, clipped to the lab's bounds).

The space is cut to a rig profile (:class:`twin.protocol.RigProfile`): on stock iblrig
trainingChoiceWorld (:data:`twin.protocol.IBLRIG_TRAINING`), whose schedule is fixed in its code,
only ``debias`` and ``session_trials_low`` are searched; every candidate is checked against the
profile. Reward volume, error timeout and biased blocks are kept from the base curriculum: the
twins do not model their effect, so the optimizer does not move them (biased blocks before
criterion are refused when the constraints forbid them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from twin.protocol import CUSTOM_TASK, IBL_DEFAULT, AdvanceKind, AdvanceRule, Curriculum, CurriculumError, RigProfile


@dataclass(frozen=True)
class Constraints:
    """What a lab allows.

    Attributes:
        session_trials: bounds on trials per session (inclusive).
        allowed_contrasts: contrasts the rig may show.
        biased_blocks_before_criterion: allow biased blocks before the animal is trained.
        allow_no_debias: allow switching repeat-on-error debiasing off.
        advance_threshold: bounds of the advancement accuracy.
        advance_window: bounds of the advancement window (trials of each contrast and side).
        advance_trials: bounds of a trial-count rule's trials.
        weight_range: bounds of the relative frequency multipliers (``easy_weight``, ``zero_weight``).
    """

    session_trials: tuple[int, int] = (400, 700)
    allowed_contrasts: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)
    biased_blocks_before_criterion: bool = False
    allow_no_debias: bool = True
    advance_threshold: tuple[float, float] = (0.6, 0.95)
    advance_window: tuple[int, int] = (20, 150)
    advance_trials: tuple[int, int] = (50, 400)
    weight_range: tuple[float, float] = (0.25, 4.0)

    def __post_init__(self) -> None:
        lo, hi = self.session_trials
        if not 1 <= lo <= hi:
            raise CurriculumError("constraints.session_trials", f"must satisfy 1 <= low <= high, got {self.session_trials}")
        if not 0 <= self.advance_threshold[0] <= self.advance_threshold[1] < 1:
            raise CurriculumError("constraints.advance_threshold", f"must be an increasing pair in [0, 1), got {self.advance_threshold}")
        if not 1 <= self.advance_window[0] <= self.advance_window[1] <= 1000:
            raise CurriculumError("constraints.advance_window", f"must be an increasing pair in [1, 1000], got {self.advance_window}")
        if not 1 <= self.advance_trials[0] <= self.advance_trials[1]:
            raise CurriculumError("constraints.advance_trials", f"must be an increasing pair >= 1, got {self.advance_trials}")
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
    """Curricula reachable from ``base`` within ``constraints``, runnable on ``profile``.

    Args:
        constraints: the lab's bounds.
        base: the curriculum every candidate starts from.
        profile: the rig that runs the candidates (default: a custom task, which runs any).

    Raises:
        CurriculumError: ``base`` is not runnable on ``profile`` (naming the field).
    """

    constraints: Constraints = field(default_factory=Constraints)
    base: Curriculum = IBL_DEFAULT
    profile: RigProfile = CUSTOM_TASK

    def __post_init__(self) -> None:
        bad = self.profile.violations(self.base)
        if bad:
            raise CurriculumError(f"base.{bad[0].field}", f"the base curriculum {self.base.name!r} cannot run on rig profile {self.profile.name!r}: {bad[0].reason}")

    def _rules(self, kind: AdvanceKind) -> list[AdvanceRule]:
        return [r for r in self.base.stimulus.advance if r.kind is kind]

    @property
    def params(self) -> tuple[Param, ...]:
        c = self.constraints
        width = self.base.session_trials[1] - self.base.session_trials[0]
        out: list[Param] = []
        if not self.profile.fixed_schedule:
            if self._rules(AdvanceKind.PERFORMANCE):
                out += [Param("advance_threshold", ParamKind.FLOAT, *c.advance_threshold), Param("advance_window", ParamKind.INT, *c.advance_window)]
            if self._rules(AdvanceKind.TRIAL_COUNT):
                out.append(Param("advance_trials", ParamKind.INT, *c.advance_trials))
            out += [Param("easy_weight", ParamKind.LOG_FLOAT, *c.weight_range), Param("zero_weight", ParamKind.LOG_FLOAT, *c.weight_range), Param("keep_half", ParamKind.BOOL)]
        out.append(Param("session_trials_low", ParamKind.INT, c.session_trials[0], max(c.session_trials[0], c.session_trials[1] - width)))
        if c.allow_no_debias and self.profile.debiasing:  # a task without debiasing (biasedChoiceWorld) has nothing to switch
            out.append(Param("debias", ParamKind.BOOL))
        return tuple(p for p in out if p.kind is ParamKind.BOOL or p.high > p.low)  # fixed axes are not searched

    def _base_axes(self) -> dict[str, float | int | bool]:
        s, f = self.base.stimulus, self.base.feedback
        perf, count = self._rules(AdvanceKind.PERFORMANCE), self._rules(AdvanceKind.TRIAL_COUNT)
        return {
            "advance_threshold": perf[0].threshold if perf else AdvanceRule().threshold,
            "advance_window": perf[0].window if perf else AdvanceRule().window,
            "advance_trials": count[0].trials if count else AdvanceRule().trials,
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
            CurriculumError: an unknown axis, or a result that breaks the constraints or the profile.
        """
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CurriculumError(unknown[0], f"not an axis of this search space (axes: {sorted(known)})")
        v = {**self._base_axes(), **self.base_values(), **values}
        base = self.base
        phases = _base_phases(base, {round(c, 6) for c in self.constraints.allowed_contrasts})
        if not self.profile.fixed_schedule:
            phases = _with_half(phases, bool(v["keep_half"]))
        phases = _merged(phases)
        ew, zw = float(v["easy_weight"]), float(v["zero_weight"])
        rules = []
        for ph in phases[:-1]:
            r = ph.rule
            assert r is not None
            if self.profile.fixed_schedule:
                rules.append(r)
            elif r.kind is AdvanceKind.PERFORMANCE:
                rules.append(replace(r, threshold=float(v["advance_threshold"]), window=int(v["advance_window"])))
            else:
                rules.append(replace(r, trials=int(v["advance_trials"])))
        proportions = tuple(tuple(w * (ew if c >= 0.5 else 1.0) * (zw if c == 0.0 else 1.0) for c, w in zip(ph.contrasts, ph.weights)) for ph in phases)
        uniform = all(len(set(w)) == 1 for w in proportions)
        debias_phases = tuple(i for i, ph in enumerate(phases) if ph.debias)
        if base.feedback.debias_phases is None and len(debias_phases) == len(phases):
            debias_phases = None  # type: ignore[assignment]
        width = base.session_trials[1] - base.session_trials[0]
        lo = int(v["session_trials_low"])
        session = (lo, min(lo + width, self.constraints.session_trials[1]))
        stimulus = replace(base.stimulus, phases=tuple(ph.contrasts for ph in phases), proportions=None if uniform else proportions, advance=tuple(rules))
        feedback = replace(base.feedback, debias=bool(v.get("debias", base.feedback.debias)), debias_phases=debias_phases)
        cur = replace(base, name=name, stimulus=stimulus, feedback=feedback, session_trials=session, description=f"{base.name} with {_describe(v)}")
        self.constraints.check(cur)
        self.profile.check(cur)
        return cur


@dataclass(frozen=True)
class _Phase:
    """One phase of a candidate while it is built: its contrasts and their weights, the rule
    that leaves it (None for the last) and whether it has debiasing."""

    contrasts: tuple[float, ...]
    weights: tuple[float, ...]
    rule: AdvanceRule | None
    debias: bool


def _base_phases(base: Curriculum, allowed: set[float]) -> list[_Phase]:
    """The base's phases cut to the allowed contrasts (emptied phases dropped; a performance rule
    left with no contrast becomes a trial-count rule of its ``trials``)."""
    s, f = base.stimulus, base.feedback
    out = []
    for i, ph in enumerate(s.phases):
        keep = [(c, w) for c, w in zip(ph, s.weights(i)) if round(c, 6) in allowed]
        if not keep:
            continue
        rule = s.advance[i] if i < len(s.advance) else None
        if rule is not None and rule.kind is AdvanceKind.PERFORMANCE:
            shown = {round(c, 6) for c, _ in keep}
            left = tuple(c for c in rule.contrasts if round(c, 6) in shown)
            rule = replace(rule, contrasts=left) if left else AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=rule.trials)
        out.append(_Phase(tuple(c for c, _ in keep), tuple(w for _, w in keep), rule, f.debias_phases is None or i in f.debias_phases))
    out[-1] = replace(out[-1], rule=None)
    return out


def _with_half(phases: list[_Phase], keep_half: bool) -> list[_Phase]:
    """Put 0.5 back into the last phase (weight 1) or take it out."""
    last = phases[-1]
    if keep_half and 0.5 not in last.contrasts and any(0.5 in ph.contrasts for ph in phases):
        pairs = sorted(zip(last.contrasts + (0.5,), last.weights + (1.0,)), reverse=True)
        phases[-1] = replace(last, contrasts=tuple(c for c, _ in pairs), weights=tuple(w for _, w in pairs))
    if not keep_half and len(phases) > 1 and 0.5 in last.contrasts and len(last.contrasts) > 1:
        keep = [(c, w) for c, w in zip(last.contrasts, last.weights) if c != 0.5]
        phases[-1] = replace(last, contrasts=tuple(c for c, _ in keep), weights=tuple(w for _, w in keep))
    return phases


def _merged(phases: list[_Phase]) -> list[_Phase]:
    """Consecutive phases that show the same contrasts, weights and debiasing merged into one
    (with the later one's rule)."""
    out = [phases[0]]
    for ph in phases[1:]:
        prev = out[-1]
        if (ph.contrasts, ph.weights, ph.debias) == (prev.contrasts, prev.weights, prev.debias):
            out[-1] = replace(prev, rule=ph.rule)
        else:
            out.append(ph)
    return out


def _describe(values: dict[str, float | int | bool]) -> str:
    parts = []
    for k, v in values.items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


_AXIS_WORDS = {
    "advance_threshold": "advancement accuracy",
    "advance_window": "advancement window (trials per contrast and side)",
    "advance_trials": "trials of a trial-count phase",
    "easy_weight": "frequency of easy contrasts (x base)",
    "zero_weight": "frequency of zero contrast (x base)",
    "session_trials_low": "shortest session (trials)",
}


def describe_change(axis: str, base: float | int | bool, proposed: float | int | bool) -> str:
    """A change of one axis of the space against the base, in words."""
    if axis == "debias":
        return f"repeat-on-error debiasing switched {'on' if proposed else 'off'}"
    if axis == "keep_half":
        return f"{'keep' if proposed else 'drop'} contrast 0.5 in the final phase"
    fmt = (lambda v: f"{v:.3g}") if isinstance(proposed, float) or isinstance(base, float) else str
    return f"{_AXIS_WORDS.get(axis, axis)} {fmt(base)} → {fmt(proposed)}"


__all__ = ["Constraints", "CurriculumSpace", "Param", "ParamKind", "describe_change"]
