"""The training protocol (curriculum): declarative, validated, versioned; the one type of what a
rig does, session after session.

A :class:`Curriculum` holds the stimulus schedule (:class:`StimulusSchedule`: contrast phases
with their proportions, one :class:`AdvanceRule` per phase saying when the animal moves on, and
the rewarded side of zero-contrast trials), the feedback policy (:class:`FeedbackPolicy`:
debiasing, the contrasts and phases it applies to and how it picks the side, biased blocks, and
the rig settings: reward volume and error timeout) and the session length. The simulation runs
it (:class:`twin.sim.task.TaskEnv`), the optimizer searches over it, the server converts it to
and from the ``TaskProtocol`` and ``RigSettings`` messages, and it reads and writes JSON and
YAML. :data:`IBL_DEFAULT` is iblrig v8's ``_iblrig_tasks_trainingChoiceWorld``, rule for rule.

A :class:`RigProfile` says what a rig can execute (:data:`IBLRIG_TRAINING`: stock iblrig v8
trainingChoiceWorld, whose phases, contrasts, proportions, advancement and debiasing are fixed in
its code; :data:`CUSTOM_TASK`: a custom task that runs any curriculum);
:meth:`RigProfile.check` names the first field a rig cannot run. Exports are per profile:
:meth:`Curriculum.to_iblrig` writes what iblrig v8's task-parameter loader reads and refuses a
curriculum stock iblrig cannot run; :meth:`Curriculum.to_custom_task` writes any curriculum,
labelled as needing a custom task.

Every file format carries ``schema_version`` (now 2; version-1 files, whose single
advancement rule covered every phase, are still read, see :meth:`Curriculum.from_dict`);
building one checks every field and names the one that is wrong
(``stimulus.phases[2][1]: contrast 1.5 outside [0, 1]``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from twin.errors import TwinError

SCHEMA_VERSION = 2
"""Version of the curriculum file format this build writes."""

READABLE_SCHEMA_VERSIONS = (1, 2)
"""Versions this build reads (version 1 is converted, :meth:`Curriculum.from_dict`)."""

IBL_PHASES: tuple[tuple[float, ...], ...] = (
    (1.0, 0.5),
    (1.0, 0.5, 0.25),
    (1.0, 0.5, 0.25, 0.125),
    (1.0, 0.5, 0.25, 0.125, 0.0625),
    (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),
    (1.0, 0.25, 0.125, 0.0625, 0.0),
)
"""iblrig v8's training phases 0-5 (``iblrig/choiceworld.py``, ``training_contrasts_probabilities``):
``{1, .5}``, then ``.25``, ``.125``, ``.0625`` and ``0`` added in turn, and finally ``.5`` dropped."""

IBL_PROPORTIONS: tuple[tuple[float, ...], ...] = tuple(tuple(0.5 if c == 0.0 else 1.0 for c in ph) for ph in IBL_PHASES)
"""Relative frequency of each unsigned contrast of :data:`IBL_PHASES`. iblrig draws a *signed*
contrast uniformly from ``CONTRASTS = 1 / [-1, -2, -4, -8, -16, inf, 16, 8, 4, 2, 1]`` restricted to
the phase (``iblrig/choiceworld.py``, ``training_contrasts_probabilities``): every non-zero
contrast has two entries (left, right), zero has one, so zero is shown half as often."""

REWARD_VOLUME_UL: tuple[float, float] = (0.5, 10.0)
"""Inclusive range of the reward volume a rig may give, microlitres."""


class CurriculumError(TwinError, ValueError):
    """A curriculum field is invalid.

    Attributes:
        field: dotted path of the offending field (``stimulus.advance[1].threshold``).
    """

    def __init__(self, field_path: str, reason: str) -> None:
        super().__init__(f"{field_path}: {reason}")
        self.field = field_path
        self.reason = reason


def _check(cond: bool, path: str, reason: str) -> None:
    if not cond:
        raise CurriculumError(path, reason)


class AdvanceKind(str, enum.Enum):
    """How an :class:`AdvanceRule` decides that an animal leaves its phase."""

    PERFORMANCE = "performance"
    """On the animal's recent accuracy on a set of contrasts, each side separately."""
    TRIAL_COUNT = "trial_count"
    """After a number of trials in the phase, whatever the animal does."""


class ZeroContrastSide(str, enum.Enum):
    """Which side is rewarded on a zero-contrast trial."""

    RANDOM = "random"
    """Drawn like any other trial's side."""
    LEFT = "left"
    """Always left: iblrig v8 trainingChoiceWorld puts every zero-contrast trial at the first
    stimulus position, ``STIM_POSITIONS[int(np.sign(0) == 1)] = -35`` (left;
    ``iblrig/base_choice_world.py``, ``TrainingChoiceWorldSession.next_trial``)."""


class DebiasSide(str, enum.Enum):
    """The side of a debiasing trial (its contrast is always the erroneous trial's)."""

    REPEAT = "repeat"
    """The erroneous trial's side again (iblrig v6's repeat-on-error)."""
    AGAINST_BIAS = "against_bias"
    """iblrig v8 (``iblrig/base_choice_world.py``, ``TrainingChoiceWorldSession.next_trial``):
    the stimulus is on the right with probability ``Φ((f_left − 0.5) / 0.5)``, ``f_left`` the
    fraction of left choices among the session's trials so far (iblrig's comment says the last
    10 responses; its indexing takes them all), i.e. mostly on the side the animal neglects."""


