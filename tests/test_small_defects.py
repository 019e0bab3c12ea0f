"""The small-defects image model (core/sg/tiles.py, registry entry ``effnet-lite0-defects``): whole image,
higher input size, pooled so a small flaw counts; docs/small-defects.md has the numbers behind it."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.encoders import BACKBONES, describe, example_specs
from core.i18n import UserError
from core.sg import ContinualLearner, LearnerConfig
from core.sg.data import FeatureDataset, decode_image
from core.sg.features import PrefixFeatureCache
from core.sg.tiles import WholeImageCNN, pool_positions, tile_boxes, tile_starts
from tests.conftest import SHARED

SPEC = "effnet-lite0-defects+use-m3"


@pytest.mark.parametrize("height,width,tile,stride", [(448, 448, 224, 112), (500, 300, 224, 100), (224, 224, 224, 112),
                                                      (100, 640, 64, 64), (97, 45, 32, 7)])
def test_tiles_cover_every_pixel_and_stay_inside(height, width, tile, stride):
    covered = np.zeros((height, width), int)
    boxes = tile_boxes(height, width, tile, stride)
    for top, left in boxes:
        assert 0 <= top and top + min(tile, height) <= height and 0 <= left and left + min(tile, width) <= width
        covered[top:top + tile, left:left + tile] += 1
    assert covered.min() >= 1
    rows = tile_starts(height, tile, stride)
    assert all(0 < b - a <= stride for a, b in zip(rows, rows[1:]))   # overlapping or touching, never a gap
    assert len(boxes) == len(rows) * len(tile_starts(width, tile, stride))


def test_448_px_input_gives_a_3_by_3_grid_of_overlapping_224_px_tiles():
    assert tile_starts(448, 224, 112) == [0, 112, 224]
    with pytest.raises(ValueError):
        tile_starts(448, 0, 112)


def test_pools_keep_a_single_strong_position_that_the_mean_dilutes():
    x = torch.zeros(1, 4, 196)
    x[0, 2, 17] = 6.0                       # one position of 14 × 14 sees the defect
    mean, gem, top = pool_positions(x, "mean"), pool_positions(x, "gem"), pool_positions(x, "max")
    assert top[0, 2] == 6.0 and gem[0, 2] > 20 * mean[0, 2]
    assert pool_positions(x, "mean+max").shape == (1, 8)
    with pytest.raises(ValueError):
        pool_positions(x, "median")


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_fit_decoding_keeps_a_defect_at_the_edge_that_the_centre_crop_cuts_off():
    image = np.full((100, 300), 200, np.uint8)
    image[40:60, 2:12] = 0                  # a chip at the left edge of an elongated part
    data = _png(image)
    crop, fit = decode_image(data, 64), decode_image(data, 64, "fit")
    assert crop.shape == fit.shape == (3, 64, 64)
    assert crop.min() > 150                 # the centre crop lost it
    assert fit.min() < 50                   # the whole image keeps it
    with pytest.raises(ValueError):
        decode_image(data, 64, "stretch")


def test_the_registry_offers_it_by_name_with_a_title_and_the_projection_only_schedule():
    info = describe(SPEC)
    assert info.pretrained_image and not info.random_weights
    assert "small defects" in info.title and "whole image" in info.title
    assert info.defaults["trainable_blocks"] == 0
    assert SPEC in example_specs()


@pytest.fixture(scope="module")
def backbone():
    return BACKBONES["effnet-lite0-defects"].load()


def test_the_backbone_builds_and_its_features_have_the_declared_shape(backbone):
    model = backbone.build(16)
    assert isinstance(model, WholeImageCNN) and model.input_size == 224 and model.resize == "fit"
    assert model.num_features == 1280 and model.output_dim == 16 and model.k == 0
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"student"}
    model.eval()
    with torch.no_grad():
        h = model.prefix(torch.zeros(2, 3, 224, 224))
        assert h.shape == (2, 1280)
        assert model.suffix(h).shape == (2, 16) and torch.equal(model.frozen_features(h), h)
    assert "fit224-gem" in backbone.version       # a different setting never reads another's cached features
    with pytest.raises(UserError) as err:
        backbone.build(16, trainable_blocks=1)
    assert err.value.key == "encoder.fixed_blocks" and "0" in err.value.message("ja")


def test_tiled_prefix_equals_pooling_each_tile_run_on_its_own(backbone):
    from core.encoders.backbones import build_timm_effnet

    model = WholeImageCNN(build_timm_effnet("tf_efficientnet_lite0", "lite0"), 8, input_size=96, pool="max",
                          tile=64, stride=32).eval()
    x = torch.randn(2, 3, 96, 96)
    assert len(model.boxes) == 4
    with torch.no_grad():
        pooled = model.prefix(x)
        each = torch.stack([model.feature_map(x[:, :, t:t + 64, l:l + 64]).mean((2, 3)) for t, l in model.boxes])
    assert pooled.shape == (2, 1280)
    torch.testing.assert_close(pooled, each.amax(0), rtol=1e-4, atol=1e-4)


def _pattern(kind: int, seed: int) -> bytes:
    """A 200 × 120 grey part with a small defect: a dark dot (0) or a thin bright line (1), anywhere."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(128, 6, (120, 200)), 0, 255).astype(np.uint8)
    y, x = int(rng.integers(10, 100)), int(rng.integers(10, 180))
    if kind == 0:
        image[y:y + 8, x:x + 8] = 20
    else:
        image[y:y + 2, max(0, x - 9):x + 9] = 250
    return _png(image)


