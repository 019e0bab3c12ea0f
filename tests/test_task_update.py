"""Updating trained classes with new images (issue 17 item 3) and the counts behind every accuracy
(item 5): the service rules, and two real train jobs on the tiny encoder run in this process."""
from __future__ import annotations

import json
import math

import pytest

from core import images, jobs, runs, settings
from core.auth import SYSTEM, Actor
from core.i18n import UserError
from core.store import Store
from core.training import checkpoint_path, run_train_job
from test_worker import REVIEWER, class_image, make_labels

SUPERVISOR = Actor("sora", "supervisor")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    s = Store(tmp_path / "home")
    yield s
    s.close()


def run_next_job(store: Store) -> dict:
    job = jobs.claim(store, "w1")
    assert job is not None
    return run_train_job(store, job, worker_id="w1", device="cpu")


def add_train_images(store: Store, label_id: int, name: str, n: int, start: int) -> list[int]:
    """``n`` new images of ``name`` that land in the train split (the split is hash-based)."""
    added, seed = [], start
    while len(added) < n:
        [r] = images.ingest_uploads(store, REVIEWER, label_id, [(f"{name}-{seed}.png", class_image(name, seed))])
        seed += 1
        if r.status == "added" and images.get_image(store, r.image_id)["split"] == "train":
            added.append(r.image_id)
    return added


def test_wilson_interval_is_honest_about_small_holdouts():
    low, high = runs.wilson_interval(14, 14)
    assert high == 1.0 and 0.78 < low < 0.79          # 14 of 14 right: 78–100 %, not "100 %"
    low, high = runs.wilson_interval(3, 6)
    assert low == pytest.approx(0.1876, abs=1e-3) and high == pytest.approx(0.8124, abs=1e-3)
    assert runs.wilson_interval(0, 0) == (None, None)
    assert runs.wilson_interval(0, 20)[0] == 0.0 and runs.wilson_interval(0, 20)[1] > 0.1


def test_summary_of_a_run_with_an_update_counts_each_class_once():
    # tasks: new (2 classes), new (2 classes), update (of task 1's classes): three rows, two columns
    acc = [[0.9], [0.7, 0.8], [0.8, 0.8, math.nan]]
    summary = runs.summarize_tasks(acc, [2, 2, 1], ["new", "new", "update"])
    assert summary["per_step"] == pytest.approx([0.9, 0.75, 0.8])
    assert summary["last"] == pytest.approx(0.8) and summary["aia"] == pytest.approx((0.9 + 0.75 + 0.8) / 3)
    assert summary["forgetting"] == pytest.approx(((0.9 - 0.8) + (0.8 - 0.8)) / 2)
    assert summary["bwt"] == pytest.approx(((0.8 - 0.9) + (0.8 - 0.8)) / 2)
    plain = [[0.9], [0.7, 0.8]]
    from core.sg.metrics import summarize
    assert runs.summarize_tasks(plain, [2, 2], ["new", "new"]) == summarize(plain, [2, 2])


def test_holdout_rule_gives_5_images_or_20_percent(store):
    assert [images.holdout_target(n, 5, 0.2) for n in (4, 5, 9, 10, 24, 25, 200)] == [0, 1, 1, 2, 4, 5, 5]
    ids = make_labels(store, ["cat"], per_label=30)
    n_holdout = images.readiness(store, [ids["cat"]])[ids["cat"]].n_holdout
    assert n_holdout >= 5                        # whatever the hashes gave, the class can be evaluated
    settings.update(store, SYSTEM, {"eval_min_holdout_images": 8})
    images.ensure_min_holdout(store, ids["cat"])
    assert images.readiness(store, [ids["cat"]])[ids["cat"]].n_holdout >= 6   # 20 % of 30+ images