@dataclass(frozen=True)
class AdvanceRule:
    """When an animal leaves its phase for the next one.

    The rule is checked at the start of every trial, before its stimulus is drawn, on the trials
    of the current session only (iblrig v8 ``TrainingChoiceWorldSession.check_training_phase``,
    called from ``next_trial``; its trials table and phase trial counters are per session, and a
    session starts in the phase the previous one ended in, ``iblrig/choiceworld.py``,
    ``get_subject_training_info``). When it passes, the trial is drawn in the next phase.

    * ``PERFORMANCE``: for every contrast ``c`` in ``contrasts`` and each side,
      ``(correct trials among the session's last window trials at c on that side) / window >
      threshold`` (strictly; fewer than ``window`` such trials count as errors: iblrig divides
      the correct among the last 50 by 50, ``compute_performance``).
    * ``TRIAL_COUNT``: the trial is the ``trials``-th of the session to start in this phase
      (iblrig increments the phase's counter and then checks ``>= 200``).

    Attributes:
        kind: which of the two.
        contrasts: unsigned contrasts a ``PERFORMANCE`` rule looks at (both sides of each).
        window: trials per signed contrast a ``PERFORMANCE`` rule looks at.
        threshold: fraction of the window that must be correct, strictly exceeded, in [0, 1).
        trials: trials of the session in the phase after which a ``TRIAL_COUNT`` rule advances.
    """

    kind: AdvanceKind = AdvanceKind.PERFORMANCE
    contrasts: tuple[float, ...] = (1.0, 0.5)
    window: int = 50
    threshold: float = 0.8
    trials: int = 200

    def check(self, path: str) -> None:
        """Raise :class:`CurriculumError` under ``path`` (``stimulus.advance[i]``) if invalid."""
        _check(isinstance(self.kind, AdvanceKind), f"{path}.kind", f"must be one of {[k.value for k in AdvanceKind]}, got {self.kind!r}")
        _check(1 <= self.window <= 1000, f"{path}.window", f"must be in [1, 1000], got {self.window}")
        _check(0.0 <= self.threshold < 1.0, f"{path}.threshold", f"must be in [0, 1) (advancing needs correct / window > threshold), got {self.threshold}")
        _check(1 <= self.trials <= 100_000, f"{path}.trials", f"must be in [1, 100000], got {self.trials}")
        if self.kind is AdvanceKind.PERFORMANCE:
            _check(len(self.contrasts) > 0, f"{path}.contrasts", "a performance rule needs at least one contrast")
        for j, c in enumerate(self.contrasts):
            _check(0.0 <= c <= 1.0, f"{path}.contrasts[{j}]", f"contrast {c} outside [0, 1]")


IBL_ADVANCE: tuple[AdvanceRule, ...] = (
    AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(1.0, 0.5), window=50, threshold=0.8),
    AdvanceRule(AdvanceKind.PERFORMANCE, contrasts=(0.25,), window=50, threshold=0.8),
    AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=200),
    AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=200),
    AdvanceRule(AdvanceKind.TRIAL_COUNT, trials=200),
)
"""iblrig v8's advancement (``iblrig/base_choice_world.py``,
``TrainingChoiceWorldSession.check_training_phase``): phase 0 → 1 when each of -1, -.5, .5, 1
has ``last_50_perf > 0.8``; 1 → 2 when -.25 and .25 do; 2 → 3 → 4 → 5 once the phase's trial
counter reaches 200; phase 5 is the last."""

IBL_DEBIAS_PHASES: tuple[int, ...] = (0, 1, 2, 3, 4)
"""Phases with debiasing in iblrig v8 (``if self.task_params.DEBIAS ... and self.training_phase < 5``)."""


@dataclass(frozen=True)
class StimulusSchedule:
    """Which contrasts are shown, how often, and when the animal moves on. The defaults are
    iblrig v8 trainingChoiceWorld's.

    Attributes:
        phases: contrast sets in order of advancement (unsigned contrasts in [0, 1]).
        proportions: relative frequency of each contrast in each phase; None = uniform.
        advance: one rule per phase but the last (``len(phases) - 1``): when the animal leaves it.
        zero_contrast_side: the rewarded side of zero-contrast trials.
    """

    phases: tuple[tuple[float, ...], ...] = IBL_PHASES
    proportions: tuple[tuple[float, ...], ...] | None = IBL_PROPORTIONS
    advance: tuple[AdvanceRule, ...] = IBL_ADVANCE
    zero_contrast_side: ZeroContrastSide = ZeroContrastSide.LEFT

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
        n = len(self.phases) - 1
        _check(len(self.advance) == n, "stimulus.advance", f"needs one rule per phase but the last ({n}), got {len(self.advance)}")
        for i, rule in enumerate(self.advance):
            _check(isinstance(rule, AdvanceRule), f"stimulus.advance[{i}]", f"expected an AdvanceRule, got {rule!r}")
            rule.check(f"stimulus.advance[{i}]")
            if rule.kind is AdvanceKind.PERFORMANCE:
                shown = {round(c, 6) for c in self.phases[i]}
                for j, c in enumerate(rule.contrasts):
                    _check(round(c, 6) in shown, f"stimulus.advance[{i}].contrasts[{j}]", f"contrast {c} is not shown in phase {i} {self.phases[i]}: the rule could never pass")
        _check(isinstance(self.zero_contrast_side, ZeroContrastSide), "stimulus.zero_contrast_side", f"must be one of {[k.value for k in ZeroContrastSide]}")

    @classmethod
    def single(cls, contrasts: tuple[float, ...], proportions: tuple[float, ...] | None = None, zero_contrast_side: ZeroContrastSide = ZeroContrastSide.RANDOM) -> "StimulusSchedule":
        """A schedule of one phase (no advancement): ``contrasts`` in ``proportions`` (None = uniform)."""
        return cls(phases=(tuple(contrasts),), proportions=None if proportions is None else (tuple(proportions),), advance=(), zero_contrast_side=zero_contrast_side)

    def weights(self, phase: int) -> tuple[float, ...]:
        """Relative frequency of each contrast of ``phases[phase]`` (ones when uniform)."""
        return self.proportions[phase] if self.proportions is not None else (1.0,) * len(self.phases[phase])


