"""What one request may cost: the limits of the service and the cost model that checks them
before any work starts.

Every RPC that does work in proportion to something a client chooses is checked here first,
on the numbers the request carries (the count of supplied trials is read before a single trial
is converted):

========================  =====================================================================
RPC                       cost checked (limit)
========================  =====================================================================
Predict (supplied)        supplied trials (``max_supplied_trials``)
Predict (stored)          stored trials run through (``max_history_trials``)
Forecast                  trials (``max_session_trials``), rollouts (``max_rollouts``),
                          rollouts x trials (``max_forecast_trial_steps``)
NextSession               rollouts, ``constraints.min_trials``/``max_trials``
                          (``max_session_trials``), rollouts x the longest session the plan can
                          have (``max_forecast_trial_steps``)
UploadSession             trials of the session (``max_session_trials``)
Teach (stream)            ``open.max_trials`` (``max_session_trials``); open streams
                          (``max_concurrent_teach_streams``, ``max_teach_streams_per_client``)
FitCohort                 subjects (``max_fit_subjects``), epochs (``max_fit_epochs``), stored
                          trials x epochs (``max_fit_trial_epochs``)
SearchCurricula           subjects (``max_search_subjects``), candidates
                          (``max_search_candidates``), horizon (``max_search_horizon_trials``),
                          candidates x twins x horizon (``max_search_trial_steps``)
List*                     page sizes (larger ones are cut to ``max_page_size``), page tokens
every request             its size in bytes (``max_request_bytes``, checked before parsing), its
                          strings (``max_name_chars``) and lists (``max_request_subjects``)
========================  =====================================================================

A request over a limit gets :class:`LimitExceededError` (RESOURCE_EXHAUSTED, naming the field,
the limit's name and its value); a value no limit could make valid (a negative count, a seed of
2**32 or more, NaN) gets :class:`~service.errors.InvalidArgumentError` (INVALID_ARGUMENT).

Besides the per-request costs, the server bounds how much runs at once: costly calls per role
(``max_concurrent_*_calls``), open WatchOperation streams (``max_concurrent_watches``), calls
queued for a thread (``max_queued_calls``) and operations waiting to run
(``max_pending_operations``).

The defaults were measured on one CPU thread with a DNN twin (``twin serve`` prints the
effective limits with ``--show-limits``): a Predict along 100,000 supplied trials takes about
2 s and 110 MB, a Forecast of 2,000 rollouts x 1,000 trials about 2 s and 170 MB, an upload
of 5,000 trials well under a second. The largest real animal of the IBL 53-mouse export has
83,000 trials over 89 sessions, and its longest session 2,000 trials.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields

from service.errors import FieldViolation, InvalidArgumentError, ServiceError

MiB = 1024 * 1024

#: Seeds are used by numpy and Optuna samplers, which take 32-bit seeds.
MAX_SEED = 2**32 - 1
#: Longest name the store's columns hold (subjects, labels: ``String(200)``).
MAX_STORED_NAME = 200


@dataclass(frozen=True)
class Limits:
    """The limits of the service (one frozen config; see the module docstring for the model).

    Attributes:
        max_request_bytes: largest request message accepted (bigger ones are refused before
            they are parsed; gRPC itself refuses those over twice it).
        max_name_chars: longest subject name, alias, label, rule name, operation id.
        max_page_token_chars: longest page token.
        max_request_subjects: most subjects named in one request.
        max_page_size: largest page (a larger ``page_size`` is cut to it).
        max_session_trials: most trials in one session: an upload, a forecast, a plan's
            ``min_trials``/``max_trials``, a protocol's session length.
        max_supplied_trials: most trials sent with a Predict.
        max_history_trials: most stored trials a Predict runs the twin along.
        max_rollouts: most simulated copies of a forecast.
        max_forecast_trial_steps: most rollouts x trials of one forecast (Forecast, NextSession).
        max_protocol_phases: most contrast phases of a protocol in a request.
        max_phase_contrasts: most contrasts of one phase (and easy contrasts of a rule).
        max_fit_subjects: most animals of one cohort fit.
        max_fit_epochs: most epochs of one cohort fit.
        max_fit_trial_epochs: most stored trials x epochs of one cohort fit.
        max_search_subjects: most twins one curriculum search goes through.
        max_search_candidates: most candidates of one curriculum search.
        max_search_horizon_trials: longest simulated training of a candidate.
        max_search_trial_steps: most candidates x twins x horizon trials of one search.
        max_pending_operations: operations waiting to run; a request that would queue another
            one is refused until some have run.
        max_concurrent_reader_calls: costly calls (Predict, Forecast, NextSession) running at
            once for callers with the reader role (and without authentication).
        max_concurrent_rig_calls: the same for the rig role.
        max_concurrent_admin_calls: the same for the admin role.
        max_concurrent_watches: WatchOperation streams open at once (each holds a thread).
        max_concurrent_teach_streams: Teach streams open at once (each holds a thread).
        max_teach_streams_per_client: Teach streams one client (token) may hold open at once.
        max_queued_calls: calls accepted at once, running or waiting for a thread; gRPC
            answers the next one RESOURCE_EXHAUSTED at once.
    """

    max_request_bytes: int = 8 * MiB
    max_name_chars: int = 200
    max_page_token_chars: int = 1000
    max_request_subjects: int = 1000
    max_page_size: int = 1000
    max_session_trials: int = 5000
    max_supplied_trials: int = 100_000
    max_history_trials: int = 250_000
    max_rollouts: int = 2000
    max_forecast_trial_steps: int = 2_000_000
    max_protocol_phases: int = 16
    max_phase_contrasts: int = 16
    max_fit_subjects: int = 1000
    max_fit_epochs: int = 5000
    max_fit_trial_epochs: int = 5_000_000_000
    max_search_subjects: int = 200
    max_search_candidates: int = 1000
    max_search_horizon_trials: int = 100_000
    max_search_trial_steps: int = 20_000_000_000
    max_pending_operations: int = 32
    max_concurrent_reader_calls: int = 4
    max_concurrent_rig_calls: int = 4
    max_concurrent_admin_calls: int = 2
    max_concurrent_watches: int = 4
    max_queued_calls: int = 64
    max_concurrent_teach_streams: int = 8
    max_teach_streams_per_client: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"limit {f.name} must be a positive integer, got {v!r}")
        if self.max_name_chars > MAX_STORED_NAME:
            raise ValueError(f"limit max_name_chars must be at most {MAX_STORED_NAME}: the store's name columns hold no more")

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every limit's name."""
        return tuple(f.name for f in fields(cls))

    def replace(self, values: Mapping[str, object]) -> "Limits":
        """These limits with ``values`` (name → positive integer; strings such as ``"8MiB"``,
        ``"2e6"`` or ``"2_000_000"`` are read too) changed.

        Raises:
            ValueError: an unknown name or a value that is not a positive integer.
        """
        unknown = sorted(set(values) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown limit(s) {unknown}; known: {', '.join(self.names())}")
        return dataclasses.replace(self, **{k: _as_int(k, v) for k, v in values.items()})

    def as_dict(self) -> dict[str, int]:
        """Name → value of every limit."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- checks --------------------------------------------------------------------------------

    def check(self, *violations: "LimitViolation | None") -> None:
        """Raise for the violations found (None entries are checks that passed).

        Raises:
            LimitExceededError: at least one.
        """
        found = [v for v in violations if v is not None]
        if found:
            raise LimitExceededError(*found)

    def over(self, field: str, value: int, limit: str, what: str = "") -> "LimitViolation | None":
        """A violation when ``value`` exceeds the limit named ``limit`` (None when it does not)."""
        cap = getattr(self, limit)
        if value <= cap:
            return None
        return LimitViolation(field, limit, cap, int(value), what)

    def name(self, field: str, value: str, required: bool = True) -> FieldViolation | None:
        """A subject name, alias, label...: non-blank when ``required``, at most ``max_name_chars``."""
        if required and not value.strip():
            return FieldViolation(field, "required")
        if len(value) > self.max_name_chars:
            return FieldViolation(field, f"at most {self.max_name_chars} characters (got {len(value)})")
        return None

    def subjects(self, field: str, names: tuple[str, ...] | list[str], limit: str) -> list[FieldViolation]:
        """A list of subject names: the bad names among them (the first 20).

        Raises:
            LimitExceededError: more names than ``limit`` or ``max_request_subjects`` allow.
        """
        self.check(self.over(field, len(names), limit, "subjects") or self.over(field, len(names), "max_request_subjects", "subjects"))
        return [v for v in (self.name(f"{field}[{i}]", s) for i, s in enumerate(names)) if v is not None][:20]

    # -- the cost model, one function per costly RPC ------------------------------------------

    def check_supplied_trials(self, n: int, field: str = "supplied.trials") -> None:
        """Predict along ``n`` supplied trials."""
        self.check(self.over(field, n, "max_supplied_trials", "trials"))

    def check_history_trials(self, n: int, field: str = "stored") -> None:
        """Predict along ``n`` stored trials."""
        self.check(self.over(field, n, "max_history_trials", "stored trials; choose fewer with stored.through_session"))

    def check_session_trials(self, n: int, field: str = "trials") -> None:
        """An upload of ``n`` trials."""
        self.check(self.over(field, n, "max_session_trials", "trials"))

    def check_forecast(
        self, n_rollouts: int, n_trials: int, trials_field: str = "n_trials", rollouts_field: str = "n_rollouts", product_field: str | None = None
    ) -> None:
        """A forecast of ``n_rollouts`` x ``n_trials`` (the product's violation is reported on
        ``product_field``, by default ``trials_field``)."""
        each = [self.over(rollouts_field, n_rollouts, "max_rollouts", "rollouts"), self.over(trials_field, n_trials, "max_session_trials", "trials")]
        steps = n_rollouts * n_trials
        product = self.over(product_field or trials_field, steps, "max_forecast_trial_steps", f"rollouts x trials ({n_rollouts:,} x {n_trials:,})")
        self.check(*each, None if any(each) else product)

    def check_fit(self, n_subjects: int, n_trials: int, epochs: int, fits: int = 1) -> None:
        """A cohort fit of ``n_subjects`` animals with ``n_trials`` stored trials for ``epochs``,
        ``fits`` population fits in all (an ensemble fits each component twice)."""
        what = f"stored trials x epochs ({n_trials} x {epochs})" if fits == 1 else f"stored trials x epochs x population fits ({n_trials} x {epochs} x {fits})"
        self.check(
            self.over("subjects", n_subjects, "max_fit_subjects", "subjects"),
            self.over("epochs", epochs, "max_fit_epochs", "epochs"),
            self.over("epochs", n_trials * epochs * fits, "max_fit_trial_epochs", what),
        )

    def check_search(self, n_subjects: int, n_candidates: int, horizon_trials: int) -> None:
        """A curriculum search of ``n_candidates`` through ``n_subjects`` twins over ``horizon_trials``."""
        self.check(
            self.over("subjects", n_subjects, "max_search_subjects", "twins"),
            self.over("n_candidates", n_candidates, "max_search_candidates", "candidates"),
            self.over("horizon_trials", horizon_trials, "max_search_horizon_trials", "trials"),
            self.over(
                "n_candidates", n_candidates * n_subjects * horizon_trials, "max_search_trial_steps",
                f"candidates x twins x horizon trials ({n_candidates} x {n_subjects} x {horizon_trials})",
            ),
        )

    def check_queue(self, pending: int, field: str = "") -> None:
        """Another operation when ``pending`` wait to run."""
        if pending >= self.max_pending_operations:
            raise LimitExceededError(LimitViolation(field, "max_pending_operations", self.max_pending_operations, pending + 1, "operations waiting to run; retry later"))


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"limit {name} must be a positive integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip().replace("_", "").replace(",", "")
        for suffix, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
            if s.endswith(suffix):
                return int(float(s[: -len(suffix)]) * scale)
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                pass
            else:
                if math.isfinite(f) and f.is_integer():
                    return int(f)
    raise ValueError(f"limit {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class LimitViolation:
    """One field of a request over one limit.

    Attributes:
        field: path of the field in the request ("" for the request as a whole).
        limit: name of the limit (an attribute of :class:`Limits`).
        maximum: the limit's value.
        value: what the request asked for.
        what: the unit or quantity counted.
    """

    field: str
    limit: str
    maximum: int
    value: int
    what: str = ""

    @property
    def description(self) -> str:
        what = f" {self.what}" if self.what else ""
        return f"{self.value:,}{what} exceeds the limit {self.limit} = {self.maximum:,}"


class LimitExceededError(ServiceError):
    """A request that would cost more than the server allows (RESOURCE_EXHAUSTED).

    Args:
        violations: the fields over their limits (at least one).
    """

    def __init__(self, *violations: LimitViolation) -> None:
        if not violations:
            raise ValueError("LimitExceededError needs at least one violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in violations))


class ConcurrencyGate:
    """Bounds how many calls of each kind run at once; the next one is refused at once
    (:class:`LimitExceededError`) rather than queued.

    Args:
        limits: kind → how many may run at once.
        default: how many of any other kind may run at once (None: not counted), e.g. the
            calls of each client when kinds are client names.
    """

    def __init__(self, limits: Mapping[str, int], default: int | None = None) -> None:
        self._limits = dict(limits)
        self._default = default
        self._running = {k: 0 for k in limits}
        self._lock = threading.Lock()

    def running(self, kind: str) -> int:
        """Calls of ``kind`` running now."""
        with self._lock:
            return self._running.get(kind, 0)

    @contextmanager
    def hold(self, kind: str, limit_name: str, what: str) -> Iterator[None]:
        """Run the block as one call of ``kind`` (a kind without a limit is not counted).

        Raises:
            LimitExceededError: ``kind`` is at its limit.
        """
        cap = self._limits.get(kind, self._default)
        if cap is None:
            yield
            return
        with self._lock:
            running = self._running.get(kind, 0)
            if running >= cap:
                raise LimitExceededError(LimitViolation("", limit_name, cap, running + 1, f"{what} at once; retry later"))
            self._running[kind] = running + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[kind] -= 1
                if not self._running[kind] and kind not in self._limits:
                    del self._running[kind]  # bound memory: a client's count goes when it is 0


def check_seed(seed: int, field: str = "seed") -> None:
    """Seeds go to numpy and Optuna, which take 32-bit ones.

    Raises:
        InvalidArgumentError: ``seed`` outside [0, 2**32).
    """
    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgumentError.field(field, f"must be in [0, {MAX_SEED}] (2**32 - 1)")


def raise_invalid(violations: list[FieldViolation | None]) -> None:
    """Raise an :class:`InvalidArgumentError` of the violations found (None: passed)."""
    found = [v for v in violations if v is not None]
    if found:
        raise InvalidArgumentError(*found[:20])


__all__ = [
    "ConcurrencyGate",
    "LimitExceededError",
    "LimitViolation",
    "Limits",
    "MAX_SEED",
    "check_seed",
    "raise_invalid",
]
