"""The export contract: the head a method builds (and the full ExportModel) computes what the learner
computes — class scores, familiarity, normalised embedding — for the default head, NCM, with and
without frozen-feature prototypes; and the ONNX file ONNX Runtime runs gives the same numbers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.sg.data import normalize_batch
from core.sg.export import ExportModel, export_onnx
from core.sg.learner import ContinualLearner, LearnerConfig
from core.sg.models import ScratchImageTower


class _FrozenTower(ScratchImageTower):
    """A scratch tower with a frozen_features path, so prototypes are kept (like PretrainedCNNSplit)."""

    def __init__(self):
        super().__init__(dim=8, input_size=16, width=4)
        self.num_features = 8
        self.reference = torch.nn.Linear(3 * 16 * 16, 8)

    def frozen_features(self, h):
        return self.reference(h.flatten(1))


@pytest.mark.parametrize("method", ["both", "ncm"])
@pytest.mark.parametrize("frozen", [False, True])
def test_head_and_export_match_the_learner(method, frozen):
    torch.manual_seed(0)
    model = _FrozenTower() if frozen else ScratchImageTower(dim=8, input_size=16, width=4)
    learner = ContinualLearner(model, 10.0, LearnerConfig(method=method, device="cpu"))
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    if learner.prototypes is not None:
        learner.prototypes.add(learner.backbone_features(images), labels, [0, 1, 2])
    if method == "ncm":
        feats = learner.backbone_features(images)
        learner.method.means = {c: F.normalize(feats[labels == c].mean(0), dim=0) for c in range(3)}
    W = F.normalize(torch.randn(3, 8), dim=1)
    model.eval()
    want_scores = learner.class_scores(images, W)
    want_fam = learner.familiarity(images, W)
    assert (learner.prototypes is not None and learner.prototypes.covers(3)) == frozen

    h = learner.prefix_features(images)
    scores, fam, emb = learner.method.head_module(learner, W)(h)
    torch.testing.assert_close(scores, want_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(fam, want_fam, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(6), atol=1e-5, rtol=0)
    if frozen and method != "ncm":  # the prototype score, not the best class score (NCM: the same means)
        assert not torch.allclose(fam, want_scores.max(1).values)

    x = normalize_batch(images, model.mean, model.std)
    scores2, fam2, _ = ExportModel(learner, W)(x)
    torch.testing.assert_close(scores2, want_scores, atol=1e-5, rtol=0)

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(export_onnx(learner, W), providers=["CPUExecutionProvider"])
    s, f, e = session.run(None, {"image": x.numpy()})
    assert s.shape == (6, 3) and f.shape == (6,) and e.shape[0] == 6
    assert (torch.from_numpy(s).argmax(1) == want_scores.argmax(1)).all()
    torch.testing.assert_close(torch.from_numpy(s), want_scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.from_numpy(f), want_fam, atol=1e-4, rtol=0)
