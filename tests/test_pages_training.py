"""Train / History / Predict pages in AppTest, and the run/task service rules behind them."""
from __future__ import annotations

import json
import socket
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, runs
from core.auth import Actor
from core.i18n import UserError
from core.store import Store, now_iso
from test_worker import REPO, REVIEWER, make_labels
from tests.conftest import log_in_page

EXPERT = Actor("eri", "expert")
SUPERVISOR = Actor("sora", "supervisor")


def page(name: str, home, actor: Actor, lang: str = "en") -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=60)
    log_in_page(at, home, actor)
    at.session_state["lang"] = lang
    return at


def fake_live_worker(store: Store) -> None:
    """A registered worker with a fresh heartbeat, so the page does not spawn a real one."""
    store.execute("INSERT INTO workers (id, pid, host, device, started_at, heartbeat_at) VALUES (?,?,?,?,?,?)",
                  ("test-worker", 1, socket.gethostname(), "cuda:0 (Test GPU)", now_iso(), time.time() + 3600))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    return tmp_path / "home"


# ---- service rules ----------------------------------------------------------------------------------

def test_request_task_refuses_ineligible_labels(home):
    store = Store(home)
    ids = make_labels(store, ["cat", "dog"])
    from core import labels
    pending = labels.propose(store, REVIEWER, "bird", create_entry=True)        # proposed, no images
    run = runs.create_run(store, EXPERT, "r")
    with pytest.raises(UserError) as err:
        runs.request_task(store, EXPERT, run["id"], [pending["id"]])
    assert err.value.key == "runs.label_not_approved"
    labels.approve(store, REVIEWER, pending["id"])
    with pytest.raises(UserError) as err:
        runs.request_task(store, EXPERT, run["id"], [pending["id"]])
    assert err.value.key == "images.not_ready" and "bird" in err.value.message("en")
    with pytest.raises(UserError) as err:
        runs.request_task(store, EXPERT, run["id"], [ids["cat"]], {"epochs": 0})
    assert err.value.key == "runs.bad_config"
    with pytest.raises(UserError) as err:
        runs.request_task(store, EXPERT, run["id"], [ids["cat"]], {"exemplars_per_class": 5})
    assert err.value.key == "runs.bad_config"                                 # fixed by the run
    with pytest.raises(UserError) as err:
        runs.request_task(store, SUPERVISOR, run["id"], [ids["cat"]])
    assert err.value.key == "err.forbidden"
    assert store.query("SELECT * FROM tasks") == [] and store.query("SELECT * FROM jobs") == []

    runs.request_task(store, EXPERT, run["id"], [ids["cat"]])
    with pytest.raises(UserError) as err:
        runs.request_task(store, EXPERT, run["id"], [ids["cat"], ids["dog"]])
    assert err.value.key == "runs.label_in_run"
    # another run may learn the same label (so runs can be compared)
    other = runs.create_run(store, EXPERT, "r2", config={"epochs": 3})
    assert other["config"]["epochs"] == 3 and other["config"]["softness"] == 13.0
    assert runs.request_task(store, EXPERT, other["id"], [ids["cat"]])["task"]["idx"] == 0
    audit = [a["action"] for a in store.audit_rows("task")]
    assert audit.count("task.request") == 2


def test_soft_label_preview_names_the_nearest_trained_classes(home):
    store = Store(home)
    ids = make_labels(store, ["cat", "dog", "bird"])
    run = runs.create_run(store, EXPERT, "r")
    store.db["tasks"].insert({"run_id": run["id"], "idx": 0, "label_ids": json.dumps([ids["cat"], ids["dog"]]),
                              "status": "done", "created_at": now_iso()})
    [preview] = runs.soft_label_preview(store, run["id"], [ids["bird"]], k=2)
    assert preview["name"] == "bird"
    assert {n["label_id"] for n in preview["neighbours"]} == {ids["cat"], ids["dog"]}
    weights = [preview["self_weight"]] + [n["soft_weight"] for n in preview["neighbours"]]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)         # q over the three classes the task sees
    cosines = [n["cosine"] for n in preview["neighbours"]]
    assert cosines == sorted(cosines, reverse=True)


# ---- pages ------------------------------------------------------------------------------------------

