"""core.sg — the continual learner (SG-RL / SG-KD, spec/method.md). Pure torch: no SQLite, no UI.

Public API:
    losses      clip_contrastive_loss, soft_label_matrix, sg_rl_loss, adjust_teacher_logits, sg_kd_loss
    models      SplitImageModel, ScratchImageTower, split_open_clip_visual
    data        ImageCache, DecodedImageDataset, augment_batch, normalize_batch, decode_image
    learner     LearnerConfig, ContinualLearner, Cancelled, DEFAULT_SOFTNESS
    memory      ExemplarMemory, herding_order
    metrics     summarize
    checkpoint  save_checkpoint, load_checkpoint, restore_learner
"""
from .checkpoint import load_checkpoint, restore_learner, save_checkpoint
from .data import DecodedImageDataset, ImageCache, augment_batch, decode_image, normalize_batch
from .learner import DEFAULT_SOFTNESS, Cancelled, ContinualLearner, LearnerConfig, resolve_device
from .losses import (adjust_teacher_logits, clip_contrastive_loss, sg_kd_loss, sg_rl_loss,
                     soft_label_matrix)
from .memory import ExemplarMemory, herding_order
from .metrics import summarize
from .models import ScratchImageTower, SplitImageModel, split_open_clip_visual

__all__ = [
    "clip_contrastive_loss", "soft_label_matrix", "sg_rl_loss", "adjust_teacher_logits", "sg_kd_loss",
    "SplitImageModel", "ScratchImageTower", "split_open_clip_visual",
    "ImageCache", "DecodedImageDataset", "augment_batch", "normalize_batch", "decode_image",
    "LearnerConfig", "ContinualLearner", "Cancelled", "DEFAULT_SOFTNESS", "resolve_device",
    "ExemplarMemory", "herding_order", "summarize",
    "save_checkpoint", "load_checkpoint", "restore_learner",
]
