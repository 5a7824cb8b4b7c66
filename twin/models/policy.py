"""The choice policy ``p(right on trial t) = sigmoid(w_t · x_t)`` and its likelihood."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logits(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[...]`` logit of a right choice, ``w · x`` over the last axis of ``[..., K]`` tensors."""
    return (w * x).sum(-1)


def p_right(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[...]`` probability of a right choice."""
    return torch.sigmoid(logits(w, x))


def choice_log_likelihood(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-trial log-likelihood ``log p(y_t | x_t, w_t)`` in nats.

    Args:
        w: ``[B, T, K]`` weights.
        x: ``[B, T, K]`` features.
        y: ``[B, T]`` choices in {0, 1}.

    Returns:
        ``[B, T]`` log-likelihoods (numerically stable, never -inf).
    """
    z = logits(w, x)
    return -F.binary_cross_entropy_with_logits(z, y, reduction="none")
