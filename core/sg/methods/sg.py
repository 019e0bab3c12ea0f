"""The SG family: fine-tuning, exemplar rehearsal, SG-RL, SG-KD and both (spec/method.md).

All five train the same way (L_clip on every batch); they differ only in the memory and which
semantic terms are added, with λ_sl / λ_kd from the config (spec: 0.5 each):

* ``finetune``  — no memory, L_clip only
* ``exemplars`` — + exemplar rehearsal
* ``sgrl``      — + λ_sl·L_SGRL (soft targets from label-name similarity)
* ``sgkd``      — + λ_kd·L_SGKD (semantically-guided distillation from the previous model)
* ``both``      — + both: the product's method
"""
from __future__ import annotations

from typing import ClassVar

from core.sg.losses import clip_contrastive_loss, sg_kd_loss, sg_rl_loss

from .base import Method, StepOutputs, register


class SGFamily(Method):
    sg_rl: ClassVar[bool] = False
    sg_kd: ClassVar[bool] = False

    @property
    def term_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("clip",) + (("sgrl",) if self.sg_rl else ()) + (("sgkd",) if self.sg_kd else ())

    def needs_teacher(self, learner, step) -> bool:
        # No teacher when there is nothing to distil or λ_kd = 0: its forward would be multiplied by 0.
        return self.sg_kd and len(step.old_index) > 0 and learner.config.lambda_kd > 0

    def loss_terms(self, learner, step, out: StepOutputs):
        cfg, s = learner.config, learner.logit_scale
        terms = {"clip": (1.0, clip_contrastive_loss(out.z, step.W[out.targets], s))}
        if self.sg_rl:
            terms["sgrl"] = (cfg.lambda_sl, sg_rl_loss(out.logits, out.targets, step.soft))
        if self.sg_kd and out.teacher_z is not None:
            teacher_logits = s * out.teacher_z @ step.W_old.t()
            terms["sgkd"] = (cfg.lambda_kd, sg_kd_loss(out.logits[:, step.old_index], teacher_logits,
                                                        step.inter[out.targets], cfg.T))
        return terms


@register
class FineTune(SGFamily):
    name, title = "finetune", "fine-tune, no memory"
    uses_memory = False


@register
class Exemplars(SGFamily):
    name, title = "exemplars", "fine-tune + exemplars"


@register
class SGRL(SGFamily):
    name, title = "sgrl", "+ SG-RL"
    sg_rl = True


@register
class SGKD(SGFamily):
    name, title = "sgkd", "+ SG-KD"
    sg_kd = True


@register
class Both(SGFamily):
    name, title = "both", "+ SG-RL + SG-KD (method)"
    sg_rl = sg_kd = True
