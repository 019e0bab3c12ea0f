"""How the Audit page shows a row to people (UI only): the action, the kind of target and the actor
in the reader's language, the target by its name (a label's term, a run's name, a setting's title)
instead of an internal id, and the details as "item: value" with codes translated, tasks counted
from 1, accuracies as percentages and other floats rounded. The stored row (and the CSV export)
keeps the raw values; only what is drawn changes.
"""
from __future__ import annotations

import dataclasses
import re

from core.i18n import has, localise_params, t
from core.inputs import truncate_for_log
from pages.views import config_value, field_title, label_text, pct, status_title, task_no

# Titles of detail items (the keyword arguments services pass to ``Store.audit``). An item without
# one shows its name with spaces (a new service's detail is still readable, just not translated).
DETAIL_TITLES = {
    "acc": "ap.detail.acc", "added": "ap.detail.added", "after": "ap.detail.after", "alias": "ap.detail.alias",
    "aliases": "ap.detail.aliases", "attempt": "ap.detail.attempt", "attempts": "ap.detail.attempts",
    "batch": "ap.detail.batch", "before": "ap.detail.before", "bootstrap": "ap.detail.bootstrap",
    "canonical": "col.canonical", "changed": "ap.detail.changed", "changes": "ap.detail.changes",
    "config": "ap.detail.config", "conflict": "ip.status.conflict", "created": "ap.detail.created",
    "device": "ap.detail.device", "distinct_from": "ap.detail.distinct_from", "duplicate": "ip.status.duplicate",
    "embed_after": "ap.detail.embed_after", "embed_before": "ap.detail.embed_before",
    "embed_text": "ap.detail.embed_text", "en": "col.en", "encoder": "ap.detail.encoder",
    "entries": "ap.detail.entries", "entry_after": "ap.detail.entry_after", "entry_before": "ap.detail.entry_before",
    "entry_id": "ap.detail.entry_id", "error": "ap.detail.error", "failed": "ap.detail.failed",
    "filter": "ap.detail.filter", "format": "ap.detail.format", "forms": "ap.detail.forms",
    "glossary_forms": "ap.detail.glossary_forms", "idx": "ap.detail.task",
    "images": "ap.detail.images", "into": "ap.detail.into", "job_id": "ap.detail.job_id", "kind": "ap.detail.kind",
    "label_id": "ap.detail.label_id", "label_ids": "ap.detail.label_ids", "labels": "ap.detail.labels",
    "links": "ap.detail.links", "locked": "ap.detail.locked", "match": "ap.detail.match", "name": "ap.detail.name",
    "new_entries": "ap.detail.new_entries", "notes": "ap.detail.notes", "notes_ja": "ap.detail.notes_ja", "glossary": "ap.detail.glossary", "original_name": "ap.detail.original_name",
    "os_user": "ap.detail.os_user", "overrides": "ap.detail.overrides", "path": "ap.detail.path",
    "payload": "ap.detail.payload", "pid": "ap.detail.pid", "proposed": "ap.detail.proposed",
    "reading": "col.reading", "reason": "ap.detail.reason", "role": "ap.detail.role", "rows": "ap.detail.rows",
    "rule": "ap.detail.rule", "run_id": "ap.detail.run_id", "sessions_ended": "ap.detail.sessions_ended",
    "sha256": "ap.detail.sha256", "source": "ap.detail.source", "split": "ap.detail.split",
    "status": "col.status", "status_before": "ap.detail.status_before", "task_idx": "ap.detail.task",
    "unmatched": "ap.detail.unmatched", "worker": "ap.detail.worker",
    # model bundles and API tokens (core/deploy)
    "task": "ap.detail.task", "version": "ap.detail.model_version", "images_checked": "ap.detail.images_checked",
    "max_abs_diff": "ap.detail.max_abs_diff", "scope": "ap.detail.scope",
    # the Audit page's own filter, as audit.export records it
    "actor": "ap.actor", "action_prefix": "ap.action", "target_type": "ap.target_type",
    "since": "ap.detail.since", "until": "ap.detail.until", "text": "ap.text",
}
# Where one item name means something else for one action.
ACTION_DETAIL_TITLES = {("image.upload", "source"): "ap.detail.via", ("image.upload", "added"): "ip.status.added",
                        ("image.upload", "error"): "ip.status.error", ("image.upload", "failed"): "ap.detail.error",
                        ("image.import_folder", "added"): "ip.status.added",
                        ("image.import_folder", "error"): "ip.status.error"}
