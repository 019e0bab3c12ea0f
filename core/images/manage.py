"""Moving and deleting images, with the guards that protect training sets."""
from __future__ import annotations

from typing import Iterable

from core import labels as label_service
from core.auth import Actor, require
from core.i18n import UserError
from core.images.base import image_path, open_label, setting
from core.images.catalogue import get_image
from core.images.ingest import ensure_min_holdout
from core.store import Store


def move_images(store: Store, actor: Actor, image_ids: Iterable[int], target_label_id: int) -> int:
    """Move images to another open label; each image keeps its split (fixed at upload)."""
    require(actor, "image.manage")
    moved = 0
    sources: set[int] = set()
    with store.transaction():
        target = open_label(store, target_label_id)
        rows = [get_image(store, image_id) for image_id in image_ids]
        _refuse_changes_to_training_sets(store, rows, extra_label_ids=[target["id"]])
        for row in rows:
            if row["label_id"] == target["id"]:
                continue
            store.execute("UPDATE images SET label_id = ? WHERE id = ?", (target["id"], row["id"]))
            store.audit(actor.username, "image.move", "image", row["id"], sha256=row["sha256"],
                        before=row["label_id"], after=target["id"])
            sources.add(row["label_id"])
            moved += 1
        for label_id in sorted(sources | {target["id"]}):
            ensure_min_holdout(store, label_id)
    return moved


def _refuse_changes_to_training_sets(store: Store, rows: list[dict], extra_label_ids: Iterable[int] = ()) -> None:
    """Images of a label in a queued or running task stay put until it ends; and a label a run has
    already learned keeps at least ``min_holdout_images`` holdout images, so its accuracy can still be
    measured when later tasks are evaluated."""
    touched = {row["label_id"] for row in rows} | set(extra_label_ids)
    for label_id in sorted(touched):
        label_service.refuse_while_training(store, label_service.get_label(store, label_id))
    min_holdout = setting(store, "min_holdout_images")
    for label_id in sorted({row["label_id"] for row in rows}):
        if not label_service.tasks_with_label(store, label_id, ("done",)):
            continue
        leaving = sum(1 for row in rows if row["label_id"] == label_id and row["split"] == "holdout")
        have = store.query_one("SELECT COUNT(*) AS n FROM images WHERE label_id = ? AND split = 'holdout'",
                               (label_id,))["n"]
        if leaving and have - leaving < min_holdout:
            label = label_service.get_label(store, label_id)
            raise UserError("images.keep_holdout", name=label["name"], n=min_holdout)


def delete_images(store: Store, actor: Actor, image_ids: Iterable[int]) -> int:
    require(actor, "image.manage")
    doomed: list[dict] = []
    with store.transaction():
        rows = [get_image(store, image_id) for image_id in image_ids]
        _refuse_changes_to_training_sets(store, rows)
        for row in rows:
            store.execute("DELETE FROM images WHERE id = ?", (row["id"],))
            store.audit(actor.username, "image.delete", "image", row["id"], sha256=row["sha256"],
                        label_id=row["label_id"], split=row["split"], original_name=row["original_name"])
            doomed.append(row)
    # Files go only after the rows are gone for good; a crash in between leaves an unreferenced file,
    # never a row pointing at nothing.
    for row in doomed:
        image_path(store, row).unlink(missing_ok=True)
        for thumb in (store.home / "cache" / "thumbs").glob(f"{row['sha256']}_*.jpg"):
            thumb.unlink(missing_ok=True)
    return len(doomed)
