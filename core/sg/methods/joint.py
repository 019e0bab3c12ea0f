"""Joint training: every task trains on *all* data seen so far (an upper bound; experiment only).

As FACIL's ``joint`` approach, the model continues from the previous task and no memory limit applies.
The loss is the product's without distillation (L_clip + λ_sl·L_SGRL): with all old data present there
is nothing to distil.
"""
from __future__ import annotations

from .base import register
from .sg import SGFamily


@register
class Joint(SGFamily):
    name, title = "joint", "joint training on all data (upper bound)"
    sg_rl = True
    uses_memory = False
    product = False

    def __init__(self):
        self.seen = None

    def training_data(self, learner, train):
        from core.sg.data import Samples

        self.seen = train if self.seen is None else Samples.concat([self.seen, train])
        return self.seen
