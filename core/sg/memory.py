"""Exemplar memory: iCaRL herding on L2-normalised image features, stored as sample ids.

Two budgets:
* per class (default 20 per class, the reference setting);
* fixed total (``total``): the budget is split over the seen classes (q = total // n, the first
  total % n classes get one more) and old classes are cut back, keeping the head of their herding
  order, when new classes arrive (iCaRL's reduce step; the reference crashes in this mode).
"""
from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["herding_order", "ExemplarMemory"]


def herding_order(features: torch.Tensor, count: int) -> list[int]:
    """Indices of ``count`` rows chosen by iCaRL herding, in selection order.

    ``features`` (n, D) are L2-normalised.  Step k picks the unpicked row x minimising
    ‖μ − (Σ_selected + x)/k‖ where μ is the class mean, so every prefix of the order approximates μ.
    """
    feats = features.double()
    n = feats.shape[0]
    count = min(count, n)
    mean = feats.mean(0)
    running = torch.zeros_like(mean)
    chosen: list[int] = []
    available = torch.ones(n, dtype=torch.bool)
    for k in range(1, count + 1):
        candidate_means = (running.unsqueeze(0) + feats) / k
        dist = (candidate_means - mean).norm(dim=1)
        dist[~available] = float("inf")
        pick = int(dist.argmin())
        chosen.append(pick)
        available[pick] = False
        running += feats[pick]
    return chosen


class ExemplarMemory:
    """Exemplar ids per class (global class index → list of sample ids in herding order)."""

    def __init__(self, per_class: int = 20, total: int | None = None):
        if total is not None and total <= 0:
            raise ValueError("total memory must be positive")
        self.per_class = int(per_class)
        self.total = total
        self.exemplars: dict[int, list[int]] = {}

    def budgets(self, classes: Iterable[int]) -> dict[int, int]:
        classes = sorted(classes)
        if self.total is None:
            return {c: self.per_class for c in classes}
        q, r = divmod(int(self.total), max(1, len(classes)))
        return {c: q + (1 if i < r else 0) for i, c in enumerate(classes)}

    def update(self, features: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor,
               new_classes: Iterable[int]) -> None:
        """Herd exemplars for ``new_classes`` from (features, labels, ids), then fit all to budget.

        ``features`` are the current model's normalised image features (eval transform) of the task's
        training samples.
        """
        new_classes = list(new_classes)
        budget = self.budgets(list(self.exemplars) + [c for c in new_classes if c not in self.exemplars])
        for c in new_classes:
            rows = (labels == c).nonzero().flatten()
            if len(rows) == 0:
                self.exemplars[c] = []
                continue
            order = herding_order(features[rows], budget[c])
            self.exemplars[c] = [int(ids[rows[i]]) for i in order]
        for c, kept in self.exemplars.items():  # reduce step: old classes keep their herding prefix
            self.exemplars[c] = kept[: budget[c]]

    def ids(self) -> list[int]:
        return [i for c in sorted(self.exemplars) for i in self.exemplars[c]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.exemplars.values())

    def state_dict(self) -> dict:
        return {"per_class": self.per_class, "total": self.total,
                "exemplars": {str(c): list(v) for c, v in self.exemplars.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.per_class = int(state["per_class"])
        self.total = state["total"]
        self.exemplars = {int(c): [int(i) for i in v] for c, v in state["exemplars"].items()}
