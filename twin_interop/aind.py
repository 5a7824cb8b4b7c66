"""Curricula as ``aind-behavior-curriculum`` objects (AIND's curriculum library; the ``aind`` extra).

:func:`to_aind` turns a :class:`twin.protocol.Curriculum` into an AIND ``Curriculum`` and
:func:`from_aind` turns one back; :func:`to_aind_json` / :func:`from_aind_json` do the same
through AIND's own JSON serialization (``model_dump_json``, what ``export_json`` writes).

The mapping:

* each contrast phase ``i`` → one AIND ``Stage`` named ``phase <i>`` whose ``task`` is a
  :class:`TwinTask` (name ``TwinIblChoiceTask``, version :data:`TASK_VERSION`). Its
  :class:`TwinTaskParameters` are what a rig needs to run a session in that stage:

  - per stage (per phase in the curriculum): the phase's contrasts and proportions; the rule that
    leaves it, ``stimulus.advance[i]`` (``advance_kind``, ``advance_contrasts``,
    ``advance_window``, ``advance_threshold``, ``advance_trials``; all null in the last stage,
    which has none); ``debias``, whether debiasing trials follow errors in it
    (``feedback.debias_in(i)``);
  - the same in every stage (curriculum-wide; reading checks that they agree): the zero-contrast
    side; the debiasing rule (``debias_enabled`` = ``feedback.debias``, ``debias_phases``,
    ``debias_min_contrast``, ``debias_side``), which the per-stage ``debias`` must agree with;
    biased blocks, reward volume, error timeout; the session length;
* the advancement from phase ``i`` to ``i + 1`` → one ``StageTransition``
  (:func:`advance_criterion_met`) from stage ``i`` to stage ``i + 1``; the last stage has none.
  Every stage's ``metrics_provider`` is :func:`phase_metrics`, which computes
  :class:`PhaseMetrics` from the trials done in the stage, applying the rule its task parameters
  state (AIND transitions see the metrics only, never the stage, so the rule's numbers live in the
  task parameters and the provider applies them);
* the curriculum's name → the AIND curriculum's name; its description → every task's description.

Every field of a curriculum has its task parameter, so :func:`from_aind` of :func:`to_aind` is the
curriculum again, exactly.

Within-session advancement against AIND's between-session transitions. A twin curriculum (and the
twin's simulation of it, :class:`twin.sim.task.TaskEnv`, iblrig v8's ``check_training_phase``)
checks the phase's rule at the start of every trial, on the session's trials so far (a
performance rule: more than ``threshold`` of the last ``window`` trials of each signed contrast
of the rule correct; a trial-count rule: the ``trials``-th trial of the session in the phase), and
may advance several phases in one session. AIND's ``Trainer`` evaluates transitions between
sessions, at most one per evaluation. :class:`PhaseMetrics` records *whether and when* the twin's
rule would have fired (``criterion_met_at``: :func:`phase_metrics` reproduces the simulator's
decision trial for trial), so the decision is the same as the twin's, but it takes effect at the
next session; what is approximated:

* the trials after the criterion is met stay in the old phase until the session ends (a rig that
  applies the rule within the session itself, from the task parameters, keeps the twin's timing);
* one phase per session at most, where the twin may pass through two in a long session.

Forecasts made by the twins of a curriculum therefore assume the within-session timing.

What does not map, and raises :class:`twin.protocol.CurriculumError` naming the AIND field:
stages whose task is not a :class:`TwinTask` (of this :data:`TASK_VERSION`: files written for an
earlier curriculum format are refused); a stage graph that is not one chain (each stage but the
last with exactly one transition, to a stage not yet visited); transitions other than
:func:`advance_criterion_met`; metrics providers other than :func:`phase_metrics`; policies (AIND's
within-stage parameter updates; a twin curriculum's settings are fixed per phase); a stage but the
last without a complete advancement rule, or the last with one; curriculum-wide values (feedback,
zero-contrast side, session length, description) that differ between stages, or a stage's
``debias`` that its debiasing rule does not give. The AIND curriculum's ``version`` and
``pkg_location`` are not kept.

Reading JSON, every callable the file names (transitions, policies, metrics providers) is checked
against this module's before AIND's deserializer runs, because that deserializer imports whatever
module a name points to.

Per-field functions (``_stimulus_params``/``_stimulus_from``, ``_advance_params``/
``_advance_from``, ``_feedback_params``/``_feedback_from``, ``_session_params``/``_session_from``)
hold the mapping, one pair per part of the curriculum.
"""

