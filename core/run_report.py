"""What the History and Train pages show about a run, in one call per page view (UI-free).

:func:`run_report` gathers the run, its accuracy / task-aware / rejection matrices, the summary, the
forgetting of every task (best accuracy it ever had, after which task, and now), and each task's labels
and effective configuration next to the run's — with a fixed number of queries, whatever the number of
tasks and labels. :func:`data_revision` is a cheap number that changes with every audited write, so a
page can cache what it derived from the database until something changed.

Task indices stay 0-based here (the database's); pages add 1 when they show them.
"""
from __future__ import annotations

import math

from core.runs import wilson_interval
from core.sg.learner import LearnerConfig
from core.store import Store


def data_revision(store: Store) -> int:
    """Changes whenever anything a page shows may have changed: every service write adds an audit row
    in the same transaction (labels, glossary, images, runs, tasks, settings; a finished task's metrics
    are committed with its ``task.done`` row)."""
    row = store.query_one("SELECT MAX(id) AS n FROM audit")
    return int(row["n"] or 0) if row else 0


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def task_forgetting(acc: list[list[float]]) -> list[dict]:
    """Per task u before the last: ``{"task", "best", "best_after", "now", "drop"}`` where ``best`` is
    the highest accuracy u had before the last task (``best_after`` the task after which it had it),
    ``now`` its accuracy after the last task and ``drop = best - now`` (the forgetting of
    core.sg.metrics for u; a negative drop is backward transfer). Tasks with a missing cell are left
    out, so an average of 0.8 % cannot hide a task that fell from 66.7 % to 50 %."""
    if len(acc) < 2:
        return []
    last = len(acc) - 1
    rows = []
    for u in range(last):
        history = [(acc[t][u], t) for t in range(u, last) if _finite(acc[t][u])]
        now = acc[last][u]
        if not history or not _finite(now):
            continue
        best, best_after = max(history)
        rows.append({"task": u, "best": best, "best_after": best_after, "now": now, "drop": best - now})
    return rows


def config_changes(base: dict, effective: dict) -> dict[str, tuple]:
    """``{field: (run value, task value)}`` for the LearnerConfig fields a user may set whose value in
    ``effective`` differs from ``base`` (an empty ``effective``: a task made before configs were stored
    with tasks, trained with the run's)."""
    if not effective:
        return {}
    out = {}
    for name in LearnerConfig.user_fields("run"):
        if name in effective and effective[name] != base.get(name):
            out[name] = (base.get(name), effective[name])
    return out


def proportion(correct, n, eval_min: int) -> dict:
    """What one accuracy rests on: ``{"acc", "correct", "n", "low", "high", "enough"}`` — the 95 %
    Wilson interval of ``correct / n`` and whether ``n`` reaches the minimum (``eval_min``) to be shown
    as a number at all."""
    n = int(n or 0)
    correct = int(correct or 0)
    low, high = wilson_interval(correct, n)
    return {"acc": correct / n if n else None, "correct": correct, "n": n, "low": low, "high": high,
            "enough": n >= int(eval_min)}


def cell_matrix(acc, correct, n, eval_min: int) -> list[list[dict | None]]:
    """:func:`proportion` per cell of the matrix (None where the cell is missing); ``acc`` is the stored
    accuracy, kept as is (it is correct/n)."""
    out = []
    for t, row in enumerate(acc):
        cells = []
        for u, value in enumerate(row):
            if not _finite(value):
                cells.append(None)
                continue
            size = n[t][u] if _finite(n[t][u]) else 0
            right = correct[t][u] if _finite(correct[t][u]) else round(value * size)
            cells.append(dict(proportion(right, size, eval_min), acc=float(value)))
        out.append(cells)
    return out


def class_results(evaluation: dict, by_id: dict, eval_min: int) -> dict | None:
    """Per-class accuracy and the confusion matrix of one model from its task's stored ``evaluation``
    (None when the task has none: trained before they were recorded). ``classes``: ``[{id, name,
    canonical, **proportion}]`` in class-table order; ``confusion``: rows = true class."""
    if not evaluation or not evaluation.get("class_ids"):
        return None
    confusion = evaluation["confusion"]
    classes = []
    for i, label_id in enumerate(evaluation["class_ids"]):
        label = by_id.get(int(label_id))
        classes.append({"id": int(label_id), "name": label["name"] if label else str(label_id),
                        "canonical": label["canonical"] if label else None,
                        **proportion(confusion[i][i], sum(confusion[i]), eval_min)})
    return {"classes": classes, "confusion": confusion}


def run_report(store: Store, run_id: int) -> dict:
    """Everything the History page draws for one run:

    ``run``; ``acc``, ``acc_task_aware``, ``rejected`` (lower-triangular, NaN = unknown); ``cells``
    (:func:`cell_matrix`: the images behind each accuracy and its 95 % interval); ``eval_min`` (the
    setting below which an accuracy is "too few images"); ``counts``; ``kinds`` (``new``/``update`` per
    task); ``summary`` (or None); ``last_pooled`` (the last row's images pooled); ``forgetting``
    (:func:`task_forgetting`); ``latest`` (:func:`class_results` of the latest model); ``tasks`` — the
    done tasks with ``labels`` (``[{id, name, canonical}]``, in the task's order) and ``changes``
    (:func:`config_changes` against the run's config).
    """
    from core import runs, settings
    from core.labels import list_labels

    run = runs.get_run(store, run_id)
    data = runs.run_summary(store, run["id"])
    by_id = {int(label["id"]): label for label in list_labels(store)}
    eval_min = int(settings.get(store, "eval_min_holdout_images"))
    cells = cell_matrix(data["acc"], data["correct"], data["n"], eval_min)
    last = [c for c in (cells[-1] if cells else []) if c is not None]
    last_pooled = proportion(sum(c["correct"] for c in last), sum(c["n"] for c in last), eval_min) if last else None
    tasks = []
    for task in data["tasks"]:
        names = []
        for label_id in task["label_ids"]:
            label = by_id.get(int(label_id))
            names.append({"id": int(label_id), "name": label["name"] if label else None,
                          "canonical": label["canonical"] if label else None})
        tasks.append({**task, "labels": names, "changes": config_changes(run["config"], task.get("config") or {})})
    return {"run": run, "acc": data["acc"], "acc_task_aware": data["acc_task_aware"],
            "rejected": data.get("rejected") or [], "counts": data["counts"], "summary": data["summary"],
            "kinds": data["kinds"], "cells": cells, "eval_min": eval_min, "last_pooled": last_pooled,
            "latest": class_results(tasks[-1]["evaluation"], by_id, eval_min) if tasks else None,
            "forgetting": task_forgetting(data["acc"]), "tasks": tasks}
