"""Progress of long loops (fits, searches): a tqdm bar on a terminal, one-line log records elsewhere.

The core's loops call :func:`progress_bar` instead of ``tqdm`` directly; what it returns is a
``tqdm`` (so ``set_postfix``, ``update`` and iteration work as usual). How progress shows is one
process-wide setting (:func:`configure_progress`, set by the ``twin`` command from
``--quiet``/``--verbose`` and whether stderr is a terminal):

* :attr:`ProgressMode.BAR`: tqdm's bar (``\\r`` frames), for terminals;
* :attr:`ProgressMode.LOG`: a log record (logger ``twin.progress``, level INFO) at most every
  ``interval_s`` seconds and one when the loop ends, for logs, pipes and cluster jobs; a loop that
  ends early (early stopping) says so instead of freezing at its last percentage;
* :attr:`ProgressMode.OFF`: nothing;
* :attr:`ProgressMode.AUTO` (default): BAR when stderr is a terminal, else LOG.
"""

from __future__ import annotations

import enum
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

#: the logger progress records go to.
LOGGER = logging.getLogger("twin.progress")


class ProgressMode(enum.Enum):
    """How loops show their progress."""

    AUTO = "auto"
    BAR = "bar"
    LOG = "log"
    OFF = "off"


@dataclass(frozen=True)
class ProgressSettings:
    """The process-wide progress setting.

    Attributes:
        mode: how progress shows.
        interval_s: seconds between two log records (LOG mode).
    """

    mode: ProgressMode = ProgressMode.AUTO
    interval_s: float = 30.0


_settings = ProgressSettings()


def configure_progress(settings: ProgressSettings) -> None:
    """Set how every later :func:`progress_bar` shows progress."""
    global _settings
    if settings.interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {settings.interval_s}")
    _settings = settings


def progress_settings() -> ProgressSettings:
    """The current setting."""
    return _settings


def resolved_mode(settings: ProgressSettings | None = None) -> ProgressMode:
    """BAR, LOG or OFF: AUTO resolved against whether stderr is a terminal."""
    mode = (settings or _settings).mode
    if mode is ProgressMode.AUTO:
        isatty = getattr(sys.stderr, "isatty", None)
        return ProgressMode.BAR if callable(isatty) and isatty() else ProgressMode.LOG
    return mode


class LogProgress(tqdm):  # type: ignore[misc]
    """A tqdm that writes log records instead of ``\\r`` frames (at most one per ``mininterval``)."""

    _FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), {elapsed} elapsed{postfix}"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", _settings.interval_s)
        kwargs.setdefault("bar_format", self._FORMAT)
        kwargs["leave"] = True
        self._logged_close = False
        self._last_log = time.monotonic()
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        """Count an item when the loop body gets it, so a loop left by ``break`` counts its last one."""
        try:
            for obj in self.iterable:
                self.update(1)
                yield obj
        finally:
            self.close()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Log the current state as one line, at most once per ``mininterval`` seconds."""
        now = time.monotonic()
        if msg == "" or self.n == 0 or now - self._last_log < self.mininterval:
            return True
        self._last_log = now
        LOGGER.info((msg if msg is not None else str(self)).strip())
        return True

    def close(self) -> None:
        """Log the end: the last state, and that the loop stopped early when it did."""
        if not self.disable and not self._logged_close:
            self._logged_close = True
            end = "" if self.total is None or self.n >= self.total else f"; stopped early at {self.n} of {self.total}"
            LOGGER.info(f"{self.desc}: done, {self.n} in {self.format_interval(self.format_dict['elapsed'])}{end}")
        self.disable = True  # tqdm's own close would display again
        super().close()


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A progress bar over ``iterable`` as the process-wide setting asks (tqdm's arguments).

    ``disable=True`` (the caller's own "no progress") wins over the setting.
    """
    mode = resolved_mode()
    if mode is ProgressMode.OFF:
        kwargs["disable"] = True
    if mode is ProgressMode.LOG and not kwargs.get("disable", False):
        return LogProgress(iterable, **kwargs)
    return tqdm(iterable, **kwargs)


__all__ = ["LOGGER", "LogProgress", "ProgressMode", "ProgressSettings", "configure_progress", "progress_bar", "progress_settings", "resolved_mode"]