# Internal bookkeeping nobody reads: an upload's batch id, a task's row id (its number is shown), the
# ids of the images an upload added (their count is "added"). All stay in the CSV export.
HIDDEN = {"upload", "task_id", "image_ids"}
# Image counts where zero is the normal case and only noise.
QUIET_ZEROS = {"duplicate", "conflict", "error"}
ACTORS = {"system": "ap.actor.system", "anonymous": "ap.actor.anonymous"}
KINDS = {"train": "ap.kind.train", "new": "hi.kind.new", "update": "hi.kind.update"}   # jobs; tasks
MATCHES = {"confirmed": "ap.match.confirmed", "new-entry": "ap.match.new_entry"}
SOURCES = {"upload": "ap.source.upload", "folder": "ap.source.folder"}
RULES = {"min_holdout": "ap.rule.min_holdout"}
LOGIN_REASONS = {"unknown user": "ap.reason.unknown_user", "locked": "ap.reason.locked",
                 "inactive": "ap.reason.inactive"}
FORMATS = {"zip": "ap.format.zip", "folder": "ap.format.folder"}
SPLITS = {"train": "split.train", "holdout": "split.holdout"}
# "label.merge #12": a reason that names an action and a label.
_ACTION_AND_LABEL = re.compile(r"^([a-z_]+\.[a-z_]+) #(\d+)$")
MAX_LISTED = 5
MAX_TEXT = 120


def _capital(text: str, lang: str) -> str:
    return text[:1].upper() + text[1:] if lang == "en" else text


def action_title(action: str, lang: str) -> str:
    return t(f"audit.action.{action}", lang) if has(f"audit.action.{action}") else str(action)


def what_title(target_type: str | None, lang: str) -> str:
    """A kind of target (``label``, ``task``, …) through the ``what.*`` strings the services' messages use."""
    if target_type is None:
        return "—"
    return _capital(localise_params({"what": str(target_type)}, lang)["what"], lang)


def group_title(prefix: str, lang: str) -> str:
    """An action filter's prefix option (``label.``): every action on that kind of thing."""
    return t("ap.group", lang, what=what_title(prefix.rstrip("."), lang))


def actor_title(actor: str, lang: str) -> str:
    return t(ACTORS[actor], lang) if actor in ACTORS else str(actor)


class Names:
    """Names of the things audit rows point at, read once per page draw through the services."""

    def __init__(self, store, lang: str):
        from core import glossary_store, labels, runs

        self.lang = lang
        self._labels = {int(l["id"]): l for l in labels.list_labels(store)}
        self._glossary = glossary_store.load_glossary(store)
        self._runs = {int(r["id"]): r for r in runs.list_runs(store)}
        self._tasks = {int(task["id"]): task for run_id in self._runs for task in runs.list_tasks(store, run_id)}

    def label(self, label_id) -> str:
        try:
            label = self._labels.get(int(label_id))
        except (TypeError, ValueError):
            return str(label_id)
        return label_text(label, self.lang) if label else t("ui.deleted_label", self.lang, id=label_id)

    def entry(self, entry_id) -> str:
        entry = self._glossary.get(str(entry_id)) if entry_id else None
        return entry.canonical if entry else ("—" if not entry_id else str(entry_id))

    def run(self, run_id) -> str:
        try:
            run = self._runs.get(int(run_id))
        except (TypeError, ValueError):
            return str(run_id)
        return run["name"] if run else f"#{run_id}"

    def task(self, task_id) -> str:
        try:
            task = self._tasks.get(int(task_id))
        except (TypeError, ValueError):
            return str(task_id)
        if task is None:
            return f"#{task_id}"
        return t("ap.task_target", self.lang, run=self.run(task["run_id"]), n=task_no(task["idx"]))