def test_update_task_learns_only_the_new_images_and_history_counts_them(store):
    ids = make_labels(store, ["cat", "dog", "bird", "horse"], per_label=8)
    run = runs.create_run(store, REVIEWER, "u", config={"epochs": 1, "batch_size": 16})
    # nothing to update before anything is learned
    with pytest.raises(UserError) as err:
        runs.request_task(store, REVIEWER, run["id"], [ids["cat"]], kind="update")
    assert err.value.key == "runs.update_not_learned"
    runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    runs.request_task(store, REVIEWER, run["id"], [ids["bird"], ids["horse"]])
    run_next_job(store)
    run_next_job(store)
    learned = {r["image_id"] for r in store.query("SELECT image_id FROM task_images")}
    train_ids = {r["id"] for r in store.query("SELECT id FROM images WHERE split = 'train'")}
    assert learned == train_ids                            # every train image of both tasks recorded

    # a trained class without new images: no update offered, and the request is refused
    rows = {r["id"]: r for r in runs.update_eligibility(store, run["id"])}
    assert set(rows) == set(ids.values()) and not any(r["eligible"] for r in rows.values())
    assert rows[ids["cat"]]["reason"] == ("runs.reason.no_new_images", {"task": 1})
    with pytest.raises(UserError) as err:
        runs.request_task(store, REVIEWER, run["id"], [ids["cat"]], kind="update")
    assert err.value.key == "runs.update_no_new" and "cat" in err.value.message("en")
    eligibility = {r["id"]: r for r in runs.label_eligibility(store, run["id"])}
    assert eligibility[ids["cat"]]["reason"][0] == "runs.reason.in_run"

    # ten new images of "cat": the Train page offers the update instead of a dead end
    new_ids = add_train_images(store, ids["cat"], "cat", 10, start=50_000)
    eligibility = {r["id"]: r for r in runs.label_eligibility(store, run["id"])}
    assert eligibility[ids["cat"]]["reason"] == ("runs.reason.in_run_update", {"task": 1, "n": 10})
    rows = {r["id"]: r for r in runs.update_eligibility(store, run["id"])}
    assert rows[ids["cat"]]["eligible"] and rows[ids["cat"]]["n_new"] == 10
    with pytest.raises(UserError) as err:          # a new-class task still refuses a learned label
        runs.request_task(store, REVIEWER, run["id"], [ids["cat"]])
    assert err.value.key == "runs.label_in_run"
    queued = runs.request_task(store, REVIEWER, run["id"], [ids["cat"]], kind="update")
    assert queued["task"]["kind"] == "update" and queued["task"]["idx"] == 2
    rows = {r["id"]: r for r in runs.update_eligibility(store, run["id"])}
    assert rows[ids["cat"]]["reason"] == ("runs.reason.pending", {"task": 3})
    result = run_next_job(store)
    assert result["kind"] == "update"

    from core.sg.checkpoint import load_checkpoint
    before = load_checkpoint(checkpoint_path(store, run["id"], 1))
    after = load_checkpoint(checkpoint_path(store, run["id"], 2))
    # the class table keeps its rows; the task learned exactly the ten new images
    assert after["class_table"]["class_ids"] == before["class_table"]["class_ids"]
    assert sorted(i for i, _ in after["extra"]["learned_images"]) == sorted(new_ids)
    assert {r["image_id"] for r in store.query("SELECT image_id FROM task_images WHERE task_id = ?",
                                               (queued["task"]["id"],))} == set(new_ids)
    assert not any(r["eligible"] for r in runs.update_eligibility(store, run["id"]))

    # History: three rows, columns only for the two new-class tasks; every cell with its counts
    summary = runs.run_summary(store, run["id"])
    assert summary["kinds"] == ["new", "new", "update"]
    assert [[not math.isnan(v) for v in row] for row in summary["acc"]] == [
        [True], [True, True], [True, True, False]]
    holdout = {lid: images.readiness(store, [lid])[lid].n_holdout for lid in ids.values()}
    assert summary["n"][2][0] == holdout[ids["cat"]] + holdout[ids["dog"]]
    assert summary["n"][2][1] == holdout[ids["bird"]] + holdout[ids["horse"]]
    for t, row in enumerate(summary["acc"]):
        for u, a in enumerate(row):
            if not math.isnan(a):
                assert summary["correct"][t][u] == round(a * summary["n"][t][u])
    assert summary["summary"]["last"] == pytest.approx(sum(summary["acc"][2][:2]) / 2)
    csv_rows = runs.metrics_csv(store, SUPERVISOR, run["id"]).splitlines()
    assert "n_correct" in csv_rows[0] and "ci95_low" in csv_rows[0] and ",update," in csv_rows[-1]

    # the latest model's confusion matrix covers every holdout image of the four classes
    task = runs.list_tasks(store, run["id"])[2]
    evaluation = task["evaluation"]
    assert evaluation["class_ids"] == before["class_table"]["class_ids"]
    confusion = evaluation["confusion"]
    assert [sum(row) for row in confusion] == [holdout[lid] for lid in evaluation["class_ids"]]
    right = sum(confusion[i][i] for i in range(len(confusion)))
    assert right == summary["correct"][2][0] + summary["correct"][2][1]
    done = [a for a in store.audit_rows("task", queued["task"]["id"]) if a["action"] == "task.done"]
    assert done and json.loads(json.dumps(done[-1]["details"]))["kind"] == "update"


def test_migration_records_what_tasks_done_before_it_learned(tmp_path):
    """A home from before migration 4: a done task's labels' train images uploaded before it finished
    count as learned; one uploaded afterwards is new (an update may learn it)."""
    import sqlite3

    from core.store import MIGRATIONS, _split_sql

    home = tmp_path / "old"
    home.mkdir()
    conn = sqlite3.connect(home / "sgcl.db")
    for script in MIGRATIONS[:3]:
        for statement in _split_sql(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO labels (id, name, name_key, status, created_by, created_at) VALUES (1, 'cat', 'cat', 'trained', 'x', 'x')")
    for i, (split, at) in enumerate((("train", "2026-01-01T00:00:00+00:00"), ("holdout", "2026-01-01T00:00:00+00:00"),
                                     ("train", "2026-01-01T00:00:05+00:00"), ("train", "2026-02-01T00:00:00+00:00")), 1):
        conn.execute("INSERT INTO images (id, sha256, path, label_id, split, width, height, bytes, uploaded_by, "
                     "uploaded_at) VALUES (?,?,?,?,?,?,?,?,?,?)", (i, f"s{i}", f"images/s{i}.png", 1, split, 8, 8, 1, "x", at))
    conn.execute("INSERT INTO runs (id, name, encoder, config, created_by, created_at) VALUES (1, 'r', 'tiny-test', '{}', 'x', 'x')")
    conn.execute("INSERT INTO tasks (id, run_id, idx, label_ids, status, created_at) VALUES (1, 1, 0, '[1]', 'done', 'x')")
    conn.execute("INSERT INTO audit (at, actor, action, target_type, target_id) VALUES "
                 "('2026-01-02T00:00:00+00:00', 'w', 'task.done', 'task', '1')")
    conn.commit()
    conn.close()
    store = Store(home)
    try:
        assert {r["image_id"] for r in store.query("SELECT image_id FROM task_images")} == {1, 3}
        assert runs.new_train_images(store, 1, [1]) == {1: [4]}
        assert runs.list_tasks(store, 1)[0]["kind"] == "new"
    finally:
        store.close()
