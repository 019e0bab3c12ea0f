"""Image models split into a frozen *prefix* and a trainable *suffix*.

Student and teacher share the frozen prefix: the learner computes ``prefix(x)`` once per batch under
``no_grad`` and runs the student's suffix with grad and the teacher's suffix without (spec/method.md,
"Making it fast" §2).  ``forward(x) == suffix(prefix(x))``; outputs are *not* L2-normalised.
"""
from __future__ import annotations

import copy
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SplitImageModel", "ScratchImageTower", "OpenClipVisualSplit", "split_open_clip_visual", "PretrainedCNNSplit"]

# open_clip's OPENAI_DATASET_MEAN/STD, repeated here so core/sg does not need open_clip at import time
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SplitImageModel(nn.Module):
    """Base class.  Subclasses implement :meth:`prefix` and :meth:`suffix`.

    Attributes: ``input_size`` (int, square side in pixels), ``mean`` / ``std`` (3-tuples for the eval
    transform), ``output_dim`` (feature dimension, equal to the text dimension).
    """

    input_size: int
    mean: Sequence[float]
    std: Sequence[float]
    output_dim: int

    def prefix(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def suffix(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.prefix(x)
        return self.suffix(h)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State that changes during training (what a checkpoint must hold)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state, strict=True)

    def frozen_suffix_copy(self) -> nn.Module:
        """A frozen module computing this model's current ``suffix`` (the SG-KD teacher).

        Default: deep copy of the whole model.  Subclasses with a large frozen prefix override this so
        the teacher holds only the trainable part.
        """
        teacher = copy.deepcopy(self)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return _SuffixCaller(teacher)

    def train(self, mode: bool = True):
        super().train(mode)
        self._set_prefix_eval()  # the frozen prefix always runs in eval mode
        return self

    def _set_prefix_eval(self) -> None:
        pass


class _SuffixCaller(nn.Module):
    def __init__(self, model: SplitImageModel):
        super().__init__()
        self.model = model

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.suffix(h)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ScratchImageTower(SplitImageModel):
    """Small ResNet-style CNN + linear projection to the text dimension, trained from scratch.

    The image side of the embedded (offline, e5) default.  Everything is trainable, so the prefix is
    the identity.  Channels: width, 2·width, 4·width, 8·width (strides 1, 2, 2, 2); one basic block per
    stage (ResNet-10-like).  ``width=32`` at 32 px is ~1.2 M parameters; ``width=8`` is a test size.
    """

    def __init__(self, dim: int, input_size: int = 32, width: int = 32,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)):
        super().__init__()
        self.input_size = int(input_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.output_dim = int(dim)
        stem_stride = 1 if input_size <= 48 else 2  # 64 px inputs: halve early to stay CPU-fast
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(
            _BasicBlock(width, width, 1),
            _BasicBlock(width, 2 * width, 2),
            _BasicBlock(2 * width, 4 * width, 2),
            _BasicBlock(4 * width, 8 * width, 2),
        )
        self.proj = nn.Linear(8 * width, dim)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(h))
        return self.proj(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class OpenClipVisualSplit(SplitImageModel):
    """An open_clip ``VisionTransformer`` split after block ``L − k``.

    prefix = patchify + class/positional embeddings + ln_pre + blocks[:-k];
    suffix = blocks[-k:] + pooling (incl. attentional pool) + ln_post + proj.
    Only the last k blocks are trainable (ln_post, proj and everything else are frozen).
    """

    def __init__(self, visual: nn.Module, trainable_blocks: int = 1,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        blocks = visual.transformer.resblocks
        if not 1 <= trainable_blocks <= len(blocks):
            raise ValueError(f"trainable_blocks must be in 1..{len(blocks)}, got {trainable_blocks}")
        if getattr(visual, "output_tokens", False):
            raise ValueError("visual towers with output_tokens=True are not supported")
        self.visual = visual
        self.k = int(trainable_blocks)
        size = visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(mean or getattr(visual, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(std or getattr(visual, "image_std", None) or CLIP_STD)
        self.output_dim = int(visual.output_dim)
        for p in visual.parameters():
            p.requires_grad_(False)
        for p in self.trainable_blocks_module().parameters():
            p.requires_grad_(True)

    def trainable_blocks_module(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks[-self.k:]

    def _run_blocks(self, x: torch.Tensor, blocks) -> torch.Tensor:
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1).contiguous()
        for block in blocks:
            x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        return x

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        h = self.visual._embeds(x)
        return self._run_blocks(h, self.visual.transformer.resblocks[:-self.k])

    def _suffix_with(self, h: torch.Tensor, blocks) -> torch.Tensor:
        h = self._run_blocks(h, blocks)
        pooled, _ = self.visual._pool(h)
        if self.visual.proj is not None:
            pooled = pooled @ self.visual.proj
        return pooled

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        return self._suffix_with(h, self.trainable_blocks_module())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.trainable_blocks_module().state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.trainable_blocks_module().load_state_dict(state, strict=True)

    def frozen_suffix_copy(self) -> nn.Module:
        # Only the k trainable blocks are copied; ln_post / proj / attn_pool are frozen and shared.
        blocks = copy.deepcopy(self.trainable_blocks_module())
        blocks.eval()
        for p in blocks.parameters():
            p.requires_grad_(False)
        return _OpenClipTeacherSuffix(self, blocks)

    def _set_prefix_eval(self) -> None:
        self.visual.eval()
        if self.training:
            self.trainable_blocks_module().train()


class _OpenClipTeacherSuffix(nn.Module):
    def __init__(self, owner: OpenClipVisualSplit, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks
        self._owner = [owner]  # plain list: do not register the student as a submodule

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self._owner[0]._suffix_with(h, self.blocks)


def split_open_clip_visual(visual: nn.Module, trainable_blocks: int = 1,
                           mean: Sequence[float] | None = None,
                           std: Sequence[float] | None = None) -> OpenClipVisualSplit:
    """Wrap an open_clip ``VisionTransformer`` (e.g. ``model.visual``) as a :class:`SplitImageModel`."""
    return OpenClipVisualSplit(visual, trainable_blocks=trainable_blocks, mean=mean, std=std)


class _PretrainedSuffix(nn.Module):
    """The part of a pretrained CNN after the split point: last k blocks, head conv (+BN/act), pooling."""

    def __init__(self, blocks: Sequence[nn.Module], head: nn.Module | None):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = head if head is not None else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:          # split after pooling (k = 0): nothing left to run
            return h
        h = self.head(self.blocks(h))
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)


class _ProjectedSuffix(nn.Module):
    """Student/teacher suffix: pretrained suffix (trainable copy) + linear projection to the text space."""

    def __init__(self, features: _PretrainedSuffix, proj: nn.Linear):
        super().__init__()
        self.features = features
        self.proj = proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(h))


class StudentSuffixSplit(SplitImageModel):
    """A split model whose trainable part is one module, ``self.student``: the suffix, the checkpoint's
    state and the SG-KD teacher (a frozen copy of the student alone, never of the frozen prefix)."""

    student: nn.Module

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        return self.student(h)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.student.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.student.load_state_dict(state, strict=True)

    def frozen_suffix_copy(self) -> nn.Module:
        teacher = copy.deepcopy(self.student)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher


class PretrainedCNNSplit(StudentSuffixSplit):
    """A pretrained ImageNet CNN (timm EfficientNet-style: ``conv_stem``, ``bn1``, ``blocks``, ``conv_head``,
    ``bn2``) split into a frozen prefix and a trainable suffix that ends in a projection to the text space.

    ``trainable_blocks = k``:

    * k ≥ 1 — prefix = stem + every block but the last k (flattened over stages); suffix = the last k
      blocks + head conv + average pooling + ``Linear(num_features, dim)``.  The prefix output is a
      feature map (e.g. 192×7×7 after lite0's sixth stage at 224 px), which is what the feature cache
      stores.
    * k = 0 — prefix = the whole backbone up to the pooled ``num_features`` vector; suffix = the
      projection only.

    BatchNorm running statistics stay those of ImageNet (every BN runs in eval mode, its affine
    parameters train with the suffix): a task of a few hundred images would otherwise pull the
    statistics to its own classes and shift every old class's features.  A frozen copy of the
    *pretrained* suffix is kept for :meth:`frozen_features` (nearest-class-mean on the untouched
    backbone features, and the rejection of unknown images).
    """

    def __init__(self, backbone: nn.Module, dim: int, trainable_blocks: int = 1, input_size: int = 224,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        blocks = [block for stage in backbone.blocks for block in stage]
        k = int(trainable_blocks)
        if not 0 <= k <= len(blocks):
            raise ValueError(f"trainable_blocks must be in 0..{len(blocks)}, got {k}")
        self.k = k
        self.input_size = int(input_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.output_dim = int(dim)
        self.num_features = int(backbone.conv_head.out_channels)
        head = nn.Sequential(backbone.conv_head, backbone.bn2)
        split = len(blocks) - k
        prefix_parts = [backbone.conv_stem, backbone.bn1, *blocks[:split]]
        if k == 0:
            prefix_parts += [head, nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
            pretrained_suffix = _PretrainedSuffix([], None)
        else:
            pretrained_suffix = _PretrainedSuffix(blocks[split:], head)
        self.prefix_net = nn.Sequential(*prefix_parts).to(memory_format=torch.channels_last)
        # the untouched pretrained suffix (frozen), for frozen_features(); the student trains a copy
        self.reference = copy.deepcopy(pretrained_suffix)
        self.student = _ProjectedSuffix(pretrained_suffix, nn.Linear(self.num_features, self.output_dim))
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.student.parameters():
            p.requires_grad_(True)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's convolutions run 1.5–1.8× faster on CPU in this layout (measured)
        return self.prefix_net(x.contiguous(memory_format=torch.channels_last))

    @torch.no_grad()
    def frozen_features(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled ``num_features`` features of the pretrained backbone (never trained) from a prefix output."""
        return self.reference(h)

    def _set_prefix_eval(self) -> None:
        self.prefix_net.eval()
        self.reference.eval()
        for module in self.student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
