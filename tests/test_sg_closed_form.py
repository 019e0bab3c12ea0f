"""Closed-form heads (fecam, ranpac), the SG + head variants, update tasks and the export contract.

What a user relies on: a head learned task by task — and then given 10 more images of a trained class —
is exactly the head learned from all those images at once (nothing forgotten, nothing drifts); its
statistics survive a checkpoint; the pure-torch module the exporter turns into ONNX answers exactly
what the learner answers; and classes are told apart (not merely "some numbers come out")."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.sg import ContinualLearner, FeatureDataset, LearnerConfig
from core.sg.methods import METHODS

N_CLASSES, PER_CLASS, DIM = 6, 30, 8
HEADS = ["fecam", "ranpac"]


@pytest.fixture(scope="module")
def backbone():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


def _features(seed=0):
    """Pooled 1280-d features (the k = 0 prefix output): a cluster per class, anisotropic noise."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(N_CLASSES, 1280, generator=gen) ** 3
    scale = torch.rand(1280, generator=gen) * 0.3
    feats = torch.cat([centres[c] + scale * torch.randn(PER_CLASS, 1280, generator=gen) for c in range(N_CLASSES)])
    labels = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
    return feats, labels


def _samples(feats, labels, rows):
    rows = torch.as_tensor(rows)
    return FeatureDataset(feats[rows].unsqueeze(1), labels[rows], rows)


def _rows(labels, classes, part):
    return torch.cat([(labels == c).nonzero().flatten()[part] for c in classes])


def _learner(backbone, method, **cfg):
    from core.sg.models import PretrainedCNNSplit

    torch.manual_seed(0)
    model = PretrainedCNNSplit(copy.deepcopy(backbone), DIM, trainable_blocks=0)
    config = LearnerConfig(method=method, epochs=2, batch_size=16, lr=0.05, exemplars_per_class=3,
                           device="cpu", **cfg)
    return ContinualLearner(model, 10.0, config)


def _text():
    return F.normalize(torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(1)), dim=1)


def test_heads_are_registered_without_training_or_memory():
    for name in HEADS:
        assert not METHODS[name].trains and not METHODS[name].uses_memory and METHODS[name].title
    assert {"both+ranpac", "both+fecam", "fsa+ranpac", "fsa+fecam"} <= set(METHODS)


@pytest.mark.parametrize("method", HEADS)
def test_incremental_and_update_tasks_equal_learning_everything_at_once(backbone, method):
    feats, labels = _features()
    W = _text()
    first = slice(0, 15)
    # task 0: classes 0-2, task 1: classes 3-5, task 2 (an update): 10 more images of class 0 and 4
    inc = _learner(backbone, method)
    inc.learn_task(0, _samples(feats, labels, _rows(labels, [0, 1, 2], first)), W[:3], W[:3], [0, 1, 2])
    inc.learn_task(1, _samples(feats, labels, _rows(labels, [3, 4, 5], first)), W, W, [3, 4, 5])
    before = inc.class_scores(feats[_rows(labels, range(6), slice(25, 30))], W)
    update = _rows(labels, [0, 4], slice(15, 25))
    inc.learn_task(2, _samples(feats, labels, update), W, W, [0, 4])

    joint = _learner(backbone, method)
    everything = torch.cat([_rows(labels, range(6), first), update])
    joint.learn_task(0, _samples(feats, labels, everything), W, W, list(range(6)))

    a, b = inc.method.state_dict(), joint.method.state_dict()
    for key in ("sums", "counts", "scatter"):
        torch.testing.assert_close(a["stats"][key], b["stats"][key], rtol=1e-12, atol=1e-9)
    assert a["stats"]["counts"].tolist() == [25, 15, 15, 15, 25, 15]
    if method == "ranpac":
        torch.testing.assert_close(a["G"], b["G"], rtol=1e-12, atol=1e-6)
        torch.testing.assert_close(a["C"], b["C"], rtol=1e-12, atol=1e-6)
    test = feats[_rows(labels, range(6), slice(25, 30))]
    after = inc.class_scores(test, W)
    torch.testing.assert_close(after, joint.class_scores(test, W), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before, after)          # the update did change the head
    assert inc.prototypes.counts[0] == 25             # the prototypes accumulate as well
    truth = labels[_rows(labels, range(6), slice(25, 30))]
    assert (after.argmax(1) == truth).float().mean() > 0.9


