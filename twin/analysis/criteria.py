r"""IBL training criteria (``trained_1a``, ``trained_1b``) computed from trials, batched.

Criteria (IBL, ``brainbox.behavior.training``)
----------------------------------------------
A session *passes* a criterion when the window made of it and the ``window - 1`` (= 2) sessions
before it, consecutive in the subject's training order, meets every condition below. The
psychometric is fitted once to the pooled trials of the window (as IBL does).

=========================  ================  ================  ===========================
condition                  ``trained_1a``    ``trained_1b``    field
=========================  ================  ================  ===========================
``|bias|``                 < 16              < 10              ``max_abs_bias``
``threshold``              < 19              < 20              ``max_threshold``
both lapses                < 0.2             < 0.1             ``max_lapse``
trials in *each* session   > 200             > 400             ``min_trials``
accuracy on easy trials    > 0.8             > 0.9             ``min_easy_accuracy``
low contrasts shown        <= 6.25 % both    <= 6.25 % both    ``low_contrast``
=========================  ================  ================  ===========================

Choices made here, all fields of :class:`CriterionConfig`:

* easy trials are those with unsigned contrast >= 0.5 (``easy_contrast``); by default their
  accuracy is pooled over the window (``easy_per_session=False``). ibllib requires it of each
  session separately; set ``easy_per_session=True`` for that.
* ``low_contrast``: the window must contain at least one trial of unsigned contrast
  <= ``low_contrast`` rewarded on the left and one rewarded on the right (so the psychometric's
  slope is constrained near zero). ibllib instead requires that zero contrast was shown; use
  ``low_contrast=0.0`` for (nearly) that, ``None`` to drop the condition.
* ibllib's ``trained_1b`` also requires a median response time < 2 s on zero-contrast trials;
  the canonical trials table has no response times, so that condition is not applied.

Recording readiness on biased blocks (:data:`READY_FOR_RECORDING`)
-----------------------------------------------------------------
ibllib's ``criterion_ephys`` (``ready4ephysrig``; ``ready4recording`` adds conditions on the rig
and the session delay) judges three consecutive *biased* sessions (biasedChoiceWorld): the
psychometric is fitted separately to the window's trials of the P(left) = 0.2 and the 0.8 blocks;
all four lapses < 0.1; the bias shift ``bias(0.8) - bias(0.2) > 5`` (percent); > 400 trials in
each session; easy accuracy > 0.9. A :class:`CriterionConfig` with ``min_bias_shift`` set is
such a block criterion (fields ``bias_blocks``, ``min_bias_shift``; its ``max_lapse`` applies to
each block's fit, and ``max_abs_bias`` / ``max_threshold`` to the fit of all the window's trials,
infinite for ibllib's). Not applied, for want of the data in the canonical table: the median
response time < 2 s, the number of sessions on the recording rig and their delays (so the
criterion here is ibllib's ``ready4ephysrig``, the behavioural part of ``ready4recording``).
(ibllib's code writes ``psych_80[3]`` without ``< 0.1``; its documentation and the IBL protocol
require every lapse < 0.1, which is what is applied here.)

A subject reaches a criterion at the first session that passes (the last session of the first
passing window); *trials to criterion* counts every trial up to and including that session.

Two levels of API: tensors (:func:`session_stats`, :func:`window_psychometrics`,
:func:`criterion_passes`, :func:`first_session_meeting`) for simulated cohorts, and tables (:func:`criteria_sessions`, :func:`training_criteria`) on the
canonical trials table of :mod:`twin.data.trials`; the tables are computed with the tensor functions.
The erf psychometric fitted to each window is :mod:`twin.analysis.psychometrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.errors import TrialDataError
from twin.data.trials import validate_trials
from twin.analysis.psychometrics import (
    CONTRAST_TOL,
    DTYPE,
    PsychometricFit,
    check_binary,
    check_percent,
    check_trials_2d,
    contrast_bins,
    fit_counts,
)


@dataclass(frozen=True)
class CriterionConfig:
    """Thresholds of an IBL training criterion (see the module docstring).

    All comparisons are strict, as in ibllib.

    Attributes:
        name: short name, used in column names (``passes_<name>``, ``session_<name>``).
        max_abs_bias: ``|bias| <`` this (percent).
        max_threshold: ``threshold <`` this (percent, psychofit convention).
        max_lapse: each lapse ``<`` this.
        min_trials: each session of the window has ``>`` this many trials.
        min_easy_accuracy: accuracy on easy trials ``>`` this.
        easy_contrast: unsigned contrast (fraction) at and above which a trial is easy.
        low_contrast: the window must hold a trial with unsigned contrast ``<=`` this (fraction)
            rewarded on each side; None drops the condition.
        window: sessions pooled (consecutive, ending at the session judged).
        easy_per_session: require the easy accuracy of each session of the window (ibllib) rather
            than of the pooled window.
        title: the criterion's name for people and rig outputs (``trained_1b``); ``name`` if empty.
        bias_blocks: P(left) of the two block types of a block criterion (low, high).
        min_bias_shift: set: a block criterion (see the module docstring), passed when
            ``bias(high block) - bias(low block) >`` this (percent), each block's lapses below
            ``max_lapse``; None: an unbiased-session criterion (``trained_1a``, ``trained_1b``).
    """

    name: str
    max_abs_bias: float
    max_threshold: float
    max_lapse: float
    min_trials: int
    min_easy_accuracy: float
    easy_contrast: float = 0.5
    low_contrast: float | None = 0.0625
    window: int = 3
    easy_per_session: bool = False
    title: str = ""
    bias_blocks: tuple[float, float] = (0.2, 0.8)
    min_bias_shift: float | None = None

    def __post_init__(self) -> None:
        if not self.name or not f"passes_{self.name}".isidentifier():
            raise ValueError(f"name must be letters, digits or underscores; got {self.name!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1; got {self.window}")
        if self.min_trials < 0:
            raise ValueError(f"min_trials must be >= 0; got {self.min_trials}")
        if not 0 < self.easy_contrast <= 1:
            raise ValueError(f"easy_contrast must be in (0, 1]; got {self.easy_contrast}")
        if self.low_contrast is not None and not 0 <= self.low_contrast <= 1:
            raise ValueError(f"low_contrast must be in [0, 1] or None; got {self.low_contrast}")
        for f in ("max_abs_bias", "max_threshold", "max_lapse", "min_easy_accuracy"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"{f} must be >= 0; got {getattr(self, f)}")
        lo, hi = self.bias_blocks
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"bias_blocks must be two P(left) with 0 <= low < high <= 1; got {self.bias_blocks}")

    @property
    def label(self) -> str:
        """The criterion's name for people (``title``, else ``name``)."""
        return self.title or self.name

    @property
    def on_biased_blocks(self) -> bool:
        """Whether this is a block criterion, judged on biased sessions."""
        return self.min_bias_shift is not None

    def describe(self) -> str:
        """One line listing every condition (e.g. for a rig's plan)."""
        w = self.window
        parts = []
        if self.max_abs_bias != float("inf"):
            parts.append(f"|bias| < {self.max_abs_bias:g}%")
        if self.max_threshold != float("inf"):
            parts.append(f"threshold < {self.max_threshold:g}%")
        if self.on_biased_blocks:
            lo, hi = self.bias_blocks
            parts.append(f"every lapse of the P(left)={lo:g} and {hi:g} block fits < {self.max_lapse:g}")
            parts.append(f"bias shift between those blocks > {self.min_bias_shift:g}%")
        else:
            parts.append(f"both lapses < {self.max_lapse:g}")
        parts.append(f"> {self.min_trials} trials in each session")
        where = "each session" if self.easy_per_session else "the pooled window"
        parts.append(f"accuracy on contrasts >= {self.easy_contrast:g} > {self.min_easy_accuracy:g} ({where})")
        if self.low_contrast is not None:
            parts.append(f"a contrast <= {self.low_contrast:g} shown on each side")
        kind = "biased" if self.on_biased_blocks else "consecutive"
        return f"{self.label}: over {w} {kind} sessions, " + ", ".join(parts) + " (no response-time condition)"


TRAINED_1A = CriterionConfig("1a", max_abs_bias=16.0, max_threshold=19.0, max_lapse=0.2, min_trials=200, min_easy_accuracy=0.8, title="trained_1a")
"""IBL ``trained_1a``."""
TRAINED_1B = CriterionConfig("1b", max_abs_bias=10.0, max_threshold=20.0, max_lapse=0.1, min_trials=400, min_easy_accuracy=0.9, title="trained_1b")
"""IBL ``trained_1b`` (without ibllib's response-time condition)."""
READY_FOR_RECORDING = CriterionConfig(
    "ready",
    max_abs_bias=float("inf"),
    max_threshold=float("inf"),
    max_lapse=0.1,
    min_trials=400,
    min_easy_accuracy=0.9,
    title="ready_for_recording",
    min_bias_shift=5.0,
)
"""IBL recording readiness on biased blocks (ibllib ``criterion_ephys``; without its response-time,
rig and delay conditions: see the module docstring)."""


@dataclass(frozen=True)
class SessionStats:
    """Per-animal, per-session trial counts by (signed contrast, rewarded side).

    ``A`` animals, ``S`` sessions (animals with fewer are padded at the end), ``K`` bins.

    Attributes:
        contrast: ``[K]`` signed contrast of each bin, percent (right positive).
        side: ``[K]`` long, rewarded side of each bin (1 = right; both occur at zero contrast).
        n: ``[A, S, K]`` trials per bin (float64, integral).
        n_right: ``[A, S, K]`` right choices per bin.
        n_sessions: ``[A]`` long, real sessions per animal.
    """

    contrast: torch.Tensor
    side: torch.Tensor
    n: torch.Tensor
    n_right: torch.Tensor
    n_sessions: torch.Tensor

    def __post_init__(self) -> None:
        if self.n.dim() != 3 or self.n_right.shape != self.n.shape:
            raise ValueError(f"n and n_right must both be [A, S, K]; got {tuple(self.n.shape)} and {tuple(self.n_right.shape)}")
        a, s, k = self.n.shape
        if self.contrast.shape != (k,) or self.side.shape != (k,):
            raise ValueError(f"contrast and side must be [{k}]; got {tuple(self.contrast.shape)} and {tuple(self.side.shape)}")
        if self.n_sessions.shape != (a,):
            raise ValueError(f"n_sessions must be [{a}]; got {tuple(self.n_sessions.shape)}")
        if bool(((self.n_sessions < 0) | (self.n_sessions > s)).any()):
            raise ValueError(f"n_sessions must be within [0, {s}]")
        if bool((self.n_right > self.n).any()) or bool((self.n_right < 0).any()):
            raise ValueError("n_right must be within [0, n]")
        check_percent(self.contrast, "contrast")
        empty = self.valid & (self.n_trials == 0)
        if bool(empty.any()):
            ai, si = (int(v) for v in torch.nonzero(empty)[0])
            raise ValueError(f"animal {ai}, session {si} (0-based) has no trials ({int(empty.sum())} empty session(s) in all)")
        if bool(((~self.valid) & (self.n_trials > 0)).any()):
            raise ValueError("trials found in sessions at or beyond n_sessions")

    @property
    def valid(self) -> torch.Tensor:
        """``[A, S]`` bool, True on real sessions."""
        return torch.arange(self.n.shape[1])[None, :] < self.n_sessions[:, None]

    @property
    def n_trials(self) -> torch.Tensor:
        """``[A, S]`` trials per session."""
        return self.n.sum(-1)

    @property
    def n_correct(self) -> torch.Tensor:
        """``[A, S, K]`` rewarded choices per bin."""
        return torch.where(self.side == 1, self.n_right, self.n - self.n_right)

    def easy_accuracy(self, easy_contrast: float = 0.5) -> torch.Tensor:
        """``[A, S]`` accuracy on trials with unsigned contrast >= ``easy_contrast``; NaN if none."""
        easy = self.contrast.abs() >= easy_contrast * 100 - CONTRAST_TOL
        return (self.n_correct * easy).sum(-1) / (self.n * easy).sum(-1)


