"""One compiled pass that tells whether trial columns pass every check of
:func:`twin.data.trials.validate_columns`.

Validation in NumPy is some 25 array operations and their Python around them (~0.2 ms for a
1,000-trial Predict, most of it dispatch). A served request is almost always valid, so the
server first screens it in one numba-compiled loop over the trials (microseconds); only a table
that fails the screen goes through the NumPy checks, which find the first problem and word its
message. The screen is therefore only ever a shortcut to "valid": it answers True exactly when
the NumPy checks raise nothing (a property test holds the two together).

numba compiles the screen on its first call (about a second; later starts load numba's on-disk
cache). So that no request waits on that, nothing uses it until :func:`warm_up` has compiled it:
the server calls :func:`warm_up` with its other kernels; elsewhere (scripts, the CLI) the NumPy
checks run as before.
"""

from __future__ import annotations

import threading

import numpy as np

try:  # numba is a dependency, but validation must keep working without it
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]

_READY = threading.Event()


def _screen_py(session, trial, cl, cr, choice, feedback, side, prob):  # type: ignore[no-untyped-def]
    """True when every trial passes the checks (all ``[n]`` float64, ``n >= 1``)."""
    n = cl.shape[0]
    for i in range(n):
        a, b, p = cl[i], cr[i], prob[i]
        if not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 and 0.0 <= p <= 1.0):  # NaN fails too
            return False
        if a > 0.0 and b > 0.0:
            return False
        y, f, s = choice[i], feedback[i], side[i]
        if not ((y == 0.0 or y == 1.0) and (f == -1.0 or f == 1.0) and (s == 0.0 or s == 1.0)):
            return False
        for v in (session[i], trial[i]):
            if not (1.0 <= v < 2147483648.0) or v != np.round(v):  # twin.data.trials.MAX_NUMBER
                return False
        if (b > 0.0 and s != 1.0) or (a > 0.0 and s != 0.0):
            return False
        if (y == s) != (f == 1.0):
            return False
        if i:
            if session[i] < session[i - 1]:
                return False
            if session[i] == session[i - 1] and trial[i] <= trial[i - 1]:
                return False
    return True


_screen = numba.njit(cache=True, nogil=True)(_screen_py) if numba is not None else None


def screen(session: np.ndarray, trial: np.ndarray, cl: np.ndarray, cr: np.ndarray, choice: np.ndarray, feedback: np.ndarray, side: np.ndarray, prob: np.ndarray) -> bool | None:
    """Whether one subject's columns pass every value check of
    :func:`~twin.data.trials.validate_columns`; None when the compiled screen is not ready (the
    caller then runs the NumPy checks).

    Args:
        session, trial, cl, cr, choice, feedback, side, prob: ``[n]`` float64 columns
            (``n >= 1``), as :func:`~twin.data.trials.validate_columns` coerces them.
    """
    if _screen is None or not _READY.is_set():
        return None
    return bool(_screen(session, trial, cl, cr, choice, feedback, side, prob))


def warm_up() -> None:
    """Compile the screen (or load it from numba's cache); from then on :func:`screen` runs it."""
    if _screen is None:  # pragma: no cover
        return
    one = np.ones(1)
    _screen(one, one, np.zeros(1), one, one, one, one, np.full(1, 0.5))
    _READY.set()


def ready() -> bool:
    """Whether :func:`screen` runs the compiled screen now."""
    return _READY.is_set()


__all__ = ["ready", "screen", "warm_up"]
