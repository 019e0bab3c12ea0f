"""'Not one of the trained classes': a familiarity score, a rejection threshold on it, and its AUROC.

A classifier over the seen classes always names one of them, even for an image of something it was
never taught. The familiarity of an image is, for a closed-form head (``fecam``, ``ranpac``: the
default), the head's own score from its statistics — minus the Mahalanobis distance to the nearest
class mean (core/sg/methods/closed_form.py; chosen on validation over relative Mahalanobis, energy and
the prototype cosine, docs/results.md). For trained methods with a frozen pretrained backbone it is the
best cosine to :class:`ClassPrototypes` — the mean *frozen* backbone feature of each trained class —
which separated trained from untrained images better than the learned classifier's best cosine
(AUROC 95.1 vs 91.5 on Caltech-101, 73.7 vs 68.2 on CIFAR-10, SG-RL + SG-KD); otherwise (scratch
tower, open_clip towers that train, checkpoints from before prototypes) the method's best class score.

The threshold is conformal (:func:`calibrate_threshold`): computed on the *pooled* held-out scores of
all trained classes at the run's target false-rejection rate (``LearnerConfig.reject_rate``, default
5 %), never on one class's few images; :func:`conformal_pvalue` turns a score into a calibrated "how
usual is this for a trained class" that Predict shows instead of a softmax 1.000. How well a score
separates trained from untrained images is measured by :func:`auroc` in the experiment.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_QUANTILE", "ClassPrototypes", "calibrate_threshold", "calibration_scores",
           "conformal_pvalue", "rejection_rates", "auroc"]

DEFAULT_QUANTILE = 0.05


class ClassPrototypes:
    """The mean L2-normalised frozen feature of each trained class (a vector per class, no images).

    Keeps the per-class sum and count as well, so new images of a trained class (an update task) move
    its prototype exactly as if they had been learned with the first ones.  Valid for ever only
    because the features come from a backbone that never trains; the learner keeps prototypes only
    for such models."""

    def __init__(self) -> None:
        self.means: dict[int, torch.Tensor] = {}
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}

    def add(self, feats: torch.Tensor, labels: torch.Tensor, class_ids) -> None:
        for c in class_ids:
            rows = labels == int(c)
            if bool(rows.any()):
                c = int(c)
                total = feats[rows].double().sum(0)
                if c in self.sums:
                    total = total + self.sums[c]
                elif c in self.means:  # a prototype from before sums were kept: it counts as one image
                    total = total + self.means[c].double()
                    self.counts[c] = 1
                self.sums[c] = total
                self.counts[c] = self.counts.get(c, 0) + int(rows.sum())
                self.means[c] = F.normalize(total / self.counts[c], dim=0).float()

    def covers(self, n_classes: int) -> bool:
        return n_classes > 0 and all(c in self.means for c in range(n_classes))

    def best(self, feats: torch.Tensor, n_classes: int) -> torch.Tensor:
        """(n,) best cosine of L2-normalised ``feats`` to the prototypes of classes 0..n_classes-1."""
        table = torch.stack([self.means[c] for c in range(n_classes)])
        return (feats.float() @ table.t()).max(1).values

    def state_dict(self) -> dict:
        state: dict = {str(c): m.clone() for c, m in self.means.items()}
        if self.sums:
            state["sums"] = {str(c): v.clone() for c, v in self.sums.items()}
            state["counts"] = {str(c): int(v) for c, v in self.counts.items()}
        return state

    def load_state_dict(self, state: dict | None) -> None:
        state = dict(state or {})
        sums, counts = state.pop("sums", None) or {}, state.pop("counts", None) or {}
        self.means = {int(c): m.float() for c, m in state.items()}
        self.sums = {int(c): v.double() for c, v in sums.items()}
        self.counts = {int(c): int(v) for c, v in counts.items()}


def calibrate_threshold(best_scores: Sequence[torch.Tensor], quantile: float = DEFAULT_QUANTILE) -> float | None:
    """Conformal threshold on the *pooled* familiarity scores of held-out images of every trained class.

    With the n pooled scores sorted, s₍₁₎ ≤ … ≤ s₍ₙ₎, the threshold is s₍ₖ₎ with k = ⌊quantile·(n+1)⌋
    (at least 1): an image of a trained class, exchangeable with the held-out ones, falls below it with
    probability k/(n+1) ≤ ``quantile`` (the target false-rejection rate) — whatever the score's
    distribution and however the images are spread over classes.  With fewer than 1/quantile − 1
    images k = 1 (only scores below every held-out one are rejected; the rate is then 1/(n+1)).
    None without any score."""
    pooled = _pooled(best_scores)
    if pooled.numel() == 0:
        return None
    k = max(1, math.floor(float(quantile) * (pooled.numel() + 1)))
    value = float(pooled[min(k, pooled.numel()) - 1])
    # a hair below s₍ₖ₎, so that s₍ₖ₎'s own image, scored again in another batch, is not rejected by rounding
    return value - 1e-7 * (1.0 + abs(value))


def calibration_scores(best_scores: Sequence[torch.Tensor]) -> list[float]:
    """The pooled held-out scores, sorted ascending (kept with a model for :func:`conformal_pvalue`)."""
    return [float(v) for v in _pooled(best_scores).tolist()]


def conformal_pvalue(calibration: Sequence[float] | torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(n,) conformal p-value of each familiarity score against the sorted held-out ``calibration``
    scores: (1 + #{held-out ≤ score}) / (m + 1), the chance that an image of a trained class looks at
    most this familiar.  An image is rejected at rate α exactly when its p-value ≤ k/(m+1) (see
    :func:`calibrate_threshold`); shown instead of a softmax probability, it never reads 1.000 for an
    image that looks like nothing trained."""
    cal = torch.as_tensor(calibration, dtype=torch.float64).flatten()
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if cal.numel() == 0:
        return torch.full_like(scores, float("nan"))
    below = torch.searchsorted(cal.sort().values, scores, right=True)
    return (below + 1).double() / (cal.numel() + 1)


def _pooled(best_scores: Sequence[torch.Tensor]) -> torch.Tensor:
    parts = [torch.as_tensor(s).double().flatten() for s in best_scores] if best_scores else []
    pooled = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    pooled = pooled[torch.isfinite(pooled)]
    return pooled.sort().values


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
