"""'Not one of the trained classes': a familiarity score, a rejection threshold on it, and its AUROC.

A classifier over the seen classes always names one of them, even for an image of something it was
never taught. The familiarity of an image is its best cosine to :class:`ClassPrototypes` — the mean
*frozen* backbone feature of each trained class — when the model has a frozen pretrained backbone;
otherwise (scratch tower, open_clip towers that train, checkpoints from before prototypes) it is the
method's best class cosine (``ContinualLearner.class_scores``). On the validation split the frozen
prototypes separate trained from untrained images better than the learned classifier's best cosine:
AUROC 95.1 vs 91.5 (Caltech-101 10×10) and 73.7 vs 68.2 (CIFAR-10 5×2), method = SG-RL + SG-KD,
3 seeds — the projection is trained only to rank the seen classes, so it maps unknown images close
to them; the frozen features were never bent. The threshold is calibrated on the holdout images of
the trained classes: the ``quantile`` of their scores (default 5 %), so about 95 % of images of
trained classes are accepted; anything scoring below is reported as unknown. How well the score
separates trained from untrained images is measured by :func:`auroc` in the experiment
(docs/results.md).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_QUANTILE", "ClassPrototypes", "calibrate_threshold", "rejection_rates", "auroc"]

DEFAULT_QUANTILE = 0.05


class ClassPrototypes:
    """The mean L2-normalised frozen feature of each trained class (a vector per class, no images).

    Valid for ever only because the features come from a backbone that never trains; the learner
    keeps prototypes only for such models."""

    def __init__(self) -> None:
        self.means: dict[int, torch.Tensor] = {}

    def add(self, feats: torch.Tensor, labels: torch.Tensor, class_ids) -> None:
        for c in class_ids:
            rows = labels == int(c)
            if bool(rows.any()):
                self.means[int(c)] = F.normalize(feats[rows].float().mean(0), dim=0)

    def covers(self, n_classes: int) -> bool:
        return n_classes > 0 and all(c in self.means for c in range(n_classes))

    def best(self, feats: torch.Tensor, n_classes: int) -> torch.Tensor:
        """(n,) best cosine of L2-normalised ``feats`` to the prototypes of classes 0..n_classes-1."""
        table = torch.stack([self.means[c] for c in range(n_classes)])
        return (feats.float() @ table.t()).max(1).values

    def state_dict(self) -> dict:
        return {str(c): m.clone() for c, m in self.means.items()}

    def load_state_dict(self, state: dict | None) -> None:
        self.means = {int(c): m.float() for c, m in (state or {}).items()}


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
