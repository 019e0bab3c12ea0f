"""Continual-learning metrics exactly as spec/method.md defines them (class-count weighting).

acc[t][u] = accuracy (in [0, 1] or %, any consistent unit) on task u's holdout after training task t.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["summarize", "lower_triangle"]


def lower_triangle(acc_matrix) -> list[list[float]]:
    """Row t keeps entries u ≤ t.  Accepts a ragged list of lists or a square matrix (NaN above)."""
    rows = [list(map(float, r)) for r in (acc_matrix.tolist() if hasattr(acc_matrix, "tolist") else acc_matrix)]
    out = []
    for t, row in enumerate(rows):
        if len(row) < t + 1:
            raise ValueError(f"row {t} has {len(row)} entries, needs {t + 1}")
        kept = row[: t + 1]
        if any(math.isnan(v) for v in kept):
            raise ValueError(f"row {t} has NaN on or below the diagonal")
        out.append(kept)
    return out


def _counts(classes_per_task, n_tasks: int) -> list[int]:
    counts = [len(c) if isinstance(c, (list, tuple, set)) else int(c) for c in classes_per_task]
    if len(counts) < n_tasks:
        raise ValueError("classes_per_task shorter than the accuracy matrix")
    return counts[:n_tasks]


def _summarize_one(acc: list[list[float]], counts: list[int]) -> dict:
    n_tasks = len(acc)
    per_step = [sum(acc[t][u] * counts[u] for u in range(t + 1)) / sum(counts[: t + 1])
                for t in range(n_tasks)]
    last = n_tasks - 1
    if n_tasks > 1:
        forgetting_per_task = [max(acc[tp][u] for tp in range(u, last)) - acc[last][u] for u in range(last)]
        forgetting = sum(forgetting_per_task) / len(forgetting_per_task)
        bwt = sum(acc[last][u] - acc[u][u] for u in range(last)) / last
    else:
        forgetting_per_task, forgetting, bwt = [], None, None
    return {"per_step": per_step, "aia": sum(per_step) / n_tasks, "last": per_step[-1],
            "forgetting": forgetting, "forgetting_per_task": forgetting_per_task, "bwt": bwt}


def summarize(acc_matrix, classes_per_task: Sequence, acc_matrix_task_aware=None) -> dict:
    """Return ``aia``, ``last``, ``forgetting``, ``bwt``, ``per_step`` (A_t), ``forgetting_per_task``.

    * A_t = Σ_{u≤t} acc[t][u]·n_u / Σ_{u≤t} n_u, n_u = class count of task u;
    * AIA = mean_t A_t; last = A_{T−1};
    * forgetting of u < T−1 = max_{t' < T−1} acc[t'][u] − acc[T−1][u] (t' ≥ u), averaged over u;
    * BWT = mean_{u<T−1}(acc[T−1][u] − acc[u][u]).
    ``forgetting`` and ``bwt`` are None with a single task.  ``classes_per_task`` holds counts or lists
    of classes.  With ``acc_matrix_task_aware`` the same keys are added with a ``_task_aware`` suffix.
    """
    acc = lower_triangle(acc_matrix)
    if not acc:
        raise ValueError("empty accuracy matrix")
    counts = _counts(classes_per_task, len(acc))
    result = _summarize_one(acc, counts)
    if acc_matrix_task_aware is not None:
        aware = _summarize_one(lower_triangle(acc_matrix_task_aware), counts)
        result.update({f"{k}_task_aware": v for k, v in aware.items()})
    return result