def session_stats(
    signed_contrast: torch.Tensor,
    choice: torch.Tensor,
    correct_side: torch.Tensor,
    session_start: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> SessionStats:
    """Per-session counts of many animals' trial sequences (e.g. a simulation rollout).

    Args:
        signed_contrast: ``[A, T]`` percent, right positive (``100 * (contrast_right - contrast_left)``).
        choice: ``[A, T]`` 1 = right.
        correct_side: ``[A, T]`` rewarded side, 1 = right.
        session_start: ``[A, T]`` bool, True on the first trial of each session; must be True
            on each animal's first trial.
        mask: ``[A, T]`` bool, False on trials to leave out (padding); every session must keep
            at least one trial; all True if None.

    Returns:
        The counts.

    Raises:
        ValueError: bad shapes or codes, or a session without masked-in trials.
    """
    x = check_trials_2d("signed_contrast", signed_contrast).to(DTYPE)
    c = check_trials_2d("choice", choice, x.shape).to(DTYPE)
    side = check_trials_2d("correct_side", correct_side, x.shape)
    start = check_trials_2d("session_start", session_start, x.shape).bool()
    mask = torch.ones(x.shape, dtype=torch.bool) if mask is None else check_trials_2d("mask", mask, x.shape).bool()
    check_binary("choice", c, mask)
    check_binary("correct_side", side, mask)
    check_percent(x[mask], "signed_contrast")
    if x.shape[1] == 0 or not bool(start[:, 0].all()):
        raise ValueError("session_start must be True on each animal's first trial")
    a, _ = x.shape
    sess = start.long().cumsum(1) - 1  # [A, T] 0-based session of each trial
    n_sessions = torch.where(mask, sess + 1, torch.zeros_like(sess)).amax(1)
    s = max(int(n_sessions.max()), 1)
    contrast, side_k, idx = contrast_bins(x, side, mask)
    k = contrast.shape[0]
    flat = (sess.clamp(max=s - 1) * k + idx)[mask]
    animal = torch.arange(a)[:, None].expand_as(sess)[mask]
    flat = animal * (s * k) + flat
    n = torch.zeros(a * s * k, dtype=DTYPE).index_add_(0, flat, torch.ones_like(flat, dtype=DTYPE))
    r = torch.zeros(a * s * k, dtype=DTYPE).index_add_(0, flat, c[mask])
    return SessionStats(contrast, side_k, n.reshape(a, s, k), r.reshape(a, s, k), n_sessions)


def _window_sum(t: torch.Tensor, w: int) -> torch.Tensor:
    """Sum over sessions ``e-w+1..e`` along dim 1 for each end ``e`` (partial at the start)."""
    cs = torch.cat([torch.zeros_like(t[:, :1]), t.cumsum(1)], 1)
    lo = (torch.arange(t.shape[1]) + 1 - w).clamp(min=0)
    return cs[:, 1:] - cs[:, lo]


def _window_min(t: torch.Tensor, w: int) -> torch.Tensor:
    """Minimum over sessions ``e-w+1..e`` along dim 1 (partial windows at the start)."""
    pad = torch.full((t.shape[0], w - 1), float("inf"), dtype=t.dtype, device=t.device)  # also when there are fewer than w - 1 sessions
    return torch.cat([pad, t], 1).unfold(1, w, 1).amin(-1)


def _full_windows(stats: SessionStats, w: int) -> torch.Tensor:
    """``[A, S]`` bool: a window of ``w`` real sessions ends at this session."""
    e = torch.arange(stats.n.shape[1])[None, :]
    return (e >= w - 1) & stats.valid


def window_psychometrics(stats: SessionStats, window: int = 3, *, max_iter: int = 100) -> PsychometricFit:
    """Fit the psychometric to the pooled trials of every window of consecutive sessions, at once.

    Args:
        stats: per-session counts, ``[A, S, K]``.
        window: sessions pooled; the window ending at session ``e`` covers ``e - window + 1 .. e``.
        max_iter: Levenberg-Marquardt iterations at most.

    Returns:
        The fits, each field ``[A, S]`` indexed by the window's last session; NaN (``n_trials``
        0) where no full window of real sessions ends.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    full = _full_windows(stats, window)
    pooled_n = _window_sum(stats.n, window)[full]  # [M, K]
    pooled_r = _window_sum(stats.n_right, window)[full]
    shape = full.shape
    out = torch.full((*shape, 5), float("nan"), dtype=DTYPE)
    if pooled_n.shape[0]:
        theta, nll = fit_counts(stats.contrast, pooled_n, pooled_r, max_iter=max_iter)
        out[full] = torch.cat([theta, nll[:, None]], 1)
    n_trials = torch.where(full, _window_sum(stats.n_trials, window), torch.zeros(shape, dtype=DTYPE)).long()
    return PsychometricFit(*out.unbind(-1), n_trials=n_trials)


@dataclass(frozen=True)
class BlockCounts:
    """Per-session counts of the trials of the two biased-block types, in the bins of a
    :class:`SessionStats` (``A`` animals, ``S`` sessions, ``K`` bins).

    Attributes:
        probs: P(left) of the (low, high) blocks.
        n: ``[2, A, S, K]`` trials per bin in each block type.
        n_right: ``[2, A, S, K]`` right choices.
    """

    probs: tuple[float, float]
    n: torch.Tensor
    n_right: torch.Tensor

    def __post_init__(self) -> None:
        if self.n.dim() != 4 or self.n.shape[0] != 2 or self.n_right.shape != self.n.shape:
            raise ValueError(f"n and n_right must both be [2, A, S, K]; got {tuple(self.n.shape)} and {tuple(self.n_right.shape)}")


def biased_sessions(stats: SessionStats, blocks: BlockCounts) -> torch.Tensor:
    """``[A, S]`` bool: sessions of biased blocks, where more than half the trials have the P(left)
    of one of the two block types (a biasedChoiceWorld session opens with 90 trials at 0.5; a
    training session's debiasing moves P(left) off 0.5 on a few trials only)."""
    if blocks.n.shape[1:] != stats.n.shape:
        raise ValueError(f"block counts have shape {tuple(blocks.n.shape[1:])}; expected {tuple(stats.n.shape)}")
    in_blocks = blocks.n.sum((0, -1))
    return stats.valid & (2 * in_blocks > stats.n_trials)


def _block_passes(stats: SessionStats, config: CriterionConfig, blocks: BlockCounts) -> torch.Tensor:
    """``[A, S]`` the block conditions of a block criterion on the window ending at each session:
    every session of it biased, each block type's pooled fit with both lapses below
    ``max_lapse`` and the bias shift above ``min_bias_shift``."""
    w = config.window
    assert config.min_bias_shift is not None
    full = _full_windows(stats, w)
    ok = full & (_window_min(biased_sessions(stats, blocks).to(DTYPE), w) > 0)
    bias = []
    for b in (0, 1):
        pn = _window_sum(blocks.n[b], w)
        pr = _window_sum(blocks.n_right[b], w)
        has = full & (pn.sum(-1) > 0)
        theta = torch.full((*full.shape, 4), float("nan"), dtype=DTYPE)
        if bool(has.any()):
            theta[has] = fit_counts(stats.contrast, pn[has], pr[has])[0]
        ok &= (theta[..., 2] < config.max_lapse) & (theta[..., 3] < config.max_lapse)
        bias.append(theta[..., 0])
    return ok & (bias[1] - bias[0] > config.min_bias_shift)


def criterion_passes(stats: SessionStats, config: CriterionConfig, fits: PsychometricFit | None = None, blocks: BlockCounts | None = None) -> torch.Tensor:
    """Which sessions pass a criterion, judged on the window ending at each.

    Args:
        stats: per-session counts, ``[A, S, K]``.
        config: the criterion.
        fits: ``window_psychometrics(stats, config.window)`` if already computed (share it
            between criteria with the same window); fitted here if None.
        blocks: the per-block counts a block criterion (``config.min_bias_shift`` set) needs.

    Returns:
        ``[A, S]`` bool; False where no full window ends.

    Raises:
        ValueError: a block criterion without ``blocks``.
    """
    w = config.window
    if config.on_biased_blocks and blocks is None:
        raise ValueError(f"criterion {config.label!r} is judged on biased blocks: it needs the per-block counts (blocks)")
    if fits is None:
        fits = window_psychometrics(stats, w)
    elif fits.bias.shape != stats.n.shape[:2]:
        raise ValueError(f"fits have shape {tuple(fits.bias.shape)}; expected {tuple(stats.n.shape[:2])}")
    ok = _full_windows(stats, w)
    ok &= fits.bias.abs() < config.max_abs_bias
    ok &= fits.threshold < config.max_threshold
    ok &= (fits.lapse_low < config.max_lapse) & (fits.lapse_high < config.max_lapse)
    ok &= _window_min(stats.n_trials, w) > config.min_trials
    easy = stats.contrast.abs() >= config.easy_contrast * 100 - CONTRAST_TOL
    if config.easy_per_session:
        acc = stats.easy_accuracy(config.easy_contrast)
        ok &= _window_min(torch.nan_to_num(acc, nan=-1.0), w) > config.min_easy_accuracy
    else:
        n_easy = _window_sum((stats.n * easy).sum(-1), w)
        n_ok = _window_sum((stats.n_correct * easy).sum(-1), w)
        ok &= (n_easy > 0) & (n_ok > config.min_easy_accuracy * n_easy)
    if config.low_contrast is not None:
        low = stats.contrast.abs() <= config.low_contrast * 100 + CONTRAST_TOL
        for sd in (0, 1):
            ok &= _window_sum((stats.n * (low & (stats.side == sd))).sum(-1), w) > 0
    if config.on_biased_blocks:
        assert blocks is not None
        ok &= _block_passes(stats, config, blocks)
    return ok


def first_session_meeting(stats: SessionStats, config: CriterionConfig, fits: PsychometricFit | None = None, blocks: BlockCounts | None = None) -> torch.Tensor:
    """First session (0-based index) at which each animal passes a criterion.

    Args:
        stats: per-session counts, ``[A, S, K]``.
        config: the criterion.
        fits: shared window fits, as in :func:`criterion_passes`.
        blocks: per-block counts, for a block criterion.

    Returns:
        ``[A]`` long: index of the last session of the first passing window, -1 if never.
    """
    passes = criterion_passes(stats, config, fits, blocks)
    first = passes.to(torch.uint8).argmax(1)
    return torch.where(passes.any(1), first, torch.full_like(first, -1))


def trials_to_session(stats: SessionStats, index: torch.Tensor) -> torch.Tensor:
    """Trials done up to and including session ``index`` of each animal.

    Args:
        stats: per-session counts, ``[A, S, K]``.
        index: ``[A]`` long 0-based session (-1 = none), e.g. from :func:`first_session_meeting`.

    Returns:
        ``[A]`` long; -1 where ``index`` is -1.
    """
    cum = stats.n_trials.cumsum(1).long()
    got = cum.gather(1, index.clamp(min=0)[:, None])[:, 0]
    return torch.where(index >= 0, got, torch.full_like(got, -1))


# ----------------------------------------------------------------------------- tables


def _table_stats(df: pd.DataFrame, source: str, block_probs: tuple[float, float] | None = None) -> tuple[SessionStats, list[str], list[np.ndarray], BlockCounts | None]:
    """Counts of a canonical trials table, with subject names and session numbers per animal, and
    the per-block counts of the block types ``block_probs`` (None: not counted)."""
    df = validate_trials(df, source=source)
    subj = df["subject"].to_numpy()
    sess = df["session"].to_numpy()
    names = list(dict.fromkeys(subj.tolist()))
    code = pd.Categorical(subj, categories=names).codes.astype(np.int64)
    new_sess = np.r_[True, (subj[1:] != subj[:-1]) | (sess[1:] != sess[:-1])]
    pos = np.cumsum(new_sess) - 1  # global session counter
    first_pos = np.zeros(len(names), np.int64)
    starts_subj = np.flatnonzero(np.r_[True, subj[1:] != subj[:-1]])
    first_pos[code[starts_subj]] = pos[starts_subj]
    spos = pos - first_pos[code]  # 0-based position of the session within its subject
    session_numbers: list[np.ndarray] = []
    for a, name in enumerate(names):
        nums = sess[new_sess & (code == a)]
        gaps = np.flatnonzero(np.diff(nums) != 1)
        if gaps.size:
            row = int(np.flatnonzero(new_sess & (code == a) & (sess == nums[gaps[0] + 1]))[0]) + 1
            raise TrialDataError(
                f"subject {name!r}: session numbers skip from {nums[gaps[0]]} to {nums[gaps[0] + 1]}; "
                "criteria pool consecutive sessions, so a missing session must not be hidden",
                source=source,
                row=row,
                column="session",
            )
        session_numbers.append(nums)
    x = 100.0 * (df["contrast_right"].to_numpy() - df["contrast_left"].to_numpy())
    side = df["correct_side"].to_numpy()
    choice = df["choice"].to_numpy().astype(float)
    pairs = np.stack([x, side.astype(float)], 1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_a, n_s, k = len(names), int(spos.max()) + 1, uniq.shape[0]
    flat = (code * n_s + spos) * k + inv
    n = np.bincount(flat, minlength=n_a * n_s * k).astype(float)
    r = np.bincount(flat, weights=choice, minlength=n_a * n_s * k)
    stats = SessionStats(
        torch.as_tensor(uniq[:, 0], dtype=DTYPE),
        torch.as_tensor(uniq[:, 1]).long(),
        torch.as_tensor(n, dtype=DTYPE).reshape(n_a, n_s, k),
        torch.as_tensor(r, dtype=DTYPE).reshape(n_a, n_s, k),
        torch.as_tensor([len(s) for s in session_numbers], dtype=torch.long),
    )
    blocks = None
    if block_probs is not None:
        pl = df["prob_left"].to_numpy(dtype=float)
        bn, br = [], []
        for p in block_probs:
            m = np.isclose(pl, p, atol=1e-6).astype(float)
            bn.append(np.bincount(flat, weights=m, minlength=n_a * n_s * k))
            br.append(np.bincount(flat, weights=m * choice, minlength=n_a * n_s * k))
        shape = (2, n_a, n_s, k)
        blocks = BlockCounts(tuple(block_probs), torch.as_tensor(np.stack(bn), dtype=DTYPE).reshape(shape), torch.as_tensor(np.stack(br), dtype=DTYPE).reshape(shape))  # type: ignore[arg-type]
    return stats, names, session_numbers, blocks


def _common_window(configs: Sequence[CriterionConfig]) -> int:
    if not configs:
        raise ValueError("configs: give at least one criterion")
    windows = {c.window for c in configs}
    if len(windows) != 1:
        raise ValueError(f"configs must share one window length (the table holds one fit per session); got {sorted(windows)}")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"config names must be distinct; got {names}")
    return windows.pop()


def criteria_sessions(df: pd.DataFrame, configs: Sequence[CriterionConfig] = (TRAINED_1A, TRAINED_1B), source: str = "<table>") -> pd.DataFrame:
    """Per-session criterion table of a canonical trials table.

    Args:
        df: canonical trials table (:mod:`twin.data.trials`); sessions of a subject must be numbered
            without gaps.
        configs: criteria to judge (one shared ``window``).
        source: name used in error messages.

    Returns:
        One row per (subject, session), in table order, columns: ``subject``, ``session``,
        ``n_trials``, ``easy_accuracy`` (this session), ``window_easy_accuracy`` (pooled over the
        window ending here), ``bias``, ``threshold``, ``lapse_low``, ``lapse_high`` (fit to the
        window's pooled trials; NaN before the first full window), ``passes_<name>`` per config,
        and, when a config is a block criterion, ``biased`` (:func:`biased_sessions`).

    Raises:
        TrialDataError: invalid table (missing columns, no trials, bad codes, session gaps).
    """
    w = _common_window(configs)
    block_probs = {c.bias_blocks for c in configs if c.on_biased_blocks}
    if len(block_probs) > 1:
        raise ValueError(f"block criteria must share their bias_blocks; got {sorted(block_probs)}")
    stats, names, numbers, blocks = _table_stats(df, source, block_probs.pop() if block_probs else None)
    fits = window_psychometrics(stats, w)
    valid = stats.valid
    easy_c = configs[0].easy_contrast
    easy = stats.contrast.abs() >= easy_c * 100 - CONTRAST_TOL
    n_easy = _window_sum((stats.n * easy).sum(-1), w)
    win_acc = torch.where(_full_windows(stats, w), _window_sum((stats.n_correct * easy).sum(-1), w) / n_easy, torch.nan)
    cols: dict[str, torch.Tensor] = {
        "n_trials": stats.n_trials,
        "easy_accuracy": stats.easy_accuracy(easy_c),
        "window_easy_accuracy": win_acc,
        "bias": fits.bias,
        "threshold": fits.threshold,
        "lapse_low": fits.lapse_low,
        "lapse_high": fits.lapse_high,
    }
    passes = {f"passes_{c.name}": criterion_passes(stats, c, fits, blocks) for c in configs}
    if blocks is not None:
        passes["biased"] = biased_sessions(stats, blocks)
    out = pd.DataFrame(
        {
            "subject": np.repeat(names, [len(s) for s in numbers]),
            "session": np.concatenate(numbers).astype(np.int64),
            **{k: v[valid].numpy() for k, v in cols.items()},
            **{k: v[valid].numpy() for k, v in passes.items()},
        }
    )
    out["n_trials"] = out["n_trials"].astype(np.int64)
    return out


def training_criteria(df: pd.DataFrame, configs: Sequence[CriterionConfig] = (TRAINED_1A, TRAINED_1B), source: str = "<table>") -> pd.DataFrame:
    """When each subject first reaches each criterion.

    Args:
        df: canonical trials table.
        configs: criteria (one shared ``window``).
        source: name used in error messages.

    Returns:
        One row per subject, in table order: ``subject``, ``n_sessions``, ``n_trials``, and per
        config ``session_<name>`` (the session number, from the table's ``session`` column, that
        ends the first passing window) and ``trials_<name>`` (trials up to and including it),
        both nullable ``Int64``, ``<NA>`` when never reached.
    """
    table = criteria_sessions(df, configs, source)
    cum = table.groupby("subject", sort=False)["n_trials"].cumsum()
    rows = []
    for name, g in table.groupby("subject", sort=False):
        row: dict[str, object] = {"subject": name, "n_sessions": len(g), "n_trials": int(g["n_trials"].sum())}
        for c in configs:
            hit = g.index[g[f"passes_{c.name}"].to_numpy()]
            row[f"session_{c.name}"] = int(table.at[hit[0], "session"]) if len(hit) else pd.NA
            row[f"trials_{c.name}"] = int(cum.at[hit[0]]) if len(hit) else pd.NA
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in configs:
        for col in (f"session_{c.name}", f"trials_{c.name}"):
            out[col] = out[col].astype("Int64")
    return out
