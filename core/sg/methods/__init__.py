"""Continual-learning methods as plugins of one training template (``core.sg.learner.ContinualLearner``).

A method is a subclass of :class:`Method` registered under a name; the learner asks it which data a
task trains on, which loss terms a batch has (a dict of named tensors with their weights), what to do
after a task, and how to score classes.  Adding a method is one file with one ``@register`` class
(cf. FACIL's ``approach/`` and Avalanche's plugins); progress, the Train page's loss chart and the
experiment's results show whatever terms it returns.

Registered here: ``finetune``, ``exemplars``, ``sgrl``, ``sgkd``, ``both`` (sg.py; ``both`` is SG-RL +
SG-KD, the product's method), ``ncm`` (ncm.py), ``joint`` (joint.py).
"""
from __future__ import annotations

from .base import METHODS, Method, StepOutputs, TaskStep, get_method, method_names, register
from . import sg, ncm, joint, closed_form, product  # noqa: E402,F401  (registration)

__all__ = ["Method", "StepOutputs", "TaskStep", "METHODS", "register", "get_method", "method_names"]