import json
import re
from collections import deque

import numpy as np
from collections.abc import Sequence
from typing import Any, Literal, Optional

from twin.errors import OptionalDependencyError
from twin.protocol import (
    SCHEMA_VERSION,
    AdvanceKind,
    AdvanceRule,
    Curriculum,
    CurriculumError,
    DebiasSide,
    FeedbackPolicy,
    StimulusSchedule,
    ZeroContrastSide,
)

#: the extra to install for this module.
AIND_EXTRA = "learning-twins[aind]"
#: the aind-behavior-curriculum release this adapter was written and tested against.
AIND_VERSION = "0.0.42"

try:
    import aind_behavior_curriculum as abc
    from aind_behavior_curriculum.task import SEMVER_REGEX
    from pydantic import ConfigDict, Field, ValidationError
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise OptionalDependencyError(
        f"AIND curricula need the aind-behavior-curriculum package: pip install '{AIND_EXTRA}' "
        f"(aind-behavior-curriculum=={AIND_VERSION})"
    ) from exc

#: version of :class:`TwinTask`'s parameters (major = the curriculum format's schema version:
#: 2.0.0 since schema 2's per-phase advancement rules and debiasing; 1.0.0 files are refused).
TASK_VERSION = f"{SCHEMA_VERSION}.0.0"
#: name of the AIND task every stage of an exported curriculum runs.
TASK_NAME = "TwinIblChoiceTask"
#: AIND curriculum version written by :func:`to_aind` unless told otherwise (not read back).
DEFAULT_VERSION = "1.0.0"


_KINDS = tuple(k.value for k in AdvanceKind)
_ZERO_SIDES = tuple(k.value for k in ZeroContrastSide)
_DEBIAS_SIDES = tuple(k.value for k in DebiasSide)
#: the advancement rule's fields, as task parameters (``advance_<field>``).
_RULE_FIELDS = ("kind", "contrasts", "window", "threshold", "trials")


class TwinTaskParameters(abc.TaskParameters):
    """One phase of a twin curriculum as AIND task parameters: what a rig runs in one stage."""

    model_config = ConfigDict(extra="forbid")

    contrasts: list[float] = Field(description="unsigned contrasts shown in this phase, in [0, 1]")
    contrast_proportions: Optional[list[float]] = Field(default=None, description="relative frequency of each contrast; null = uniform")
    zero_contrast_side: Literal[_ZERO_SIDES] = Field(description="rewarded side of zero-contrast trials: random, or always left (iblrig v8)")  # type: ignore[valid-type]
    advance_kind: Optional[Literal[_KINDS]] = Field(default=None, description="how the animal leaves this stage: performance or trial_count; null in the last stage (no rule)")  # type: ignore[valid-type]
    advance_contrasts: Optional[list[float]] = Field(default=None, description="unsigned contrasts a performance rule looks at (both sides of each)")
    advance_window: Optional[int] = Field(default=None, description="trials per signed contrast a performance rule looks at (the session's last ones)")
    advance_threshold: Optional[float] = Field(default=None, description="fraction of the window that must be correct at every signed contrast, strictly exceeded, in [0, 1)")
    advance_trials: Optional[int] = Field(default=None, description="trials of one session in this stage after which a trial_count rule advances")
    debias: bool = Field(description="debiasing trials follow errors in this stage (the curriculum's debias_in(phase))")
    debias_enabled: bool = Field(description="the curriculum's debiasing switch (feedback.debias)")
    debias_phases: Optional[list[int]] = Field(default=None, description="phases with debiasing (feedback.debias_phases); null = every phase")
    debias_min_contrast: float = Field(description="smallest contrast whose errors are followed by a debiasing trial")
    debias_side: Literal[_DEBIAS_SIDES] = Field(description="side of a debiasing trial: repeat the error's, or against the session's choice bias (iblrig v8)")  # type: ignore[valid-type]
    biased_blocks: bool = Field(description="alternate P(left) blocks after unbiased_trials per session")
    block_probs: list[float] = Field(description="P(left) of the two block types")
    block_length: list[int] = Field(description="inclusive range of block lengths (trials)")
    block_mean: float = Field(description="mean of the truncated exponential block length (trials)")
    unbiased_trials: int = Field(description="50/50 trials opening each biased session")
    reward_volume_ul: float = Field(description="water per rewarded trial (µL)")
    error_timeout_s: float = Field(description="timeout after an error (s)")
    session_trials: list[int] = Field(description="inclusive range of trials per session")


