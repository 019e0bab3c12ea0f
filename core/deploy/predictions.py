"""What the line saw: every prediction the inference service (core/serve.py) makes is recorded (model
version, best class, score, familiarity, decision, source, image hash); History and Predict show counts
per class and the unknown rate over time. Folder and watch inference keep their record in their CSV
(they also run on line PCs without the database)."""
from __future__ import annotations

from typing import Iterable

from core.auth import Actor, require
from core.store import Store, now_iso

SOURCES = ("service",)


def record(store: Store, manifest: dict, source: str, predictions: Iterable, hashes: Iterable[str | None]) -> int:
    """Store one row per :class:`core.runtime.Prediction` (with its image's sha256 or None)."""
    model = manifest["model"]
    at = now_iso()
    classes = manifest["classes"]
    rows = [(at, int(model["run"]), int(model["task"]), model["version"], source, int(classes[p.index]["id"]),
             classes[p.index]["name"], float(p.score), float(p.familiarity), "unknown" if p.unknown else "class", h)
            for p, h in zip(predictions, hashes)]
    if rows:
        with store.transaction():
            store.conn.executemany(
                "INSERT INTO predictions (at, run_id, task, model_version, source, label_id, class_name, score, "
                "familiarity, decision, sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    return len(rows)


def line_summary(store: Store, actor: Actor, run_id: int, days: int = 60) -> dict:
    """``{"total", "unknown", "per_class": [{label_id, name, n}], "per_day": [{day, n, unknown, rate}],
    "versions": [..], "sources": {source: n}}`` of the run's recorded predictions (last ``days`` days)."""
    require(actor, "read")
    since = f"-{int(days)} days"
    where = "run_id = ? AND at >= strftime('%Y-%m-%dT%H:%M:%S', 'now', ?)"
    args = (int(run_id), since)
    per_class = store.query(
        "SELECT p.label_id, COALESCE(l.name, MAX(p.class_name)) AS name, COUNT(*) AS n FROM predictions p "
        "LEFT JOIN labels l ON l.id = p.label_id WHERE p.run_id = ? "
        "AND p.at >= strftime('%Y-%m-%dT%H:%M:%S', 'now', ?) AND p.decision = 'class' "
        "GROUP BY p.label_id ORDER BY n DESC", args)
    per_day = store.query(
        f"SELECT substr(at, 1, 10) AS day, COUNT(*) AS n, SUM(decision = 'unknown') AS unknown FROM predictions "  # nosec B608  # fixed text, ? placeholders
        f"WHERE {where} GROUP BY day ORDER BY day", args)
    for d in per_day:
        d["rate"] = d["unknown"] / d["n"] if d["n"] else 0.0
    sources = {r["source"]: r["n"] for r in store.query(
        f"SELECT source, COUNT(*) AS n FROM predictions WHERE {where} GROUP BY source", args)}  # nosec B608  # fixed text
    versions = [r["model_version"] for r in store.query(
        f"SELECT DISTINCT model_version FROM predictions WHERE {where} ORDER BY model_version", args)]  # nosec B608  # fixed text
    total = sum(d["n"] for d in per_day)
    return {"total": total, "unknown": sum(d["unknown"] for d in per_day), "per_class": per_class,
            "per_day": per_day, "sources": sources, "versions": versions}