@dataclass(frozen=True)
class FeedbackPolicy:
    """What follows a choice. The defaults are iblrig v8 trainingChoiceWorld's, except that the
    debiasing phases default to every phase (:data:`IBL_DEFAULT` names iblrig's 0-4).

    Attributes:
        debias: debiasing on (iblrig's ``DEBIAS``): after an error at a contrast
            ``>= debias_min_contrast`` in a phase of ``debias_phases``, the next trial shows the
            same contrast, on the side ``debias_side`` picks.
        debias_min_contrast: smallest contrast whose errors are followed by a debiasing trial.
        debias_phases: phases in which debiasing applies; None = every phase.
        debias_side: the side of a debiasing trial.
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
    debias_phases: tuple[int, ...] | None = None
    debias_side: DebiasSide = DebiasSide.AGAINST_BIAS
    biased_blocks: bool = False
    block_probs: tuple[float, float] = (0.2, 0.8)
    block_length: tuple[int, int] = (20, 100)
    block_mean: float = 60.0
    unbiased_trials: int = 90
    reward_volume_ul: float = 3.0
    error_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.debias_min_contrast <= 1.0, "feedback.debias_min_contrast", f"must be in [0, 1], got {self.debias_min_contrast}")
        if self.debias_phases is not None:
            _check(len(set(self.debias_phases)) == len(self.debias_phases), "feedback.debias_phases", f"repeated phase in {self.debias_phases}")
            for j, i in enumerate(self.debias_phases):
                _check(isinstance(i, int) and not isinstance(i, bool) and i >= 0, f"feedback.debias_phases[{j}]", f"must be a phase index >= 0, got {i!r}")
        _check(isinstance(self.debias_side, DebiasSide), "feedback.debias_side", f"must be one of {[k.value for k in DebiasSide]}")
        _check(len(self.block_probs) == 2 and all(0.0 <= p <= 1.0 for p in self.block_probs), "feedback.block_probs", f"needs two probabilities in [0, 1], got {self.block_probs}")
        lo, hi = self.block_length
        _check(1 <= lo <= hi, "feedback.block_length", f"must satisfy 1 <= low <= high, got {self.block_length}")
        _check(self.block_mean > 0, "feedback.block_mean", "must be > 0")
        _check(self.unbiased_trials >= 0, "feedback.unbiased_trials", "must be >= 0")
        lo_ul, hi_ul = REWARD_VOLUME_UL
        _check(lo_ul <= self.reward_volume_ul <= hi_ul, "feedback.reward_volume_ul", f"must be in [{lo_ul:g}, {hi_ul:g}] µL, got {self.reward_volume_ul}")
        _check(0.0 <= self.error_timeout_s <= 30.0, "feedback.error_timeout_s", f"must be in [0, 30] s, got {self.error_timeout_s}")

    def debias_in(self, phase: int) -> bool:
        """Whether debiasing trials follow errors in ``phase``."""
        return self.debias and (self.debias_phases is None or phase in self.debias_phases)


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
        _check(self.schema_version == SCHEMA_VERSION, "schema_version", f"this build writes version {SCHEMA_VERSION}, got {self.schema_version}")
        n = len(self.stimulus.phases)
        for j, i in enumerate(self.feedback.debias_phases or ()):
            _check(i < n, f"feedback.debias_phases[{j}]", f"phase {i} does not exist (the schedule has {n} phases)")

    @property
    def contrasts(self) -> tuple[float, ...]:
        """Every contrast the curriculum can show, descending."""
        return tuple(sorted({c for ph in self.stimulus.phases for c in ph}, reverse=True))

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict (tuples as lists, enums as their values)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Curriculum":
        """Build and validate from a dict (as :meth:`to_dict` writes). Unknown keys are errors.

        A version-1 dict (one advancement rule for every phase: ``advance_window``,
        ``advance_threshold``, ``easy_contrasts``; repeat-on-error debiasing in every phase) is
        converted: each phase but the last gets a ``PERFORMANCE`` rule on its easy contrasts with
        that window and the threshold lowered by half a trial (``>= t`` on a count of ``window``
        becomes ``> t - 0.5 / window``), or, where it shows no easy contrast, a ``TRIAL_COUNT``
        rule of ``window`` trials; zero-contrast sides are random and debiasing repeats the
        side, as version 1 simulated. (Version 1 pooled the last ``window`` trials of the
        phase; version 2 looks at each signed contrast's own last ``window`` trials.)
        """
        if not isinstance(d, dict):
            raise CurriculumError("<root>", f"expected a mapping, got {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        _check(version in READABLE_SCHEMA_VERSIONS, "schema_version", f"this build reads versions {list(READABLE_SCHEMA_VERSIONS)}, got {version!r}")
        if version == 1:
            d = _from_v1(d)
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

    # -- rig exports ------------------------------------------------------------------------

    def to_iblrig(self, phase: int = 0, n_trials: int | None = None, profile: "RigProfile | None" = None) -> dict[str, Any]:
        """The session for stock iblrig v8 ``_iblrig_tasks_trainingChoiceWorld``, starting in ``phase``,
        or, for a curriculum of biased blocks (or ``profile`` :data:`IBLRIG_BIASED`),
        ``_iblrig_tasks_biasedChoiceWorld`` (:meth:`_to_iblrig_biased`).

        iblrig reads a session's task parameters with ``BaseSession.read_task_parameter_files``
        (``iblrig/base_tasks.py``): plain ``yaml.safe_load`` of the task's
        ``task_parameters.yaml`` (or the file passed as ``task_parameter_file``, which *replaces*
        it) merged over ``iblrig/base_choice_world_params.yaml``, with no further validation. So
        ``task_parameters`` holds every key of trainingChoiceWorld's own file (its values, ours
        for ``DEBIAS`` and ``REWARD_AMOUNT_UL``) and the base keys we set
        (``FEEDBACK_ERROR_DELAY_SECS``, ``NTRIALS``); the phase and the reward of this session are
        the task's arguments (``--training_phase``, ``--adaptive_reward``; task.py's
        ``extra_parser``). Contrasts, proportions, advancement and the debiasing rule are fixed
        in iblrig's code, which is why only curricula :data:`IBLRIG_TRAINING` runs export.

        Returns:
            ``{"task", "profile", "task_parameters", "session_arguments"}``; plain types only.

        Raises:
            CurriculumError: ``phase`` out of range, or a field stock iblrig cannot run (use
                :meth:`to_custom_task`).
        """
        if profile is None:
            profile = IBLRIG_BIASED if self.feedback.biased_blocks else IBLRIG_TRAINING
        _check(profile.stock_iblrig, "rig_profile", f"{profile.name!r} is not a stock iblrig task: use to_custom_task")
        if profile.task == IBLRIG_BIASED_TASK:
            return self._to_iblrig_biased(phase, n_trials)
        _check(0 <= phase < len(self.stimulus.phases), "phase", f"must be in [0, {len(self.stimulus.phases) - 1}], got {phase}")
        IBLRIG_TRAINING.check(self)
        f = self.feedback
        params: dict[str, Any] = dict(IBLRIG_TRAINING_TASK_PARAMETERS)
        params.update(
            DEBIAS=bool(f.debias),
            REWARD_AMOUNT_UL=float(f.reward_volume_ul),
            FEEDBACK_ERROR_DELAY_SECS=float(f.error_timeout_s),
            NTRIALS=int(n_trials if n_trials is not None else self.session_trials[1]),
        )
        return {
            "task": IBLRIG_TRAINING.task,
            "profile": IBLRIG_TRAINING.name,
            "task_parameters": params,
            "session_arguments": {"training_phase": int(phase), "adaptive_reward": float(f.reward_volume_ul)},
        }

    def _to_iblrig_biased(self, phase: int, n_trials: int | None) -> dict[str, Any]:
        """The session for stock iblrig v8 ``_iblrig_tasks_biasedChoiceWorld``
        (``iblrig/base_choice_world.py``, ``BiasedChoiceWorldSession``): its keys of
        ``iblrig/base_biased_choice_world_params.yaml`` (blocks) and the contrast set, with ours for
        ``REWARD_AMOUNT_UL``, ``FEEDBACK_ERROR_DELAY_SECS`` and ``NTRIALS``. The task has one
        phase and no session arguments (no training phase, no adaptive reward).

        Raises:
            CurriculumError: ``phase`` is not 0, or a field stock biasedChoiceWorld cannot run.
        """
        _check(phase == 0, "phase", f"biasedChoiceWorld has one phase (0), got {phase}")
        IBLRIG_BIASED.check(self)
        f = self.feedback
        params: dict[str, Any] = json.loads(json.dumps(IBLRIG_BIASED_TASK_PARAMETERS))
        params.update(
            REWARD_AMOUNT_UL=float(f.reward_volume_ul),
            FEEDBACK_ERROR_DELAY_SECS=float(f.error_timeout_s),
            NTRIALS=int(n_trials if n_trials is not None else self.session_trials[1]),
        )
        return {"task": IBLRIG_BIASED.task, "profile": IBLRIG_BIASED.name, "task_parameters": params, "session_arguments": {}}

    def to_custom_task(self, phase: int = 0, n_trials: int | None = None) -> dict[str, Any]:
        """The session as the full curriculum for a custom task (any curriculum), labelled so:
        stock iblrig cannot load it.

        Returns:
            ``{"task", "profile", "requires", "start_phase", "n_trials", "curriculum"}``.
        """
        _check(0 <= phase < len(self.stimulus.phases), "phase", f"must be in [0, {len(self.stimulus.phases) - 1}], got {phase}")
        return {
            "task": CUSTOM_TASK.task,
            "profile": CUSTOM_TASK.name,
            "requires": "a custom task that runs this curriculum; stock iblrig trainingChoiceWorld cannot",
            "start_phase": int(phase),
            "n_trials": int(n_trials if n_trials is not None else self.session_trials[1]),
            "curriculum": self.to_dict(),
        }

    def export(self, profile: "RigProfile", phase: int = 0, n_trials: int | None = None) -> dict[str, Any]:
        """The session in ``profile``'s format (:meth:`to_iblrig` or :meth:`to_custom_task`),
        after checking that ``profile`` runs it."""
        profile.check(self)
        return self.to_iblrig(phase, n_trials, profile) if profile.stock_iblrig else self.to_custom_task(phase, n_trials)


IBLRIG_TRAINING_TASK_PARAMETERS: dict[str, Any] = {
    "ADAPTIVE_GAIN": True,
    "ADAPTIVE_REWARD": True,
    "AG_INIT_VALUE": 8.0,
    "CONTRAST_SET": [1.0, 0.5, 0.25, 0.125, 0.0625, 0.0],
    "CONTRAST_SET_PROBABILITY_TYPE": "skew_zero",
    "DEBIAS": True,
    "REWARD_AMOUNT_UL": 3.0,
}
"""iblrig v8's ``iblrig_tasks/_iblrig_tasks_trainingChoiceWorld/task_parameters.yaml``, key for
key (iblrig 8.24.7). An exported file replaces it, so it carries all of them."""


@dataclass(frozen=True)
class RigProfile:
    """What a rig can execute.

    Attributes:
        name: identifier (``iblrig-training``, ``custom``).
        task: the rig task that runs the curricula.
        description: one line for people.
        template: the curriculum whose fixed parts the rig hard-codes; None = nothing fixed.
        fixed_schedule: the stimulus schedule (phases, proportions, advancement, zero-contrast
            side) must be ``template``'s.
        fixed_debias_rule: with debiasing on, its contrasts, phases and side must be
            ``template``'s (it can still be switched off).
        biased_blocks: whether the task can run biased blocks.
        debiasing: whether the task can run debiasing trials.
        fixed_blocks: the task always runs biased blocks, with ``template``'s block parameters
            (``block_probs``, ``block_length``, ``block_mean``, ``unbiased_trials``).
    """

    name: str
    task: str
    description: str
    template: Curriculum | None = None
    fixed_schedule: bool = False
    fixed_debias_rule: bool = False
    biased_blocks: bool = True
    debiasing: bool = True
    fixed_blocks: bool = False

    def __post_init__(self) -> None:
        _check((self.fixed_schedule or self.fixed_debias_rule or self.fixed_blocks) <= (self.template is not None), "rig_profile.template", "a profile that fixes fields needs a template")

    @property
    def stock_iblrig(self) -> bool:
        """Whether this is a stock iblrig v8 task (trainingChoiceWorld or biasedChoiceWorld:
        exports as its task parameters, :meth:`Curriculum.to_iblrig`)."""
        return self.task in (IBLRIG_TRAINING_TASK, IBLRIG_BIASED_TASK)

    def violations(self, curriculum: Curriculum) -> list[CurriculumError]:
        """Every field of ``curriculum`` this rig cannot run, each naming the field (empty: runnable)."""
        out: list[CurriculumError] = []
        t = self.template
        why = f"fixed by {self.task} (rig profile {self.name!r})"
        if self.fixed_schedule and t is not None:
            s, ts = curriculum.stimulus, t.stimulus
            if len(s.phases) != len(ts.phases):
                out.append(CurriculumError("stimulus.phases", f"{why}: {len(ts.phases)} phases, got {len(s.phases)}"))
            for i, (ph, tph) in enumerate(zip(s.phases, ts.phases)):
                if _rounded(ph) != _rounded(tph):
                    out.append(CurriculumError(f"stimulus.phases[{i}]", f"{why}: {tph}, got {ph}"))
                elif _normalised(s.weights(i)) != _normalised(ts.weights(i)):
                    out.append(CurriculumError(f"stimulus.proportions[{i}]", f"{why}: {ts.weights(i)}, got {s.weights(i)}"))
            for i, (r, tr) in enumerate(zip(s.advance, ts.advance)):
                if r != tr:
                    out.append(CurriculumError(f"stimulus.advance[{i}]", f"{why}: {_describe_rule(tr)}, got {_describe_rule(r)}"))
            if s.zero_contrast_side is not ts.zero_contrast_side:
                out.append(CurriculumError("stimulus.zero_contrast_side", f"{why}: {ts.zero_contrast_side.value}, got {s.zero_contrast_side.value}"))
        f = curriculum.feedback
        if self.fixed_debias_rule and t is not None and f.debias:
            tf = t.feedback
            for name in ("debias_min_contrast", "debias_phases", "debias_side"):
                got, want = getattr(f, name), getattr(tf, name)
                if got != want:
                    show = (lambda v: v.value if isinstance(v, enum.Enum) else v)
                    out.append(CurriculumError(f"feedback.{name}", f"{why}: {show(want)}, got {show(got)}"))
        if f.biased_blocks and not self.biased_blocks:
            out.append(CurriculumError("feedback.biased_blocks", f"{self.task} (rig profile {self.name!r}) runs no biased blocks"))
        if f.debias and not self.debiasing:
            out.append(CurriculumError("feedback.debias", f"{self.task} (rig profile {self.name!r}) runs no debiasing trials"))
        if self.fixed_blocks and t is not None:
            if not f.biased_blocks:
                out.append(CurriculumError("feedback.biased_blocks", f"{why}: biased blocks always run"))
            else:
                for name in ("block_probs", "block_length", "block_mean", "unbiased_trials"):
                    got, want = getattr(f, name), getattr(t.feedback, name)
                    if got != want:
                        out.append(CurriculumError(f"feedback.{name}", f"{why}: {want}, got {got}"))
        return out

    def runs(self, curriculum: Curriculum) -> bool:
        """Whether this rig can run ``curriculum``."""
        return not self.violations(curriculum)

    def check(self, curriculum: Curriculum) -> None:
        """Raise the first of :meth:`violations` (a :class:`CurriculumError` naming the field)."""
        bad = self.violations(curriculum)
        if bad:
            raise bad[0]


def _rounded(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v, 6) for v in values)


def _normalised(weights: tuple[float, ...]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(round(w / total, 6) for w in weights)


def _describe_rule(r: AdvanceRule) -> str:
    if r.kind is AdvanceKind.TRIAL_COUNT:
        return f"after {r.trials} trials"
    return f"correct/{r.window} > {r.threshold:g} on each side of {r.contrasts}"


def _parse(text: str, load: Callable[[str], Any], error: type[Exception], fmt: str) -> Any:
    """``load(text)``, its ``error`` raised as a :class:`CurriculumError` naming the format."""
    try:
        return load(text)
    except error as exc:
        raise CurriculumError(f"<{fmt.lower()}>", f"not valid {fmt}: {exc}") from None


def _tuple(value: Any, path: str, depth: int, integer: bool = False) -> Any:
    if depth == 0:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise CurriculumError(path, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        return value
    if not isinstance(value, (list, tuple)):
        raise CurriculumError(path, f"expected a list, got {value!r}")
    return tuple(_tuple(v, f"{path}[{i}]", depth - 1, integer) for i, v in enumerate(value))


_NESTED_DEPTH = {"phases": 2, "proportions": 2, "contrasts": 1, "block_probs": 1, "block_length": 1, "session_trials": 1, "debias_phases": 1}
_OPTIONAL = {"proportions", "debias_phases"}
_INTEGER_LISTS = {"block_length", "session_trials", "debias_phases"}
_ENUMS: dict[str, type[enum.Enum]] = {"kind": AdvanceKind, "zero_contrast_side": ZeroContrastSide, "debias_side": DebiasSide}
_SECTIONS: dict[str, type] = {"stimulus": StimulusSchedule, "feedback": FeedbackPolicy}


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise CurriculumError(f"{prefix}{unknown[0]}", f"unknown field (known: {sorted(fields)})")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        path = f"{prefix}{name}"
        if name in _SECTIONS and cls is Curriculum:
            _check(isinstance(value, dict), path, "expected a mapping")
            kwargs[name] = _build(_SECTIONS[name], value, f"{name}.")
        elif name == "advance":
            _check(isinstance(value, (list, tuple)), path, f"expected a list of rules, got {value!r}")
            rules = []
            for i, rule in enumerate(value):
                _check(isinstance(rule, dict), f"{path}[{i}]", f"expected a mapping, got {rule!r}")
                rules.append(_build(AdvanceRule, rule, f"{path}[{i}]."))
            kwargs[name] = tuple(rules)
        elif name in _ENUMS:
            kind = _ENUMS[name]
            values = [k.value for k in kind]  # type: ignore[attr-defined]
            _check(value in values, path, f"must be one of {values}, got {value!r}")
            kwargs[name] = kind(value)
        elif name in _NESTED_DEPTH:
            kwargs[name] = None if value is None and name in _OPTIONAL else _tuple(value, path, _NESTED_DEPTH[name], name in _INTEGER_LISTS)
        else:
            expected = str(fields[name].type)
            if expected == "bool":
                _check(isinstance(value, bool), path, f"expected true/false, got {value!r}")
            elif expected == "int":
                _check(isinstance(value, int) and not isinstance(value, bool), path, f"expected an integer, got {value!r}")
            elif expected == "float":
                _check(isinstance(value, (int, float)) and not isinstance(value, bool), path, f"expected a number, got {value!r}")
            elif expected == "str":
                _check(isinstance(value, str), path, f"expected a string, got {value!r}")
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except CurriculumError:
        raise
    except (TypeError, ValueError) as exc:
        raise CurriculumError(prefix.rstrip(".") or "<root>", str(exc)) from None


def _from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 curriculum dict as the equivalent version-2 dict (see :meth:`Curriculum.from_dict`)."""
    d = dict(d, schema_version=SCHEMA_VERSION)
    stim = d.get("stimulus", {})
    _check(isinstance(stim, dict), "stimulus", "expected a mapping")
    stim = dict(stim)
    window = stim.pop("advance_window", 50)
    threshold = stim.pop("advance_threshold", 0.8)
    easy = stim.pop("easy_contrasts", [1.0, 0.5])
    _check(isinstance(window, int) and not isinstance(window, bool) and 1 <= window <= 1000, "stimulus.advance_window", f"must be an integer in [1, 1000], got {window!r}")
    _check(isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 < threshold <= 1, "stimulus.advance_threshold", f"must be in (0, 1], got {threshold!r}")
    easy_set = {round(float(c), 6) for c in _tuple(easy, "stimulus.easy_contrasts", 1)}
    phases = stim.get("phases", [list(p) for p in IBL_PHASES])
    rows = _tuple(phases, "stimulus.phases", 2)
    rules = []
    for ph in rows[:-1]:
        shown = [c for c in ph if round(c, 6) in easy_set]
        if shown:
            rules.append({"kind": AdvanceKind.PERFORMANCE.value, "contrasts": shown, "window": window, "threshold": max(0.0, threshold - 0.5 / window)})
        else:
            rules.append({"kind": AdvanceKind.TRIAL_COUNT.value, "trials": window})
    stim.update(phases=phases, advance=rules, zero_contrast_side=ZeroContrastSide.RANDOM.value)
    stim.setdefault("proportions", None)
    fb = d.get("feedback", {})
    _check(isinstance(fb, dict), "feedback", "expected a mapping")
    d.update(stimulus=stim, feedback=dict(fb, debias_side=DebiasSide.REPEAT.value, debias_phases=None))
    return d