def target_text(row: dict, names: Names) -> str:
    kind, target = row["target_type"], row["target_id"]
    if target is None:
        return "—"
    if kind == "label":
        return names.label(target)
    if kind == "glossary":
        return names.entry(target)
    if kind == "task":
        return names.task(target)
    if kind == "run":
        return names.run(target)
    if kind == "setting":
        from core.settings import SPECS

        return SPECS[target].name(names.lang) if target in SPECS else str(target)
    if kind in ("job", "image"):
        return f"#{target}"
    return str(target)


# ---- details ---------------------------------------------------------------------------------------

def _sep(lang: str) -> str:
    return "、" if lang == "ja" else ", "


def _pair(title: str, value: str, lang: str) -> str:
    return f"{title}：{value}" if lang == "ja" else f"{title}: {value}"


def _listed(items: list[str], lang: str) -> str:
    shown = _sep(lang).join(items[:MAX_LISTED])
    return shown + (t("ap.more", lang, n=len(items) - MAX_LISTED) if len(items) > MAX_LISTED else "")


def _coded(table: dict, value, lang: str) -> str:
    return t(table[value], lang) if isinstance(value, str) and value in table else _plain(value, lang)


def _plain(value, lang: str) -> str:
    """A value with no meaning attached: numbers rounded, containers spelled out."""
    if value is None or value in ("", [], {}):
        return "—"
    if isinstance(value, bool):
        return t("ui.yes" if value else "ui.no", lang)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return _listed([_plain(v, lang) for v in value], lang)
    if isinstance(value, dict):
        return "{" + _sep(lang).join(_pair(str(k), _plain(v, lang), lang) for k, v in value.items()) + "}"
    return truncate_for_log(value, MAX_TEXT)


def _config_text(config: dict, lang: str, baseline: dict | None) -> str:
    """A stored LearnerConfig (or a task's overrides) as "Epochs 3、Learning rate 0.005" (as the
    History page writes configuration changes): only the fields that differ from ``baseline`` (the
    encoder's defaults) when one is given."""
    from core.sg.learner import LearnerConfig

    fields = LearnerConfig.user_fields("run")
    items = [f"{field_title(n, lang)} {config_value(n, v, lang)}" for n, v in config.items()
             if n in fields and (baseline is None or baseline.get(n) != v)]
    return _sep(lang).join(items) if items else t("ap.config_default", lang)


def _encoder_defaults(spec) -> dict | None:
    from core.encoders import default_config
    from core.i18n import UserError

    try:
        return dataclasses.asdict(default_config(str(spec)))
    except (UserError, TypeError, ValueError):
        return None


def _last_line(text) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return truncate_for_log(lines[-1] if lines else "", MAX_TEXT)


