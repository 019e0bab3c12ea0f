"""Reading the audit log: filter, page and export it. Writing happens in each service through
``Store.audit`` inside the same transaction as the change, so an audited change and its row
commit (or roll back) together. Only supervisors and admins read it (``audit.read``)."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from core.auth import Actor, require

from core.store import Store

CSV_COLUMNS = ["id", "at", "actor", "action", "target_type", "target_id", "details"]
MAX_ROWS = 10_000
# Spreadsheet apps run a cell that starts with one of these as a formula ("CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None          # exact user name
    action_prefix: str | None = None  # "label." matches label.propose, label.approve, ...
    target_type: str | None = None    # label, glossary, image, job, user, setting, ...
    since: date | None = None         # inclusive, UTC calendar day
    until: date | None = None         # inclusive, UTC calendar day
    text: str | None = None           # free text in actor, action, target id or details

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        if self.actor:
            clauses.append("actor = ?")
            params.append(self.actor)
        if self.action_prefix:
            clauses.append("action LIKE ? ESCAPE '\\'")
            params.append(_like_escape(self.action_prefix) + "%")
        if self.target_type:
            clauses.append("target_type = ?")
            params.append(self.target_type)
        if self.since:
            clauses.append("at >= ?")
            params.append(_day_start(self.since))
        if self.until:
            clauses.append("at < ?")
            params.append(_day_start(self.until + timedelta(days=1)))
        if self.text and self.text.strip():
            pattern = "%" + _like_escape(self.text.strip()) + "%"
            clauses.append("(actor LIKE ? ESCAPE '\\' OR action LIKE ? ESCAPE '\\' "
                           "OR COALESCE(target_id, '') LIKE ? ESCAPE '\\' OR details LIKE ? ESCAPE '\\')")
            params += [pattern] * 4
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _day_start(day: date) -> str:
    # ``at`` is stored as ISO-8601 UTC ("2025-01-31T12:00:00+00:00"), so string order is time order.
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).isoformat(timespec="seconds")


def query(store: Store, actor: Actor, flt: AuditFilter = AuditFilter(), *, limit: int = 1000,
          offset: int = 0, newest_first: bool = True) -> list[dict]:
    """Audit rows matching ``flt`` (``details`` decoded to a dict)."""
    require(actor, "audit.read")
    where, params = flt.where()
    order = "DESC" if newest_first else "ASC"
    # nosec below: `where` is AuditFilter.where()'s fixed clauses with "?" placeholders, `order` a literal.
    rows = store.query(f"SELECT * FROM audit{where} ORDER BY id {order} LIMIT ? OFFSET ?",  # nosec B608
                       (*params, int(min(limit, MAX_ROWS)), int(offset)))
    for row in rows:
        row["details"] = json.loads(row["details"] or "{}")
    return rows


def count(store: Store, actor: Actor, flt: AuditFilter = AuditFilter()) -> int:
    require(actor, "audit.read")
    where, params = flt.where()
    return store.query_one(f"SELECT COUNT(*) AS n FROM audit{where}", tuple(params))["n"]  # nosec B608  # fixed clauses, ? params


def facets(store: Store, actor: Actor) -> dict[str, list[str]]:
    """The values the filter widgets offer: actors, target types and action prefixes seen so far."""
    require(actor, "audit.read")
    actors = [r["actor"] for r in store.query("SELECT DISTINCT actor FROM audit ORDER BY actor")]
    types = [r["target_type"] for r in store.query("SELECT DISTINCT target_type FROM audit ORDER BY target_type")]
    actions = [r["action"] for r in store.query("SELECT DISTINCT action FROM audit ORDER BY action")]
    prefixes = sorted({a.split(".")[0] + "." for a in actions})
    return {"actors": actors, "target_types": types, "actions": actions, "action_prefixes": prefixes}


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(rows: list[dict]) -> bytes:
    """UTF-8 with BOM (so Excel reads Japanese correctly); cells that a spreadsheet would run as a
    formula are prefixed with an apostrophe."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        details = row["details"] if isinstance(row["details"], str) else json.dumps(row["details"], ensure_ascii=False)
        writer.writerow([_cell(row["id"]), _cell(row["at"]), _cell(row["actor"]), _cell(row["action"]),
                         _cell(row["target_type"]), _cell(row["target_id"]), _cell(details)])
    return buf.getvalue().encode("utf-8-sig")


def export_csv(store: Store, actor: Actor, flt: AuditFilter = AuditFilter()) -> bytes:
    """The filtered log as CSV (oldest first, up to MAX_ROWS rows); the export itself is audited."""
    rows = query(store, actor, flt, limit=MAX_ROWS, newest_first=False)
    data = to_csv(rows)
    with store.transaction():
        store.audit(actor.username, "audit.export", "audit", None, rows=len(rows),
                    filter={k: str(v) for k, v in vars(flt).items() if v})
    return data
