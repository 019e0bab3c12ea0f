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


def run_report(store: Store, run_id: int) -> dict:
    """Everything the History page draws for one run:

    ``run``; ``acc``, ``acc_task_aware``, ``rejected`` (lower-triangular, NaN = unknown); ``counts``;
    ``summary`` (core.sg.metrics or None); ``forgetting`` (:func:`task_forgetting`); ``tasks`` — the done
    tasks with ``labels`` (``[{id, name, canonical}]``, in the task's order) and ``changes``
    (:func:`config_changes` against the run's config).
    """
    from core import runs
    from core.labels import list_labels

    run = runs.get_run(store, run_id)
    data = runs.run_summary(store, run["id"])
    by_id = {int(label["id"]): label for label in list_labels(store)}
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
            "forgetting": task_forgetting(data["acc"]), "tasks": tasks}
