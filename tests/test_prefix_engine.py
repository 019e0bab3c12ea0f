"""The engine that computes cached features: chosen by what the CPU can run well (int8 with VNNI, bf16
with AVX512-BF16/AMX, else fp32; a GPU always fp32), tied to the cache key so features of two
precisions never mix, and close to fp32 on real photos. The fallback is tested by hiding the CPU's
instructions."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.encoders import DEFAULT_SPEC, load_encoder
from core.sg import prefix_engine
from core.sg.features import PrefixFeatureCache
from core.sg.prefix_engine import choose_engine, supported
from tests.conftest import shared_datasets

VNNI = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})


@pytest.fixture(scope="module")
def lite0():
    encoder = load_encoder(DEFAULT_SPEC)
    return encoder, encoder.build_image_model().eval()


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("SGCL_PREFIX_ENGINE", raising=False)


def _flags(monkeypatch, flags):
    monkeypatch.setattr(prefix_engine, "cpu_flags", lambda: frozenset(flags))


def test_a_cpu_without_the_instructions_falls_back_to_fp32(monkeypatch, lite0, no_env):
    _, model = lite0
    _flags(monkeypatch, {"sse4_2", "avx2", "fma"})               # an older x86 CPU
    assert choose_engine(model, "fast") == "fp32"
    assert choose_engine(model, "int8") == "fp32"                # asked for, not run badly
    assert choose_engine(model, "bf16") == "fp32"
    _flags(monkeypatch, {"avx512f", "avx512_bf16"})               # bf16 dot products, no VNNI
    assert choose_engine(model, "fast") == "bf16"
    assert choose_engine(model, "int8") == "bf16"
    _flags(monkeypatch, VNNI)
    assert choose_engine(model, "fast") == "int8"
    assert choose_engine(model) == "fp32"       # the default: the prefix the exported bundle runs
    assert choose_engine(model, "bf16") == "bf16"
    assert choose_engine(model, "fp32") == "fp32"
    assert choose_engine(model, device="cuda") == "fp32"          # a GPU runs the torch model
    monkeypatch.setenv("SGCL_PREFIX_ENGINE", "fp32")
    assert choose_engine(model) == "fp32"
    with pytest.raises(ValueError, match="unknown prefix engine"):
        choose_engine(model, "int4")


def test_int8_needs_onnxruntime_and_a_cnn_prefix(monkeypatch, lite0):
    _, model = lite0
    _flags(monkeypatch, VNNI)
    assert supported("int8", model)
    assert not supported("int8", torch.nn.Linear(2, 2))           # no prefix_net to export (e.g. a ViT)
    monkeypatch.setattr(prefix_engine, "_has_onnxruntime", lambda: False)
    assert not supported("int8", model)


def test_the_fallback_path_computes_the_fp32_prefix(monkeypatch, tmp_path, lite0, no_env):
    encoder, model = lite0
    _flags(monkeypatch, set())                                    # no /proc/cpuinfo flags at all
    cache = PrefixFeatureCache(tmp_path, model, encoder.image_version, decode_workers=1)
    assert cache.engine == "fp32"
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 224, 224), dtype=np.uint8))
    from core.sg.data import normalize_batch
    with torch.no_grad():
        expected = model.prefix(normalize_batch(images, model.mean, model.std))
    assert torch.allclose(cache.prefix_of(images), expected, atol=1e-2)


def test_each_precision_has_its_own_cache_key_and_fp32_keeps_the_old_one(monkeypatch, tmp_path, lite0, no_env):
    encoder, model = lite0
    _flags(monkeypatch, VNNI)
    caches = {e: PrefixFeatureCache(tmp_path, model, encoder.image_version, engine=e) for e in ("fp32", "bf16", "int8")}
    assert {c.engine for c in caches.values()} == {"fp32", "bf16", "int8"}
    assert len({c.slug for c in caches.values()}) == 3
    assert "-int8" in caches["int8"].slug and "-bf16" in caches["bf16"].slug
    # fp32 entries made before engines existed stay valid: same key as then
    raw = f"{encoder.image_version}|size=224|k=0|views=1"
    assert caches["fp32"].slug.endswith(hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:10])
    assert "-fp32" not in caches["fp32"].slug


def test_features_of_one_precision_are_never_read_as_another(monkeypatch, tmp_path, lite0, no_env):
    import core.sg.features as features_module

    encoder, model = lite0
    _flags(monkeypatch, {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(features_module, "decode_image", lambda src, size, resize="crop": src)
    image = np.random.default_rng(1).integers(0, 256, (3, 224, 224), dtype=np.uint8)
    bf16 = PrefixFeatureCache(tmp_path, model, encoder.image_version, engine="bf16", decode_workers=1)
    fp32 = PrefixFeatureCache(tmp_path, model, encoder.image_version, engine="fp32", decode_workers=1)
    bf16.load([("k" * 16, image)])
    assert bf16.has("k" * 16) and not fp32.has("k" * 16)          # computed again, never shared
    assert fp32.read("k" * 16) is None
    fp32.load([("k" * 16, image)])
    assert fp32.computed == 1


@pytest.mark.skipif(not supported("int8"), reason="this CPU has no VNNI (or onnxruntime is missing): int8 is not used")
def test_int8_features_of_real_photos_are_close_to_fp32(lite0, no_env, tmp_path):
    root = shared_datasets() / "caltech101" / "test"
    if not root.is_dir():
        pytest.skip(f"needs the shared Caltech-101 subset at {root}")
    from core.sg.data import decode_image

    encoder, model = lite0
    files = sorted(root.rglob("*.jpg"))[::97][:12]
    images = torch.from_numpy(np.stack([decode_image(str(f), 224) for f in files]))
    int8 = PrefixFeatureCache(tmp_path, model, encoder.image_version, engine="int8")
    fp32 = PrefixFeatureCache(tmp_path, model, encoder.image_version, engine="fp32")
    cos = F.cosine_similarity(int8.prefix_of(images), fp32.prefix_of(images), dim=1)
    assert cos.min() > 0.98, cos


@pytest.mark.skipif(not supported("int8"), reason="this CPU has no VNNI (or onnxruntime is missing): int8 is not used")
def test_the_int8_model_is_built_once_where_it_can_be_written(monkeypatch, tmp_path, lite0):
    from core.sg.prefix_engine import PrefixRunner, engine_dir

    encoder, model = lite0
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SGCL_ENGINE_CACHE", str(blocked / "engines"))   # cannot be created
    monkeypatch.setattr(prefix_engine, "_SESSIONS", {})
    built = []
    real = prefix_engine._int8_model
    monkeypatch.setattr(prefix_engine, "_int8_model", lambda m, path, *a: built.append(path) or real(m, path, *a))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    runner = PrefixRunner(model, "int8", encoder.image_version)
    assert built and built[0].parent == tmp_path / "tmp" / f"sgcl-engines-{os.getuid()}"
    assert built[0].is_file() and engine_dir() == blocked / "engines"
    x = torch.zeros(2, 3, 224, 224)
    assert runner(x).shape == (2, 1280)
    PrefixRunner(model, "int8", encoder.image_version)            # the session is shared, not rebuilt
    assert len(built) == 1