@pytest.mark.parametrize("method", HEADS + ["both+ranpac", "fsa+fecam"])
def test_checkpoint_round_trip_and_export_module_parity(backbone, method):
    feats, labels = _features()
    W = _text()
    learner = _learner(backbone, method)
    learner.learn_task(0, _samples(feats, labels, _rows(labels, [0, 1, 2], slice(0, 20))), W[:3], W[:3], [0, 1, 2])
    learner.learn_task(1, _samples(feats, labels, _rows(labels, [3, 4], slice(0, 20))), W[:5], W[:5], [3, 4])
    test = feats[_rows(labels, range(6), slice(20, 30))]
    scores = learner.class_scores(test, W[:5])
    fam = learner.familiarity(test, W[:5])

    module = learner.method.head_module(learner, W[:5])
    h = learner.prefix_features(test)
    with torch.no_grad():
        m_scores, m_fam, m_emb = module(h)
    torch.testing.assert_close(m_scores, scores, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(m_fam, fam, rtol=1e-4, atol=1e-3)
    assert m_emb.shape[0] == len(test)

    restored = _learner(backbone, method)
    restored.load_state_dict(copy.deepcopy(learner.state_dict()), inference_only=True)
    torch.testing.assert_close(restored.class_scores(test, W[:5]), scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(restored.familiarity(test, W[:5]), fam, rtol=1e-5, atol=1e-5)


def test_unknown_scores_separate_untrained_classes(backbone):
    from core.sg.openset import auroc

    feats, labels = _features()
    W = _text()
    learner = _learner(backbone, "fecam")
    learner.learn_task(0, _samples(feats, labels, _rows(labels, [0, 1, 2], slice(0, 20))), W[:3], W[:3], [0, 1, 2])
    known = feats[_rows(labels, [0, 1, 2], slice(20, 30))]
    unknown = feats[_rows(labels, [3, 4, 5], slice(0, 30))]
    k, u = (learner.method.unknown_scores(learner, x, W[:3]) for x in (known, unknown))
    assert set(k) == {"maha", "rmaha", "energy", "maxscore", "cosine"}
    assert auroc(k["maha"], u["maha"]) > 0.95 and auroc(k["cosine"], u["cosine"]) > 0.95
    assert learner.familiarity_kind == learner.method.familiarity_score


def test_ranpac_ridge_lambda_comes_from_generalised_cross_validation():
    from core.sg.methods.closed_form import gcv_ridge_lambda

    gen = torch.Generator().manual_seed(0)
    H = torch.randn(200, 20, generator=gen, dtype=torch.float64)
    Y = F.one_hot(torch.randint(0, 3, (200,), generator=gen), 3).double()
    lambdas = (1e-3, 1e-1, 1e1, 1e3, 1e5)
    lam, _, _ = gcv_ridge_lambda(H.t() @ H, H.t() @ Y, 200, float((Y ** 2).sum()), lambdas)

    def gcv(l):   # the textbook formula on the data itself
        S = H @ torch.linalg.solve(H.t() @ H + l * torch.eye(20, dtype=torch.float64), H.t())
        r = Y - S @ Y
        return 200 * float((r ** 2).sum()) / (200 - float(torch.trace(S))) ** 2
    assert lam == min(lambdas, key=gcv)


def test_fsa_trains_only_the_first_task(backbone):
    feats, labels = _features()
    W = _text()
    learner = _learner(backbone, "fsa+ranpac")
    first = learner.learn_task(0, _samples(feats, labels, _rows(labels, [0, 1, 2], slice(0, 20))), W[:3], W[:3], [0, 1, 2])
    assert {"loss_clip", "loss_sgrl"} <= set(first)
    frozen = copy.deepcopy(learner.model.trainable_state_dict())
    second = learner.learn_task(1, _samples(feats, labels, _rows(labels, [3, 4], slice(0, 20))), W[:5], W[:5], [3, 4])
    assert second == {}
    for k, v in learner.model.trainable_state_dict().items():
        assert torch.equal(v, frozen[k])


def test_a_trained_method_updates_a_known_class_with_rehearsal_and_distillation(backbone):
    feats, labels = _features()
    W = _text()
    learner = _learner(backbone, "both")
    learner.learn_task(0, _samples(feats, labels, _rows(labels, [0, 1], slice(0, 10))), W[:2], W[:2], [0, 1])
    learner.learn_task(1, _samples(feats, labels, _rows(labels, [2, 3], slice(0, 10))), W[:4], W[:4], [2, 3])
    kept = {c: list(v) for c, v in learner.memory.exemplars.items()}
    new_rows = _rows(labels, [0], slice(10, 20))
    losses = learner.learn_task(2, _samples(feats, labels, new_rows), W[:4], W[:4], [0])
    assert "loss_sgkd" in losses                     # classes 1–3 are the old ones, distilled
    memory = learner.memory.exemplars
    assert len(memory[0]) == 3 and set(memory[0]) <= set(kept[0]) | set(new_rows.tolist())
    assert {c: memory[c] for c in (1, 2, 3)} == {c: kept[c] for c in (1, 2, 3)}
    assert learner.prototypes.counts[0] == 20 and learner.num_seen_classes == 4
