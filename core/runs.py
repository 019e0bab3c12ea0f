"""Runs and tasks: the service functions behind the Train and History pages.

A **run** is one continual-learning sequence. It fixes the encoder (the spec active when it was
created) and the learner configuration (``LearnerConfig`` JSON, with the encoder family's κ default).
A **task** is the next batch of labels; requesting one creates the task row and its ``train`` job in
one transaction. Tasks of a run are learned strictly in order (core.jobs enforces it).

Eligibility is per run: a label may join a task of run r when it is approved (or trained in *another*
run — so two runs can learn the same label sequence and be compared), has enough train and holdout
images, and is not already in a queued, running or done task of r.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Iterable, Sequence

from core import jobs
from core.auth import Actor, require
from core.i18n import UserError
from core.sg.learner import LearnerConfig
from core.sg.methods import method_names
from core.sg.metrics import summarize
from core.store import Store, now_iso
from glossary.csvsafe import SafeWriter

ACTIVE_TASK_STATUSES = ("queued", "running", "done")


def default_config(spec: str, **overrides) -> LearnerConfig:
    """The registry's defaults for the encoder ``spec`` (κ, logit scale, schedule) plus ``overrides``."""
    from core.encoders import default_config as registry_default

    return registry_default(spec, **overrides)


def _check_value(key: str, value, field: dataclasses.Field):
    """Coerce and validate one configuration value against its LearnerConfig declaration."""
    rules = field.metadata
    try:
        if "choices" in rules:
            choices = method_names() if rules["choices"] == "methods" else rules["choices"]
            if value not in choices:
                raise ValueError(" | ".join(choices))
            return value
        if value is None and field.default is None:
            return None
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        if "bool" in kind:
            if isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if "int" in kind:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError("a whole number")
            value = int(float(value))
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("a finite number")
        low, high = rules.get("min"), rules.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"between {low} and {high}")
        return value
    except (TypeError, ValueError, OverflowError) as exc:   # OverflowError: int(float("inf"))
        raise UserError("runs.bad_config", setting=key, value=value, reason=str(exc)) from None


def clean_overrides(overrides: dict | None, scope: str = "task") -> dict:
    """Validated values for the LearnerConfig fields a user may set at ``scope`` ("task" or "run")."""
    allowed = LearnerConfig.user_fields(scope)
    out = {}
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise UserError("runs.bad_config", setting=key, value=value, reason="cannot be changed here")
        out[key] = _check_value(key, value, allowed[key])
    return out


def effective_config(run: dict, overrides: dict | None = None) -> LearnerConfig:
    """What a task of ``run`` trains with: the run's config plus that task's overrides (never another
    task's)."""
    return dataclasses.replace(run_config(run), **clean_overrides(overrides, "task"))


# What a task request may change (the rest is fixed by the run); declared on LearnerConfig's fields.
TASK_OVERRIDABLE = tuple(LearnerConfig.user_fields("task"))
RUN_CONFIGURABLE = tuple(LearnerConfig.user_fields("run"))


# ---- runs --------------------------------------------------------------------------------------------

def _decode_run(row: dict | None) -> dict | None:
    if row is None:
        return None
    row = dict(row)
    row["config"] = json.loads(row["config"])
    return row


def create_run(store: Store, actor: Actor, name: str, *, encoder: str | None = None,
               config: dict | None = None) -> dict:
    """Start a new run with the active encoder (or ``encoder``) and the method's defaults + ``config``."""
    require(actor, "train.request")
    from core.encoders import active_encoder_spec

    name = _clean_run_name(name)
    spec = encoder or active_encoder_spec(store)
    from core.encoders import validate_spec

    spec = validate_spec(spec)
    cfg = default_config(spec, **clean_overrides(config, "run"))
    with store.transaction():
        run_id = store.insert("runs", {
            "name": name, "encoder": spec, "config": cfg.to_json(), "status": "active",
            "created_by": actor.username, "created_at": now_iso()})
        store.audit(actor.username, "run.create", "run", run_id, name=name, encoder=spec,
                    config=dataclasses.asdict(cfg))
    return get_run(store, run_id)


