"""SG-RL / SG-KD losses (spec/method.md, Yu et al. arXiv 2408.01076).

Every function is device- and dtype-agnostic (no ``.cuda()``): it works on CPU, CUDA, float32,
float64 and under autocast.  The reductions match the authors' reference code exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "clip_contrastive_loss",
    "soft_label_matrix",
    "sg_rl_loss",
    "adjust_teacher_logits",
    "sg_kd_loss",
]


def clip_contrastive_loss(image_feats: torch.Tensor, caption_feats: torch.Tensor,
                          scale: float | torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss between a batch of images and the captions of their classes.

    ``image_feats`` z (B, D) and ``caption_feats`` w_{y_j} (B, D) are both L2-normalised.
    L = s·z·wᵀ (B×B); loss = ½[CE(L, arange B) + CE(Lᵀ, arange B)].  Two images of the same class in
    one batch count as negatives (reference behaviour).
    """
    logits = scale * image_feats @ caption_feats.t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def soft_label_matrix(name_feats: torch.Tensor, softness: float) -> torch.Tensor:
    """(N, N) soft-target table: row y is q^(y) = softmax_c(κ·u_y·u_c).

    ``name_feats`` U (N, D) are L2-normalised bare label-name features; κ = ``softness``.
    """
    similarity = name_feats @ name_feats.t()
    return torch.softmax(softness * similarity, dim=1)


def sg_rl_loss(logits: torch.Tensor, targets: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Semantically-guided representation loss.

    ``logits`` (B, N) over all seen classes, ``targets`` (B,) class indices, ``soft`` the (N, N) table
    from :func:`soft_label_matrix`.  KL(q^(y_i) ‖ softmax(logits_i)) summed over every element and
    divided by B·N (the reference's ``kl_div(..., reduction="mean")``).
    """
    log_probs = F.log_softmax(logits, dim=1)
    target_probs = soft.to(log_probs.dtype)[targets]
    # Written as sum / (B·N) rather than reduction="mean", which PyTorch has announced will change.
    return F.kl_div(log_probs, target_probs, reduction="sum") / logits.numel()


def adjust_teacher_logits(teacher_logits: torch.Tensor, inter_sim: torch.Tensor) -> torch.Tensor:
    """±max adjustment: +m_i at k_i = argmax_c A_ic, −m_i everywhere else (m_i = max_c A_ic)."""
    max_sim, argmax = inter_sim.max(dim=1)
    adjusted = teacher_logits - max_sim.unsqueeze(1).to(teacher_logits.dtype)
    # add 2·m_i back at the argmax column: −m_i + 2·m_i = +m_i
    bump = torch.zeros_like(adjusted).scatter_(
        1, argmax.unsqueeze(1), 2.0 * max_sim.unsqueeze(1).to(teacher_logits.dtype))
    return adjusted + bump


def sg_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               inter_sim: torch.Tensor, T: float) -> torch.Tensor:
    """Semantically-guided knowledge distillation over the old classes.

    All inputs are (B, M).  ``inter_sim[i, c]`` = u_{y_i}·w_c.  The teacher logits get the ±max
    adjustment, then loss = T²/B · Σ_i KL(softmax(ℓ̃_i/T) ‖ softmax(ℓ^new_i/T)).
    """
    adjusted = adjust_teacher_logits(teacher_logits, inter_sim)
    student_log = F.log_softmax(student_logits / T, dim=1)
    teacher_log = F.log_softmax(adjusted.to(student_log.dtype) / T, dim=1)
    kl = F.kl_div(student_log, teacher_log, reduction="batchmean", log_target=True)
    return kl * (T * T)