class TwinTask(abc.Task[TwinTaskParameters]):
    """The IBL visual decision task as a twin curriculum runs it (one per stage)."""

    name: Literal[TASK_NAME] = TASK_NAME  # type: ignore[valid-type]
    version: Literal[TASK_VERSION] = TASK_VERSION  # type: ignore[valid-type]
    task_parameters: TwinTaskParameters


class PhaseMetrics(abc.Metrics):
    """What the advancement rule needs from the trials done in one stage (:func:`phase_metrics`).

    Attributes:
        stage_trials: trials done in the stage so far (across sessions).
        criterion_met_at: 1-based index, among those trials, of the first one at whose start the
            stage's advancement rule held (the twin draws that trial in the next phase); None
            while it never has.
    """

    stage_trials: int = 0
    criterion_met_at: Optional[int] = None


def advance_criterion_met(metrics: PhaseMetrics) -> bool:
    """The stage transition: the stage's advancement rule has held at some trial."""
    return metrics.criterion_met_at is not None


def _passes(n_correct: int, threshold: float, window: int) -> bool:
    """``n_correct / window > threshold`` as :class:`twin.sim.task.TaskEnv` decides it (float32,
    ``correct > threshold * window + 1e-4``)."""
    return bool(np.float32(n_correct) > np.float32(np.float32(threshold) * np.float32(window)) + np.float32(1e-4))


