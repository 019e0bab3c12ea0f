"""'Not one of the trained classes': a rejection threshold on the best class score, and its AUROC.

A classifier over the seen classes always names one of them, even for an image of something it was
never taught. The score used is the method's best class cosine (``ContinualLearner.class_scores``:
z·w for the SG family, the cosine to the nearest class mean for NCM). The threshold is calibrated on
the holdout images of the trained classes: the ``quantile`` of their best scores (default 5 %), so
about 95 % of images of trained classes are accepted; anything scoring below is reported as unknown.
How well the score separates trained from untrained images is measured by :func:`auroc` in the
experiment (docs/results.md).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["DEFAULT_QUANTILE", "calibrate_threshold", "rejection_rates", "auroc"]

DEFAULT_QUANTILE = 0.05


def calibrate_threshold(best_scores: Sequence[torch.Tensor], quantile: float = DEFAULT_QUANTILE) -> float | None:
    """The ``quantile`` of the pooled best scores of trained-class holdout images (None without any)."""
    pooled = torch.cat([s.float().flatten() for s in best_scores]) if best_scores else torch.zeros(0)
    if pooled.numel() == 0:
        return None
    return float(torch.quantile(pooled, quantile))


def rejection_rates(best_scores: Sequence[torch.Tensor], threshold: float | None) -> list[float | None]:
    """Per task: the fraction of its holdout images below ``threshold`` (None for a task without images)."""
    out: list[float | None] = []
    for scores in best_scores:
        if threshold is None or scores.numel() == 0:
            out.append(None)
        else:
            out.append(float((scores.float() < threshold).float().mean()))
    return out


def auroc(known: torch.Tensor, unknown: torch.Tensor) -> float:
    """Probability that a random known image scores above a random unknown one (ties count ½)."""
    known, unknown = known.float().flatten(), unknown.float().flatten()
    if known.numel() == 0 or unknown.numel() == 0:
        return float("nan")
    scores = torch.cat([known, unknown])
    ranks = _average_ranks(scores)
    rank_sum = ranks[: known.numel()].sum()
    n_k, n_u = known.numel(), unknown.numel()
    return float((rank_sum - n_k * (n_k + 1) / 2) / (n_k * n_u))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values)
    ranks = torch.empty_like(values, dtype=torch.float64)
    sorted_vals = values[order]
    i, n = 0, len(values)
    while i < n:
        j = i
        while j + 1 < n and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks
