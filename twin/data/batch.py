"""Batched tensor form of a trials table: animals × trials, padded, with masks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from twin.errors import TrialDataError
from twin.data.features import FeatureSpec
from twin.data.trials import TrialColumns, plain, session_starts, subjects


@dataclass(frozen=True)
class TrialBatch:
    """Many animals' trial sequences in one padded tensor batch.

    Shapes: ``B`` animals, ``T`` trials (the longest animal; shorter ones are padded at the
    end), ``K`` policy features.

    Attributes:
        subjects: ``B`` subject names, in batch order.
        x: ``[B, T, K]`` policy features.
        y: ``[B, T]`` choice, 1 = right, 0 = left.
        reward: ``[B, T]`` 1 if rewarded else 0.
        answer: ``[B, T]`` rewarded side, 1 = right.
        session_start: ``[B, T]`` 1.0 on the first trial of each session.
        session: ``[B, T]`` int64 session index (0 on padding).
        contrast_left: ``[B, T]`` raw contrasts (for maps and curricula).
        contrast_right: ``[B, T]``.
        valid: ``[B, T]`` bool, False on padding.
        mask: ``[B, T]`` bool, trials that count in the likelihood (a subset of ``valid``).
        features: the spec that built ``x``.
    """

    subjects: tuple[str, ...]
    x: torch.Tensor
    y: torch.Tensor
    reward: torch.Tensor
    answer: torch.Tensor
    session_start: torch.Tensor
    session: torch.Tensor
    contrast_left: torch.Tensor
    contrast_right: torch.Tensor
    valid: torch.Tensor
    mask: torch.Tensor
    features: FeatureSpec

    @property
    def n_animals(self) -> int:
        return self.x.shape[0]

    @property
    def n_trials(self) -> int:
        return self.x.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """``[B]`` number of real trials per animal."""
        return self.valid.sum(1)

    def to(self, device: torch.device | str) -> "TrialBatch":
        """Move every tensor to ``device``."""
        kw = {k: getattr(self, k).to(device) for k in _TENSORS}
        return replace(self, **kw)

    def to_dtype(self, dtype: torch.dtype) -> "TrialBatch":
        """The floating-point tensors cast to ``dtype`` (indices and masks unchanged)."""
        kw = {k: getattr(self, k).to(dtype) for k in _TENSORS if getattr(self, k).is_floating_point()}
        return replace(self, **kw)

    def select(self, idx: list[int] | torch.Tensor) -> "TrialBatch":
        """Sub-batch of the animals at positions ``idx`` (kept at full length ``T``)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        kw = {k: getattr(self, k)[idx_t] for k in _TENSORS}
        return replace(self, subjects=tuple(self.subjects[i] for i in idx_t.tolist()), **kw)

    def with_mask(self, mask: torch.Tensor) -> "TrialBatch":
        """Same data, scoring only where ``mask`` (``[B, T]`` bool) and ``valid``."""
        return replace(self, mask=mask & self.valid)

    def sessions_mask(self, first: int | torch.Tensor, last: int | torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` bool: trials whose session index is in ``[first, last]`` (inclusive).

        ``first``/``last`` may be per-animal ``[B]`` tensors.
        """
        s = self.session
        first_t = torch.as_tensor(first).reshape(-1, 1) if torch.is_tensor(first) else first
        m = s >= first_t
        if last is not None:
            last_t = torch.as_tensor(last).reshape(-1, 1) if torch.is_tensor(last) else last
            m = m & (s <= last_t)
        return m & self.valid

    def truncate_sessions(self, last: torch.Tensor) -> "TrialBatch":
        """Keep sessions ``<= last[b]`` per animal (later trials become padding), trimming ``T``."""
        keep = self.session <= last.reshape(-1, 1)
        valid = self.valid & keep
        t_max = int(valid.sum(1).max().item())
        kw = {k: getattr(self, k)[:, :t_max] for k in _TENSORS}
        kw["valid"] = valid[:, :t_max]
        kw["mask"] = self.mask[:, :t_max] & kw["valid"]
        return replace(self, **kw)


_TENSORS = (
    "x",
    "y",
    "reward",
    "answer",
    "session_start",
    "session",
    "contrast_left",
    "contrast_right",
    "valid",
    "mask",
)


def make_batch(df: pd.DataFrame, features: FeatureSpec = FeatureSpec(), dtype: torch.dtype = torch.float32) -> TrialBatch:
    """Pack a canonical (validated) trials table into a padded batch.

    Args:
        df: canonical trials table (see :mod:`twin.data.trials`), sorted by subject, session, trial;
            with named stimuli (``features.stimuli``) it also needs their ``stim_<name>`` columns.
        features: the policy regressors.
        dtype: floating dtype of the tensors.

    Returns:
        A :class:`TrialBatch` with one row per subject in table order.

    Raises:
        TrialDataError: a named stimulus column is missing or holds a non-finite value.
    """
    names = subjects(df)
    subj = df["subject"].to_numpy()
    codes = pd.Categorical(subj, categories=names).codes
    counts = np.bincount(codes, minlength=len(names))
    b, t = len(names), int(counts.max())
    # position of each row within its subject (rows of a subject are contiguous)
    offsets = np.r_[0, np.cumsum(counts)[:-1]]
    pos = np.arange(len(df)) - offsets[codes]

    def pack(values: np.ndarray, fill: float = 0.0, np_dtype: type = np.float32) -> np.ndarray:
        arr = np.full((b, t), fill, dtype=np_dtype)
        arr[codes, pos] = values
        return arr

    y = pack(df["choice"].to_numpy(np.float32))
    reward = pack((df["feedback"].to_numpy() == 1).astype(np.float32))
    answer = pack(df["correct_side"].to_numpy(np.float32))
    ss = pack(session_starts(df).astype(np.float32))
    session = pack(df["session"].to_numpy(np.int64), 0, np.int64)
    cl = pack(df["contrast_left"].to_numpy(np.float32))
    cr = pack(df["contrast_right"].to_numpy(np.float32))
    valid = pack(np.ones(len(df), bool), False, bool)
    stim = np.stack([pack(v) for v in _stimulus_values(df, features)], -1) if features.stimuli else None
    return _batch(tuple(names), y, reward, answer, ss, session, cl, cr, valid, stim, features, dtype)


def columns_batch(cols: TrialColumns, subject: str, features: FeatureSpec = FeatureSpec(), dtype: torch.dtype = torch.float32) -> TrialBatch:
    """The one-animal batch of validated :class:`~twin.data.trials.TrialColumns`, as
    :func:`make_batch` packs the same trials as a table (no table built).

    Raises:
        TrialDataError: the features use named stimuli (columns do not carry them).
    """
    if features.stimuli:
        raise TrialDataError(f"the features use named stimuli {list(features.stimuli)} but trial columns carry none", column=features.stimulus_columns[0])
    n = len(cols)
    ss = np.ones(n, np.float32)
    ss[1:] = cols.session[1:] != cols.session[:-1]

    def row(v: np.ndarray, np_dtype: type = np.float32) -> np.ndarray:
        return np.ascontiguousarray(v, dtype=np_dtype).reshape(1, n)

    return _batch(
        (subject,),
        row(cols.choice),
        row(cols.feedback == 1),
        row(cols.correct_side),
        ss.reshape(1, n),
        row(cols.session, np.int64),
        row(cols.contrast_left),
        row(cols.contrast_right),
        np.ones((1, n), bool),
        None,
        features,
        dtype,
    )


def _batch(
    names: tuple[str, ...],
    y: np.ndarray,
    reward: np.ndarray,
    answer: np.ndarray,
    ss: np.ndarray,
    session: np.ndarray,
    cl: np.ndarray,
    cr: np.ndarray,
    valid: np.ndarray,
    stim: np.ndarray | None,
    features: FeatureSpec,
    dtype: torch.dtype,
) -> TrialBatch:
    """The batch of packed ``[B, T]`` arrays (float32; ``session`` int64, ``valid`` bool;
    ``stim`` ``[B, T, S]`` or None). The elementwise arithmetic runs in NumPy in ``dtype`` (the
    same IEEE operations torch would do, one dispatch cheaper each) and the arrays become
    tensors once."""
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    y_n, r_n, ss_n = (np.asarray(v, np_dtype) for v in (y, reward, ss))
    prev_choice = np.zeros_like(y_n)
    prev_reward = np.zeros_like(y_n)
    prev_choice[:, 1:] = (2 * y_n[:, :-1] - 1) * (1 - ss_n[:, 1:])
    prev_reward[:, 1:] = r_n[:, :-1]
    y_t, r_t, ss_t = torch.from_numpy(y_n), torch.from_numpy(r_n), torch.from_numpy(ss_n)
    cl_t, cr_t = torch.from_numpy(np.asarray(cl, np_dtype)), torch.from_numpy(np.asarray(cr, np_dtype))
    stim_t = None if stim is None else torch.from_numpy(np.asarray(stim, np_dtype))
    x = features.compute(cl_t, cr_t, torch.from_numpy(prev_choice), torch.from_numpy(prev_reward), stimuli=stim_t)
    valid_t = torch.from_numpy(valid)
    if not valid.all():  # padding: zero features (x * 1 is x, so a full batch skips the product)
        x = x * valid_t.unsqueeze(-1)
    return TrialBatch(
        subjects=names,
        x=x,
        y=y_t,
        reward=r_t,
        answer=torch.from_numpy(np.asarray(answer, np_dtype)),
        session_start=ss_t,
        session=torch.from_numpy(session),
        contrast_left=cl_t,
        contrast_right=cr_t,
        valid=valid_t,
        mask=valid_t.clone(),
        features=features,
    )


def _stimulus_values(df: pd.DataFrame, features: FeatureSpec) -> list[np.ndarray]:
    """The named stimulus columns of ``df`` as float32 arrays, checked present and finite."""
    cols = features.stimulus_columns
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TrialDataError(
            f"the features use named stimuli {list(features.stimuli)} but the table lacks column(s) {missing}",
            column=missing[0],
        )
    out = []
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise TrialDataError(f"stimulus value is not a finite number: {plain(df[c].iloc[bad[0]])}", row=int(bad[0]) + 1, column=c)
        out.append(v)
    return out
