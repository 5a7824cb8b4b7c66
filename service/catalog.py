"""What the service knows about subjects and their twins: metadata snapshots, twin lookups by
version or alias, and the subject and twin listings.

:class:`TwinCatalog` is the part of the data plane every other part looks twins up through: it
tells unknown subjects from subjects without a twin, resolves aliases on a short-lived metadata
snapshot and loads twins through the twin cache.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from twin.fit.cohort import SERVING_ALIAS, twin_end_state
from twin.models.ensemble import TwinEnsemble
from twin.models.state import TwinState
from twin.persist.sessions import SessionRecord, SessionStore
from twin.persist.store import Twin, TwinNotFoundError, TwinStore, TwinVersion

from service.cache import TwinCache
from service.config import DataPlaneConfig
from service.errors import FieldViolation, NoTwinError, SubjectNotFoundError
from service.limits import Limits, raise_invalid
from service.paging import Key, Page, paginate

T = TypeVar("T")


@dataclass(frozen=True)
class TwinSelector:
    """Names a twin version: ``version`` or ``alias``, else the ``serving`` alias (or the
    latest version when the subject has no serving alias)."""

    subject: str
    version: int | None = None
    alias: str | None = None


@dataclass(frozen=True)
class SubjectInfo:
    """What the server knows about a subject."""

    name: str
    n_sessions: int
    n_trials: int
    serving_version: int | None
    last_session_at: dt.datetime | None


@dataclass(frozen=True)
class SubjectView:
    """A snapshot of one subject's metadata.

    Attributes:
        taken_at: ``time.monotonic()`` when read.
        versions: its twin versions (oldest first), aliases included.
        sessions: its stored sessions, in order.
    """

    taken_at: float
    versions: tuple[TwinVersion, ...]
    sessions: tuple[SessionRecord, ...]


def sel_meta(view: SubjectView, sel: TwinSelector) -> TwinVersion | None:
    """The version ``sel`` names in ``view`` (default: ``serving``, else the latest), or None."""
    if sel.version is not None:
        return next((v for v in view.versions if v.version == sel.version), None)
    alias = sel.alias if sel.alias is not None else SERVING_ALIAS
    found = next((v for v in view.versions if alias in v.aliases), None)
    if found is None and sel.alias is None and view.versions:
        return view.versions[-1]
    return found


class TwinCatalog:
    """Subjects, twin versions and stored sessions, as the data plane sees them.

    Args:
        store: the twin store.
        sessions: stored sessions (same database).
        cache: loaded twins.
        config: limits and defaults (page sizes, metadata snapshot age).
    """

    def __init__(self, store: TwinStore, sessions: SessionStore, cache: TwinCache, config: DataPlaneConfig = DataPlaneConfig()) -> None:
        self.store, self.sessions, self.cache, self.config = store, sessions, cache, config
        self._views: dict[str, SubjectView] = {}
        self._views_lock = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------

    def view(self, subject: str, fresh: bool = False) -> SubjectView:
        """The subject's twin versions (with aliases) and stored sessions, from a snapshot at
        most ``config.metadata_ttl_s`` old (``fresh``: read now). Writes made through this
        server invalidate the snapshot at once."""
        now = time.monotonic()
        with self._views_lock:
            view = self._views.get(subject)
        if view is not None and not fresh and now - view.taken_at < self.config.metadata_ttl_s:
            return view
        view = SubjectView(now, tuple(self.store.versions(subject)), tuple(self.sessions.sessions(subject)))
        with self._views_lock:
            self._views[subject] = view
            if len(self._views) > 10_000:  # bound memory: drop the oldest snapshots
                for k in sorted(self._views, key=lambda k: self._views[k].taken_at)[:1000]:
                    del self._views[k]
        return view

    def invalidate(self, subject: str) -> None:
        """Forget the subject's metadata snapshot (after a write)."""
        with self._views_lock:
            self._views.pop(subject, None)

    def known(self, subject: str) -> bool:
        """True when the subject has stored sessions or a twin (read now)."""
        view = self.view(subject, fresh=True)
        return bool(view.versions) or bool(view.sessions)

    def resolve(self, sel: TwinSelector, field: str = "twin", fresh: bool = False) -> Twin:
        """Load the selected twin, telling unknown subjects from subjects without a twin.

        Aliases are resolved on a metadata snapshot (see :meth:`view`): when the ``serving``
        alias moves, the next request loads the new version (the twin cache is keyed by version).
        """
        self.check_selector(sel, field)
        meta = None if fresh else sel_meta(self.view(sel.subject), sel)
        meta = meta or sel_meta(self.view(sel.subject, fresh=True), sel)
        if meta is None:
            view = self.view(sel.subject)
            if not view.versions and not view.sessions:
                raise SubjectNotFoundError(sel.subject)
            if not view.versions:
                raise NoTwinError(sel.subject)
            what = f"version {sel.version}" if sel.version is not None else f"alias {sel.alias!r}"
            raise TwinNotFoundError(f"subject {sel.subject!r} has no twin {what}")
        twin = self.cache.get(sel.subject, meta.version)
        return twin if meta == twin.meta else replace(twin, meta=meta)  # aliases move: use the snapshot's metadata

    def check_selector(self, sel: TwinSelector, field: str = "twin") -> None:
        """A selector's subject and alias are names within the limits (so no error echoes an
        unbounded string), its version positive.

        Raises:
            InvalidArgumentError: they are not.
        """
        limits = self.config.limits
        bad = [limits.name(f"{field}.subject", sel.subject)]
        if sel.alias is not None:
            bad.append(limits.name(f"{field}.alias", sel.alias))
        if sel.version is not None and sel.version < 1:
            bad.append(FieldViolation(f"{field}.version", "must be >= 1"))
        raise_invalid(bad)

    def state(self, twin: Twin) -> TwinState:
        """Where the twin continues from (computed from the stored sessions if not stored)."""
        if twin.state is not None:
            return twin.state
        subject, through = twin.meta.subject, twin.meta.trained_through_session
        if [r for r in self.sessions.sessions(subject) if r.session <= through]:
            return twin_end_state(twin.model, self.sessions.trials(subject, through_session=through))
        raise NoTwinError(subject, f"twin v{twin.meta.version} has no stored end state and its sessions are not stored")

    def ensemble(self, twin: Twin) -> TwinEnsemble | None:
        """An ensemble twin with every component's end state (computed from the stored sessions
        when not stored); None for a single-rule twin."""
        ens = twin.ensemble
        if ens is None or ens.states is not None:
            return ens
        subject, through = twin.meta.subject, twin.meta.trained_through_session
        if not [r for r in self.sessions.sessions(subject) if r.session <= through]:
            raise NoTwinError(subject, f"twin v{twin.meta.version} has no stored end states and its sessions are not stored")
        trials = self.sessions.trials(subject, through_session=through)
        return replace(ens, states=tuple(twin_end_state(c.model, trials) for c in ens.components))

    # -- listing ---------------------------------------------------------------------------

    def page(self, items: Sequence[T], key: Callable[[T], Key], page_size: int, page_token: str) -> Page[T]:
        """The page of ``items`` (sorted by ``key``) after ``page_token``, within the configured sizes."""
        c = self.config
        check_page(page_size, page_token, c.limits)
        return paginate(items, key, page_size, page_token, c.default_page_size, c.max_page_size)

    def list_subjects(self, page_size: int = 0, page_token: str = "") -> Page[SubjectInfo]:
        """Subjects with stored sessions or twins, by name."""
        names = sorted(set(self.store.subjects()) | set(self.sessions.subjects()))
        page = self.page(names, lambda n: (n,), page_size, page_token)
        return Page(tuple(self._subject_info(n) for n in page.items), page.next_page_token)

    def _subject_info(self, name: str) -> SubjectInfo:
        recs = self.sessions.sessions(name)
        serving = None
        try:
            serving = self.store.resolve(name, alias=SERVING_ALIAS)
        except TwinNotFoundError:
            pass
        return SubjectInfo(name, len(recs), sum(r.n_trials for r in recs), serving, recs[-1].created_at if recs else None)

    def list_twins(self, subject: str = "", page_size: int = 0, page_token: str = "") -> Page[TwinVersion]:
        """Stored twin versions (one subject's, or everyone's), by subject then version.

        Raises:
            SubjectNotFoundError: ``subject`` is not known.
        """
        if subject:
            raise_invalid([self.config.limits.name("subject", subject)])
            if not self.known(subject):
                raise SubjectNotFoundError(subject)
            versions = self.store.versions(subject)
        else:
            versions = [v for s in self.store.subjects() for v in self.store.versions(s)]
        return self.page(versions, lambda v: (v.subject, v.version), page_size, page_token)

    def get_twin(self, sel: TwinSelector) -> tuple[TwinVersion, int]:
        """A twin version's metadata (read now, not from a snapshot) and the number of stored
        sessions after its training."""
        twin = self.resolve(sel, fresh=True)
        later = [r for r in self.view(sel.subject, fresh=True).sessions if r.session > twin.meta.trained_through_session]
        return twin.meta, len(later)


def check_page(page_size: int, page_token: str, limits: Limits) -> None:
    """A listing's page request: a non-negative size (larger than ``limits.max_page_size`` is
    cut to it) and a token no longer than ``limits.max_page_token_chars``.

    Raises:
        InvalidArgumentError: a negative size or an overlong token.
    """
    raise_invalid(
        [
            None if page_size >= 0 else FieldViolation("page_size", "must be >= 0 (0: the default)"),
            None if len(page_token) <= limits.max_page_token_chars else FieldViolation("page_token", "not a page token issued by this server"),
        ]
    )


__all__ = ["check_page", "SubjectInfo", "SubjectView", "TwinCatalog", "TwinSelector", "sel_meta"]