def _clean_run_name(name) -> str:
    """Run names are cleaned like label names (core.inputs): at most MAX_NAME characters, no NUL or other
    control characters, no bidi overrides or other invisible characters, not invisible-only."""
    from core.inputs import clean_name
    from glossary.normalize import normalize_chars

    if not (name or "").strip():
        raise UserError("runs.empty_name")
    name = clean_name(name, field="run_name", required=False)
    if not normalize_chars(name):
        raise UserError("runs.empty_name")
    return name


def get_run(store: Store, run_id: int) -> dict:
    row = _decode_run(store.query_one("SELECT * FROM runs WHERE id = ?", (int(run_id),)))
    if row is None:
        raise UserError("err.not_found", what="run", id=run_id)
    return row


def list_runs(store: Store) -> list[dict]:
    return [_decode_run(r) for r in store.query("SELECT * FROM runs ORDER BY id DESC")]


def run_config(run: dict) -> LearnerConfig:
    return LearnerConfig.from_json(json.dumps(run["config"]))


# ---- tasks -------------------------------------------------------------------------------------------

def _decode_task(row: dict) -> dict:
    row = dict(row)
    row["label_ids"] = [int(i) for i in json.loads(row["label_ids"])]
    row["config"] = json.loads(row.get("config") or "{}")   # the effective config ({} before migration 3)
    return row


def task_config(run: dict, task: dict, legacy_overrides: dict | None = None) -> LearnerConfig:
    """The configuration a task trains (or trained) with, as stored with the task.  A task made
    before configs were stored with tasks has the run's config plus the overrides its job carried
    (``legacy_overrides``, the job payload's)."""
    if task.get("config"):
        return LearnerConfig.from_json(json.dumps(task["config"]))
    config = run_config(run)
    for key, value in (legacy_overrides or {}).items():
        setattr(config, key, value)
    return config


def list_tasks(store: Store, run_id: int, statuses: Iterable[str] | None = None) -> list[dict]:
    rows = [_decode_task(r) for r in store.query("SELECT * FROM tasks WHERE run_id = ? ORDER BY idx", (int(run_id),))]
    if statuses is not None:
        statuses = set(statuses)
        rows = [r for r in rows if r["status"] in statuses]
    return rows


def done_tasks(store: Store, run_id: int) -> list[dict]:
    """Completed tasks in order; they always form a prefix 0..k of the run."""
    return list_tasks(store, run_id, ("done",))


def label_eligibility(store: Store, run_id: int, labels: list[dict] | None = None) -> list[dict]:
    """Every proposed/approved/trained label with ``eligible`` and, when not, ``reason`` (a message key
    + params) — what the Train page shows next to its multiselect."""
    from core.images import readiness, setting
    from core.labels import list_labels

    labels = labels if labels is not None else list_labels(store, ("proposed", "approved", "trained"))
    in_run = {lid: t["idx"] for t in list_tasks(store, run_id, ACTIVE_TASK_STATUSES) for lid in t["label_ids"]}
    ready = readiness(store, [l["id"] for l in labels])
    min_train, min_holdout = setting(store, "min_train_images"), setting(store, "min_holdout_images")
    out = []
    for label in labels:
        row = dict(label)
        r = ready[label["id"]]
        if label["id"] in in_run:
            # Messages name tasks as people count them, from 1 (``idx`` is 0-based).
            row["eligible"], row["reason"] = False, ("runs.reason.in_run", {"task": in_run[label["id"]] + 1})
        elif label["status"] not in ("approved", "trained"):
            row["eligible"], row["reason"] = False, ("runs.reason.not_approved", {"status": label["status"]})
        elif not r.ok:
            row["eligible"], row["reason"] = False, ("runs.reason.images", {
                "n_train": r.n_train, "min_train": min_train, "n_holdout": r.n_holdout, "min_holdout": min_holdout})
        else:
            row["eligible"], row["reason"] = True, None
        row["n_train"], row["n_holdout"] = r.n_train, r.n_holdout
        out.append(row)
    return out


