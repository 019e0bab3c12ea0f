"""Runs and tasks: the service functions behind the Train and History pages.

A **run** is one continual-learning sequence. It fixes the encoder (the spec active when it was
created) and the learner configuration (``LearnerConfig`` JSON, with the encoder family's κ default).
A **task** is the next batch of labels; requesting one creates the task row and its ``train`` job in
one transaction. Tasks of a run are learned strictly in order (core.jobs enforces it).

Eligibility is per run: a label may join a task of run r when it is approved (or trained in *another*
run — so two runs can learn the same label sequence and be compared), has enough train and holdout
images, and is not already in a queued, running or done task of r.

A task is of one of two kinds. ``new`` learns new classes (new rows of the class table); ``update``
learns the train images that labels run r already learned have gained since (no new rows): the
``task_images`` table records which train images every done task learned, so an update sees only
images no task of the run has seen.
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
TASK_KINDS = ("new", "update")


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
    row["kind"] = row.get("kind") or "new"
    row["evaluation"] = json.loads(row.get("evaluation") or "{}")
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


def _first_task_of(tasks: list[dict]) -> dict[int, int]:
    """label id → index of the run's new-class task that has (or will have) learned it."""
    out: dict[int, int] = {}
    for task in tasks:
        if task["kind"] == "new":
            for label_id in task["label_ids"]:
                out.setdefault(label_id, task["idx"])
    return out


def new_train_images(store: Store, run_id: int, label_ids: Iterable[int]) -> dict[int, list[int]]:
    """label id → ids of its train images that no done task of the run has learned (in id order)."""
    ids = [int(i) for i in label_ids]
    out: dict[int, list[int]] = {i: [] for i in ids}
    if not ids:
        return out
    marks = ",".join("?" * len(ids))
    rows = store.query(
        "SELECT i.id, i.label_id FROM images i WHERE i.split = 'train' "  # nosec B608  # ? placeholders only
        f"AND i.label_id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM task_images ti JOIN tasks t ON t.id = ti.task_id "
        "WHERE t.run_id = ? AND t.status = 'done' AND ti.image_id = i.id) ORDER BY i.id", (*ids, int(run_id)))
    for r in rows:
        out[r["label_id"]].append(r["id"])
    return out


def label_eligibility(store: Store, run_id: int, labels: list[dict] | None = None) -> list[dict]:
    """Every proposed/approved/trained label with ``eligible`` (for a new-class task) and, when not,
    ``reason`` (a message key + params) — what the Train page shows next to its multiselect. A label
    the run already learned says whether it has new train images to update it with (``n_new``)."""
    from core.images import readiness, setting
    from core.labels import list_labels

    labels = labels if labels is not None else list_labels(store, ("proposed", "approved", "trained"))
    active = list_tasks(store, run_id, ACTIVE_TASK_STATUSES)
    in_run = _first_task_of(active)
    ready = readiness(store, [l["id"] for l in labels])
    # new images count only once the task that learns the label is done (before, it learns them all)
    learned = _first_task_of([t for t in active if t["status"] == "done"])
    fresh = new_train_images(store, run_id, [l["id"] for l in labels if l["id"] in learned])
    min_train, min_holdout = setting(store, "min_train_images"), setting(store, "min_holdout_images")
    out = []
    for label in labels:
        row = dict(label)
        r = ready[label["id"]]
        row["n_new"] = len(fresh.get(label["id"], []))
        if label["id"] in in_run:
            # Messages name tasks as people count them, from 1 (``idx`` is 0-based).
            task = in_run[label["id"]] + 1
            row["eligible"], row["reason"] = False, (
                ("runs.reason.in_run_update", {"task": task, "n": row["n_new"]}) if row["n_new"]
                else ("runs.reason.in_run", {"task": task}))
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


def update_eligibility(store: Store, run_id: int) -> list[dict]:
    """The labels run ``run_id`` has learned (in a done task), each with ``n_new`` (train images no task
    of the run has learned), ``eligible`` for an update task and, when not, ``reason``."""
    from core.labels import get_label

    tasks = list_tasks(store, run_id, ACTIVE_TASK_STATUSES)
    learned = _first_task_of([t for t in tasks if t["status"] == "done"])
    pending = {lid: t["idx"] for t in tasks if t["status"] != "done" for lid in t["label_ids"]}
    fresh = new_train_images(store, run_id, learned)
    out = []
    for label_id, idx in learned.items():
        row = dict(get_label(store, label_id), task=idx, n_new=len(fresh[label_id]))
        if row["status"] != "trained":
            row["eligible"], row["reason"] = False, ("runs.reason.not_approved", {"status": row["status"]})
        elif label_id in pending:
            row["eligible"], row["reason"] = False, ("runs.reason.pending", {"task": pending[label_id] + 1})
        elif not row["n_new"]:
            row["eligible"], row["reason"] = False, ("runs.reason.no_new_images", {"task": idx + 1})
        else:
            row["eligible"], row["reason"] = True, None
        out.append(row)
    return out


# Why a label cannot be updated (update_eligibility's reason) → the message a refused request gets.
_REFUSALS = {"runs.reason.not_approved": "runs.label_not_approved", "runs.reason.pending": "runs.update_pending",
             "runs.reason.no_new_images": "runs.update_no_new"}


def request_task(store: Store, actor: Actor, run_id: int, label_ids: Sequence[int],
                 overrides: dict | None = None, kind: str = "new") -> dict:
    """Queue the next task of a run: ``{"task": ..., "job_id": ...}``. ``kind="new"`` refuses labels
    that are not approved, lack images, or are already in this run; ``kind="update"`` takes only labels
    this run has learned that have new train images (:func:`update_eligibility`)."""
    require(actor, "train.request")
    from core.images import require_ready
    from core.labels import get_label

    if kind not in TASK_KINDS:
        raise UserError("runs.bad_kind", kind=str(kind)[:20])
    label_ids = list(dict.fromkeys(int(i) for i in label_ids))
    if not label_ids:
        raise UserError("runs.no_labels")
    overrides = clean_overrides(overrides, "task")
    with store.transaction():
        run = get_run(store, run_id)
        if run["status"] != "active":
            raise UserError("runs.not_active", name=run["name"], status=run["status"])
        active = list_tasks(store, run["id"], ACTIVE_TASK_STATUSES)
        if kind == "new":
            in_run = _first_task_of(active)
            for label_id in label_ids:
                label = get_label(store, label_id)
                if label["id"] in in_run:
                    raise UserError("runs.label_in_run", name=label["name"], task=in_run[label["id"]] + 1)
                if label["status"] not in ("approved", "trained"):
                    raise UserError("runs.label_not_approved", name=label["name"], status=label["status"])
            require_ready(store, label_ids)
        else:
            rows = {r["id"]: r for r in update_eligibility(store, run["id"])}
            for label_id in label_ids:
                row = rows.get(label_id)
                if row is None:
                    raise UserError("runs.update_not_learned", name=get_label(store, label_id)["name"])
                if not row["eligible"]:
                    key, params = row["reason"]
                    raise UserError(_REFUSALS[key], name=row["name"], **params)
        idx = max((t["idx"] for t in active), default=-1) + 1
        # A failed or cancelled task leaves its row (and index) free for the next request.
        config = effective_config(run, overrides).to_json()
        existing = store.query_one("SELECT id FROM tasks WHERE run_id = ? AND idx = ?", (run["id"], idx))
        if existing is not None:
            task_id = existing["id"]
            store.execute("UPDATE tasks SET label_ids = ?, status = 'queued', created_at = ?, config = ?, kind = ?, "
                          "evaluation = '{}' WHERE id = ?", (json.dumps(label_ids), now_iso(), config, kind, task_id))
        else:
            task_id = store.execute(
                "INSERT INTO tasks (run_id, idx, label_ids, status, created_at, config, kind) VALUES (?,?,?,?,?,?,?)",
                (run["id"], idx, json.dumps(label_ids), "queued", now_iso(), config, kind)).lastrowid
        job_id = jobs.enqueue(store, actor, "train", {
            "task_id": task_id, "task_idx": idx, "label_ids": label_ids, "overrides": overrides, "kind": kind},
            run_id=run["id"])
        store.audit(actor.username, "task.request", "task", task_id, run_id=run["id"], idx=idx,
                    label_ids=label_ids, overrides=overrides, job_id=job_id, kind=kind)
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

def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """The 95 % Wilson score interval of a proportion ``correct / n`` ((None, None) without images):
    unlike ±1.96·√(p(1−p)/n) it stays inside [0, 1] and is not zero-width at 0 % or 100 %, so 14 of 14
    right reads 78–100 %, not "100 %"."""
    if n <= 0:
        return None, None
    correct = min(max(int(correct), 0), int(n))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if correct == 0 else low), (1.0 if correct == n else high)   # exact at the ends


_MATRIX_COLUMNS = {"acc": "acc", "aware": "acc_task_aware", "rejected": "rejected", "n": "n_images",
                   # rows written before n_correct was stored: acc·n is the count it was computed from
                   "correct": "COALESCE(n_correct, ROUND(acc * n_images))"}


