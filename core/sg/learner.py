"""The continual learner: one training template; the method (SG-RL + SG-KD, its ablations, NCM, joint,
…) is a plugin from core/sg/methods (spec/method.md).

Typical use (the caller owns the encoders and computes text features once per task)::

    model = encoder.build_image_model()                       # a SplitImageModel
    learner = ContinualLearner(model, config=LearnerConfig(method="both", logit_scale=30.0))
    for t, task in enumerate(tasks):
        U = name_feats[:n_seen]; W = prompt_feats[:n_seen]   # L2-normalised, ALL seen classes
        learner.learn_task(t, task.train, U, W, new_class_ids=task.class_indices,
                           progress=print, should_stop=lambda: False)
        result = learner.evaluate([x.holdout for x in tasks[:t + 1]], W,
                                  [x.class_indices for x in tasks[:t + 1]])

Samples are decoded images (the prefix runs on every batch) or cached prefix features (only the
suffix runs): see core/sg/data.py.  Class indices: every sample's label is its index in the run's
seen-class table (rows of U and W).  Defaults (κ, logit scale, schedule) per encoder live in the
encoder registry (core/encoders/registry.py), not here: this package knows nothing of encoders.
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

from .data import Samples, augment_batch, normalize_batch
from .losses import soft_label_matrix
from .memory import ExemplarMemory
from .methods import Method, StepOutputs, TaskStep, get_method
from .models import SplitImageModel
from .openset import ClassPrototypes

__all__ = ["Cancelled", "LearnerConfig", "ContinualLearner", "TaskStep", "resolve_device"]


class Cancelled(Exception):
    """Raised by :meth:`ContinualLearner.learn_task` when ``should_stop()`` returned True.

    The learner is rolled back to its state before the task (model, RNG), so the task can be rerun.
    """


def _f(default, scope: str, **rules):
    return dataclasses.field(default=default, metadata={"scope": scope, **rules})


@dataclass
class LearnerConfig:
    """Training configuration; defaults are the reference ones (spec/method.md); the encoder registry
    supplies each encoder's own (κ, logit scale, schedule).

    Each field's ``metadata`` says how a user may set it — ``scope``: ``"task"`` (a task request may
    override it), ``"run"`` (fixed when a run is created) or absent (internal) — and its bounds
    (``min``/``max`` or ``choices``), so services validate against this one declaration.
    """

    method: str = _f("both", "run", choices="methods")      # a name registered in core/sg/methods
    epochs: int = _f(10, "task", min=1, max=10_000)
    lr: float = _f(0.01, "task", min=1e-6, max=10.0)
    momentum: float = _f(0.9, "task", min=0.0, max=0.999)
    weight_decay: float = _f(2e-4, "task", min=0.0, max=1.0)
    batch_size: int = _f(256, "task", min=1, max=65536)
    softness: float = _f(13.0, "task", min=0.0, max=1000.0)   # κ
    logit_scale: Optional[float] = _f(None, "run", min=0.01, max=1000.0)  # s; None: the constructor's value
    T: float = _f(4.0, "task", min=0.01, max=100.0)            # SG-KD temperature
    lambda_sl: float = _f(0.5, "task", min=0.0, max=100.0)
    lambda_kd: float = _f(0.5, "task", min=0.0, max=100.0)
    trainable_blocks: int = _f(1, "run", min=0, max=64)       # last blocks of the image model that train
    exemplars_per_class: int = _f(20, "run", min=0, max=100_000)
    memory_total: Optional[int] = _f(None, "run", min=1, max=10_000_000)  # fixed total budget (overrides per class)
    seed: int = _f(0, "run", min=0, max=2**31 - 1)
    amp: str = _f("auto", "run", choices=("auto", "bf16", "fp16", "none"))  # auto: bf16 on CUDA, none on CPU
    feature_views: int = _f(1, "run", min=1, max=4)         # cached views per image (feature-cache mode)
    # target share of trained-class images answered "not one of the trained classes" (conformal
    # threshold on the pooled held-out familiarity scores, core/sg/openset.py)
    reject_rate: float = _f(0.05, "run", min=0.001, max=0.5)
    augment: bool = _f(True, "task")     # images: random crop (pad 4) + flip; cached features: a random view
    num_workers: int = 0                 # image decoding threads
    device: str = "auto"                 # auto: cuda if available else cpu
    eval_batch_size: int = 512

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LearnerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    @classmethod
    def user_fields(cls, scope: str) -> dict[str, dataclasses.Field]:
        """Fields a user may set at ``scope`` ("task": per-task overrides; "run": also at run creation)."""
        scopes = ("task",) if scope == "task" else ("task", "run")
        return {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("scope") in scopes}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ContinualLearner:
    """Learns tasks one after another; holds the student model, the method, exemplar memory and RNG."""

    def __init__(self, model: SplitImageModel, logit_scale: float | None = None,
                 config: LearnerConfig | None = None, method: Method | None = None):
        self.config = config or LearnerConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        scale = self.config.logit_scale if self.config.logit_scale is not None else logit_scale
        if scale is None:
            raise ValueError("a logit scale is needed (LearnerConfig.logit_scale or the logit_scale argument)")
        self.logit_scale = float(scale)
        self.method = method if method is not None else get_method(self.config.method)
        self.generator = torch.Generator().manual_seed(int(self.config.seed))
        self.memory = self._new_memory()
        self.exemplar_data: Samples | None = None
        self.tasks_done = 0
        self.num_seen_classes = 0
        # familiarity prototypes (core/sg/openset.py) only where the backbone features never change
        self.prototypes = ClassPrototypes() if callable(getattr(model, "frozen_features", None)) else None

    def _new_memory(self) -> ExemplarMemory:
        if not self.method.uses_memory:
            return ExemplarMemory(0, None)
        return ExemplarMemory(self.config.exemplars_per_class, self.config.memory_total)

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

    # ------------------------------------------------------------------ inputs
    def _prefix_output(self, inputs: torch.Tensor, kind: str, augment: bool, has_views: bool = False) -> torch.Tensor:
        """Prefix output for a batch: images run the frozen prefix (no grad); cached features are used
        as they are.  ``has_views``: features carry a views axis (B, V, ...) — a random cached view per
        sample when augmenting, else view 0."""
        if kind == "features":
            if has_views:
                if augment and inputs.shape[1] > 1:
                    pick = torch.randint(0, inputs.shape[1], (inputs.shape[0],), generator=self.generator)
                    inputs = inputs[torch.arange(inputs.shape[0]), pick]
                else:
                    inputs = inputs[:, 0]
            return inputs.to(self.device, torch.float32, non_blocking=True)
        if augment:
            inputs = augment_batch(inputs, self.generator)
        x = normalize_batch(inputs.to(self.device, non_blocking=True), self.model.mean, self.model.std)
        with torch.no_grad(), self._autocast():
            return self.model.prefix(x)

    # ------------------------------------------------------------------ training
    def learn_task(self, task_index: int, train_samples: Samples,
                   class_name_feats: torch.Tensor, class_prompt_feats: torch.Tensor,
                   new_class_ids: Sequence[int],
                   progress: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
        """Train task ``task_index`` on what the method picks (default: its samples ∪ exemplar memory),
        then update the memory.

        ``class_name_feats`` U (N_t, D) and ``class_prompt_feats`` W (N_t, D) are L2-normalised text
        features for ALL classes seen so far (bare names and templated prompts), computed once per task
        by the caller; labels in ``train_samples`` index their rows; ``new_class_ids`` are this task's
        rows.

        **Update tasks.**  ``new_class_ids`` may name classes learned in earlier tasks (with or beside
        new ones): the task then adds ``train_samples`` — new images of those classes — to what the
        model knows.  Closed-form heads (``ncm``, ``fecam``, ``ranpac``) and the frozen-feature
        prototypes add the images to their sums and counts, so their state equals the one computed
        from all images of the class at once.  Trained methods train over these images with the same
        rehearsal and distillation as any task (the classes *not* in ``new_class_ids`` are the "old"
        ones that SG-KD distils); the exemplars of an updated class are herded again from its new images
        together with its current exemplars.  ``progress(dict)`` is called after every batch with keys task, epoch, epochs, batch,
        batches, fraction, loss, ``loss_<term>`` for each of the method's terms, images_per_s.
        ``should_stop()`` is checked between batches; if it returns True the learner rolls back and
        raises :class:`Cancelled`.  Returns the last epoch's mean losses.
        """
        if task_index != self.tasks_done:
            raise ValueError(f"expected task {self.tasks_done}, got {task_index}")
        if len(train_samples) == 0:
            raise ValueError("no training samples")
        if int(train_samples.labels.max()) >= class_prompt_feats.shape[0]:
            raise ValueError("a sample label is outside the seen-class table")
        cfg, method = self.config, self.method
        step = self.prepare_task(class_name_feats, class_prompt_feats, new_class_ids,
                                 distill=task_index > 0, task_index=task_index)
        snapshot = (self.model.trainable_state_dict(), self.generator.get_state(), method.state_dict())
        epoch_means: dict = {}
        if method.trains:
            data = method.training_data(self, train_samples)
            epoch_means = self._train_epochs(step, data, progress, should_stop, snapshot)
        elif progress is not None:
            progress({"task": task_index, "epoch": 0, "epochs": 1, "batch": 1, "batches": 1, "fraction": 1.0,
                      "loss": 0.0, "images_per_s": 0.0})
        method.after_task(self, step, train_samples)
        if self.prototypes is not None:
            self.prototypes.add(self.backbone_features(train_samples.first_view()), train_samples.labels,
                                step.new_class_ids)
        if method.uses_memory:
            self._update_memory(train_samples, sorted(step.new_class_ids))
        self.tasks_done += 1
        self.num_seen_classes = int(class_prompt_feats.shape[0])
        return epoch_means

    def _train_epochs(self, step: "TaskStep", data: Samples, progress, should_stop, snapshot) -> dict:
        cfg = self.config
        n = len(data)
        batches = (n + cfg.batch_size - 1) // cfg.batch_size
        epoch_means: dict = {}
        self.model.train()
        started = time.perf_counter()
        seen_images = 0
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            sums: dict[str, float] = {}
            for b in range(batches):
                if should_stop is not None and should_stop():
                    self.model.load_trainable_state_dict(snapshot[0])
                    self.generator.set_state(snapshot[1])
                    self.method.load_state_dict(snapshot[2])
                    raise Cancelled(f"task {step.task_index} cancelled at epoch {epoch}, batch {b}")
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                h = self._prefix_output(data.inputs[idx], data.kind, augment=cfg.augment, has_views=True)
                values = self.train_step(step, h, data.labels[idx].to(self.device), prefix_done=True)
                values = {k: v.item() for k, v in values.items()}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                seen_images += len(idx)
                if progress is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    progress({"task": step.task_index, "epoch": epoch, "epochs": cfg.epochs,
                              "batch": b + 1, "batches": batches,
                              "fraction": (epoch * batches + b + 1) / (cfg.epochs * batches),
                              **values, "images_per_s": seen_images / elapsed})
            epoch_means = {k: v / batches for k, v in sums.items()}
        return epoch_means

    def prepare_task(self, class_name_feats: torch.Tensor, class_prompt_feats: torch.Tensor,
                     new_class_ids: Sequence[int], distill: bool, task_index: int | None = None) -> "TaskStep":
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
        step = TaskStep(
            task_index=self.tasks_done if task_index is None else int(task_index),
            new_class_ids=sorted(new_set), W=W, W_old=W_old, old_index=old_index,
            soft=soft_label_matrix(U, cfg.softness), inter=U @ W_old.t(),
            teacher=None, optimizer=None,
            scaler=torch.amp.GradScaler("cuda") if self._uses_fp16() else None)
        if distill and self.method.needs_teacher(self, step):
            step.teacher = self.model.frozen_suffix_copy()
        if self.method.trains:
            params = list(self.model.trainable_parameters())
            step.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
        self.method.prepare(self, step)
        return step

    def train_step(self, step: "TaskStep", x: torch.Tensor, targets: torch.Tensor,
                   prefix_done: bool = False) -> dict:
        """One SGD step on a batch with class indices ``targets`` (on the device).  ``x`` is a normalised
        image batch, or (``prefix_done``) the prefix output / cached features.

        Returns ``loss`` and ``loss_<term>`` for every term the method returned, as 0-d tensors (no host
        sync here)."""
        s = self.logit_scale
        # Only the model runs under autocast; logits and losses stay in fp32 (s·cos ≈ 100 would
        # lose ~0.5 to bf16 rounding).
        with self._autocast():
            if prefix_done:
                h = x
            else:
                with torch.no_grad():
                    h = self.model.prefix(x)  # computed once, shared by student and teacher
            student_out = self.model.suffix(h)
            teacher_out = None
            if step.teacher is not None:
                with torch.no_grad():
                    teacher_out = step.teacher(h)  # the teacher costs only its suffix
        z = F.normalize(student_out.float(), dim=1)
        out = StepOutputs(z=z, logits=s * z @ step.W.t(), targets=targets, h=h,
                          teacher_z=None if teacher_out is None else F.normalize(teacher_out.float(), dim=1))
        terms = self.method.loss_terms(self, step, out)
        loss = sum(weight * value for weight, value in terms.values())
        step.optimizer.zero_grad(set_to_none=True)
        if step.scaler is not None:
            step.scaler.scale(loss).backward()
            step.scaler.step(step.optimizer)
            step.scaler.update()
        else:
            loss.backward()
            step.optimizer.step()
        return {"loss": loss.detach(), **{f"loss_{name}": value.detach() for name, (_, value) in terms.items()}}

    def _update_memory(self, train_samples: Samples, new_classes: list[int]) -> None:
        candidates = train_samples
        if self.exemplar_data is not None:  # an updated class herds from its new images + its exemplars
            updated = torch.isin(self.exemplar_data.labels, torch.as_tensor(new_classes, dtype=torch.long))
            known = set(train_samples.ids.tolist())
            fresh = torch.tensor([i not in known for i in self.exemplar_data.ids.tolist()], dtype=torch.bool)
            keep = (updated & fresh).nonzero().flatten()
            if len(keep):
                candidates = Samples.concat([train_samples, self.exemplar_data.subset(keep)])
        feats = self.image_features(candidates.first_view())
        self.memory.update(feats, candidates.labels, candidates.ids, new_classes)
        pool = train_samples if self.exemplar_data is None else Samples.concat(
            [train_samples, self.exemplar_data])
        self.exemplar_data = pool.select_ids(self.memory.ids()) if len(self.memory) else None

    # ------------------------------------------------------------------ inference
    def _batched(self, inputs: torch.Tensor, fn) -> list[torch.Tensor]:
        kind = "images" if inputs.dtype == torch.uint8 else "features"
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            for start in range(0, len(inputs), self.config.eval_batch_size):
                h = self._prefix_output(inputs[start:start + self.config.eval_batch_size], kind, augment=False)
                with self._autocast():
                    out.append(fn(h).float().cpu())
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def prefix_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen prefix's output (float32, CPU) for un-augmented inputs, so that several scores of
        the same images (class scores, familiarity) run the prefix once."""
        out = self._batched(inputs, lambda h: h)
        return torch.cat(out) if out else inputs.float()

    @torch.no_grad()
    def image_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (float32, on CPU) of un-augmented inputs: uint8 images (N, 3, S, S)
        (eval transform) or cached prefix features (N, ...)."""
        out = self._batched(inputs, self.model.suffix)
        if not out:
            return torch.zeros(0, self.model.output_dim)
        return F.normalize(torch.cat(out), dim=1)

    @torch.no_grad()
    def backbone_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of the untouched pretrained backbone (``model.frozen_features``) when
        the model has one, else of the current model: what nearest-class-mean and rejection use."""
        fn = getattr(self.model, "frozen_features", None) or self.model.suffix
        out = self._batched(inputs, fn)
        if not out:
            return torch.zeros(0, getattr(self.model, "num_features", self.model.output_dim))
        return F.normalize(torch.cat(out), dim=1)

    @torch.no_grad()
    def class_scores(self, inputs: torch.Tensor, prompt_feats: torch.Tensor) -> torch.Tensor:
        """(n, N) cosine scores of un-augmented inputs against the N classes (the method decides how)."""
        return self.method.class_scores(self, inputs, prompt_feats)

    @torch.no_grad()
    def familiarity(self, inputs: torch.Tensor, prompt_feats: torch.Tensor,
                    class_scores: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) how much each input looks like a trained class — what "not one of the trained classes"
        is decided on: the best cosine to the frozen-feature class prototypes when every seen class has
        one, else the best class score (``class_scores`` when the caller has them already)."""
        n = prompt_feats.shape[0]
        own = getattr(self.method, "familiarity", None)   # closed-form heads score from their statistics
        if own is not None:
            return own(self, inputs, prompt_feats)
        if self.prototypes is not None and self.prototypes.covers(n):
            return self.prototypes.best(self.backbone_features(inputs), n)
        if class_scores is None:
            class_scores = self.class_scores(inputs, prompt_feats)
        return class_scores.max(1).values

    @property
    def familiarity_kind(self) -> str:
        """"prototype" or "class": which score :meth:`familiarity` uses for the classes seen so far — or,
        for a closed-form head, the name of its own score ("rmaha", "maha", "energy", …)."""
        own = getattr(self.method, "familiarity_score", None)
        if own is not None:
            return str(own)
        usable = self.prototypes is not None and self.prototypes.covers(self.num_seen_classes)
        return "prototype" if usable else "class"

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, prompt_feats: torch.Tensor) -> torch.Tensor:
        """Class probabilities over the rows of ``prompt_feats`` (CPU, float32): :meth:`probabilities`."""
        return self.probabilities(self.class_scores(inputs, prompt_feats))

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class scores (n, N) → probabilities: softmax(s·scores), or the method's own rule (a
        Mahalanobis head's scores are log-likelihoods already)."""
        own = getattr(self.method, "probabilities", None)
        if own is not None:
            return own(self, scores)
        return torch.softmax(self.logit_scale * scores, dim=1)

    @torch.no_grad()
    def evaluate(self, samples_by_task: Sequence[Samples], prompt_feats: torch.Tensor,
                 classes_per_task: Sequence[Sequence[int]], return_scores: bool = False) -> dict:
        """Accuracy per task: task-agnostic (argmax over all rows of ``prompt_feats``) and task-aware
        (argmax within the task's own classes).  Returns {"acc": [..], "acc_task_aware": [..]} with
        fractions in [0, 1] (NaN for a task without holdout samples); with ``return_scores`` also
        ``"max_scores"``: per task, the :meth:`familiarity` of each sample (rejection calibration)."""
        acc, acc_aware, best = [], [], []
        for u, dataset in enumerate(samples_by_task):
            if len(dataset) == 0:
                acc.append(float("nan"))
                acc_aware.append(float("nan"))
                best.append(torch.zeros(0))
                continue
            scores = self.class_scores(dataset.first_view(), prompt_feats)
            labels = dataset.labels
            acc.append(float((scores.argmax(1) == labels).float().mean()))
            own = torch.as_tensor(list(classes_per_task[u]), dtype=torch.long)
            aware_pred = own[scores[:, own].argmax(1)]
            acc_aware.append(float((aware_pred == labels).float().mean()))
            if return_scores:
                best.append(self.familiarity(dataset.first_view(), prompt_feats, scores))
        result = {"acc": acc, "acc_task_aware": acc_aware}
        if return_scores:
            result["max_scores"] = best
        return result

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue: trainable model state, method state, memory ids, config,
        task count, RNG."""
        return {"model": self.model.trainable_state_dict(),
                "method": self.method.state_dict(),
                "prototypes": self.prototypes.state_dict() if self.prototypes is not None else {},
                "memory": self.memory.state_dict(),
                "config": self.config.to_json(),
                "logit_scale": self.logit_scale,
                "tasks_done": self.tasks_done,
                "num_seen_classes": self.num_seen_classes,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, exemplar_source: Samples | None = None,
                        inference_only: bool = False) -> None:
        """Restore from :meth:`state_dict`.  ``exemplar_source`` must contain every exemplar id
        (e.g. the union of the previous tasks' training samples); the inputs are taken from it.
        ``inference_only``: restore what prediction needs and leave the exemplars' inputs unloaded
        (the learner can then score images but not train a next task)."""
        self.config = LearnerConfig.from_json(state["config"])
        if self.method.name != self.config.method:
            self.method = get_method(self.config.method)
        self.method.load_state_dict(state.get("method") or {})
        if self.prototypes is not None:  # a checkpoint from before prototypes has none: class scores then
            self.prototypes.load_state_dict(state.get("prototypes"))
        self.model.load_trainable_state_dict(state["model"])
        self.logit_scale = float(state["logit_scale"])
        self.memory = ExemplarMemory()
        self.memory.load_state_dict(state["memory"])
        self.tasks_done = int(state["tasks_done"])
        self.num_seen_classes = int(state["num_seen_classes"])
        self.generator.set_state(state["generator"])
        ids = self.memory.ids()
        if ids and not inference_only:
            if exemplar_source is None:
                raise ValueError("exemplar_source is required: the memory holds exemplar ids")
            self.exemplar_data = exemplar_source.select_ids(ids)
        else:
            self.exemplar_data = None