IBL_DEFAULT = Curriculum(
    name="ibl-default",
    stimulus=StimulusSchedule(phases=IBL_PHASES, proportions=IBL_PROPORTIONS, advance=IBL_ADVANCE, zero_contrast_side=ZeroContrastSide.LEFT),
    feedback=FeedbackPolicy(debias=True, debias_min_contrast=0.5, debias_phases=IBL_DEBIAS_PHASES, debias_side=DebiasSide.AGAINST_BIAS, reward_volume_ul=3.0, error_timeout_s=2.0),
    description=(
        "iblrig v8 trainingChoiceWorld: phases {1, .5} +.25 +.125 +.0625 +0 -.5 (0 at half weight); "
        "0->1 at >80% of the last 50 trials on each of +-1, +-.5, 1->2 on each of +-.25, 2->5 after 200 trials each; "
        "debiasing after easy (>= .5) errors in phases 0-4, side against the session's choice bias; "
        "zero contrast rewarded left; no biased blocks; 3 µL reward, 2 s error timeout"
    ),
)
"""The IBL default training protocol, the curriculum to beat: iblrig v8 (8.24.7)
``_iblrig_tasks_trainingChoiceWorld`` (``iblrig/base_choice_world.py``,
``TrainingChoiceWorldSession``; ``iblrig/choiceworld.py``), rule for rule (:data:`IBL_PHASES`,
:data:`IBL_PROPORTIONS`, :data:`IBL_ADVANCE`, :data:`IBL_DEBIAS_PHASES`, :class:`DebiasSide`,
:class:`ZeroContrastSide`). Not modelled: the adaptive reward between sessions (it does not
change what the twins learn from) and the adaptive wheel gain. Session length stays the
project's 400-700 trials (iblrig runs up to ``NTRIALS`` = 2000 until stopped)."""

