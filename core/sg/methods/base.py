"""The method interface and its registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Optional

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from core.sg.data import Samples
    from core.sg.learner import ContinualLearner, TaskStep

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

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


Factory = Callable[[], Method]
