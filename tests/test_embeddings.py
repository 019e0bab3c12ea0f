"""The SQLite embedding cache: hits on the second call, never mixes encoders or kinds; what text
gets embedded (embed text, not the raw variant) and the per-language prompt templates."""
from __future__ import annotations

import pytest
import torch

from core import embeddings as emb
from core.auth import Actor
from core.encoders import load_encoder
from core.i18n import UserError
from core.store import Store, now_iso


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    yield s
    s.close()


class CountingEncoder:
    """The real e5 encoder, counting how many texts it is actually asked to encode."""

    def __init__(self, inner):
        self.inner, self.encoded = inner, []
        self.version, self.text_version, self.dim = inner.version, inner.text_version, inner.dim

    def encode_names(self, texts):
        self.encoded += list(texts)
        return self.inner.encode_names(texts)

    def encode_prompts(self, texts):
        self.encoded += list(texts)
        return self.inner.encode_prompts(texts)


def test_second_call_is_served_from_the_cache(store):
    enc = CountingEncoder(load_encoder("e5"))
    emb.reset_stats()
    first = emb.embed_texts(store, enc, ["ねじ", "bolt", "ねじ"])
    assert emb.STATS.misses == 2 and emb.STATS.hits == 0
    assert enc.encoded == ["ねじ", "bolt"]  # duplicates encoded once
    second = emb.embed_texts(store, enc, ["bolt", "ねじ"])
    assert emb.STATS.hits == 2 and emb.STATS.misses == 2
    assert enc.encoded == ["ねじ", "bolt"]  # nothing new was encoded
    assert torch.equal(second, first[[1, 0]])
    assert emb.cached_count(store, enc) == 2
    # only the misses of a mixed call are encoded
    emb.embed_texts(store, enc, ["bolt", "ナット"])
    assert enc.encoded[-1] == "ナット" and len(enc.encoded) == 3


def test_cache_survives_a_new_connection(tmp_path):
    enc = load_encoder("e5")
    Store(tmp_path).close()
    vec = emb.embed_texts(Store(tmp_path), enc, ["歯車"])
    emb.reset_stats()
    again = emb.embed_texts(Store(tmp_path), enc, ["歯車"])
    assert emb.STATS.hits == 1 and torch.equal(vec, again)


def test_cache_is_keyed_by_encoder_and_kind(store, tmp_path):
    e5, tiny = load_encoder("e5"), load_encoder("tiny-test", tmp_path)
    emb.embed_texts(store, e5, ["ねじ"])
    emb.reset_stats()
    vec = emb.embed_texts(store, tiny, ["ねじ"])
    assert emb.STATS.misses == 1 and vec.shape == (1, tiny.dim)  # not e5's 384-d vector
    emb.reset_stats()
    emb.embed_texts(store, e5, ["ねじ"], kind="prompt")
    assert emb.STATS.misses == 1  # a prompt is not a name
    rows = store.query("SELECT encoder, text, dim FROM embeddings ORDER BY encoder, text")
    assert {(r["encoder"], r["text"], r["dim"]) for r in rows} == {
        (e5.version, "name:ねじ", 384), (e5.version, "prompt:ねじ", 384), (tiny.version, "name:ねじ", tiny.dim)}


def test_progress_is_reported_while_computing(store):
    seen = []
    emb.embed_texts(store, load_encoder("e5"), [f"部品{i}" for i in range(70)], progress=seen.append)
    assert len(seen) == 2 and seen[-1] == 1.0  # two batches of at most 64


def _label(store, name, entry=None):
    if entry:
        store.insert("glossary_entries", entry, replace=True)
    store.insert("labels", {"name": name, "name_key": name, "lang": "ja", "status": "approved",
                               "entry_id": entry and entry["id"], "created_by": "t", "created_at": now_iso()})


def test_labels_embed_their_glossary_text_never_the_raw_variant(store):
    from core.labels import list_labels

    _label(store, "ﾈｼﾞ", {"id": "g1", "canonical": "ねじ", "embed_text": ""})
    _label(store, "bike", {"id": "g2", "canonical": "オートバイ", "embed_text": "オートバイ（二輪車）"})
    _label(store, "scratch")
    labels = list_labels(store)
    assert [emb.label_embed_text(l) for l in labels] == ["ねじ", "オートバイ（二輪車）", "scratch"]
    assert emb.prompt_texts(store, labels) == ["ねじの写真", "オートバイ（二輪車）の写真", "a photo of a scratch."]


def test_prompt_templates_are_validated_and_admin_only(store):
    admin, reviewer = Actor("root", "admin"), Actor("bob", "reviewer")
    with pytest.raises(UserError) as err:
        emb.set_prompt_templates(store, admin, {"ja": "{}と{}", "en": "a photo of a {}."})
    assert err.value.key == "embed.bad_template" and "{}" in err.value.message("ja")
    with pytest.raises(UserError):
        emb.set_prompt_templates(store, admin, {"ja": "{}の画像"})  # en missing
    with pytest.raises(UserError) as err:
        emb.set_prompt_templates(store, reviewer, {"ja": "{}の画像", "en": "an image of a {}"})
    assert err.value.key == "err.forbidden"
    emb.set_prompt_templates(store, admin, {"ja": "{}の画像", "en": "an image of a {}"})
    assert emb.prompt_texts(store, [{"name": "傷"}, {"name": "dent"}]) == ["傷の画像", "an image of a dent"]


def test_language_is_detected_from_the_script():
    assert [emb.text_language(t) for t in ("ねじ", "ネジ", "螺子", "ｶﾒﾗ", "bolt", "M3 ねじ")] == \
        ["ja", "ja", "ja", "ja", "en", "ja"]
