"""Split image models, the decode-once cache, tensor transforms and herding."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.sg.data import DecodedImageDataset, ImageCache, augment_batch, decode_image, normalize_batch
from core.sg.memory import ExemplarMemory, herding_order
from core.sg.models import ScratchImageTower, split_open_clip_visual

open_clip_transformer = pytest.importorskip("open_clip.transformer")


def _tiny_vit(**kw):
    torch.manual_seed(0)
    return open_clip_transformer.VisionTransformer(
        image_size=32, patch_size=8, width=32, layers=3, heads=2, mlp_ratio=2.0, output_dim=16, **kw)


@pytest.mark.parametrize("kw", [{}, {"pool_type": "avg"}, {"final_ln_after_pool": True},
                                {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2}])
@pytest.mark.parametrize("k", [1, 2])
def test_split_open_clip_visual_equals_unsplit(kw, k):
    visual = _tiny_vit(**kw)
    x = torch.randn(4, 3, 32, 32)
    split = split_open_clip_visual(visual, trainable_blocks=k).eval()
    with torch.no_grad():
        expected = visual(x)
        assert torch.equal(split(x), expected)
        assert torch.equal(split.suffix(split.prefix(x)), expected)
        assert torch.equal(split.frozen_suffix_copy()(split.prefix(x)), expected)


def test_split_open_clip_only_last_blocks_train_and_teacher_stays_frozen():
    visual = _tiny_vit()
    split = split_open_clip_visual(visual, trainable_blocks=1)
    trainable = {id(p) for p in split.trainable_parameters()}
    assert trainable == {id(p) for p in visual.transformer.resblocks[-1].parameters()}
    assert not visual.proj.requires_grad and not any(p.requires_grad for p in visual.ln_post.parameters())
    teacher = split.frozen_suffix_copy()
    x = torch.randn(2, 3, 32, 32)
    h = split.prefix(x)
    before = teacher(h).clone()
    with torch.no_grad():
        for p in split.trainable_parameters():
            p.add_(0.1)
    assert torch.equal(teacher(h), before)         # teacher is a copy, not a view
    assert not torch.equal(split.suffix(h), before)  # student moved
    # checkpoints of an open_clip split hold only the trainable blocks
    assert set(split.trainable_state_dict()) == {f"0.{k}" for k in visual.transformer.resblocks[-1].state_dict()}


def test_scratch_tower_shapes_and_prefix_is_identity():
    tower = ScratchImageTower(dim=24, input_size=32, width=8)
    x = torch.randn(3, 3, 32, 32)
    assert tower(x).shape == (3, 24)
    assert torch.equal(tower.prefix(x), x)
    assert all(p.requires_grad for p in tower.parameters())
    assert ScratchImageTower(dim=24, input_size=64, width=8)(torch.randn(2, 3, 64, 64)).shape == (2, 24)


def _png_bytes(colour, size=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_resizes_keeps_colour_and_cache_decodes_once(tmp_path):
    red, blue = _png_bytes((255, 0, 0)), _png_bytes((0, 0, 255), (20, 50))
    path = tmp_path / "green.png"
    Image.new("L", (16, 16), 128).save(path)  # greyscale file → converted to RGB
    arr = decode_image(red, 16)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.uint8 and (arr[0] == 255).all() and (arr[2] == 0).all()

    cache = ImageCache(tmp_path / "cache")
    images = cache.load([red, blue, str(path)], 16)
    assert images.shape == (3, 3, 16, 16) and cache.decoded == 3
    assert (images[2] == 128).all()
    again = ImageCache(tmp_path / "cache")
    assert torch.equal(again.load([red, blue, str(path)], 16), images) and again.decoded == 0
    # another size is another cache entry
    assert again.load([red, blue, str(path)], 8).shape == (3, 3, 8, 8) and again.decoded == 3


def test_dataset_select_ids_and_concat():
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    ds = DecodedImageDataset(images, torch.tensor([0, 1, 1, 2]), torch.tensor([10, 11, 12, 13]))
    picked = ds.select_ids([13, 10])
    assert picked.ids.tolist() == [13, 10] and picked.labels.tolist() == [2, 0]
    assert picked.images[0, 0, 0, 0] == 3
    both = DecodedImageDataset.concat([ds, picked])
    assert len(both) == 6 and both[5][2] == 10
    with pytest.raises(KeyError):
        ds.select_ids([99])


def test_augment_crop_and_flip_are_valid_shifts_and_reproducible():
    images = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    a = augment_batch(images, torch.Generator().manual_seed(1), padding=2)
    b = augment_batch(images, torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(a, b) and a.shape == images.shape and a.dtype == torch.uint8
    # every output equals some shift (and maybe flip) of its input, zero-padded
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        ok = any(torch.equal(a[i], cand) for dy in range(5) for dx in range(5)
                 for cand in (padded[i, :, dy:dy + 8, dx:dx + 8], padded[i, :, dy:dy + 8, dx:dx + 8].flip(-1)))
        assert ok
    x = normalize_batch(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_herding_picks_expected_samples_on_toy_set():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.8, 0.6]])
    # μ = (0.16, 0.12). k=1: |x − μ|: (1,0): 0.85; (0,1): 0.89; (−1,0): 1.17; (0,−1): 1.13; (.8,.6): 0.8 → pick 4
    # k=2: (S + x)/2 with S = (.8,.6): (−1,0) → (−.1,.3): dist to μ 0.316; (0,−1) → (.4,−.2): 0.4;
    #      (1,0) → (.9,.3): 0.76; (0,1) → (.4,.8): 0.72 → pick 2
    assert herding_order(feats, 2) == [4, 2]
    assert len(set(herding_order(feats, 5))) == 5
    assert herding_order(feats, 99) == herding_order(feats, 5)


def test_memory_per_class_and_fixed_total_reduce():
    feats = torch.nn.functional.normalize(torch.randn(60, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.arange(60) // 10  # 6 classes × 10
    ids = torch.arange(1000, 1060)
    per_class = ExemplarMemory(per_class=3)
    per_class.update(feats[:20], labels[:20], ids[:20], [0, 1])
    assert {c: len(v) for c, v in per_class.exemplars.items()} == {0: 3, 1: 3}
    assert all(1000 <= i < 1010 for i in per_class.exemplars[0])

    total = ExemplarMemory(total=10)
    total.update(feats[:20], labels[:20], ids[:20], [0, 1])
    assert [len(total.exemplars[c]) for c in (0, 1)] == [5, 5]
    head = list(total.exemplars[0])
    total.update(feats[20:40], labels[20:40], ids[20:40], [2, 3])
    assert [len(total.exemplars[c]) for c in range(4)] == [3, 3, 2, 2] and len(total) == 10
    assert total.exemplars[0] == head[:3]  # reduced to the head of the herding order
    state = total.state_dict()
    restored = ExemplarMemory()
    restored.load_state_dict(state)
    assert restored.exemplars == total.exemplars and restored.total == 10
