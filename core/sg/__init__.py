"""core.sg — the continual learner (SG-RL / SG-KD, spec/method.md). Pure torch: no SQLite, no UI.

Public API:
    losses      clip_contrastive_loss, soft_label_matrix, sg_rl_loss, adjust_teacher_logits, sg_kd_loss
    models      SplitImageModel, ScratchImageTower, PretrainedCNNSplit, split_open_clip_visual
    data        ImageCache, Samples, DecodedImageDataset, FeatureDataset, augment_batch, normalize_batch,
                decode_image
    features    PrefixFeatureCache (the frozen-prefix output cached per image)
    methods     Method, register, get_method, method_names (finetune, exemplars, sgrl, sgkd, both, ncm, joint,
                fecam, ranpac and the SG + head variants)
    learner     LearnerConfig, ContinualLearner, Cancelled
    memory      ExemplarMemory, herding_order
    metrics     summarize
    openset     rejection threshold calibration and AUROC
    checkpoint  save_checkpoint, load_checkpoint, restore_learner
"""
from .checkpoint import load_checkpoint, restore_learner, save_checkpoint
from .data import (DecodedImageDataset, FeatureDataset, ImageCache, Samples, augment_batch, decode_image,
                   normalize_batch)
from .learner import Cancelled, ContinualLearner, LearnerConfig, resolve_device
from .losses import (adjust_teacher_logits, clip_contrastive_loss, sg_kd_loss, sg_rl_loss,
                     soft_label_matrix)
from .memory import ExemplarMemory, herding_order
from .methods import Method, get_method, method_names, register
from .metrics import summarize
from .models import PretrainedCNNSplit, ScratchImageTower, SplitImageModel, split_open_clip_visual

__all__ = [
    "clip_contrastive_loss", "soft_label_matrix", "sg_rl_loss", "adjust_teacher_logits", "sg_kd_loss",
    "SplitImageModel", "ScratchImageTower", "PretrainedCNNSplit", "split_open_clip_visual",
    "ImageCache", "Samples", "DecodedImageDataset", "FeatureDataset", "augment_batch", "normalize_batch",
    "decode_image", "LearnerConfig", "ContinualLearner", "Cancelled", "resolve_device",
    "Method", "register", "get_method", "method_names",
    "ExemplarMemory", "herding_order", "summarize",
    "save_checkpoint", "load_checkpoint", "restore_learner",
]
