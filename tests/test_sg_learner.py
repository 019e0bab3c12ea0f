"""ContinualLearner end to end on tiny synthetic data: two tasks, resume, fixed memory, cancel."""
import pytest
import torch

from core.sg import (Cancelled, ContinualLearner, DecodedImageDataset, LearnerConfig, ScratchImageTower,
                     load_checkpoint, restore_learner, save_checkpoint, summarize)

SIZE, DIM = 16, 16
TASKS = [[0, 1], [2, 3], [4, 5]]


def _class_images(c: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Learnable patterns: class colour + stripes of a class-specific orientation/frequency + noise."""
    colours = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40],
                            [220, 40, 220], [40, 220, 220]], dtype=torch.float32)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    stripes = ((xx if c % 2 else yy) // (2 + c % 3)) % 2
    base = colours[c].view(3, 1, 1) * (0.6 + 0.4 * stripes)
    noise = torch.randn(n, 3, SIZE, SIZE, generator=gen) * 25
    return (base + noise).clamp(0, 255).to(torch.uint8)


def _split(classes, n, gen, id_offset):
    images = torch.cat([_class_images(c, n, gen) for c in classes])
    labels = torch.tensor([c for c in classes for _ in range(n)])
    ids = torch.arange(len(labels)) + id_offset
    return DecodedImageDataset(images, labels, ids)


def _text_feats(n_classes):
    gen = torch.Generator().manual_seed(123)
    u = torch.nn.functional.normalize(torch.randn(n_classes, DIM, generator=gen), dim=1)
    w = torch.nn.functional.normalize(u + 0.3 * torch.randn(n_classes, DIM, generator=gen), dim=1)
    return u, w


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(7)
    train = [_split(t, 24, gen, 1000 * (i + 1)) for i, t in enumerate(TASKS)]
    holdout = [_split(t, 8, gen, 100000 + 1000 * i) for i, t in enumerate(TASKS)]
    return train, holdout


def _learner(**cfg):
    torch.manual_seed(0)
    model = ScratchImageTower(dim=DIM, input_size=SIZE, width=4)
    settings = dict(epochs=2, batch_size=16, lr=0.05, exemplars_per_class=4, seed=0, device="cpu")
    settings.update(cfg)
    config = LearnerConfig(**settings)
    return ContinualLearner(model, logit_scale=10.0, config=config)


def _run_task(learner, t, data, progress=None, should_stop=None):
    train, _ = data
    u, w = _text_feats(6)
    n_seen = sum(len(c) for c in TASKS[: t + 1])
    return learner.learn_task(t, train[t], u[:n_seen], w[:n_seen], TASKS[t],
                              progress=progress, should_stop=should_stop)


def test_two_tasks_learn_and_report_a_2x2_matrix(data):
    torch.set_num_threads(1)
    learner = _learner(epochs=8, exemplars_per_class=12)
    _, holdout = data
    u, w = _text_feats(6)
    events, acc, aware = [], [], []
    for t in range(2):
        losses = _run_task(learner, t, data, progress=events.append)
        n_seen = sum(len(c) for c in TASKS[: t + 1])
        result = learner.evaluate(holdout[: t + 1], w[:n_seen], TASKS[: t + 1])
        acc.append(result["acc"])
        aware.append(result["acc_task_aware"])
        assert ("loss_sgkd" in losses) == (t > 0)  # distillation only from the second task on
        assert t == 0 or losses["loss_sgkd"] > 0
    assert [len(r) for r in acc] == [1, 2]
    assert acc[0][0] > 0.75  # 2 classes, learnable patterns
    assert sum(acc[1]) / 2 > 0.4  # 4-way task-agnostic over a toy run, chance is 0.25
    assert all(a >= b - 1e-9 for ra, rb in zip(aware, acc) for a, b in zip(ra, rb))
    metrics = summarize(acc, TASKS[:2], aware)
    assert 0 <= metrics["aia"] <= 1 and metrics["last"] == pytest.approx((acc[1][0] * 2 + acc[1][1] * 2) / 4)
    # progress: every batch reported, fraction reaches 1, loss components present
    last = events[-1]
    assert last["task"] == 1 and last["fraction"] == pytest.approx(1.0)
    assert {"epoch", "epochs", "batch", "batches", "loss", "loss_clip", "loss_sgrl", "loss_sgkd",
            "images_per_s"} <= set(last)
    # exemplar memory: 12 per class for the 4 seen classes, stored as ids of training samples
    assert {c: len(v) for c, v in learner.memory.exemplars.items()} == {0: 12, 1: 12, 2: 12, 3: 12}
    assert set(learner.memory.exemplars[2]) <= set(data[0][1].ids.tolist())


def test_save_load_continue_equals_uninterrupted(data, tmp_path):
    torch.set_num_threads(1)
    u, w = _text_feats(6)
    straight = _learner()
    _run_task(straight, 0, data)
    _run_task(straight, 1, data)

    first = _learner()
    _run_task(first, 0, data)
    path = save_checkpoint(tmp_path / "run" / "task0.pt", first,
                           {"class_ids": [10, 11], "names": ["a", "b"], "name_feats": u[:2],
                            "prompt_feats": w[:2], "encoder": "test"},
                           acc_matrix=[[0.5]], classes_per_task=[2], extra={"run": 1})
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp file
    ckpt = load_checkpoint(path)  # weights_only=True
    assert ckpt["class_table"]["names"] == ["a", "b"] and ckpt["metrics"]["last"] == 0.5

    resumed = ContinualLearner(ScratchImageTower(dim=DIM, input_size=SIZE, width=4), logit_scale=1.0)
    restore_learner(resumed, ckpt, exemplar_source=data[0][0])
    assert resumed.tasks_done == 1 and resumed.config.batch_size == 16
    _run_task(resumed, 1, data)
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(value.float(), resumed.model.state_dict()[name].float(), atol=1e-6), name
    assert resumed.memory.exemplars == straight.memory.exemplars


def test_fixed_total_memory_across_three_tasks(data):
    torch.set_num_threads(1)
    learner = _learner(epochs=1, memory_total=9)
    sizes = []
    for t in range(3):
        _run_task(learner, t, data)
        sizes.append({c: len(v) for c, v in learner.memory.exemplars.items()})
        assert len(learner.exemplar_data) == len(learner.memory) <= 9
    assert sizes == [{0: 5, 1: 4}, {0: 3, 1: 2, 2: 2, 3: 2}, {0: 2, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1}]


def test_should_stop_cancels_between_batches_and_rolls_back(data):
    torch.set_num_threads(1)
    learner = _learner()
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    calls = []

    def stop_on_third_check():
        calls.append(1)
        return len(calls) >= 3

    batches_done = []
    with pytest.raises(Cancelled):
        _run_task(learner, 0, data, progress=lambda e: batches_done.append(e["batch"]),
                  should_stop=stop_on_third_check)
    assert batches_done == [1, 2]  # two batches ran, the third was never started
    assert learner.tasks_done == 0 and len(learner.memory) == 0
    for k, v in learner.model.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, before[k]), k
    _run_task(learner, 0, data)  # the task can be run again afterwards
    assert learner.tasks_done == 1


def test_rejects_out_of_order_tasks_and_bad_labels(data):
    learner = _learner(epochs=1)
    with pytest.raises(ValueError):
        _run_task(learner, 1, data)
    u, w = _text_feats(6)
    with pytest.raises(ValueError):  # labels 0/1 but only one class in the table
        learner.learn_task(0, data[0][0], u[:1], w[:1], [0])


def test_no_teacher_is_built_when_distillation_is_off():
    import torch

    from core.sg.learner import ContinualLearner, LearnerConfig
    from core.sg.models import ScratchImageTower

    feats = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    for lambda_kd, expect_teacher in ((0.0, False), (0.5, True)):
        learner = ContinualLearner(ScratchImageTower(8, input_size=16, width=8), 10.0,
                                   LearnerConfig(lambda_kd=lambda_kd))
        step = learner.prepare_task(feats, feats, [2, 3], distill=True)
        assert (step.teacher is not None) is expect_teacher
