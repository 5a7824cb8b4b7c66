"""The training protocol (curriculum): declarative, validated, versioned; the one type of what a
rig does, session after session.

A :class:`Curriculum` holds the stimulus schedule (:class:`StimulusSchedule`: contrast phases
with their proportions, and the rule that advances an animal from one phase to the next), the
feedback policy (:class:`FeedbackPolicy`: repeat-on-error debiasing and the contrasts it applies
to, biased blocks, and the rig settings: reward volume and error timeout) and the session
length. The simulation runs it (:class:`twin.sim.task.TaskEnv`), the optimizer searches over it,
the server converts it to and from the ``TaskProtocol`` and ``RigSettings`` messages, and it
reads and writes JSON, YAML and iblrig-style task parameters. The IBL default training protocol
(``trainingChoiceWorld``) is :data:`IBL_DEFAULT`.

Every file format carries ``schema_version``; building one checks every field and names the one
that is wrong (``stimulus.phases[2][1]: contrast 1.5 outside [0, 1]``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from twin.errors import TwinError

SCHEMA_VERSION = 1

IBL_PHASES: tuple[tuple[float, ...], ...] = (
    (1.0, 0.5),
    (1.0, 0.5, 0.25),
    (1.0, 0.5, 0.25, 0.125),
    (1.0, 0.5, 0.25, 0.125, 0.0625),
    (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),
    (1.0, 0.25, 0.125, 0.0625, 0.0),
)
"""The IBL contrast phases: ``{1, .5}``, then ``.25``, ``.125``, ``.0625`` and ``0`` added in
turn, and finally ``.5`` dropped."""

REWARD_VOLUME_UL: tuple[float, float] = (0.5, 10.0)
"""Inclusive range of the reward volume a rig may give, microlitres."""


class CurriculumError(TwinError, ValueError):
    """A curriculum field is invalid.

    Attributes:
        field: dotted path of the offending field (``stimulus.advance_threshold``).
    """

    def __init__(self, field_path: str, reason: str) -> None:
        super().__init__(f"{field_path}: {reason}")
        self.field = field_path
        self.reason = reason


def _check(cond: bool, path: str, reason: str) -> None:
    if not cond:
        raise CurriculumError(path, reason)


@dataclass(frozen=True)
class StimulusSchedule:
    """Which contrasts are shown, how often, and when the animal moves on.

    Attributes:
        phases: contrast sets in order of advancement (unsigned contrasts in [0, 1]).
        proportions: relative frequency of each contrast in each phase; None = uniform.
        advance_window: trials of the current phase the advancement rule looks at.
        advance_threshold: accuracy needed on every easy contrast shown to advance.
        easy_contrasts: contrasts the advancement rule looks at.
    """

    phases: tuple[tuple[float, ...], ...] = IBL_PHASES
    proportions: tuple[tuple[float, ...], ...] | None = None
    advance_window: int = 50
    advance_threshold: float = 0.8
    easy_contrasts: tuple[float, ...] = (1.0, 0.5)

    def __post_init__(self) -> None:
        _check(len(self.phases) > 0, "stimulus.phases", "needs at least one phase")
        for i, ph in enumerate(self.phases):
            _check(len(ph) > 0, f"stimulus.phases[{i}]", "a phase needs at least one contrast")
            _check(len(set(ph)) == len(ph), f"stimulus.phases[{i}]", f"repeated contrast in {ph}")
            for j, c in enumerate(ph):
                _check(0.0 <= c <= 1.0, f"stimulus.phases[{i}][{j}]", f"contrast {c} outside [0, 1]")
        if self.proportions is not None:
            _check(len(self.proportions) == len(self.phases), "stimulus.proportions", "needs one row per phase")
            for i, (w, ph) in enumerate(zip(self.proportions, self.phases)):
                _check(len(w) == len(ph), f"stimulus.proportions[{i}]", f"needs {len(ph)} weights, got {len(w)}")
                _check(all(v >= 0 for v in w) and sum(w) > 0, f"stimulus.proportions[{i}]", "weights must be >= 0 with a positive sum")
        _check(1 <= self.advance_window <= 1000, "stimulus.advance_window", f"must be in [1, 1000], got {self.advance_window}")
        _check(0.0 < self.advance_threshold <= 1.0, "stimulus.advance_threshold", f"must be in (0, 1], got {self.advance_threshold}")
        _check(len(self.easy_contrasts) > 0, "stimulus.easy_contrasts", "needs at least one contrast")
        for j, c in enumerate(self.easy_contrasts):
            _check(0.0 <= c <= 1.0, f"stimulus.easy_contrasts[{j}]", f"contrast {c} outside [0, 1]")


@dataclass(frozen=True)
class FeedbackPolicy:
    """What follows a choice.

    Attributes:
        debias: repeat the stimulus after an error (repeat-on-error debiasing).
        debias_min_contrast: smallest contrast whose errors are repeated.
        biased_blocks: alternate P(left) blocks after ``unbiased_trials`` per session.
        block_probs: P(left) of the two block types.
        block_length: inclusive range of block lengths.
        block_mean: mean of the (truncated) exponential block length.
        unbiased_trials: 50/50 trials opening each biased session.
        reward_volume_ul: water per rewarded trial (µL), for the rig.
        error_timeout_s: timeout after an error (s), for the rig.
    """

    debias: bool = True
    debias_min_contrast: float = 0.5
    biased_blocks: bool = False
    block_probs: tuple[float, float] = (0.2, 0.8)
    block_length: tuple[int, int] = (20, 100)
    block_mean: float = 60.0
    unbiased_trials: int = 90
    reward_volume_ul: float = 3.0
    error_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.debias_min_contrast <= 1.0, "feedback.debias_min_contrast", f"must be in [0, 1], got {self.debias_min_contrast}")
        _check(len(self.block_probs) == 2 and all(0.0 <= p <= 1.0 for p in self.block_probs), "feedback.block_probs", f"needs two probabilities in [0, 1], got {self.block_probs}")
        lo, hi = self.block_length
        _check(1 <= lo <= hi, "feedback.block_length", f"must satisfy 1 <= low <= high, got {self.block_length}")
        _check(self.block_mean > 0, "feedback.block_mean", "must be > 0")
        _check(self.unbiased_trials >= 0, "feedback.unbiased_trials", "must be >= 0")
        lo_ul, hi_ul = REWARD_VOLUME_UL
        _check(lo_ul <= self.reward_volume_ul <= hi_ul, "feedback.reward_volume_ul", f"must be in [{lo_ul:g}, {hi_ul:g}] µL, got {self.reward_volume_ul}")
        _check(0.0 <= self.error_timeout_s <= 30.0, "feedback.error_timeout_s", f"must be in [0, 30] s, got {self.error_timeout_s}")


@dataclass(frozen=True)
class Curriculum:
    """A training protocol, session after session: what the simulation runs, the optimizer
    searches over, the planner sends to a rig and a file stores.

    Attributes:
        name: short identifier.
        stimulus: contrast phases, proportions and advancement.
        feedback: debiasing, blocks, reward and timeout.
        session_trials: inclusive range of trials per session.
        description: free text.
        schema_version: version of this format.
    """

    name: str = "ibl-default"
    stimulus: StimulusSchedule = field(default_factory=StimulusSchedule)
    feedback: FeedbackPolicy = field(default_factory=FeedbackPolicy)
    session_trials: tuple[int, int] = (400, 700)
    description: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check(bool(self.name) and len(self.name) <= 100, "name", "must be a non-empty string of at most 100 characters")
        lo, hi = self.session_trials
        _check(1 <= lo <= hi <= 5000, "session_trials", f"must satisfy 1 <= low <= high <= 5000, got {self.session_trials}")
        _check(self.schema_version == SCHEMA_VERSION, "schema_version", f"this build reads version {SCHEMA_VERSION}, got {self.schema_version}")

    @property
    def contrasts(self) -> tuple[float, ...]:
        """Every contrast the curriculum can show, descending."""
        return tuple(sorted({c for ph in self.stimulus.phases for c in ph}, reverse=True))

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Curriculum":
        """Build and validate from a dict (as :meth:`to_dict` writes). Unknown keys are errors."""
        if not isinstance(d, dict):
            raise CurriculumError("<root>", f"expected a mapping, got {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        _check(version == SCHEMA_VERSION, "schema_version", f"this build reads version {SCHEMA_VERSION}, got {version!r}")
        return _build(cls, d, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Curriculum":
        return cls.from_dict(_parse(text, json.loads, json.JSONDecodeError, "JSON"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Curriculum":
        return cls.from_dict(_parse(text, yaml.safe_load, yaml.YAMLError, "YAML"))

    def save(self, path: str | Path) -> Path:
        """Write as JSON or YAML (by suffix)."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in (".yaml", ".yml") else self.to_json()
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Curriculum":
        """Read a JSON or YAML curriculum file (by suffix); errors name the file and field."""
        path = Path(path)
        if not path.is_file():
            raise CurriculumError(str(path), "no such file")
        text = path.read_text()
        try:
            return cls.from_yaml(text) if path.suffix in (".yaml", ".yml") else cls.from_json(text)
        except CurriculumError as exc:
            raise CurriculumError(f"{path}: {exc.field}", exc.reason) from None

    def to_iblrig(self, phase: int = 0, n_trials: int | None = None) -> dict[str, Any]:
        """iblrig-style task parameters for one session that starts in ``phase``.

        The standard keys (``CONTRAST_SET``, ``REWARD_AMOUNT_UL``, ``ITI_ERROR``, ``NTRIALS``,
        ``REPEAT_ON_ERROR``, block settings...) describe the session; the phase schedule and the
        advancement rule, which iblrig keeps in code, travel under ``ADAPTIVE_*`` keys.
        """
        _check(0 <= phase < len(self.stimulus.phases), "phase", f"must be in [0, {len(self.stimulus.phases) - 1}], got {phase}")
        s, f = self.stimulus, self.feedback
        contrasts = list(s.phases[phase])
        weights = list(s.proportions[phase]) if s.proportions else [1.0] * len(contrasts)
        total = sum(weights)
        return {
            "CONTRAST_SET": contrasts,
            "CONTRAST_SET_PROBABILITY": [w / total for w in weights],
            "CONTRAST_SET_PROBABILITY_TYPE": "custom" if s.proportions else "uniform",
            "STIM_POSITIONS": [-35, 35],
            "PROBABILITY_LEFT": 0.5,
            "REWARD_AMOUNT_UL": f.reward_volume_ul,
            "ITI_ERROR": f.error_timeout_s,
            "FEEDBACK_ERROR_DELAY_SECS": f.error_timeout_s,
            "NTRIALS": int(n_trials if n_trials is not None else self.session_trials[1]),
            "REPEAT_ON_ERROR": f.debias,
            "REPEAT_CONTRASTS": [c for c in contrasts if c >= f.debias_min_contrast],
            "BLOCKS": f.biased_blocks,
            "BLOCK_INIT_5050": True,
            "BLOCK_PROBABILITY_SET": list(f.block_probs),
            "BLOCK_LEN_FACTOR": f.block_mean,
            "BLOCK_LEN_MIN": f.block_length[0],
            "BLOCK_LEN_MAX": f.block_length[1],
            "ADAPTIVE_TRAINING_PHASE": phase,
            "ADAPTIVE_PHASES": [list(p) for p in s.phases],
            "ADAPTIVE_WINDOW": s.advance_window,
            "ADAPTIVE_THRESHOLD": s.advance_threshold,
            "ADAPTIVE_EASY_CONTRASTS": list(s.easy_contrasts),
            "CURRICULUM": self.name,
            "CURRICULUM_SCHEMA_VERSION": self.schema_version,
        }