def phase_metrics(
    task: TwinTask,
    contrasts: Sequence[float],
    correct: Sequence[bool],
    sides: Optional[Sequence[int]] = None,
    sessions: Optional[Sequence[Any]] = None,
    lead_in: int = 0,
) -> PhaseMetrics:
    """The metrics provider of every stage: apply the stage's advancement rule to its trials.

    The decision is the twin's (:class:`twin.sim.task.TaskEnv`, iblrig v8's
    ``check_training_phase``), trial for trial: the rule is checked at the start of every trial of
    a session, on that session's trials before it (counts start afresh each session):

    * ``performance``: for every contrast of ``advance_contrasts`` and each side, the correct
      trials among the session's last ``advance_window`` trials at that signed contrast, divided by
      ``advance_window``, are strictly more than ``advance_threshold`` (fewer trials count as
      errors), so the earliest it can hold is at the start of a session's second trial;
    * ``trial_count``: the trial is the ``advance_trials``-th of the session in the stage (the
      criterion is met once the stage's trials in one session reach ``advance_trials``; a stage
      entered mid-session, see ``lead_in``, does not count the trial it was entered on, as the
      twin does not).

    The last stage has no rule and never meets a criterion.

    Args:
        task: the stage's task (its parameters state the rule).
        contrasts: ``[n]`` unsigned contrast of each trial, in order: the trials done in the stage
            (across sessions, from the first trial in the stage), after the ``lead_in`` ones.
        correct: ``[n]`` whether each trial was answered correctly.
        sides: ``[n]`` rewarded side of each trial (0 = left, 1 = right); needed by a
            ``performance`` rule, which looks at each side separately.
        sessions: ``[n]`` the session of each trial (any labels; a session is a run of equal
            consecutive labels); None: all one session.
        lead_in: the first ``lead_in`` trials were done in the same session *before* the stage
            was entered (in earlier phases, when a rig or the twin advanced within the session):
            they count in the performance windows, as the session's trials do for the twin, but
            are not the stage's. 0 in AIND's between-session use.

    Returns:
        The stage's metrics.

    Raises:
        CurriculumError: the sequences differ in length, ``lead_in`` is out of range, or a
            performance rule gets no ``sides``.
    """
    p = task.task_parameters
    n = len(contrasts)
    for what, seq in (("correct", correct), ("sides", sides), ("sessions", sessions)):
        if seq is not None and len(seq) != n:
            raise CurriculumError(f"phase_metrics.{what}", f"got {n} contrasts and {len(seq)} {what}")
    if not 0 <= lead_in <= n:
        raise CurriculumError("phase_metrics.lead_in", f"must be in [0, {n}] (the trials given), got {lead_in}")
    kind = None if p.advance_kind is None else AdvanceKind(p.advance_kind)
    if kind is AdvanceKind.PERFORMANCE and sides is None:
        raise CurriculumError("phase_metrics.sides", "a performance rule looks at each side of its contrasts: give the rewarded side of every trial")
    stage_trials = n - lead_in
    if kind is None:
        return PhaseMetrics(stage_trials=stage_trials, criterion_met_at=None)
    rule_contrasts = [round(float(c), 6) for c in (p.advance_contrasts or [])]
    window = int(p.advance_window or 1)
    windows: dict[tuple[float, int], deque[bool]] = {}
    count = 0
    for t in range(n):
        start = t == 0 or (sessions is not None and sessions[t] != sessions[t - 1])
        if start:
            windows = {(c, side): deque(maxlen=window) for c in rule_contrasts for side in (0, 1)}
            count = 0
        count += 1
        if t >= lead_in:
            if t == lead_in and lead_in > 0 and not start:
                count = 0  # entered on this trial: the twin's check that moved it here was the last phase's
            elif kind is AdvanceKind.TRIAL_COUNT:
                if count >= int(p.advance_trials or 0):
                    return PhaseMetrics(stage_trials=stage_trials, criterion_met_at=t - lead_in + 1)
            elif all(_passes(sum(w), float(p.advance_threshold or 0.0), window) for w in windows.values()):
                return PhaseMetrics(stage_trials=stage_trials, criterion_met_at=t - lead_in + 1)
        if kind is AdvanceKind.PERFORMANCE:
            key = (round(float(contrasts[t]), 6), int(sides[t]))  # type: ignore[index]
            if key in windows:
                windows[key].append(bool(correct[t]))
    return PhaseMetrics(stage_trials=stage_trials, criterion_met_at=None)


#: the callables an exported curriculum names, by the name AIND serializes them under.
TRANSITION = f"{__name__}.{advance_criterion_met.__qualname__}"
METRICS_PROVIDER = f"{__name__}.{phase_metrics.__qualname__}"


# -- per-field mapping: our curriculum -> one stage's task parameters ------------------------


def _stimulus_params(s: StimulusSchedule, phase: int) -> dict[str, Any]:
    return {
        "contrasts": list(s.phases[phase]),
        "contrast_proportions": list(s.proportions[phase]) if s.proportions is not None else None,
        "zero_contrast_side": s.zero_contrast_side.value,
    }


