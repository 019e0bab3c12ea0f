"""The method interface and its registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Optional

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from core.sg.data import Samples
# "ContinualLearner" in the annotations below is core.sg.learner's template; it is not imported, not even
# for type checking, because the learner imports this module (no import cycle, tests/test_architecture.py).

@dataclass
class TaskStep:
    """Everything a training step of one task needs, built once per task by ``prepare_task``."""

    task_index: int
    new_class_ids: list
    W: torch.Tensor          # (N, D) prompt features of all seen classes
    W_old: torch.Tensor      # (M, D) prompt features of the old classes
    old_index: torch.Tensor  # (M,) rows of the old classes
    soft: torch.Tensor       # (N, N) SG-RL soft targets
    inter: torch.Tensor      # (N, M) A = U·W_oldᵀ for the SG-KD adjustment
    teacher: Optional[torch.nn.Module]
    optimizer: Optional[torch.optim.Optimizer]
    scaler: Optional[object]


METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make ``cls`` selectable by ``cls.name`` (LearnerConfig.method, --methods)."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} is empty or taken")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> "Method":
    try:
        return METHODS[name]()
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(METHODS)}") from None


def method_names() -> list[str]:
    return list(METHODS)


@dataclass
class StepOutputs:
    """What one batch produced, handed to :meth:`Method.loss_terms`.

    ``z`` normalised student features (B, D); ``logits`` = s·z·Wᵀ over all seen classes (B, N);
    ``targets`` (B,) class indices; ``teacher_z`` the frozen teacher's normalised features on the same
    prefix output (None when the method asked for no teacher); ``h`` the prefix output itself.
    """

    z: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    h: torch.Tensor
    teacher_z: Optional[torch.Tensor] = None


class Method:
    """Base class: plain contrastive fine-tuning on the task's data plus the exemplar memory.

    Subclasses override what differs.  Loss terms are returned *unweighted* with their weight, as
    ``{name: (weight, tensor)}``; the learner sums ``weight · tensor`` and reports every term.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    trains: ClassVar[bool] = True           # False: no SGD at all (e.g. nearest class mean)
    uses_memory: ClassVar[bool] = True      # exemplars are herded after each task and rehearsed
    product: ClassVar[bool] = True          # offered on the Train page (False: experiment only)
    term_names: ClassVar[tuple[str, ...]] = ("clip",)

    # ---- per task -------------------------------------------------------------------------------
    def training_data(self, learner: "ContinualLearner", train: "Samples") -> "Samples":
        """The samples task t trains on (default: its own ∪ the exemplar memory)."""
        from core.sg.data import Samples

        if learner.exemplar_data is None:
            return train
        return Samples.concat([train, learner.exemplar_data])

    def needs_teacher(self, learner: "ContinualLearner", step: "TaskStep") -> bool:
        """True when :meth:`loss_terms` reads ``teacher_z`` this task (the learner then keeps a frozen
        copy of the suffix and runs it on the shared prefix output)."""
        return False

    def prepare(self, learner: "ContinualLearner", step: "TaskStep") -> None:
        """Per-task state beyond the learner's text tables (called before the first batch)."""

    def loss_terms(self, learner: "ContinualLearner", step: "TaskStep",
                   out: StepOutputs) -> dict[str, tuple[float, torch.Tensor]]:
        from core.sg.losses import clip_contrastive_loss

        return {"clip": (1.0, clip_contrastive_loss(out.z, step.W[out.targets], learner.logit_scale))}

    def after_task(self, learner: "ContinualLearner", step: "TaskStep", train: "Samples") -> None:
        """After the last batch of a task (before the memory update)."""

    # ---- inference ------------------------------------------------------------------------------
    def class_scores(self, learner: "ContinualLearner", inputs: torch.Tensor,
                     prompt_feats: torch.Tensor) -> torch.Tensor:
        """(n, N) cosine scores of un-augmented ``inputs`` (images or cached prefix features) against
        the N seen classes; argmax is the prediction, softmax(s·scores) the probabilities."""
        z = learner.image_features(inputs)
        return z @ F.normalize(prompt_feats.float().cpu(), dim=1).t()

    def head_module(self, learner: "ContinualLearner", prompt_feats: torch.Tensor) -> torch.nn.Module:
        """The export contract (core/sg/export.py): a module mapping the prefix output ``h`` (what
        ``learner.prefix_features`` returns and the feature cache stores) to ``(class_scores (B, N),
        familiarity (B,), embedding (B, D))``, equal to :meth:`class_scores`, ``learner.familiarity`` and
        the L2-normalised features the class scores are cosines of. Built from ONNX-exportable ops only.
        Default: cosine of the normalised suffix output to the normalised prompt features."""
        table = F.normalize(prompt_feats.float().cpu(), dim=1)
        return ScoreHead(_Bound(learner.model, "suffix"), table, *familiarity_parts(learner, table.shape[0]))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


Factory = Callable[[], Method]


class _Bound(torch.nn.Module):
    """``model.<name>(h)`` as a module (the model stays registered, so its weights are exported)."""

    def __init__(self, model: torch.nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.name)(h)


def familiarity_parts(learner: "ContinualLearner", n: int) -> tuple:
    """(frozen-feature module, (n, F) prototype table) when ``learner.familiarity`` uses prototypes for
    ``n`` classes, else (None, None): familiarity is then the best class score."""
    protos = learner.prototypes
    if protos is None or not protos.covers(n):
        return None, None
    fn = "frozen_features" if callable(getattr(learner.model, "frozen_features", None)) else "suffix"
    return _Bound(learner.model, fn), torch.stack([protos.means[c] for c in range(n)]).float().cpu()


class ScoreHead(torch.nn.Module):
    """h → (class scores = normalise(embed(h)) · tableᵀ, familiarity, normalised embedding).

    Familiarity: best cosine of normalise(fam_embed(h)) to ``prototypes`` when given, else the best class
    score. Every head_module of the contract above can be one of these with its own parts."""

    def __init__(self, embed: torch.nn.Module, table: torch.Tensor,
                 fam_embed: Optional[torch.nn.Module] = None, prototypes: Optional[torch.Tensor] = None):
        super().__init__()
        self.embed, self.fam_embed = embed, fam_embed
        self.register_buffer("table", table.float().contiguous())
        self.register_buffer("prototypes", None if prototypes is None else prototypes.float().contiguous())

    def forward(self, h: torch.Tensor):
        z = F.normalize(self.embed(h).float(), dim=1)
        scores = z @ self.table.t()
        if self.prototypes is not None and self.fam_embed is not None:
            fam = (F.normalize(self.fam_embed(h).float(), dim=1) @ self.prototypes.t()).max(1).values
        else:
            fam = scores.max(1).values
        return scores, fam, z