def request_task(store: Store, actor: Actor, run_id: int, label_ids: Sequence[int],
                 overrides: dict | None = None) -> dict:
    """Queue the next task of a run: ``{"task": ..., "job_id": ...}``. Refuses labels that are not
    approved, lack images, or are already in this run."""
    require(actor, "train.request")
    from core.images import require_ready
    from core.labels import get_label

    label_ids = list(dict.fromkeys(int(i) for i in label_ids))
    if not label_ids:
        raise UserError("runs.no_labels")
    overrides = clean_overrides(overrides, "task")
    with store.transaction():
        run = get_run(store, run_id)
        if run["status"] != "active":
            raise UserError("runs.not_active", name=run["name"], status=run["status"])
        active = list_tasks(store, run["id"], ACTIVE_TASK_STATUSES)
        in_run = {lid: t["idx"] for t in active for lid in t["label_ids"]}
        for label_id in label_ids:
            label = get_label(store, label_id)
            if label["id"] in in_run:
                raise UserError("runs.label_in_run", name=label["name"], task=in_run[label["id"]] + 1)
            if label["status"] not in ("approved", "trained"):
                raise UserError("runs.label_not_approved", name=label["name"], status=label["status"])
        require_ready(store, label_ids)
        idx = max((t["idx"] for t in active), default=-1) + 1
        # A failed or cancelled task leaves its row (and index) free for the next request.
        config = effective_config(run, overrides).to_json()
        existing = store.query_one("SELECT id FROM tasks WHERE run_id = ? AND idx = ?", (run["id"], idx))
        if existing is not None:
            task_id = existing["id"]
            store.execute("UPDATE tasks SET label_ids = ?, status = 'queued', created_at = ?, config = ? WHERE id = ?",
                          (json.dumps(label_ids), now_iso(), config, task_id))
        else:
            task_id = store.execute(
                "INSERT INTO tasks (run_id, idx, label_ids, status, created_at, config) VALUES (?,?,?,?,?,?)",
                (run["id"], idx, json.dumps(label_ids), "queued", now_iso(), config)).lastrowid
        job_id = jobs.enqueue(store, actor, "train", {
            "task_id": task_id, "task_idx": idx, "label_ids": label_ids, "overrides": overrides}, run_id=run["id"])
        store.audit(actor.username, "task.request", "task", task_id, run_id=run["id"], idx=idx,
                    label_ids=label_ids, overrides=overrides, job_id=job_id)
    task = _decode_task(store.query_one("SELECT * FROM tasks WHERE id = ?", (task_id,)))
    return {"task": task, "job_id": job_id}


def active_job(store: Store, run_id: int) -> dict | None:
    """The run's running job, else its oldest queued one, else None."""
    for status in ("running", "queued"):
        row = store.query_one("SELECT id FROM jobs WHERE run_id = ? AND status = ? ORDER BY id LIMIT 1",
                              (int(run_id), status))
        if row:
            return jobs.get_job(store, row["id"])
    return None


# ---- metrics -----------------------------------------------------------------------------------------

_MATRIX_COLUMNS = {"acc": "acc", "aware": "acc_task_aware", "rejected": "rejected"}


def accuracy_matrix(store: Store, run_id: int, task_aware: bool = False, column: str | None = None) -> list[list[float]]:
    """acc[t][u] (u ≤ t) of the run's completed tasks, from the ``metrics`` table (``column="rejected"``:
    the fraction of task u's holdout rejected as "not a trained class" after task t; NaN when unknown)."""
    column = _MATRIX_COLUMNS[column or ("aware" if task_aware else "acc")]
    rows = store.query(f"SELECT trained_task, eval_task, {column} AS v FROM metrics WHERE run_id = ? "  # nosec B608  # a fixed whitelist
                       "ORDER BY trained_task, eval_task", (int(run_id),))
    n = len(done_tasks(store, run_id))
    matrix = [[math.nan] * (t + 1) for t in range(n)]
    for r in rows:
        t, u = r["trained_task"], r["eval_task"]
        if t < n and u <= t:
            matrix[t][u] = float("nan") if r["v"] is None else float(r["v"])
    return matrix