def _advance_params(s: StimulusSchedule, phase: int) -> dict[str, Any]:
    """The rule that leaves ``phase`` (all None in the last phase, which has none)."""
    if phase >= len(s.advance):
        return {f"advance_{n}": None for n in _RULE_FIELDS}
    r = s.advance[phase]
    return {"advance_kind": r.kind.value, "advance_contrasts": list(r.contrasts), "advance_window": r.window, "advance_threshold": r.threshold, "advance_trials": r.trials}


def _feedback_params(f: FeedbackPolicy, phase: int) -> dict[str, Any]:
    return {
        "debias": f.debias_in(phase),
        "debias_enabled": f.debias,
        "debias_phases": None if f.debias_phases is None else list(f.debias_phases),
        "debias_min_contrast": f.debias_min_contrast,
        "debias_side": f.debias_side.value,
        "biased_blocks": f.biased_blocks,
        "block_probs": list(f.block_probs),
        "block_length": list(f.block_length),
        "block_mean": f.block_mean,
        "unbiased_trials": f.unbiased_trials,
        "reward_volume_ul": f.reward_volume_ul,
        "error_timeout_s": f.error_timeout_s,
    }


def _session_params(cur: Curriculum) -> dict[str, Any]:
    return {"session_trials": list(cur.session_trials)}


def stage_name(phase: int) -> str:
    """The AIND stage name of phase ``phase``."""
    return f"phase {phase}"


def to_aind(cur: Curriculum, version: str = DEFAULT_VERSION) -> "abc.Curriculum":
    """The AIND curriculum of ``cur``: one stage per phase, a transition between consecutive ones.

    Args:
        cur: the curriculum.
        version: the AIND curriculum's semantic version (not read back by :func:`from_aind`).

    Returns:
        A validated ``aind_behavior_curriculum.Curriculum`` (its type made by ``create_curriculum``).
    """
    model = abc.create_curriculum(cur.name, version, [TwinTask], pkg_location=__name__)
    out = model()
    s, f = cur.stimulus, cur.feedback
    stages = []
    for i in range(len(s.phases)):
        params = TwinTaskParameters(**_stimulus_params(s, i), **_advance_params(s, i), **_feedback_params(f, i), **_session_params(cur))
        task = TwinTask(task_parameters=params, description=cur.description)
        stages.append(abc.Stage(name=stage_name(i), task=task, metrics_provider=abc.MetricsProvider(phase_metrics)))
    out.add_stage(stages[0])
    for a, b in zip(stages, stages[1:]):
        out.add_stage_transition(a, b, abc.StageTransition(advance_criterion_met))
    return out.validate_curriculum()


def to_aind_json(cur: Curriculum, version: str = DEFAULT_VERSION) -> str:
    """:func:`to_aind` serialized by AIND (``model_dump_json``, as its ``export_json`` writes)."""
    return to_aind(cur, version).model_dump_json(indent=3)


# -- reading ----------------------------------------------------------------------------------


#: a callable an AIND curriculum names: (kind, field, serialized name or None).
_Ref = tuple[Literal["transition", "provider", "policy"], str, Optional[str]]