def accuracy_matrix(store: Store, run_id: int, task_aware: bool = False, column: str | None = None) -> list[list[float]]:
    """acc[t][u] (u ≤ t) of the run's completed tasks, from the ``metrics`` table (``column="rejected"``:
    the fraction of task u's holdout rejected as "not a trained class" after task t; ``"n"``: how many
    holdout images the cell rests on; ``"correct"``: how many of them were right; NaN when unknown, and
    in the column of an update task, whose images are evaluated in their classes' own task)."""
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


def summarize_tasks(acc: list[list[float]], counts: list[int], kinds: list[str]) -> dict | None:
    """``core.sg.metrics.summarize`` over the columns of the new-class tasks only (an update task adds
    a row — the model after it — but no column: its images belong to classes of earlier tasks), or
    None when a cell of those columns is missing. Equal to ``summarize`` for a run without updates."""
    cols = [u for u, kind in enumerate(kinds) if kind == "new"]
    if not acc or not cols or cols[0] != 0:
        return None
    cells = {(t, u): acc[t][u] for t in range(len(acc)) for u in cols if u <= t}
    if any(math.isnan(v) for v in cells.values()):
        return None
    if len(cols) == len(acc):
        return summarize(acc, counts)
    per_step = [sum(acc[t][u] * counts[u] for u in cols if u <= t) / sum(counts[u] for u in cols if u <= t)
                for t in range(len(acc))]
    last = len(acc) - 1
    earlier = [u for u in cols if u < last]
    drops = [max(acc[tp][u] for tp in range(u, last)) - acc[last][u] for u in earlier]
    return {"per_step": per_step, "aia": sum(per_step) / len(per_step), "last": per_step[-1],
            "forgetting": sum(drops) / len(drops) if drops else None, "forgetting_per_task": drops,
            "bwt": sum(acc[last][u] - acc[u][u] for u in earlier) / len(earlier) if earlier else None}


def run_summary(store: Store, run_id: int) -> dict:
    """Matrix, task-aware matrix, class counts, task kinds, the holdout images behind each cell
    (``n``) and how many were right (``correct``), and :func:`summarize_tasks` of the run (or
    ``summary=None`` when no task is complete or a cell is missing)."""
    tasks = done_tasks(store, run_id)
    acc, aware = accuracy_matrix(store, run_id), accuracy_matrix(store, run_id, task_aware=True)
    counts = [len(t["label_ids"]) for t in tasks]
    kinds = [t["kind"] for t in tasks]
    summary = summarize_tasks(acc, counts, kinds)
    if summary is not None:
        aware_summary = summarize_tasks(aware, counts, kinds)
        if aware_summary is not None:
            summary.update({f"{k}_task_aware": v for k, v in aware_summary.items()})
    rejected = accuracy_matrix(store, run_id, column="rejected")
    return {"tasks": tasks, "acc": acc, "acc_task_aware": aware, "counts": counts, "summary": summary,
            "rejected": rejected, "kinds": kinds, "n": accuracy_matrix(store, run_id, column="n"),
            "correct": accuracy_matrix(store, run_id, column="correct")}


def metrics_csv(store: Store, actor: Actor, run_id: int) -> str:
    """The run's metrics rows as CSV (one row per trained_task × eval_task), for download."""
    require(actor, "report.export")
    run = get_run(store, run_id)
    rows = store.query("SELECT * FROM metrics WHERE run_id = ? ORDER BY trained_task, eval_task", (run["id"],))
    tasks = {t["idx"]: t for t in list_tasks(store, run["id"])}
    buf = io.StringIO()
    writer = SafeWriter(buf, lineterminator="\n")   # a run named =HYPERLINK(…) stays text in a spreadsheet
    writer.writerow(["run_id", "run_name", "encoder", "trained_task", "trained_task_kind", "eval_task",
                     "eval_task_label_ids", "acc", "acc_task_aware", "n_classes", "n_images", "n_correct",
                     "ci95_low", "ci95_high"])
    for r in rows:
        labels = tasks.get(r["eval_task"], {}).get("label_ids", [])
        n = int(r["n_images"])
        correct = int(r["n_correct"]) if r.get("n_correct") is not None else int(round(r["acc"] * n))
        low, high = wilson_interval(correct, n)
        writer.writerow([run["id"], run["name"], run["encoder"], r["trained_task"],
                         tasks.get(r["trained_task"], {}).get("kind", "new"), r["eval_task"],
                         " ".join(map(str, labels)), f"{r['acc']:.6f}",
                         "" if r["acc_task_aware"] is None else f"{r['acc_task_aware']:.6f}",
                         r["n_classes"], n, correct, "" if low is None else f"{low:.6f}",
                         "" if high is None else f"{high:.6f}"])
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
    trained = list(_first_task_of(done_tasks(store, run["id"])))   # class-table order; updates add no class
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
