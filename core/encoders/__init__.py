"""Encoders: the registry (what a spec means) and the loader (one instance per spec and process).

    from core.encoders import load_encoder, describe
    enc = load_encoder("effnet-lite0+e5", store.home)
    enc.encode_names(["傷", "scratch"])            # u, L2-normalised (n, dim)
    model = enc.build_image_model()               # a core.sg SplitImageModel into the same space
    describe("effnet-lite0+e5").defaults           # κ, logit scale, schedule for LearnerConfig

Every encoder has a ``version`` stored with each checkpoint, a ``text_version`` keying the embedding
cache and an ``image_version`` keying the frozen-feature cache, so vectors from different spaces never
mix. See registry.py for the spec grammar and the defaults.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from core.encoders.base import CompositeEncoder, Encoder, TextTower, normalize_text
from core.encoders.registry import (BACKBONES, DEFAULT_SPEC, SUGGESTED_CLIP_SPEC, TEXT_TOWERS, EncoderInfo,
                                    describe, example_specs, validate_spec)
from core.i18n import UserError

__all__ = ["Encoder", "TextTower", "EncoderInfo", "DEFAULT_SPEC", "SUGGESTED_CLIP_SPEC", "BACKBONES",
           "TEXT_TOWERS", "describe", "validate_spec", "example_specs", "load_encoder", "active_encoder_spec",
           "encoder_badge", "spec_has_random_weights", "normalize_text", "default_config"]

_CACHE: dict[tuple, Encoder] = {}
_PARTS: dict[tuple, object] = {}
_CACHE_LOCK = threading.RLock()


def active_encoder_spec(store) -> str:
    """The spec new runs and the neighbour views use: ``SGCL_ENCODER`` if set (deployments and tests),
    else the admin setting, else the default."""
    from core import settings

    return os.environ.get("SGCL_ENCODER") or settings.get(store, "encoder") or DEFAULT_SPEC


def spec_has_random_weights(spec: str) -> bool:
    """Known from the spec alone (no model loading): used by the sidebar badge."""
    try:
        return describe(spec).random_weights
    except UserError:
        return False


def encoder_badge(store) -> tuple[str, bool]:
    """``(spec, random_weights)`` of the active encoder, cheap enough for every page render."""
    spec = active_encoder_spec(store)
    return spec, spec_has_random_weights(spec)


def default_config(spec: str, **overrides):
    """``LearnerConfig`` with the registry's defaults for ``spec`` (κ, logit scale, schedule) + overrides."""
    from core.sg.learner import LearnerConfig

    values = dict(describe(spec).defaults)
    values.update(overrides)
    return LearnerConfig(**values)


def load_encoder(spec: str | None, home: Path | None = None) -> Encoder:
    """The encoder for ``spec``, built once per process. ``home`` is the data home whose ``models/``
    folder holds downloaded weights and the tiny test model (a temp dir if None)."""
    info = describe(spec)
    models_dir = _models_dir(home)
    # keyed by the spec as given, so ``name`` is what the caller asked for (an alias such as "e5" and its
    # canonical "scratch+e5" are two light objects sharing one text tower and backbone, see _part)
    key = (info.spec, str(models_dir) if info.family != "composite" else "")
    with _CACHE_LOCK:
        if key not in _CACHE:
            encoder = _build(info, models_dir)
            encoder.entry = info
            encoder.defaults = dict(info.defaults)
            encoder.default_softness = float(info.defaults.get("softness", 13.0))
            if "logit_scale" in info.defaults:
                encoder.logit_scale = float(info.defaults["logit_scale"])
            _CACHE[key] = encoder
        return _CACHE[key]


def _models_dir(home: Path | None) -> Path:
    if home is None:
        return Path(tempfile.gettempdir()) / f"sgcl-models-{os.getuid()}"
    return Path(home) / "models"


def _part(kind: str, name: str, loader):
    """Text towers and backbones are shared between the composite specs that use them."""
    with _CACHE_LOCK:
        if (kind, name) not in _PARTS:
            _PARTS[(kind, name)] = loader()
        return _PARTS[(kind, name)]


def _build(info: EncoderInfo, models_dir: Path) -> Encoder:
    from core.encoders import openclip

    try:
        if info.family == "tiny-test":
            return openclip.build_tiny_test(models_dir / "tiny-test")
        if info.family == "openclip":
            return openclip.build_open_clip(info.spec, models_dir, **info.openclip)
        text = _part("text", info.text, TEXT_TOWERS[info.text].load)
        backbone = _part("backbone", info.backbone, BACKBONES[info.backbone].load)
        # The scratch tower has no weights to version: its runs keep the version they always had.
        version = text.version if backbone.name == "scratch" else f"{backbone.version}+{text.version}"
        return CompositeEncoder(info.spec, text, backbone, version)
    except UserError:
        raise
    except Exception as exc:  # hub unreachable, corrupt file, missing package, wrong architecture...
        raise UserError("encoder.load_failed", spec=info.spec, reason=openclip.short_reason(exc)) from exc