IBLRIG_TRAINING_TASK = "_iblrig_tasks_trainingChoiceWorld"
"""iblrig v8's training task."""

IBLRIG_TRAINING = RigProfile(
    name="iblrig-training",
    task=IBLRIG_TRAINING_TASK,
    description="stock iblrig v8 trainingChoiceWorld: phases, contrasts, proportions, advancement and the debiasing rule are in its code; debiasing on/off, reward, error timeout, session length and the starting phase are settable",
    template=IBL_DEFAULT,
    fixed_schedule=True,
    fixed_debias_rule=True,
    biased_blocks=False,
)
"""Stock iblrig v8 trainingChoiceWorld (biased blocks are a different task, biasedChoiceWorld)."""

IBL_BIASED_CONTRASTS: tuple[float, ...] = (1.0, 0.25, 0.125, 0.0625, 0.0)
"""iblrig v8 biasedChoiceWorld's contrast set (``CONTRAST_SET``), drawn uniformly
(``CONTRAST_SET_PROBABILITY_TYPE: uniform``), the side from the block prior."""

IBL_BIASED = Curriculum(
    name="ibl-biased",
    stimulus=StimulusSchedule.single(IBL_BIASED_CONTRASTS, zero_contrast_side=ZeroContrastSide.RANDOM),
    feedback=FeedbackPolicy(
        debias=False,
        biased_blocks=True,
        block_probs=(0.2, 0.8),
        block_length=(20, 100),
        block_mean=60.0,
        unbiased_trials=90,
        reward_volume_ul=1.5,
        error_timeout_s=2.0,
    ),
    description=(
        "iblrig v8 biasedChoiceWorld: contrasts 1, .25, .125, .0625, 0 drawn uniformly; 90 unbiased trials, "
        "then blocks of P(left) 0.2 / 0.8 (length 20-100, truncated exponential of mean 60); "
        "no debiasing; 1.5 µL reward, 2 s error timeout"
    ),
)
"""IBL's biased-blocks protocol, the stage after ``trained_1b``: iblrig v8
``_iblrig_tasks_biasedChoiceWorld`` (``iblrig/base_choice_world.py``, ``BiasedChoiceWorldSession``;
``iblrig/base_biased_choice_world_params.yaml``: ``BLOCK_INIT_5050: true`` (a first block of 90
trials at 0.5), ``BLOCK_LEN_FACTOR: 60``, ``BLOCK_LEN_MIN: 20``, ``BLOCK_LEN_MAX: 100``,
``BLOCK_PROBABILITY_SET: [0.2, 0.8]``; no debiasing, ``REPEAT_ON_ERROR: false``). The reward is
iblrig's base 1.5 µL (labs set their own)."""