def _value(action: str, key: str, value, details: dict, names: Names) -> str:
    lang = names.lang
    if key in ("idx", "task_idx"):
        return str(task_no(value))
    if key == "acc" and isinstance(value, (list, tuple)):
        return _sep(lang).join(f"{t('ap.task_n', lang, n=task_no(u))} {pct(v)}" for u, v in enumerate(value))
    if key == "acc":
        return pct(value)
    if key == "run_id":
        return names.run(value)
    if key == "label_ids":
        return _listed([names.label(i) for i in value], lang)
    if key == "job_id":
        return f"#{value}"                               # as the target column writes a job
    if key in ("label_id", "into") or (key == "source" and action.startswith("label.")) \
            or (key in ("before", "after") and action == "image.move"):
        return names.label(value)
    if key in ("entry_id", "entry_before", "entry_after") or (key == "source" and action.startswith("glossary.")):
        return names.entry(value)
    if key in ("before", "after") and action.startswith("label.") and action != "label.rename":
        return status_title(str(value), lang)
    if key in ("before", "after", "role") and action.startswith("user."):
        return t(f"role.{value}", lang) if has(f"role.{value}") else _plain(value, lang)
    if key == "status_before":
        return t(f"jobs.status.{value}", lang) if has(f"jobs.status.{value}") else _plain(value, lang)
    if key == "status" and action.startswith("glossary."):
        return t(f"gp.status.{value}", lang) if has(f"gp.status.{value}") else _plain(value, lang)
    if key == "match":
        return t(f"tier.{value}", lang) if has(f"tier.{value}") else _coded(MATCHES, value, lang)
    if key == "split":
        return _coded(SPLITS, value, lang)
    if key == "kind":
        return _coded(KINDS, value, lang)
    if key == "source":
        return _coded(SOURCES, value, lang)
    if key == "rule":
        return _coded(RULES, value, lang)
    if key == "format":
        return _coded(FORMATS, value, lang)
    if key == "reason":
        found = _ACTION_AND_LABEL.match(str(value))
        if found:
            action_text, label = action_title(found.group(1), lang), names.label(found.group(2))
            return f"{action_text}（{label}）" if lang == "ja" else f"{action_text} ({label})"
        return _coded(LOGIN_REASONS, value, lang)
    if key == "error" and isinstance(value, str):
        return _last_line(value)
    if key == "config" and isinstance(value, dict):
        return _config_text(value, lang, _encoder_defaults(details.get("encoder")))
    if key == "overrides" and isinstance(value, dict):
        return _config_text(value, lang, None)
    if key == "sha256":
        return str(value)[:12] + "…"
    if key == "changes" and isinstance(value, dict):          # glossary.update: {field: [before, after]}
        return _sep(lang).join(_pair(_title(action, k, lang), " → ".join(_plain(v, lang) for v in pair), lang)
                               for k, pair in value.items())
    if key == "filter" and isinstance(value, dict):           # audit.export: the page's filter
        shown = {k: (group_title(v, lang) if k == "action_prefix" and str(v).endswith(".")
                     else action_title(v, lang) if k == "action_prefix"
                     else what_title(v, lang) if k == "target_type" else v) for k, v in value.items()}
        return "{" + _sep(lang).join(_pair(_title(action, k, lang), _plain(v, lang), lang) for k, v in shown.items()) + "}"
    if key == "payload" and isinstance(value, dict):          # job.enqueue: what the job will do
        return "{" + details_text(action, value, names, depth=1) + "}"
    return _plain(value, lang)


def _title(action: str, key: str, lang: str) -> str:
    title = ACTION_DETAIL_TITLES.get((action, key)) or DETAIL_TITLES.get(key)
    return _capital(t(title, lang) if title else key.replace("_", " "), lang)


def details_text(action: str, details: dict, names: Names, *, target_type: str | None = None,
                 depth: int = 0) -> str:
    """``details`` as "item: value" pairs; empty values, hidden bookkeeping, and what the target column
    already says (a task's run and number, a glossary entry's own id) are left out."""
    lang = names.lang
    skip = set(HIDDEN)
    if target_type == "task":
        skip |= {"run_id", "idx"}
    if action == "glossary.create":
        skip.add("id")
    parts = []
    for key, value in (details or {}).items():
        if key in skip or value in (None, "", [], {}) or (key in QUIET_ZEROS and value == 0):
            continue
        parts.append(_pair(_title(action, key, lang), _value(action, key, value, details, names), lang))
    if depth:
        return _sep(lang).join(parts)
    return (" / " if lang == "ja" else "; ").join(parts)
