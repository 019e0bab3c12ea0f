"""Whole-image, higher-resolution frozen features for small defects (scripts/small_defects.py,
docs/small-defects.md).

The default image path resizes the shorter side to 224 px and centre-crops: on inspection photos that
cuts off a third of an elongated part (chipped edges live there) and shrinks a pore to a few pixels,
and the global *average* of the last feature map then dilutes the few positions that see the defect.
:class:`WholeImageCNN` instead

* sees the whole image (``resize = "fit"``: squashed to S × S, nothing cut off — the image decoders
  read this attribute, see core/sg/data.py ``decode_image``),
* optionally at a higher input size S (the network is convolutional: a larger input gives a larger
  feature map; on magnetic_tile 448 px validated no better than 224, docs/small-defects.md),
* and pools the map so that a few strong positions count (``gem``: generalised mean, p = 3; ``max``;
  ``mean+max``), optionally per overlapping tile first (``tile``/``stride``: each tile through the
  backbone on its own, the tile vectors pooled the same way).

Only the projection trains (k = 0): the prefix output is the pooled vector, so the feature cache holds
one small vector per image and the closed-form heads (NCM, FeCAM, ridge) work on it unchanged.
Pure torch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .models import StudentSuffixSplit

__all__ = ["WholeImageCNN", "POOLS", "tile_starts", "tile_boxes", "pool_positions", "equalize_gray"]

POOLS = ("mean", "max", "gem", "mean+max")
GEM_P = 3.0


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` every ``stride`` pixels along ``length``; the last tile is
    flush with the end, so together they cover every pixel (one tile when ``length <= tile``)."""
    if tile <= 0 or stride <= 0:
        raise ValueError("tile and stride must be positive")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_boxes(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every tile, row by row."""
    return [(top, left) for top in tile_starts(height, tile, stride) for left in tile_starts(width, tile, stride)]


def pool_positions(x: torch.Tensor, pool: str) -> torch.Tensor:
    """Pool (B, C, P) over P: ``mean``, ``max``, ``gem`` (p = 3, on non-negative features) or ``mean+max``
    (both, each L2-normalised so neither dominates by scale) → (B, C) or (B, 2C)."""
    if pool == "mean":
        return x.mean(2)
    if pool == "max":
        return x.amax(2)
    if pool == "gem":
        return x.clamp_min(1e-6).pow(GEM_P).mean(2).pow(1.0 / GEM_P)
    if pool == "mean+max":
        return torch.cat([nn.functional.normalize(x.mean(2), dim=1), nn.functional.normalize(x.amax(2), dim=1)], 1)
    raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")


def equalize_gray(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Histogram-equalised grayscale of a normalised batch (B, 3, H, W), normalised back the same way:
    each image's gray levels (256 bins) mapped through its own cumulative histogram, so faint defects on
    a dark or bright part get the full contrast range (as PIL's ``ImageOps.equalize``)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    gray = (x * s + m).mean(1).flatten(1)                                  # (B, P) in [0, 1]
    levels = (gray * 255).round().clamp(0, 255).long()
    hist = torch.zeros(x.shape[0], 256, dtype=x.dtype, device=x.device).scatter_add_(
        1, levels, torch.ones_like(gray))
    # PIL's mapping: level i → (pixels darker than i + step/2) // step, step = (pixels − the brightest
    # level's count) / 255
    before = hist.cumsum(1) - hist
    last = 255 - (hist.flip(1) > 0).float().argmax(1, keepdim=True)
    step = ((gray.shape[1] - hist.gather(1, last)) / 255).floor().clamp_min(1)
    lut = ((before + step // 2) // step).clamp(0, 255) / 255
    mapped = lut.gather(1, levels)
    eq = mapped.view(x.shape[0], 1, *x.shape[2:]).expand(-1, x.shape[1], -1, -1)
    return (eq - m) / s


class WholeImageCNN(StudentSuffixSplit):
    """A pretrained timm EfficientNet-style CNN (``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``)
    as a frozen prefix that outputs one pooled vector per image; the suffix is a linear projection to the
    text space (k = 0: only the projection trains).

    ``input_size`` S: the square side images are resized to (whole image, ``resize = "fit"``).
    ``pool``: how the last feature map's positions are pooled (:data:`POOLS`).
    ``tile`` > 0: cut the S × S input into ``tile``-px tiles every ``stride`` px (covering it, see
    :func:`tile_boxes`), pool each tile's map with ``mean``, then pool the tile vectors with ``pool``.
    ``gray = "eq"``: the input is turned into histogram-equalised grayscale first (:func:`equalize_gray`;
    for grayscale inspection photos — colour is dropped).
    """

    resize = "fit"
    k = 0

    def __init__(self, backbone: nn.Module, dim: int, input_size: int = 224, pool: str = "gem",
                 tile: int = 0, stride: int = 0, gray: str = "none",
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        if gray not in ("none", "eq"):
            raise ValueError(f"unknown gray {gray!r}; choose none or eq")
        self.gray = gray
        self.input_size = int(input_size)
        self.pool = pool
        self.tile = int(tile)
        self.stride = int(stride or tile // 2)
        if self.tile and self.tile > self.input_size:
            raise ValueError("tile must not be larger than input_size")
        self.mean, self.std = tuple(mean), tuple(std)
        self.output_dim = int(dim)
        channels = int(backbone.conv_head.out_channels)
        self.num_features = channels * (2 if pool == "mean+max" else 1)
        self.prefix_net = nn.Sequential(backbone.conv_stem, backbone.bn1, *backbone.blocks, backbone.conv_head,
                                        backbone.bn2).to(memory_format=torch.channels_last)
        self.student = nn.Linear(self.num_features, self.output_dim)
        for p in self.prefix_net.parameters():
            p.requires_grad_(False)

    @property
    def boxes(self) -> list[tuple[int, int]]:
        return tile_boxes(self.input_size, self.input_size, self.tile, self.stride) if self.tile else []

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w): the last feature map (after the head conv and its BN + ReLU6)."""
        return self.prefix_net(x.contiguous(memory_format=torch.channels_last))

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        if self.gray == "eq":
            x = equalize_gray(x, self.mean, self.std)
        if not self.tile:
            return pool_positions(self.feature_map(x).flatten(2), self.pool)
        b, t = x.shape[0], self.tile
        tiles = torch.cat([x[:, :, top:top + t, left:left + t] for top, left in self.boxes])   # (T·B, 3, t, t)
        per_tile = self.feature_map(tiles).mean((2, 3))                                       # (T·B, C)
        per_tile = per_tile.view(len(self.boxes), b, -1).permute(1, 2, 0)                     # (B, C, T)
        return pool_positions(per_tile, self.pool)

    @torch.no_grad()
    def frozen_features(self, h: torch.Tensor) -> torch.Tensor:
        """The pooled pretrained features (the prefix output itself: nothing after it is pretrained)."""
        return h

    def _set_prefix_eval(self) -> None:
        self.prefix_net.eval()