IBLRIG_BIASED_TASK = "_iblrig_tasks_biasedChoiceWorld"
"""iblrig v8's biased-blocks task."""

IBLRIG_BIASED_TASK_PARAMETERS: dict[str, Any] = {
    "BLOCK_INIT_5050": True,
    "BLOCK_LEN_FACTOR": 60,
    "BLOCK_LEN_MAX": 100,
    "BLOCK_LEN_MIN": 20,
    "BLOCK_PROBABILITY_SET": [0.2, 0.8],
    "CONTRAST_SET": [1.0, 0.25, 0.125, 0.0625, 0.0],
    "CONTRAST_SET_PROBABILITY_TYPE": "uniform",
}
"""The keys of iblrig v8 biasedChoiceWorld that an exported file carries, at the task's values
(``iblrig/base_biased_choice_world_params.yaml`` and the task's contrast set)."""

IBLRIG_BIASED = RigProfile(
    name="iblrig-biased",
    task=IBLRIG_BIASED_TASK,
    description="stock iblrig v8 biasedChoiceWorld: contrasts, proportions, blocks (0.2/0.8 after 90 unbiased trials) are in its code, no debiasing; reward, error timeout and session length are settable",
    template=IBL_BIASED,
    fixed_schedule=True,
    biased_blocks=True,
    debiasing=False,
    fixed_blocks=True,
)
"""Stock iblrig v8 biasedChoiceWorld: runs exactly :data:`IBL_BIASED` (reward, timeout and session
length aside)."""