def _check_refs(refs: list[_Ref]) -> None:
    """Every transition and metrics provider must be this module's; no policies."""
    for kind, where, name in refs:
        if kind == "provider" and name not in (None, METRICS_PROVIDER):
            raise CurriculumError(where, f"metrics provider {name!r} cannot map: a twin curriculum's stages use {METRICS_PROVIDER}")
        if kind == "policy":
            raise CurriculumError(where, f"policy {name!r} cannot map: a twin curriculum has no within-stage parameter updates")
        if kind == "transition" and name != TRANSITION:
            raise CurriculumError(where, f"stage transition {name!r} cannot map: a twin curriculum advances by {TRANSITION}")


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _raw_refs(raw: dict[str, Any]) -> list[_Ref]:
    """The callables a raw (JSON-decoded) AIND curriculum names, with their fields."""
    refs: list[_Ref] = []
    graph = _mapping(raw.get("graph"))
    for key, stage in _mapping(graph.get("nodes")).items():
        stage = _mapping(stage)
        where = f"graph.nodes.{key}"
        refs.append(("provider", f"{where}.metrics_provider", stage.get("metrics_provider")))
        starts = stage.get("start_policies")
        refs += [("policy", f"{where}.start_policies[{j}]", str(p)) for j, p in enumerate(starts if isinstance(starts, list) else [])]
        refs += [("policy", f"{where}.graph.nodes.{k}", str(p)) for k, p in _mapping(_mapping(stage.get("graph")).get("nodes")).items()]
    for key, edges in _mapping(graph.get("graph")).items():
        for j, edge in enumerate(edges if isinstance(edges, list) else []):
            refs.append(("transition", f"graph.graph.{key}[{j}]", str(edge[0]) if isinstance(edge, list) and edge else None))
    return refs


def _object_refs(obj: "abc.Curriculum") -> list[_Ref]:
    """The callables an AIND curriculum object names, with their fields."""
    refs: list[_Ref] = []
    for key, stage in obj.graph.nodes.items():
        where = f"graph.nodes.{key}"
        refs.append(("provider", f"{where}.metrics_provider", None if stage.metrics_provider is None else stage.metrics_provider.name))
        refs += [("policy", f"{where}.start_policies[{j}]", p.name) for j, p in enumerate(stage.start_policies)]
        refs += [("policy", f"{where}.graph.nodes.{k}", p.name) for k, p in stage.graph.nodes.items()]
    for key, edges in obj.graph.graph.items():
        refs += [("transition", f"graph.graph.{key}[{j}]", rule.name) for j, (rule, _) in enumerate(edges)]
    return refs


def _chain(obj: "abc.Curriculum") -> list[tuple[int, Any]]:
    """The stages in order of advancement, as ``(node id, stage)``; one chain or an error."""
    nodes, graph = obj.graph.nodes, obj.graph.graph
    if not nodes:
        raise CurriculumError("graph.nodes", "an AIND curriculum without stages cannot map")
    key = min(nodes)
    order: list[tuple[int, Any]] = []
    seen: set[int] = set()
    while True:
        order.append((key, nodes[key]))
        seen.add(key)
        edges = graph.get(key, [])
        if not edges:
            break
        if len(edges) > 1:
            raise CurriculumError(f"graph.graph.{key}", f"stage {nodes[key].name!r} has {len(edges)} transitions; a twin curriculum advances along one chain of phases")
        nxt = edges[0][1]
        if nxt in seen:
            raise CurriculumError(f"graph.graph.{key}[0]", f"stage {nodes[key].name!r} goes back to stage {nodes[nxt].name!r}; a twin curriculum only advances")
        key = nxt
    left = sorted(set(nodes) - seen)
    if left:
        raise CurriculumError(f"graph.nodes.{left[0]}", f"stage {nodes[left[0]].name!r} is not on the chain from the first stage {order[0][1].name!r}")
    return order


def _same(order: list[tuple[int, Any]], names: Sequence[str], what: str) -> dict[str, Any]:
    """The values of task-parameter ``names`` shared by every stage; an error where one differs."""
    first_key, first = order[0]
    want = {n: getattr(first.task.task_parameters, n) for n in names}
    for key, stage in order[1:]:
        for n in names:
            got = getattr(stage.task.task_parameters, n)
            if got != want[n]:
                raise CurriculumError(
                    f"graph.nodes.{key}.task.task_parameters.{n}",
                    f"{got!r} differs from stage {first.name!r}'s {want[n]!r}; a twin curriculum has one {what} for every phase",
                )
    return want