def test_train_page_creates_a_run_and_queues_a_task(home):
    store = Store(home)
    ids = make_labels(store, ["cat", "dog"])
    from core import labels
    labels.propose(store, REVIEWER, "bird", create_entry=True)
    fake_live_worker(store)
    at = page("train", home, EXPERT)
    at.run()
    assert not at.exception
    assert any("Test GPU" in c.value for c in at.caption)                # the worker's device is shown
    at.text_input(key="tr_new_name").input("first run")
    at.number_input(key="tr_new_epochs").set_value(3)
    at.button(key="tr_create").click().run()
    assert not at.exception
    [run] = runs.list_runs(store)
    assert run["name"] == "first run" and run["config"]["epochs"] == 3 and run["encoder"] == "tiny-test"

    picker = at.multiselect(key=f"tr_labels_{run['id']}")
    assert len(picker.options) == 2                                       # bird is proposed: not offered
    assert any("bird" in str(df.value) for df in at.dataframe)            # ...but listed with its reason
    picker.set_value([o for o in runs.label_eligibility(store, run["id"]) if o["eligible"]]).run()
    at.number_input(key=f"tr_task_{run['id']}_epochs").set_value(2)
    at.button(key="tr_start").click().run()
    assert not at.exception, at.exception
    [job] = jobs.list_jobs(store, run_id=run["id"])
    assert job["status"] == "queued" and job["created_by"] == "eri"
    assert sorted(job["payload"]["label_ids"]) == sorted(ids.values())
    assert job["payload"]["overrides"] == {"epochs": 2}
    assert len(store.query("SELECT * FROM workers")) == 1                 # no second worker spawned
    # a fresh browser session sees the same job
    again = page("train", home, EXPERT)
    again.run()
    assert any(f"Job {job['id']}" in m.value for m in again.markdown)


def test_train_page_shows_live_progress_and_cancels(home):
    store = Store(home)
    ids = make_labels(store, ["cat", "dog"])
    fake_live_worker(store)
    run = runs.create_run(store, EXPERT, "r")
    job_id = runs.request_task(store, EXPERT, run["id"], list(ids.values()))["job_id"]
    jobs.claim(store, "test-worker")
    jobs.set_progress(store, job_id, 0.5, "epoch 3/10 · batch 1/2", {
        "task": 0, "device": "cuda:0 (Test GPU)", "epoch": 3, "epochs": 10, "images_per_s": 1234.0, "eta_s": 75,
        "curve": [{"step": s, "epoch": 1, "loss": 5 - s / 10, "loss_clip": 3.0, "loss_sgrl": 2.0, "loss_sgkd": 0.0}
                  for s in range(1, 20)]})
    at = page("train", home, EXPERT)
    at.run()
    assert not at.exception
    assert at.get("progress")[0].value == 50
    assert any("1:15" in c.value and "1234 images/s" in c.value for c in at.caption)
    at.button(key=f"tr_cancel_{job_id}").click().run()
    assert jobs.get_job(store, job_id)["cancel_requested"] == 1


def test_supervisor_reads_train_page_without_controls(home):
    store = Store(home)
    make_labels(store, ["cat"])
    runs.create_run(store, EXPERT, "r")
    at = page("train", home, SUPERVISOR, lang="ja")
    at.run()
    assert not at.exception
    assert any("閲覧のみ" in i.value for i in at.info)
    assert not [b for b in at.button if b.key in ("tr_start", "tr_create")]


@pytest.mark.parametrize("name", ["history", "predict"])
def test_history_and_predict_render_without_runs(home, name):
    Store(home)
    at = page(name, home, SUPERVISOR)
    at.run()
    assert not at.exception
    assert at.info and "run" in at.info[0].value.lower()


def test_history_compares_two_runs(home):
    store = Store(home)
    for name, accs in (("a", [[0.9], [0.7, 0.8]]), ("b", [[0.8], [0.6, 0.9]])):
        run = runs.create_run(store, EXPERT, name)
        for t, row in enumerate(accs):
            store.db["tasks"].insert({"run_id": run["id"], "idx": t, "label_ids": json.dumps([10 * t, 10 * t + 1]),
                                      "status": "done", "created_at": now_iso()})
            for u, acc in enumerate(row):
                store.db["metrics"].insert({"run_id": run["id"], "trained_task": t, "eval_task": u, "acc": acc,
                                            "acc_task_aware": acc, "n_classes": 2, "n_images": 4,
                                            "created_at": now_iso()})
    summary = runs.run_summary(store, 1)["summary"]
    assert summary["aia"] == pytest.approx((0.9 + 0.75) / 2) and summary["bwt"] == pytest.approx(-0.2)
    csv_text = runs.metrics_csv(store, SUPERVISOR, 1)
    assert csv_text.splitlines()[0].startswith("run_id,run_name") and len(csv_text.splitlines()) == 4
    at = page("history", home, SUPERVISOR)
    at.run()
    at.toggle(key="hi_compare").set_value(True).run()
    assert not at.exception
    metrics = {(m.label, m.value) for m in at.metric}
    assert ("Average incremental accuracy", "82.5%") in metrics           # run a
    assert ("Average incremental accuracy", "77.5%") in metrics           # run b, side by side
