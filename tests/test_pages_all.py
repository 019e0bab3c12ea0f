"""Every page, in both languages, as every role that can open it, drawn through app.py (sidebar and
navigation included) against a data home that has something of everything: proposed/approved/trained/
rejected labels, a label on a new draft glossary term, images, a run with two finished tasks (one with
its own configuration), a running job with a loss curve and a phase message, failed and cancelled jobs,
feature-cache files and audit rows.

Every text the page renders — titles, captions, alerts, metric labels, widget labels, options and
help, table headers and cells, chart titles, legends and their data — is checked for what a person
must never read: a message key (``train.phase.training``), an encoded message (``key|{...}``), a
glossary entry id (``user.96e9c557b6``), raw float lists (``acc=[0.69999998880…``), UTC ISO
timestamps, loss term names (``loss_clip``), and in the Japanese UI the internal English codes of
statuses, job states, phases, methods and match tiers (``未承認（proposed）``).
"""
from __future__ import annotations

import ast
import json
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import glossary_store, i18n, images, jobs, labels, runs, sessions, settings, users
from core.auth import ROLES, SYSTEM, Actor
from core.jobs import encode_message
from core.store import Store, now_iso
from test_worker import class_image

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "a long pass phrase 4 tests"
USERS = {"admin": "admin", "eri": "expert", "rei": "reviewer", "sora": "supervisor"}


def _pages() -> list[tuple[str, str | None]]:
    """(page file, permission or None) from app.py's PAGES table (app.py cannot be imported in tests)."""
    tree = ast.parse((REPO / "app.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PAGES" for t in node.targets):
            return [(path, permission) for path, _, _, permission in ast.literal_eval(node.value)]
    raise AssertionError("app.py has no PAGES table")


PAGES = _pages()


def roles_for(permission: str | None) -> list[str]:
    return [r for r in ROLES if permission is None or Actor("x", r).can(permission)]


# ---- what must never be on screen ---------------------------------------------------------------------
ENCODED_MESSAGE = re.compile(r"[a-z_]+\.[a-z_.]+\|\{")
ENTRY_ID = re.compile(r"\buser\.[0-9a-f]{10}\b")
LONG_FLOAT = re.compile(r"\d\.\d{8,}")
ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
LOSS_TERM = re.compile(r"\bloss_[a-z]+\b")
TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_~]*(?:\.[A-Za-z0-9_~]+)+")


def _english_codes() -> set[str]:
    """Internal codes that must be translated in the Japanese UI (words a Japanese text never needs)."""
    from core.sg.methods import METHODS
    from glossary.model import STATUSES as ENTRY_STATUSES, TIERS

    codes = set(labels.STATUSES) | set(jobs.STATUSES) | set(ENTRY_STATUSES) | {"holdout"}
    codes |= {m for m in METHODS} | {t for t in TIERS if t.isalpha()}
    return codes - {"none"}


JA_CODES = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(sorted(_english_codes(), key=len, reverse=True))
                      + r")(?![A-Za-z0-9_])")


def problems_in(text: str, lang: str) -> list[str]:
    found = [tok for tok in TOKEN.findall(text) if tok in i18n.STRINGS]
    for pattern in (ENCODED_MESSAGE, ENTRY_ID, LONG_FLOAT, ISO_UTC, LOSS_TERM):
        found += pattern.findall(text) if pattern.groups == 0 else [m.group(0) for m in pattern.finditer(text)]
    if lang == "ja":
        found += [m.group(0) for m in JA_CODES.finditer(text)]
    return found