def _stimulus_from(order: list[tuple[int, Any]]) -> dict[str, Any]:
    params = [stage.task.task_parameters for _, stage in order]
    phases = tuple(tuple(p.contrasts) for p in params)
    if all(p.contrast_proportions is None for p in params):
        proportions = None
    else:  # a stage without proportions shows its contrasts uniformly
        proportions = tuple(tuple(p.contrast_proportions) if p.contrast_proportions is not None else (1.0,) * len(p.contrasts) for p in params)
    zero = _same(order, ("zero_contrast_side",), "zero-contrast side")["zero_contrast_side"]
    return {"phases": phases, "proportions": proportions, "zero_contrast_side": ZeroContrastSide(zero)}


def _advance_from(order: list[tuple[int, Any]]) -> dict[str, Any]:
    """Each stage's rule as its phase's; the last stage must have none."""
    rules = []
    last = len(order) - 1
    for i, (key, stage) in enumerate(order):
        p = stage.task.task_parameters
        values = {n: getattr(p, f"advance_{n}") for n in _RULE_FIELDS}
        where = f"graph.nodes.{key}.task.task_parameters"
        if i == last:
            given = [n for n, v in values.items() if v is not None]
            if given:
                raise CurriculumError(f"{where}.advance_{given[0]}", f"the last stage {stage.name!r} has no transition, so no advancement rule: must be null")
            continue
        for n, v in values.items():
            if v is None:
                raise CurriculumError(f"{where}.advance_{n}", f"stage {stage.name!r} leads to the next stage, so its advancement rule needs advance_{n}")
        rules.append(AdvanceRule(kind=AdvanceKind(values["kind"]), contrasts=tuple(values["contrasts"]), window=values["window"], threshold=values["threshold"], trials=values["trials"]))
    return {"advance": tuple(rules)}


#: feedback-policy task parameters one value of which every stage shares.
_SHARED_FEEDBACK = ("debias_enabled", "debias_phases", "debias_min_contrast", "debias_side", "biased_blocks", "block_probs", "block_length", "block_mean", "unbiased_trials", "reward_volume_ul", "error_timeout_s")


def _feedback_from(order: list[tuple[int, Any]]) -> FeedbackPolicy:
    v = _same(order, _SHARED_FEEDBACK, "feedback policy")
    v["debias"] = v.pop("debias_enabled")
    v["debias_side"] = DebiasSide(v["debias_side"])
    f = FeedbackPolicy(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})
    for i, (key, stage) in enumerate(order):  # per stage: what the rig runs, which the shared rule must say
        got = stage.task.task_parameters.debias
        if got != f.debias_in(i):
            raise CurriculumError(
                f"graph.nodes.{key}.task.task_parameters.debias",
                f"{got!r} contradicts debias_enabled={f.debias!r}, debias_phases={v['debias_phases']!r} (phase {i} {'has' if f.debias_in(i) else 'has no'} debiasing); change those to change it",
            )
    return f


def _session_from(order: list[tuple[int, Any]]) -> dict[str, Any]:
    return {"session_trials": tuple(_same(order, ("session_trials",), "session length")["session_trials"])}


def _description_from(order: list[tuple[int, Any]]) -> str:
    first = order[0][1].task.description
    for key, stage in order[1:]:
        if stage.task.description != first:
            raise CurriculumError(f"graph.nodes.{key}.task.description", "differs from the first stage's; a twin curriculum has one description")
    return first


