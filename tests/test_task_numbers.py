"""People count tasks from 1: messages that name a task (a refusal raised by a service, a reason the
Train page lists) carry the 1-based number, so a page, the CLI and a test read the same text."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from core import labels, runs
from core.auth import Actor
from core.i18n import UserError, t
from core.store import Store, now_iso
from test_worker import REPO, REVIEWER, make_labels
from tests.conftest import log_in_page

EXPERT = Actor("eri", "expert")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    return tmp_path / "home"


def test_a_label_already_in_the_first_task_is_refused_naming_task_1(home):
    store = Store(home)
    ids = make_labels(store, ["cat", "dog"])
    run = runs.create_run(store, EXPERT, "r")
    runs.request_task(store, EXPERT, run["id"], [ids["cat"]])          # idx 0: people read "task 1"
    with pytest.raises(UserError) as err:
        runs.request_task(store, EXPERT, run["id"], [ids["dog"], ids["cat"]])
    assert err.value.key == "runs.label_in_run" and err.value.params["task"] == 1
    assert err.value.message("en") == "Label 'cat' is already in task 1 of this run."
    assert "タスク 1 に" in err.value.message("ja")


def test_the_in_run_reason_names_the_task_from_1(home):
    store = Store(home)
    ids = make_labels(store, ["cat", "dog"])
    run = runs.create_run(store, EXPERT, "r")
    runs.request_task(store, EXPERT, run["id"], [ids["cat"]])
    runs.request_task(store, EXPERT, run["id"], [ids["dog"]])          # idx 1: "task 2"
    reasons = {row["name"]: row["reason"] for row in runs.label_eligibility(store, run["id"])}
    key, params = reasons["dog"]
    assert (key, params) == ("runs.reason.in_run", {"task": 2})
    assert t(key, "en", **params) == "already in task 2 of this run"            # no page arithmetic needed
    assert t(*reasons["cat"][:1], "ja", **reasons["cat"][1]) == "このランのタスク 1 に含まれています"


def test_a_label_in_a_queued_first_task_cannot_change_and_the_refusal_says_task_1(home):
    store = Store(home)
    label = labels.approve(store, REVIEWER, labels.propose(store, REVIEWER, "錆", create_entry=True)["id"])
    run = runs.create_run(store, EXPERT, "r")
    store.insert("tasks", {"run_id": run["id"], "idx": 0, "label_ids": json.dumps([label["id"]]),
                              "status": "queued", "created_at": now_iso()})
    with pytest.raises(UserError) as err:
        labels.retire(store, REVIEWER, label["id"])
    assert err.value.key == "labels.in_training" and err.value.params["task"] == 1
    assert "task 1," in err.value.message("en") and "タスク 1、" in err.value.message("ja")


def test_no_message_carries_a_0_based_task_index_parameter():
    """A message parameter named ``idx`` was 0-based; the catalogue's task numbers are ``{task}``."""
    from core.i18n import STRINGS

    for key in ("runs.label_in_run", "runs.reason.in_run", "labels.in_training"):
        for lang, text in STRINGS[key].items():
            assert "{task}" in text and "{idx}" not in text, (key, lang, text)


def test_the_train_page_through_the_app_lists_the_in_run_reason_as_task_1(home, monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)
    store = Store(home)
    ids = make_labels(store, ["cat", "dog"])
    run = runs.create_run(store, EXPERT, "r")
    runs.request_task(store, EXPERT, run["id"], [ids["cat"]])
    store.close()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    log_in_page(at, home, EXPERT, lang="ja")
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    [reasons] = [df.value for df in at.dataframe if "理由" in df.value.columns]
    assert list(reasons["理由"]) == ["このランのタスク 1 に含まれています"]
