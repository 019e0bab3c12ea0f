"""Nearest class mean on the frozen backbone features: no training, no forgetting (the baseline to beat).

After each task the sum and count of the L2-normalised *pretrained* features (``model.frozen_features``,
the untouched backbone without the projection) of each of the task's classes are accumulated (new
images of a class already learned add to its sums: an update task); a sample is scored by its cosine
to every class mean.  It keeps sums, not images, so it needs no exemplar memory.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, ScoreHead, _Bound, familiarity_parts, register


@register
class NCM(Method):
    name, title = "ncm", "nearest class mean (frozen features)"
    trains = False
    uses_memory = False
    term_names = ()

    def __init__(self):
        self.means: dict[int, torch.Tensor] = {}
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}

    def after_task(self, learner, step, train) -> None:
        feats = learner.backbone_features(train.first_view())
        for c in step.new_class_ids:
            rows = train.labels == c
            if rows.any():
                c = int(c)
                total = feats[rows].double().sum(0)
                if c in self.sums:
                    total = total + self.sums[c]
                elif c in self.means:   # a checkpoint from before sums: its mean counts as one image
                    total, self.counts[c] = total + self.means[c].double(), 1
                self.sums[c] = total
                self.counts[c] = self.counts.get(c, 0) + int(rows.sum())
                self.means[c] = F.normalize(total / self.counts[c], dim=0).float()

    def class_scores(self, learner, inputs, prompt_feats) -> torch.Tensor:
        n = prompt_feats.shape[0]
        feats = learner.backbone_features(inputs)
        dim = feats.shape[1]
        table = torch.stack([self.means.get(c, torch.zeros(dim)) for c in range(n)])
        return feats @ table.t()

    def head_module(self, learner, prompt_feats) -> torch.nn.Module:
        n = prompt_feats.shape[0]
        model = learner.model
        fn = "frozen_features" if callable(getattr(model, "frozen_features", None)) else "suffix"
        dim = getattr(model, "num_features", model.output_dim) if fn == "frozen_features" else model.output_dim
        table = torch.stack([self.means.get(c, torch.zeros(dim)) for c in range(n)])
        return ScoreHead(_Bound(model, fn), table, *familiarity_parts(learner, n))

    def state_dict(self) -> dict:
        return {"means": {str(c): m for c, m in self.means.items()},
                "sums": {str(c): v for c, v in self.sums.items()},
                "counts": {str(c): int(v) for c, v in self.counts.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.means = {int(c): m.float() for c, m in (state.get("means") or {}).items()}
        self.sums = {int(c): v.double() for c, v in (state.get("sums") or {}).items()}
        self.counts = {int(c): int(v) for c, v in (state.get("counts") or {}).items()}