def run_summary(store: Store, run_id: int) -> dict:
    """Matrix, task-aware matrix, class counts, and ``core.sg.metrics.summarize`` of the run (or
    ``summary=None`` when no task is complete or a cell is missing)."""
    tasks = done_tasks(store, run_id)
    acc, aware = accuracy_matrix(store, run_id), accuracy_matrix(store, run_id, task_aware=True)
    counts = [len(t["label_ids"]) for t in tasks]
    summary = None
    if acc:
        try:
            summary = summarize(acc, counts, aware if all(not math.isnan(v) for r in aware for v in r) else None)
        except ValueError:
            summary = None
    rejected = accuracy_matrix(store, run_id, column="rejected")
    return {"tasks": tasks, "acc": acc, "acc_task_aware": aware, "counts": counts, "summary": summary,
            "rejected": rejected}


def metrics_csv(store: Store, actor: Actor, run_id: int) -> str:
    """The run's metrics rows as CSV (one row per trained_task × eval_task), for download."""
    require(actor, "report.export")
    run = get_run(store, run_id)
    rows = store.query("SELECT * FROM metrics WHERE run_id = ? ORDER BY trained_task, eval_task", (run["id"],))
    tasks = {t["idx"]: t for t in list_tasks(store, run["id"])}
    buf = io.StringIO()
    writer = SafeWriter(buf, lineterminator="\n")   # a run named =HYPERLINK(…) stays text in a spreadsheet
    writer.writerow(["run_id", "run_name", "encoder", "trained_task", "eval_task", "eval_task_label_ids",
                     "acc", "acc_task_aware", "n_classes", "n_images"])
    for r in rows:
        labels = tasks.get(r["eval_task"], {}).get("label_ids", [])
        writer.writerow([run["id"], run["name"], run["encoder"], r["trained_task"], r["eval_task"],
                         " ".join(map(str, labels)), f"{r['acc']:.6f}",
                         "" if r["acc_task_aware"] is None else f"{r['acc_task_aware']:.6f}",
                         r["n_classes"], r["n_images"]])
    return buf.getvalue()  # not audited: it is rendered with every History page view (a read)


# ---- what SG-RL / SG-KD will use for a proposed task ------------------------------------------------

def soft_label_preview(store: Store, run_id: int, label_ids: Sequence[int], k: int = 3) -> list[dict]:
    """For each proposed new label: its ``k`` nearest classes already trained in this run (cosine of
    bare-name features) and the SG-RL soft-target weight q^(y)_c each gets (softmax(κ·S) over all classes
    the task will see). Empty neighbour lists for the first task."""
    import torch

    from core.embeddings import label_name_embeddings
    from core.encoders import load_encoder
    from core.labels import get_label
    from core.sg.losses import soft_label_matrix

    run = get_run(store, run_id)
    trained = [lid for t in done_tasks(store, run["id"]) for lid in t["label_ids"]]
    new = [int(i) for i in label_ids if int(i) not in trained]
    if not new:
        return []
    labels = [get_label(store, i) for i in trained + new]
    encoder = load_encoder(run["encoder"], store.home)
    U = label_name_embeddings(store, encoder, labels)
    kappa = float(run["config"].get("softness", 13.0))
    soft = soft_label_matrix(U, kappa)
    sims = U @ U.t()
    out = []
    for j, label in enumerate(labels[len(trained):]):
        row = len(trained) + j
        nearest = []
        if trained:
            top = torch.topk(sims[row, :len(trained)], min(k, len(trained)))
            for score, pos in zip(top.values.tolist(), top.indices.tolist()):
                nearest.append({"label_id": labels[pos]["id"], "name": labels[pos]["canonical"],
                                "cosine": float(score), "soft_weight": float(soft[row, pos])})
        out.append({"label_id": label["id"], "name": label["canonical"], "self_weight": float(soft[row, row]),
                    "neighbours": nearest})
    return out