def test_it_learns_a_tiny_synthetic_defect_set_through_the_cache_and_the_learner(tmp_path):
    from core.encoders.backbones import build_timm_effnet

    torch.manual_seed(0)
    model = WholeImageCNN(build_timm_effnet("tf_efficientnet_lite0", "lite0"), 16, input_size=128, pool="gem")
    items = [(f"img{kind}{i:05d}", _pattern(kind, 10 * i + kind)) for i in range(8) for kind in (0, 1)]
    labels = [kind for i in range(8) for kind in (0, 1)]
    cache = PrefixFeatureCache(tmp_path, model, "test-defects", views=1, decode_workers=1)
    feats = cache.load(items)
    assert feats.shape == (16, 1, 1280) and cache.computed == 16
    names = torch.nn.functional.normalize(torch.randn(2, 16), dim=1)
    config = LearnerConfig(method="both", epochs=30, batch_size=8, lr=0.05, logit_scale=15.0, trainable_blocks=0,
                           softness=5.0, device="cpu")
    learner = ContinualLearner(model, config=config)
    train = FeatureDataset(feats[:8], labels[:8], list(range(8)))          # images 0–3 of each kind
    test = FeatureDataset(feats[8:], labels[8:], list(range(8, 16)))       # images 4–7: unseen
    learner.learn_task(0, train, names, names, new_class_ids=[0, 1])
    result = learner.evaluate([train, test], names, [[0, 1], [0, 1]])
    assert result["acc"][0] == 1.0 and result["acc"][1] >= 0.75
    assert learner.familiarity_kind == "prototype"
    assert PrefixFeatureCache(tmp_path, model, "test-defects").load(items).shape == feats.shape  # warm read


@pytest.mark.slow
def test_magnetic_tile_test_accuracy_beats_the_centre_cropped_224_px_default():
    root = SHARED / "datasets" / "magnetic_tile"
    if not root.is_dir():
        pytest.skip(f"needs the shared magnetic_tile set at {root}")
    from core.encoders.backbones import build_timm_effnet

    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())

    def split(name):
        files = [(f, c) for c, cls in enumerate(classes) for f in sorted((root / name / cls).glob("*.jpg"))]
        return [f for f, _ in files], np.array([c for _, c in files])

    (train, y_tr), (test, y_te) = split("train"), split("test")
    model = BACKBONES["effnet-lite0-defects"].load().build(8).eval()
    torch.set_num_threads(2)
    with torch.no_grad():
        def feats(paths):
            out = []
            for b in range(0, len(paths), 16):
                x = torch.from_numpy(np.stack([decode_image(str(p), model.input_size, "fit") for p in paths[b:b + 16]]))
                x = (x.float() / 255 - 0.5) / 0.5
                out.append(torch.nn.functional.normalize(model.prefix(x), dim=1))
            return torch.cat(out).double()
        f_tr, f_te = feats(train), feats(test)
    mu = f_tr.mean(0)
    means = torch.nn.functional.normalize(torch.stack([f_tr[y_tr == c].mean(0) for c in range(len(classes))]) - mu, dim=1)
    acc = float(((torch.nn.functional.normalize(f_te - mu, dim=1) @ means.T).argmax(1).numpy() == y_te).mean())
    # NCM on the product's default features reads 28.7 % (docs/small-defects.md); chance is 17 %
    assert acc >= 0.40, acc


def test_gray_equalisation_matches_pil_and_spreads_a_low_contrast_part():
    from PIL import ImageOps

    from core.sg.tiles import equalize_gray

    rng = np.random.default_rng(1)
    gray = np.clip(rng.normal(100, 4, (40, 60)), 0, 255).astype(np.uint8)   # a dull, low-contrast part
    gray[10:14, 20:24] = 80                                                   # a faint pore
    x = (torch.from_numpy(gray).float() / 255).expand(1, 3, -1, -1)
    x = (x - 0.5) / 0.5
    eq = equalize_gray(x, (0.5,) * 3, (0.5,) * 3)
    assert eq.shape == x.shape and torch.equal(eq[:, 0], eq[:, 2])
    ours = (eq[0, 0] * 0.5 + 0.5) * 255
    theirs = torch.from_numpy(np.asarray(ImageOps.equalize(Image.fromarray(gray)), np.float32))
    assert (ours - theirs).abs().mean() < 6                                  # PIL's mapping, up to rounding
    assert float(ours.max() - ours.min()) > 200 > float(gray.max()) - float(gray.min())
    assert float(ours[10:14, 20:24].mean()) < float(ours.mean()) - 60        # the pore stands out


def test_the_grayscale_entry_equalises_before_the_backbone():
    info = describe("effnet-lite0-defects-gray+use-m3")
    assert "grayscale" in info.title
    backbone = BACKBONES["effnet-lite0-defects-gray"].load()
    assert "-eq" in backbone.version and backbone.version != BACKBONES["effnet-lite0-defects"].load().version
    with pytest.raises(ValueError):
        WholeImageCNN(torch.nn.Module(), 8, gray="sepia")
