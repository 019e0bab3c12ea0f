"""open_clip models (both towers pretrained and aligned, the production path) and the tiny offline test model.

Specs (parsed by core/encoders/registry.py):

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
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import torch

from core.encoders.base import Encoder
from core.i18n import UserError

TEXT_BATCH = 64


class OpenClipEncoder(Encoder):
    def __init__(self, spec: str, model, tokenizer, preprocess, version: str, random_weights: bool):
        self.name = spec
        self.version = version
        self.text_version = version
        self.image_version = version
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.random_weights = random_weights
        self.has_image_tower = True
        self.logit_scale = float(model.logit_scale.detach().exp())
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

def short_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def build_open_clip(spec: str, models_dir: Path, model_name: str, tag: str | None, checkpoint: str | None,
                    tokenizer_dir: str | None) -> OpenClipEncoder:
    """``spec`` parsed by the registry into the model name and either a hub tag or a local checkpoint."""
    import open_clip

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise UserError("encoder.load_failed", spec=spec, reason=f"checkpoint not found: {checkpoint}")
        if tokenizer_dir and not Path(tokenizer_dir).is_dir():
            raise UserError("encoder.load_failed", spec=spec, reason=f"tokenizer folder not found: {tokenizer_dir}")
    base_name = model_name
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
        version = f"openclip:{base_name}@{_file_fingerprint(Path(checkpoint))}"
    else:
        version = f"openclip:{model_name}/{tag or 'random'}"
    return OpenClipEncoder(spec, model, tokenizer, preprocess, version, random_weights=pretrained is None)


def _register_local_text_config(open_clip, model_name: str, text_dir: Path, models_dir: Path) -> str:
    """A copy of the model's config whose text tower reads its HF config/tokenizer from text_dir."""
    cfg = copy.deepcopy(open_clip.get_model_config(model_name))
    cfg["text_cfg"]["hf_model_name"] = str(text_dir.resolve())
    cfg["text_cfg"]["hf_tokenizer_name"] = str(text_dir.resolve())
    digest = hashlib.sha1(str(text_dir.resolve()).encode(), usedforsecurity=False).hexdigest()[:8]
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
    return f"{path.stat().st_size}-{hashlib.sha1(head, usedforsecurity=False).hexdigest()[:12]}"


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


def build_tiny_test(folder: Path) -> OpenClipEncoder:
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
