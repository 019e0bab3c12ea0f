"""The paper's semantic guidance combined with a closed-form head (issue 17, item 2): the variants tried.

SG-RL and SG-KD stay as spec/method.md defines them (the ``both`` method); these variants differ only
in how the served class scores use the closed-form head (core/sg/methods/closed_form.py):

* ``both+ranpac`` / ``both+fecam`` — **score fusion**: ``both`` trains as always and a closed-form head
  keeps its statistics of the frozen features beside it; the class scores are
  w·log softmax(s·cos) + (1 − w)·log softmax(head logits), w = ``fusion_weight`` (chosen on the
  validation splits, docs/results.md).  "Unknown" is the head's score.
* ``fsa+ranpac`` / ``fsa+fecam`` — **first-session adaptation** (as RanPAC and ADAM do): the projection
  trains in the first task only, with L_clip + SG-RL (there is nothing to distil yet), and is then
  frozen; the head's statistics are kept on [frozen backbone feature, adapted feature]/√2, so they
  stay exact for every later task and update.

Semantic soft targets in the ridge were not kept: a class's soft-target column would need every earlier
image's similarity to classes that did not exist yet, so the statistics would no longer be exact; a
first probe (issue 17) also gained nothing.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import register
from .closed_form import ClosedFormHead, FeCAM, RanPAC, _BackboneFeatures
from .sg import SGFamily


# ------------------------------------------------------------------------------ score fusion
class _FusionModule(nn.Module):
    def __init__(self, head: nn.Module, student: nn.Module, W: torch.Tensor, scale: float,
                 head_scale: float, weight: float):
        super().__init__()
        self.head, self.student = head, student
        self.register_buffer("W", F.normalize(W.float(), dim=1))
        self.scale, self.head_scale, self.weight = float(scale), float(head_scale), float(weight)

    def forward(self, h):
        head_scores, fam, emb = self.head(h)
        z = F.normalize(self.student(h).float(), dim=1)
        cos = z @ self.W.t()
        fused = (self.weight * torch.log_softmax(self.scale * cos, dim=1)
                 + (1 - self.weight) * torch.log_softmax(self.head_scale * head_scores, dim=1))
        return fused, fam, emb


class _Fusion(SGFamily):
    """``both`` + a closed-form head; class scores fused in log-probability space."""

    sg_rl = sg_kd = True
    product = False              # experiment only (docs/results.md: not better than the head alone)
    head_cls: ClassVar[type] = RanPAC
    fusion_weight: ClassVar[float] = 0.5

    def __init__(self):
        self.head = self.head_cls()

    def prepare(self, learner, step) -> None:
        self.head.prepare(learner, step)

    def after_task(self, learner, step, train) -> None:
        self.head.after_task(learner, step, train)

    def _head_scale(self, learner) -> float:
        return learner.logit_scale if self.head.score_kind == "ranpac" else 1.0

    def class_scores(self, learner, inputs, prompt_feats):
        cos = SGFamily.class_scores(self, learner, inputs, prompt_feats)
        head = self.head.class_scores(learner, inputs, prompt_feats)
        w = self.fusion_weight
        return (w * torch.log_softmax(learner.logit_scale * cos, dim=1)
                + (1 - w) * torch.log_softmax(self._head_scale(learner) * head, dim=1))

    def probabilities(self, learner, scores):
        return torch.softmax(scores, dim=1)

    @property
    def familiarity_score(self) -> str:
        return self.head.familiarity_score

    def familiarity(self, learner, inputs, prompt_feats):
        return self.head.familiarity(learner, inputs, prompt_feats)

    def unknown_scores(self, learner, inputs, prompt_feats):
        return self.head.unknown_scores(learner, inputs, prompt_feats)

    def head_module(self, learner, prompt_feats) -> nn.Module:
        import copy

        student = copy.deepcopy(learner.model.student if hasattr(learner.model, "student") else learner.model)
        suffix = student if hasattr(learner.model, "student") else _Suffix(student)
        return _FusionModule(self.head.head_module(learner, prompt_feats), suffix, prompt_feats,
                             learner.logit_scale, self._head_scale(learner), self.fusion_weight).eval()

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state.get("head") or {})


class _Suffix(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, h):
        return self.model.suffix(h)


@register
class BothRanPAC(_Fusion):
    name, title = "both+ranpac", "SG-RL + SG-KD fused with the RanPAC head"
    head_cls = RanPAC


@register
class BothFeCAM(_Fusion):
    name, title = "both+fecam", "SG-RL + SG-KD fused with the FeCAM head"
    head_cls = FeCAM


# ------------------------------------------------------------------------------ first-session adaptation
class _AdaptedFeatures(nn.Module):
    """h → [normalised frozen backbone feature, normalised adapted feature] / √2."""

    def __init__(self, learner):
        super().__init__()
        import copy

        self.backbone = _BackboneFeatures(learner)
        model = learner.model
        self.student = copy.deepcopy(model.student) if hasattr(model, "student") else _Suffix(copy.deepcopy(model))

    def forward(self, h):
        a = self.backbone(h)
        b = F.normalize(self.student(h).float(), dim=1)
        return torch.cat([a, b], dim=1) / math.sqrt(2.0)


class _FirstSession(ClosedFormHead):
    """Train the projection in the first task (L_clip + SG-RL), then freeze it; the head's statistics
    are kept on the concatenated frozen + adapted features."""

    uses_memory = False
    product = False

    def __init__(self):
        super().__init__()
        self.trains = True
        self._sg = _SGRLOnly()

    @property
    def term_names(self):  # type: ignore[override]
        return self._sg.term_names if self.trains else ()

    def loss_terms(self, learner, step, out):
        return self._sg.loss_terms(learner, step, out)

    def training_data(self, learner, train):
        return train

    def _features(self, learner, inputs) -> torch.Tensor:
        a = learner.backbone_features(inputs)
        b = learner.image_features(inputs)
        return torch.cat([a, b], dim=1) / math.sqrt(2.0)

    def after_task(self, learner, step, train) -> None:
        self.trains = False          # adapted once: the features the statistics rest on never change again
        keep = torch.isin(train.labels, torch.as_tensor(list(step.new_class_ids), dtype=torch.long))
        if bool(keep.any()):
            self.add_features(self._features(learner, train.first_view()[keep]), train.labels[keep])

    def class_scores(self, learner, inputs, prompt_feats):
        return self._scores_of_features(learner, self._features(learner, inputs), int(prompt_feats.shape[0]))[0]

    def unknown_scores(self, learner, inputs, prompt_feats):
        return self._scores_of_features(learner, self._features(learner, inputs), int(prompt_feats.shape[0]))[1]

    def head_module(self, learner, prompt_feats):
        module = super().head_module(learner, prompt_feats)
        module.features = _AdaptedFeatures(learner)
        return module

    def state_dict(self) -> dict:
        return {**super().state_dict(), "trains": bool(self.trains)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.trains = bool(state.get("trains", True))


class _SGRLOnly(SGFamily):
    sg_rl = True


@register
class FirstSessionRanPAC(_FirstSession, RanPAC):
    name, title = "fsa+ranpac", "SG-RL adapter (first task) feeding the RanPAC head"


@register
class FirstSessionFeCAM(_FirstSession, FeCAM):
    name, title = "fsa+fecam", "SG-RL adapter (first task) feeding the FeCAM head"
