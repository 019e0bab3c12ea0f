"""Labels and images that a training task depends on cannot be changed under it."""
import json

import pytest

from core import images, labels
from core.i18n import UserError
from core.store import now_iso


def _image(store, label_id, n, split):
    return store.insert("images", {"sha256": f"{n:064x}", "path": f"images/{n}.png", "label_id": label_id,
                                      "split": split, "width": 1, "height": 1, "bytes": 1,
                                      "uploaded_by": "eri", "uploaded_at": now_iso()})


def _task(store, label_ids, status):
    run_id = store.insert("runs", {"name": "r", "encoder": "e5", "config": "{}", "created_by": "rei",
                                      "created_at": now_iso()})
    store.insert("tasks", {"run_id": run_id, "idx": 0, "label_ids": json.dumps(label_ids), "status": status,
                              "created_at": now_iso()})
    return run_id


@pytest.fixture
def two_labels(store, expert, reviewer):
    a = labels.approve(store, reviewer, labels.propose(store, expert, "錆")["id"])
    b = labels.approve(store, reviewer, labels.propose(store, expert, "汚れ")["id"])
    return a, b


def test_label_in_a_queued_task_cannot_be_merged_or_retired(store, reviewer, two_labels):
    a, b = two_labels
    _task(store, [a["id"]], "queued")
    for action in (lambda: labels.merge(store, reviewer, b["id"], a["id"]),
                   lambda: labels.merge(store, reviewer, a["id"], b["id"]),
                   lambda: labels.retire(store, reviewer, a["id"])):
        with pytest.raises(UserError) as err:
            action()
        assert err.value.key == "labels.in_training"
        assert "学習タスク" in err.value.message("ja") and "training task" in err.value.message("en")
    assert labels.get_label(store, a["id"])["status"] == "approved"
    assert labels.get_label(store, b["id"])["status"] == "approved"


def test_images_of_a_running_task_cannot_be_moved_or_deleted(store, reviewer, two_labels):
    a, b = two_labels
    image = _image(store, a["id"], 1, "train")
    _task(store, [a["id"]], "running")
    with pytest.raises(UserError):
        images.delete_images(store, reviewer, [image])
    with pytest.raises(UserError):
        images.move_images(store, reviewer, [image], b["id"])
    with pytest.raises(UserError):                         # nor can images be moved into it
        images.move_images(store, reviewer, [_image(store, b["id"], 2, "train")], a["id"])
    assert store.query_one("SELECT label_id FROM images WHERE id = ?", (image,))["label_id"] == a["id"]


def test_a_learned_label_keeps_its_last_holdout_image(store, reviewer, two_labels):
    a, b = two_labels
    holdout = _image(store, a["id"], 1, "holdout")
    train = _image(store, a["id"], 2, "train")
    _task(store, [a["id"]], "done")
    with pytest.raises(UserError) as err:
        images.delete_images(store, reviewer, [holdout])
    assert err.value.key == "images.keep_holdout"
    assert images.delete_images(store, reviewer, [train]) == 1   # train images may still go
    assert store.query_one("SELECT COUNT(*) AS n FROM images WHERE id = ?", (holdout,))["n"] == 1