def _parse(text: str, load: Callable[[str], Any], error: type[Exception], fmt: str) -> Any:
    """``load(text)``, its ``error`` raised as a :class:`CurriculumError` naming the format."""
    try:
        return load(text)
    except error as exc:
        raise CurriculumError(f"<{fmt.lower()}>", f"not valid {fmt}: {exc}") from None


def _tuple(value: Any, path: str, depth: int) -> Any:
    if depth == 0:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CurriculumError(path, f"expected a number, got {value!r}")
        return value
    if not isinstance(value, (list, tuple)):
        raise CurriculumError(path, f"expected a list, got {value!r}")
    return tuple(_tuple(v, f"{path}[{i}]", depth - 1) for i, v in enumerate(value))


_NESTED_DEPTH = {"phases": 2, "proportions": 2, "easy_contrasts": 1, "block_probs": 1, "block_length": 1, "session_trials": 1}


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise CurriculumError(f"{prefix}{unknown[0]}", f"unknown field (known: {sorted(fields)})")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        path = f"{prefix}{name}"
        if name == "stimulus":
            if not isinstance(value, dict):
                raise CurriculumError(path, "expected a mapping")
            kwargs[name] = _build(StimulusSchedule, value, "stimulus.")
        elif name == "feedback":
            if not isinstance(value, dict):
                raise CurriculumError(path, "expected a mapping")
            kwargs[name] = _build(FeedbackPolicy, value, "feedback.")
        elif name in _NESTED_DEPTH:
            kwargs[name] = None if value is None and name == "proportions" else _tuple(value, path, _NESTED_DEPTH[name])
        else:
            expected = fields[name].type
            if "bool" in str(expected):
                _check(isinstance(value, bool), path, f"expected true/false, got {value!r}")
            elif "int" in str(expected):
                _check(isinstance(value, int) and not isinstance(value, bool), path, f"expected an integer, got {value!r}")
            elif "float" in str(expected):
                _check(isinstance(value, (int, float)) and not isinstance(value, bool), path, f"expected a number, got {value!r}")
            elif "str" in str(expected):
                _check(isinstance(value, str), path, f"expected a string, got {value!r}")
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except CurriculumError:
        raise
    except (TypeError, ValueError) as exc:
        raise CurriculumError(prefix.rstrip(".") or "<root>", str(exc)) from None


IBL_DEFAULT = Curriculum(
    name="ibl-default",
    description="IBL trainingChoiceWorld: contrasts added in turn, 80% on easy contrasts over 50 trials to advance, repeat-on-error debiasing, no biased blocks before criterion, 3 µL reward, 2 s error timeout",
)
"""The IBL default training protocol, the curriculum to beat."""


def phase_of_contrasts(protocol: Curriculum, contrasts: np.ndarray | list[float]) -> int:
    """The first phase of ``protocol`` whose contrast set holds every contrast in ``contrasts``
    (unsigned); the last phase when none does. Used to place an animal in a protocol from the
    contrasts of its latest trials."""
    seen = {round(float(c), 6) for c in np.asarray(contrasts, dtype=float).ravel()}
    phases = protocol.stimulus.phases
    for i, ph in enumerate(phases):
        if seen <= {round(c, 6) for c in ph}:
            return i
    return len(phases) - 1


__all__ = [
    "Curriculum",
    "CurriculumError",
    "FeedbackPolicy",
    "IBL_DEFAULT",
    "IBL_PHASES",
    "REWARD_VOLUME_UL",
    "SCHEMA_VERSION",
    "StimulusSchedule",
    "phase_of_contrasts",
]