CUSTOM_TASK = RigProfile(
    name="custom",
    task="custom task",
    description="a custom rig task that runs any curriculum (any contrast set, proportions, advancement, debiasing and blocks)",
)
"""A custom task: runs every curriculum."""

RIG_PROFILES: tuple[RigProfile, ...] = (IBLRIG_TRAINING, IBLRIG_BIASED, CUSTOM_TASK)
"""The known rig profiles."""


def rig_profile(name: str) -> RigProfile:
    """The profile called ``name``.

    Raises:
        CurriculumError: no such profile (field ``rig_profile``), naming the known ones.
    """
    for p in RIG_PROFILES:
        if p.name == name:
            return p
    raise CurriculumError("rig_profile", f"unknown rig profile {name!r} (known: {[p.name for p in RIG_PROFILES]})")


def phase_of_contrasts(protocol: Curriculum, contrasts: np.ndarray | list[float]) -> int:
    """The phase of ``protocol`` that best explains ``contrasts`` (unsigned, of an animal's latest
    trials): the largest log-likelihood of the contrasts under each phase's proportions, a
    contrast the phase never shows costing ``log(1e-3)`` (a phase change inside the window);
    ties go to the earlier phase; the last phase when no phase shows any of them. A window of IBL phase 5 (phase 4's set without 0.5) is placed
    in phase 5, one that still shows 0.5 in phase 4 or earlier."""
    seen = np.round(np.asarray(contrasts, dtype=float).ravel(), 6)
    s = protocol.stimulus
    best, best_ll = len(s.phases) - 1, -np.inf
    values, counts = np.unique(seen, return_counts=True)
    if not {round(c, 6) for ph in s.phases for c in ph} & set(values.tolist()):
        return best  # no phase shows any of them: the last
    for i, ph in enumerate(s.phases):
        w = np.asarray(s.weights(i), dtype=float)
        prob = dict(zip(np.round(ph, 6).tolist(), (w / w.sum()).tolist()))
        ll = float(sum(n * np.log(prob.get(float(v), 0.0) or 1e-3) for v, n in zip(values, counts)))
        if ll > best_ll + 1e-9:
            best, best_ll = i, ll
    return best


__all__ = [
    "AdvanceKind",
    "AdvanceRule",
    "CUSTOM_TASK",
    "Curriculum",
    "CurriculumError",
    "DebiasSide",
    "FeedbackPolicy",
    "IBLRIG_BIASED",
    "IBLRIG_BIASED_TASK",
    "IBLRIG_BIASED_TASK_PARAMETERS",
    "IBLRIG_TRAINING",
    "IBLRIG_TRAINING_TASK",
    "IBLRIG_TRAINING_TASK_PARAMETERS",
    "IBL_ADVANCE",
    "IBL_BIASED",
    "IBL_BIASED_CONTRASTS",
    "IBL_DEBIAS_PHASES",
    "IBL_DEFAULT",
    "IBL_PHASES",
    "IBL_PROPORTIONS",
    "READABLE_SCHEMA_VERSIONS",
    "REWARD_VOLUME_UL",
    "RIG_PROFILES",
    "RigProfile",
    "SCHEMA_VERSION",
    "StimulusSchedule",
    "ZeroContrastSide",
    "phase_of_contrasts",
    "rig_profile",
]