# ---- every text an AppTest run rendered ------------------------------------------------------------
SKIP_FIELDS = {"id", "formId", "data", "datasets", "spec", "value", "default", "rawValue", "setValue",
               "arrowData", "styles", "args", "deltaPath"}


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() if k not in SKIP_FIELDS for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _chart_texts(proto) -> list[str]:
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    spec = json.loads(proto.spec or "{}")
    texts = []

    def titles(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "title" and isinstance(v, str):
                    texts.append(v)
                elif k != "datasets":
                    titles(v)
        elif isinstance(node, list):
            for v in node:
                titles(v)

    titles(spec)
    for rows in (spec.get("datasets") or {}).values():       # inline data: legend entries, labels
        texts += [str(v) for row in rows for v in row.values() if isinstance(v, str)]
    for named in proto.datasets:
        frame = convert_arrow_bytes_to_pandas_df(named.data.data)
        texts += [str(v) for col in frame.columns if frame[col].dtype == object for v in frame[col]]
    return texts


def rendered_texts(root) -> list[str]:
    """Texts under ``root`` (an AppTest's tree, or one of its blocks such as ``at.sidebar``)."""
    from google.protobuf.json_format import MessageToDict

    texts: list[str] = []

    def walk(node):
        children = getattr(node, "children", None)
        if children:
            for child in children.values():
                walk(child)
            return
        kind = getattr(node, "type", "")
        if kind in ("text_input", "text_area", "number_input"):
            texts.append(node.label)          # what a user typed is theirs, not the page's
            return
        if kind in ("arrow_data_frame", "dataframe", "table") and hasattr(node, "value"):
            frame = node.value
            frame = frame.data if hasattr(frame, "data") else frame           # a Styler
            texts.extend(map(str, frame.columns))
            texts.extend(map(str, frame.index))
            texts.extend(str(v) for v in frame.to_numpy().ravel() if isinstance(v, str))
        proto = getattr(node, "proto", None)
        if proto is None:
            return
        if kind in ("vega_lite_chart", "arrow_vega_lite_chart"):
            texts.extend(_chart_texts(proto))
            return
        texts.extend(_strings(MessageToDict(proto)))

    walk(getattr(root, "_tree", root))
    return texts


# ---- a data home with something of everything ------------------------------------------------------------
def _done_task(store: Store, run_id: int, ids: list[int], overrides: dict | None, accs: list[float],
               rejected: list[float | None]) -> None:
    queued = runs.request_task(store, Actor("rei", "reviewer"), run_id, ids, overrides)
    t = queued["task"]["idx"]
    store.execute("UPDATE jobs SET status = 'done', progress = 1.0, attempts = 1, started_at = ?, finished_at = ?, "
                  "worker = 'test' WHERE id = ?", (now_iso(), now_iso(), queued["job_id"]))
    store.execute("UPDATE tasks SET status = 'done' WHERE id = ?", (queued["task"]["id"],))
    for u, (acc, rej) in enumerate(zip(accs, rejected)):
        store.insert("metrics", {"run_id": run_id, "trained_task": t, "eval_task": u, "acc": acc,
                                    "acc_task_aware": min(1.0, acc + 0.1), "rejected": rej, "n_classes": 2,
                                    "n_images": 4, "created_at": now_iso()})
    labels.mark_trained(store, SYSTEM, ids)
    store.audit("test-worker", "task.done", "task", queued["task"]["id"], run_id=run_id, idx=t,
                acc=[0.69999998880 + u for u in range(len(accs))])


@pytest.fixture(scope="module")
def full_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("all-pages") / "home"
    store = Store(home)
    glossary_store.seed_if_empty(store)
    settings.update(store, SYSTEM, {"encoder": "tiny-test", "min_train_images": 3, "min_holdout_images": 1})
    for name, role in USERS.items():
        users.create_user(store, SYSTEM, name, PASSWORD, role)
    expert, reviewer = Actor("eri", "expert"), Actor("rei", "reviewer")
    made = {}
    for n, (name, style) in enumerate((("キズ", "cat"), ("ｻﾋﾞ", "dog"), ("飛行機", "bird"), ("ﾖｺﾞﾚ", "horse"))):
        label = labels.propose(store, expert, name, create_entry=True)          # 飛行機: a new draft term
        labels.approve(store, reviewer, label["id"])
        files = [(f"img-{n}-{i}.png", class_image(style, 100 * n + i)) for i in range(8)]
        images.ingest_uploads(store, expert, label["id"], files)
        while not images.readiness(store, [label["id"]])[label["id"]].ok:
            i = len(files)
            files.append((f"img-{n}-{i}.png", class_image(style, 100 * n + i)))
            images.ingest_uploads(store, expert, label["id"], files[-1:])
        made[name] = label["id"]
    labels.propose(store, expert, "cat", create_entry=True)                         # stays proposed
    rejected = labels.propose(store, expert, "ピンク", create_entry=True)
    labels.reject(store, reviewer, rejected["id"])
    # an older run whose jobs failed and were cancelled (messages stored as keys with parameters)
    other = runs.create_run(store, reviewer, "run two", config={"method": "ncm"})
    failed = jobs.enqueue(store, reviewer, "train", {"task_idx": 0}, run_id=other["id"])
    store.execute("UPDATE jobs SET status = 'failed', message = ?, error = 'Traceback: boom' WHERE id = ?",
                  (encode_message("jobs.msg.gave_up", attempts=3), failed))
    cancelled = jobs.enqueue(store, reviewer, "train", {"task_idx": 1}, run_id=other["id"])
    store.execute("UPDATE jobs SET status = 'cancelled', message = ? WHERE id = ?",
                  (encode_message("jobs.msg.previous_failed", job=failed), cancelled))
    # the newest run (shown first): two finished tasks, the second with its own configuration, and a
    # running third task with a loss curve (a plugin's term too) and a phase message
    run = runs.create_run(store, reviewer, "run one", config={"epochs": 2})
    _done_task(store, run["id"], [made["キズ"], made["ｻﾋﾞ"]], None, [0.667], [0.1])
    _done_task(store, run["id"], [made["飛行機"]], {"epochs": 3, "lr": 0.005}, [0.5, 1.0], [None, 0.0])
    queued = runs.request_task(store, reviewer, run["id"], [made["ﾖｺﾞﾚ"]])
    store.execute("INSERT INTO workers (id, pid, host, device, started_at, heartbeat_at) VALUES (?,?,?,?,?,?)",
                  ("test-worker", 1, socket.gethostname(), "cpu", now_iso(), time.time() + 3600))
    jobs.claim(store, "test-worker")
    jobs.set_progress(store, queued["job_id"], 0.4, encode_message("train.phase.batch", epoch=1, epochs=2, batch=1,
                                                                     batches=2),
                      {"device": "cpu", "images_per_s": 100.0, "eta_s": 12,
                       "curve": [{"step": s, "epoch": 1, "loss": 2.0 - s / 10, "loss_clip": 1.0, "loss_sgrl": 0.5,
                                  "loss_sgkd": 0.2, "loss_lwf": 0.1} for s in range(1, 6)]})
    # frozen-feature cache files, as core/sg/features.py lays them out
    for sha in [r["sha256"] for r in store.query("SELECT sha256 FROM images LIMIT 5")]:
        path = home / "cache" / "features" / "tiny-test-v1" / sha[:2] / f"{sha}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros((2, 8), np.float16))
    store.close()
    return home


def _app(home: Path, username: str, lang: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    store = Store(home)
    from pages.ui import SESSION_KEY

    at.session_state[SESSION_KEY] = sessions.start(store, username).token
    store.close()
    at.session_state["lang"] = lang
    return at


def _interactions(at: AppTest, page: str):
    """Open the parts of a page that only show after some typing or a choice (yields after each)."""
    if page == "pages/labels.py" and any(w.key == "propose_name" for w in at.text_input):
        at.text_input(key="propose_name").input("飛行機").run()
        yield
        at.text_input(key="propose_name").input("きず").run()
        yield
    elif page == "pages/glossary_terms.py":
        at.text_input(key="gloss_search").input("きず").run()
        yield
    elif page in ("pages/train.py", "pages/history.py"):
        at.selectbox(key="tr_run" if page == "pages/train.py" else "hi_run").select_index(1).run()   # the older run
        yield


@pytest.fixture
def no_worker_spawn(monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)
    monkeypatch.delenv("SGCL_ENCODER", raising=False)


# Pages allowed to fail the check (a strict xfail each, so a fix is noticed): none left.
KNOWN_GAPS: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["ja", "en"])
@pytest.mark.parametrize("page, permission", PAGES, ids=[Path(p).stem for p, _ in PAGES])
def test_page_shows_no_raw_key_or_internal_id(full_home, no_worker_spawn, monkeypatch, request, page, permission,
                                              lang):
    monkeypatch.setenv("SGCL_HOME", str(full_home))
    if page in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[page], strict=True))
    found = {}
    for role in roles_for(permission):
        username = next(u for u, r in USERS.items() if r == role)
        at = _app(full_home, username, lang)
        at.run()
        assert not at.exception, at.exception
        sidebar = rendered_texts(at.sidebar)        # AppTest keeps the sidebar of the first run only
        at.switch_page(page).run()
        assert not at.exception, (role, at.exception)
        assert at.title, f"{page} drew no title for {role}"
        texts = sidebar + rendered_texts(at)
        for _ in _interactions(at, page):
            assert not at.exception, (role, at.exception)
            texts += rendered_texts(at)
        for text in texts:
            for problem in problems_in(text, lang):
                found.setdefault(role, {}).setdefault(problem, text[:160])
    assert found == {}


def test_the_detector_finds_what_the_issue_saw():
    assert problems_in("train.phase.training", "ja") == ["train.phase.training"]
    assert problems_in('train.phase.batch|{"epoch": 2}', "en")
    assert problems_in("未承認（proposed）", "ja") == ["proposed"] and not problems_in("proposed", "en")
    assert problems_in("entry user.96e9c557b6", "en") == ["user.96e9c557b6"]
    assert problems_in("acc=[0.69999998880, 1]", "en")
    assert problems_in("2026-12-01T14:42:29+00:00", "en") and problems_in("loss_clip", "en")
    assert not problems_in("学習後のタスク 2 · 66.7% · 傷（キズ）", "ja")
