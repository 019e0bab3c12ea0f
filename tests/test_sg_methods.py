"""Methods are plugins of one training template: the registered ones behave as their names say, and a
new method is one class (added here, in a test, with nothing else changed)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.sg import ContinualLearner, DecodedImageDataset, FeatureDataset, LearnerConfig, ScratchImageTower
from core.sg.methods import METHODS, Method, get_method, method_names, register
from core.sg.methods.sg import Both

DIM = 8


def _toy(n_per_class=6, classes=(0, 1, 2, 3), seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 255, (len(classes), 3, 16, 16), generator=gen)
    images = torch.cat([(base[i] + torch.randint(-20, 20, (n_per_class, 3, 16, 16), generator=gen)).clamp(0, 255)
                        for i in range(len(classes))]).to(torch.uint8)
    labels = torch.tensor([c for c in classes for _ in range(n_per_class)])
    return DecodedImageDataset(images, labels, torch.arange(len(labels)))


def _text(n=4, seed=1):
    return F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)), dim=1)


def _learner(method, **cfg):
    torch.manual_seed(0)
    config = LearnerConfig(method=method, epochs=2, batch_size=8, lr=0.05, exemplars_per_class=2,
                           device="cpu", **cfg)
    return ContinualLearner(ScratchImageTower(DIM, input_size=16, width=4), logit_scale=10.0, config=config)


def _two_tasks(learner):
    data, U = _toy(), _text()
    first, second = data.subset((data.labels < 2).nonzero().flatten()), data.subset((data.labels >= 2).nonzero().flatten())
    out = [learner.learn_task(0, first, U[:2], U[:2], [0, 1]), learner.learn_task(1, second, U, U, [2, 3])]
    return out, first, second, U


def test_every_method_of_the_issue_is_registered_and_titled():
    assert {"ncm", "joint", "finetune", "exemplars", "sgrl", "sgkd", "both"} <= set(method_names())
    assert all(METHODS[name].title for name in method_names())
    assert not METHODS["joint"].product and METHODS["both"].product   # joint is an experiment-only bound


@pytest.mark.parametrize("name, terms", [("finetune", {"clip"}), ("exemplars", {"clip"}),
                                         ("sgrl", {"clip", "sgrl"}), ("sgkd", {"clip", "sgkd"}),
                                         ("both", {"clip", "sgrl", "sgkd"}), ("joint", {"clip", "sgrl"})])
def test_each_sg_method_returns_exactly_its_terms(name, terms):
    torch.set_num_threads(1)
    learner = _learner(name)
    (first, second), *_ = _two_tasks(learner)
    assert {k.removeprefix("loss_") for k in second} - {"loss"} == terms
    assert second["loss"] > 0
    memory = {c: len(v) for c, v in learner.memory.exemplars.items()}
    assert memory == ({} if name in ("finetune", "joint") else {0: 2, 1: 2, 2: 2, 3: 2})


def test_joint_trains_on_everything_seen_so_far():
    learner = _learner("joint")
    sizes = []
    original = learner._train_epochs

    def spy(step, data, *args):
        sizes.append(len(data))
        return original(step, data, *args)

    learner._train_epochs = spy
    _two_tasks(learner)
    assert sizes == [12, 24]


def test_ncm_does_not_train_and_never_forgets():
    learner = _learner("ncm")
    before = copy.deepcopy(learner.model.state_dict())
    _, first, second, U = _two_tasks(learner)
    for key, value in learner.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    scores = learner.class_scores(first.first_view(), U)
    assert scores.shape == (len(first), 4)
    # the class means of task 1 are those computed after task 1, untouched by task 2
    feats = learner.backbone_features(first.first_view())
    assert torch.allclose(learner.method.means[0], F.normalize(feats[first.labels == 0].mean(0), dim=0), atol=1e-5)
    acc = learner.evaluate([first, second], U, [[0, 1], [2, 3]])["acc"]
    assert acc[0] > 0.9 and acc[1] > 0.9   # toy classes are far apart in pixel space


def test_a_new_method_is_one_registered_class():
    @register
    class FeatureDistillation(Both):
        """SG-RL + SG-KD plus an L2 pull towards the teacher's features (a toy LwF-like term)."""

        name, title = "test-feature-distill", "+ feature distillation (test only)"

        def needs_teacher(self, learner, step):
            return len(step.old_index) > 0

        def loss_terms(self, learner, step, out):
            terms = super().loss_terms(learner, step, out)
            if out.teacher_z is not None:
                terms["l2"] = (1.0, (out.z - out.teacher_z).pow(2).sum(1).mean())
            return terms

    try:
        learner = _learner("test-feature-distill")
        events = []
        data, U = _toy(), _text()
        learner.learn_task(0, data.subset((data.labels < 2).nonzero().flatten()), U[:2], U[:2], [0, 1])
        learner.learn_task(1, data.subset((data.labels >= 2).nonzero().flatten()), U, U, [2, 3],
                           progress=events.append)
        assert {"loss_clip", "loss_sgrl", "loss_sgkd", "loss_l2"} <= set(events[-1])
        assert isinstance(get_method("test-feature-distill"), Method)
    finally:
        METHODS.pop("test-feature-distill", None)


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError):
        @register
        class Again(Both):
            name = "both"


def test_cached_prefix_features_train_exactly_like_images(tmp_path):
    """Feature-cache mode is an optimisation, not another method: without augmentation, training on the
    cached prefix output gives the same weights as running the prefix on every batch."""
    timm = pytest.importorskip("timm")
    from core.sg.features import PrefixFeatureCache
    from core.sg.models import PretrainedCNNSplit

    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    data, U = _toy(n_per_class=3), _text()
    first = data.subset((data.labels < 2).nonzero().flatten())

    def learner():
        torch.manual_seed(0)
        model = PretrainedCNNSplit(copy.deepcopy(net), DIM, trainable_blocks=1, input_size=32)
        return ContinualLearner(model, 10.0, LearnerConfig(method="both", epochs=2, batch_size=4, augment=False,
                                                            device="cpu"))

    up = torch.nn.functional.interpolate(first.images.float(), size=32).to(torch.uint8)
    images = DecodedImageDataset(up, first.labels, first.ids)
    a = learner()
    a.learn_task(0, images, U[:2], U[:2], [0, 1])

    b = learner()
    with torch.no_grad():
        from core.sg.data import normalize_batch
        h = b.model.prefix(normalize_batch(up, b.model.mean, b.model.std))
    b.learn_task(0, FeatureDataset(h.unsqueeze(1), first.labels, first.ids), U[:2], U[:2], [0, 1])
    for key, value in a.model.trainable_state_dict().items():
        assert torch.allclose(value.float(), b.model.trainable_state_dict()[key].float(), atol=1e-5), key
