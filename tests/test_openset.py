""""Not one of the trained classes": the familiarity score, its threshold and the checkpoint round trip.

With a frozen pretrained backbone the learner keeps one prototype (mean frozen feature) per trained
class and scores an image by its best cosine to them (core/sg/openset.py); other models, and
checkpoints saved before prototypes existed, keep using the best class score."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.sg import ContinualLearner, FeatureDataset, LearnerConfig, ScratchImageTower
from core.sg.openset import ClassPrototypes, auroc, calibrate_threshold, rejection_rates

DIM, N_CLASSES, PER_CLASS = 8, 6, 12


@pytest.fixture(scope="module")
def backbone():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


def _pooled_features(seed=0):
    """Post-activation-like 1280-d features: each class a cluster around its own non-negative centre."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(N_CLASSES, 1280, generator=gen) ** 4
    feats = torch.cat([(centres[c] + 0.05 * torch.rand(PER_CLASS, 1280, generator=gen)) for c in range(N_CLASSES)])
    labels = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
    return feats, labels


def _split(feats, labels, classes, rows):
    pick = torch.cat([(labels == c).nonzero().flatten()[rows] for c in classes])
    return FeatureDataset(feats[pick].unsqueeze(1), labels[pick], pick)


def _learner(backbone, method="both"):
    from core.sg.models import PretrainedCNNSplit

    torch.manual_seed(0)
    model = PretrainedCNNSplit(copy.deepcopy(backbone), DIM, trainable_blocks=0)
    return ContinualLearner(model, 10.0, LearnerConfig(method=method, epochs=3, batch_size=8, lr=0.05,
                                                       exemplars_per_class=2, device="cpu"))


def _trained(backbone):
    feats, labels = _pooled_features()
    W = F.normalize(torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(1)), dim=1)
    learner = _learner(backbone)
    train = slice(0, 8)
    learner.learn_task(0, _split(feats, labels, [0, 1], train), W[:2], W[:2], [0, 1])
    learner.learn_task(1, _split(feats, labels, [2, 3], train), W[:4], W[:4], [2, 3])
    known = _split(feats, labels, [0, 1, 2, 3], slice(8, PER_CLASS))
    unknown = _split(feats, labels, [4, 5], slice(0, PER_CLASS))
    return learner, W[:4], known, unknown


def test_a_frozen_backbone_scores_familiarity_by_class_prototypes(backbone):
    learner, W, known, unknown = _trained(backbone)
    assert learner.familiarity_kind == "prototype"
    assert sorted(learner.prototypes.means) == [0, 1, 2, 3]
    fam_known = learner.familiarity(known.first_view(), W)
    fam_unknown = learner.familiarity(unknown.first_view(), W)
    # the score is the cosine to the nearest prototype of the frozen features, not the class score
    frozen = learner.backbone_features(known.first_view())
    table = torch.stack([learner.prototypes.means[c] for c in range(4)])
    assert torch.allclose(fam_known, (frozen @ table.t()).max(1).values, atol=1e-6)
    assert not torch.allclose(fam_known, learner.class_scores(known.first_view(), W).max(1).values, atol=1e-3)
    assert auroc(fam_known, fam_unknown) > 0.95
    # evaluate() hands the same score to the threshold calibration
    result = learner.evaluate([known], W, [[0, 1, 2, 3]], return_scores=True)
    assert torch.allclose(result["max_scores"][0], fam_known)
    threshold = calibrate_threshold(result["max_scores"])
    assert float((fam_unknown < threshold).float().mean()) > 0.9


def test_prototypes_survive_the_checkpoint_and_an_old_checkpoint_falls_back_to_class_scores(backbone):
    learner, W, known, _ = _trained(backbone)
    state = learner.state_dict()
    restored = _learner(backbone)
    restored.load_state_dict(state, learner.exemplar_data)
    assert restored.familiarity_kind == "prototype"
    assert torch.allclose(restored.familiarity(known.first_view(), W), learner.familiarity(known.first_view(), W))

    old = {k: v for k, v in state.items() if k != "prototypes"}           # saved before prototypes existed
    legacy = _learner(backbone)
    legacy.load_state_dict(old, learner.exemplar_data)
    assert legacy.familiarity_kind == "class"
    assert torch.allclose(legacy.familiarity(known.first_view(), W),
                          legacy.class_scores(known.first_view(), W).max(1).values)


def test_a_model_that_trains_all_its_features_keeps_the_class_score():
    learner = ContinualLearner(ScratchImageTower(DIM, input_size=16, width=4), 10.0,
                               LearnerConfig(method="both", epochs=1, device="cpu"))
    assert learner.prototypes is None and learner.familiarity_kind == "class"


def test_prototypes_need_every_seen_class():
    protos = ClassPrototypes()
    feats = F.normalize(torch.eye(3), dim=1)
    protos.add(feats, torch.tensor([0, 1, 2]), [0, 2])
    assert protos.covers(1) and not protos.covers(2) and not protos.covers(0)
    protos.add(feats, torch.tensor([0, 1, 2]), [1])
    assert protos.best(feats, 3).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_threshold_is_the_conformal_quantile_of_pooled_trained_scores_and_rates_follow_it():
    scores = [torch.linspace(0, 1, 1001), torch.full((10,), -1.0)]
    threshold = calibrate_threshold(scores, quantile=0.05)
    pooled = torch.cat(scores).sort().values
    k = int(0.05 * (len(pooled) + 1))                  # ⌊α(n+1)⌋-th smallest of ALL classes' scores
    assert threshold == pytest.approx(float(pooled[k - 1]), abs=1e-6)
    rates = rejection_rates(scores + [torch.zeros(0)], threshold)
    assert rates[0] == pytest.approx(float((scores[0] < threshold).float().mean()))
    assert rates[1] == 1.0 and rates[2] is None
    assert calibrate_threshold([]) is None and rejection_rates(scores, None) == [None, None]
    # few held-out images: the threshold is their minimum (reject only what is below every one)
    assert calibrate_threshold([torch.tensor([0.3, 0.9, 0.5])], quantile=0.05) == pytest.approx(0.3)


def test_conformal_rejection_keeps_its_promise_on_fresh_images_of_trained_classes():
    from core.sg.openset import calibration_scores, conformal_pvalue

    gen = torch.Generator().manual_seed(0)
    misses = []
    for _ in range(200):   # many small calibrations (12 classes × 5 held-out images), fresh test images
        held = [torch.randn(5, generator=gen) + c for c in range(12)]
        fresh = torch.cat([torch.randn(20, generator=gen) + c for c in range(12)])
        threshold = calibrate_threshold(held, quantile=0.1)
        misses.append(float((fresh < threshold).float().mean()))
    assert 0.06 < sum(misses) / len(misses) <= 0.105          # ≈ k/(n+1) = 6/61, never above α
    cal = calibration_scores([torch.tensor([0.5, 0.1]), torch.tensor([0.3])])
    assert cal == pytest.approx([0.1, 0.3, 0.5])
    p = conformal_pvalue(cal, torch.tensor([0.0, 0.3, 1.0]))
    assert p.tolist() == pytest.approx([0.25, 0.75, 1.0])        # never 1.0 for an image below them all


def test_auroc_counts_ranks_and_ties():
    assert auroc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])) == 1.0
    assert auroc(torch.tensor([0.1]), torch.tensor([0.9])) == 0.0
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([0.5])) == 0.5