def from_aind(obj: "abc.Curriculum") -> Curriculum:
    """The twin curriculum of an AIND curriculum made by :func:`to_aind` (or written like one).

    Args:
        obj: an ``aind_behavior_curriculum.Curriculum``.

    Returns:
        The curriculum, validated.

    Raises:
        CurriculumError: something in ``obj`` cannot map (the error names its AIND field, or the
            curriculum field the values break).
    """
    if not isinstance(obj, abc.Curriculum):
        raise CurriculumError("<root>", f"expected an aind_behavior_curriculum.Curriculum, got {type(obj).__name__}")
    _check_refs(_object_refs(obj))
    for key, stage in obj.graph.nodes.items():
        if not isinstance(stage.task, TwinTask):
            raise CurriculumError(f"graph.nodes.{key}.task.name", f"stage {stage.name!r} runs task {stage.task.name!r}; only {TASK_NAME} stages map onto a twin curriculum")
    order = _chain(obj)
    try:
        stim = StimulusSchedule(**_stimulus_from(order), **_advance_from(order))
        return Curriculum(name=obj.name, stimulus=stim, feedback=_feedback_from(order), description=_description_from(order), **_session_from(order))
    except CurriculumError as exc:
        m = re.match(r"stimulus\.(phases|proportions|advance)\[(\d+)\](?:\.([a-z]+))?", exc.field)
        if m is None or int(m.group(2)) >= len(order):
            raise
        key, stage = order[int(m.group(2))]
        param = {"phases": "contrasts", "proportions": "contrast_proportions"}.get(m.group(1)) or f"advance_{m.group(3) or 'kind'}"
        raise CurriculumError(exc.field, f"{exc.reason} (AIND stage {stage.name!r}: graph.nodes.{key}.task.task_parameters.{param})") from None


def _location(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a dotted AIND field (the task-union tag left out)."""
    return ".".join(str(p) for p in loc if p != TASK_NAME) or "<root>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_raw(raw: dict[str, Any]) -> None:
    """What a raw AIND curriculum must hold before AIND's types read it: a semantic version,
    :class:`TwinTask` stages, and only this module's callables."""
    for key in ("name", "version"):
        if not isinstance(raw.get(key), str):
            raise CurriculumError(key, f"an AIND curriculum needs a string {key!r}, got {_short(raw.get(key))}")
    if not re.match(SEMVER_REGEX, raw["version"]):
        raise CurriculumError("version", f"not a semantic version (MAJOR.MINOR.PATCH): {raw['version']!r}")
    for key, stage in _mapping(_mapping(raw.get("graph")).get("nodes")).items():
        task = _mapping(_mapping(stage).get("task"))
        if task.get("name") != TASK_NAME:
            raise CurriculumError(f"graph.nodes.{key}.task.name", f"stage {_mapping(stage).get('name')!r} runs task {task.get('name')!r}; only {TASK_NAME} stages map onto a twin curriculum")
    _check_refs(_raw_refs(raw))  # before AIND's deserializer imports what the names point to


def from_aind_json(text: str, source: str = "<aind json>") -> Curriculum:
    """The twin curriculum of an AIND curriculum's JSON (as ``model_dump_json``/``export_json`` write).

    Args:
        text: the JSON.
        source: where it came from, for errors (a file name).

    Returns:
        The curriculum, validated.

    Raises:
        CurriculumError: not JSON, not an AIND curriculum of :class:`TwinTask` stages, or
            something that cannot map; the error names ``source`` and the field.
    """
    try:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CurriculumError("<json>", f"not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CurriculumError("<root>", f"expected an AIND curriculum object, got {type(raw).__name__}")
        _check_raw(raw)
        model = abc.create_curriculum(raw["name"], raw["version"], [TwinTask])
        try:
            obj = model.model_validate_json(text)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise CurriculumError(_location(err["loc"]), f"{err['msg']} (got {_short(err.get('input'))})") from None
        return from_aind(obj)
    except CurriculumError as exc:
        raise CurriculumError(f"{source}: {exc.field}", exc.reason) from None


__all__ = [
    "AIND_EXTRA",
    "AIND_VERSION",
    "METRICS_PROVIDER",
    "PhaseMetrics",
    "TASK_NAME",
    "TASK_VERSION",
    "TRANSITION",
    "TwinTask",
    "TwinTaskParameters",
    "advance_criterion_met",
    "from_aind",
    "from_aind_json",
    "phase_metrics",
    "stage_name",
    "to_aind",
    "to_aind_json",
]
