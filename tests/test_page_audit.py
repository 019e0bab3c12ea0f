"""Audit page (through app.py, a supervisor logged in) reads as people read: actions, kinds of target
and the system/anonymous actors in the reader's language, times in the configured zone, targets by
name (a label's term, a glossary term, "run · task 1", a setting's title) instead of internal ids, and
details as "item: value" with accuracies as percentages — in both languages, for rows written by the
real services. The catalogue covers every target type and detail item the code writes."""
from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone

import pytest
from streamlit.testing.v1 import AppTest

from core import labels, runs, settings, users
from core.auth import SYSTEM, Actor
from core.i18n import STRINGS, UserError
from core.store import Store
from test_pages_all import problems_in
from test_worker import REVIEWER, make_labels
from tests.conftest import REPO, log_in_page

SUPERVISOR = Actor("sora", "supervisor")
# Every row is dated yesterday 00:30 UTC (09:30 in Tokyo): inside the page's default 30-day range.
DAY = datetime.now(timezone.utc).date() - timedelta(days=1)
AT = f"{DAY.isoformat()}T00:30:00+00:00"


@pytest.fixture(scope="module")
def audit_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("audit-page") / "home"
    store = Store(home)
    settings.update(store, SYSTEM, {"encoder": "tiny-test", "min_train_images": 3, "min_holdout_images": 1})
    users.create_user(store, SYSTEM, "eri", "a long pass phrase 4 tests", "expert")
    users.authenticate(store, "eri", "a long pass phrase 4 tests")
    with pytest.raises(UserError):
        users.authenticate(store, "nobody", "whatever it is")                  # anonymous, unknown user
    ids = make_labels(store, ["cat", "dog"], per_label=6)
    plane = labels.propose(store, REVIEWER, "飛行機", create_entry=True)        # a new draft term user.<hex>
    labels.reject(store, REVIEWER, plane["id"])
    run = runs.create_run(store, REVIEWER, "first run", config={"method": "ncm"})
    queued = runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]], {"epochs": 3})
    # what the worker records when a task ends (a float32 accuracy, unrounded)
    store.audit("worker-1", "task.done", "task", queued["task"]["id"], run_id=run["id"], idx=0,
                acc=[0.699999988079071])
    store.execute("UPDATE audit SET at = ?", (AT,))
    made = {"run": run["id"], "plane": plane["id"], "entry": labels.get_label(store, plane["id"])["entry_id"]}
    store.close()
    return home, made


def _audit_page(audit_home, lang: str) -> AppTest:
    home, _ = audit_home
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    log_in_page(at, home, SUPERVISOR, lang=lang)
    at.run()
    at.switch_page("pages/audit.py").run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(autouse=True)
def _no_worker(monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)
    monkeypatch.delenv("SGCL_ENCODER", raising=False)


def _table(at: AppTest):
    return at.dataframe[0].value


def _row(table, action_col: str, action: str):
    rows = table[table[action_col] == action]
    assert len(rows) >= 1, (action, list(table[action_col]))
    return rows.iloc[0]


COLUMNS = {"ja": ("日時", "ユーザー", "操作", "対象の種類", "対象", "詳細"),
           "en": ("When", "User", "Action", "Target type", "Target", "Details")}


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_every_cell_reads_as_people_read(audit_home, lang):
    at = _audit_page(audit_home, lang)
    table = _table(at)
    assert tuple(table.columns) == COLUMNS[lang]
    problems = {cell: problems_in(str(cell), lang) for col in table.columns for cell in table[col]
                if problems_in(str(cell), lang)}
    assert problems == {}
    raw_actions = {a for a in table[COLUMNS[lang][2]] if "." in a}
    assert raw_actions == set()
    assert "0.69" not in " ".join(table[COLUMNS[lang][5]])


@pytest.mark.parametrize("lang, when", [("ja", f"{DAY.year}年{DAY.month}月{DAY.day}日 9:30"),
                                        ("en", f"{DAY:%b} {DAY.day}, {DAY.year}, 09:30")])
def test_times_are_local_and_the_zone_is_named(audit_home, lang, when):
    at = _audit_page(audit_home, lang)
    table = _table(at)
    ours = table[table[COLUMNS[lang][2]] != ("ユーザーを作成" if lang == "ja" else "created a user")]
    assert len(ours) > 10 and set(ours[COLUMNS[lang][0]]) == {when}
    assert any(("日本時間" if lang == "ja" else "Japan Time") in c.value for c in at.caption)


def test_actions_targets_and_details_in_japanese(audit_home):
    _, made = audit_home
    table = _table(_audit_page(audit_home, "ja"))
    at_, user, action, kind, target, details = COLUMNS["ja"]
    done = _row(table, action, "タスクの学習が完了")
    assert (done[kind], done[target]) == ("タスク", "first run · タスク 1")
    assert done[details] == "正解率：タスク 1 70.0%"
    request = _row(table, action, "タスクの学習を依頼")
    assert "cat" in request[details] and "タスク固有の設定：エポック数 3" in request[details]
    proposed = _row(table, action, "ラベルを提案")
    assert proposed[target] == "飛行機" and "用語：飛行機" in proposed[details] and "新しい用語" in proposed[details]
    created = _row(table, action, "用語を作成")
    assert (created[kind], created[target]) == ("用語集", "飛行機")             # not the entry's id
    assert made["entry"].startswith("user.")
    assert made["entry"] not in " ".join([*table[target], *table[details]])
    rejected = _row(table, action, "ラベルを却下")
    assert rejected[details] == "変更前：提案中 / 変更後：却下"
    setting = _row(table, action, "設定を変更")
    assert setting[kind] == "設定" and setting[target] in {"エンコーダー", "学習に必要な最少画像数（学習用）",
                                                             "評価に必要な最少画像数（評価用）"}
    failed = _row(table, action, "ログイン失敗")
    assert failed[user] == "匿名（ログイン前）" and failed[details] == "理由：存在しないユーザー名"
    assert "システム" in set(table[user]) and "ログイン" in set(table[action])
    run = _row(table, action, "ランを作成")
    assert run[target] == "first run" and "クラス平均" in run[details]


def test_actions_targets_and_details_in_english(audit_home):
    table = _table(_audit_page(audit_home, "en"))
    at_, user, action, kind, target, details = COLUMNS["en"]
    done = _row(table, action, "finished training a task")
    assert (done[kind], done[target], done[details]) == ("Task", "first run · task 1", "Accuracy: task 1 70.0%")
    failed = _row(table, action, "failed login")
    assert failed[user] == "anonymous (not logged in)" and failed[details] == "Reason: unknown user name"


def test_the_action_and_target_filters_speak_the_readers_language(audit_home):
    at = _audit_page(audit_home, "ja")
    box = at.selectbox(key="audit_action")
    options = [box.format_func(o) if callable(getattr(box, "format_func", None)) else o for o in box.options]
    assert "ラベル（すべて）" in options and "タスクの学習が完了" in options
    assert not [o for o in options if "." in o]
    box.select_index(options.index("ラベル（すべて）")).run()
    assert not at.exception, at.exception
    assert set(_table(at)["対象の種類"]) == {"ラベル"} and set(_table(at)["操作"]) >= {"ラベルを提案", "ラベルを却下"}
    kinds = at.selectbox(key="audit_target_type").options
    assert {"タスク", "用語集", "設定", "ユーザー", "ラン", "ジョブ"} <= set(kinds)


# ---- the catalogue covers what the code writes -------------------------------------------------------

SOURCES = sorted([*REPO.glob("core/**/*.py"), *REPO.glob("pages/*.py"), REPO / "app.py"])


def _audit_calls():
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "audit" and len(node.args) >= 3:
                yield path, node


def _strings(node) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def target_types() -> set[str]:
    """The third argument of every ``store.audit(...)``, and the kinds ``AuditTarget(...)`` is made with."""
    kinds = set()
    for path, node in _audit_calls():
        found = _strings(node.args[2])
        if not found and not (isinstance(node.args[2], ast.Attribute) and node.args[2].attr == "target_type"):
            pytest.fail(f"{path.relative_to(REPO)}:{node.lineno}: a target type this test cannot enumerate")
        kinds |= set(found)
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AuditTarget" and node.args:
                kinds |= set(_strings(node.args[0]))
    return kinds


def detail_keys() -> set[str]:
    return {kw.arg for _, node in _audit_calls() for kw in node.keywords if kw.arg}


def test_every_target_type_the_code_writes_has_a_name_in_both_languages():
    kinds = target_types()
    assert {"label", "task", "setting", "glossary", "worker", "folder", "export", "cli", "audit"} <= kinds
    missing = {k: sorted({"ja", "en"} - set(STRINGS.get(f"what.{k}", {}))) for k in kinds}
    assert {k: v for k, v in missing.items() if v} == {}


def test_every_action_group_has_a_name_in_both_languages():
    from test_i18n_keys import audit_actions

    prefixes = {a.split(".")[0] for a in audit_actions()}
    assert {"auth", "checkpoint", "label"} <= prefixes
    missing = {p: sorted({"ja", "en"} - set(STRINGS.get(f"what.{p}", {}))) for p in prefixes}
    assert {k: v for k, v in missing.items() if v} == {}


def test_every_detail_item_the_code_writes_has_a_title():
    from pages.audit_text import DETAIL_TITLES, HIDDEN

    keys = detail_keys()
    assert {"acc", "run_id", "entry_id", "reason"} <= keys
    assert sorted(keys - set(DETAIL_TITLES) - HIDDEN) == []
    assert all(key in STRINGS for key in DETAIL_TITLES.values())


# ---- rows of every kind, as the services write them ----------------------------------------------------

def _rows_of_every_kind(store, made) -> list[tuple[str, str, object, dict]]:
    plane, entry, run = made["plane"], made["entry"], made["run"]
    return [
        ("image.move", "image", 7, {"sha256": "ab" * 32, "before": plane, "after": plane}),
        ("image.delete", "image", 8, {"sha256": "cd" * 32, "label_id": plane, "split": "holdout",
                                      "original_name": "IMG_0001.png"}),
        ("image.split", "image", 9, {"split": "holdout", "rule": "min_holdout"}),
        ("image.upload", "label", plane, {"added": 3, "duplicate": 1, "conflict": 0, "error": 0, "batch": 2,
                                          "upload": "03a7cfc02a7c", "image_ids": [1, 2, 3], "source": "upload",
                                          "failed": "OSError: disk full"}),
        ("image.import_folder", "folder", "/data/in", {"added": 5, "duplicate": 0, "conflict": 0, "error": 1,
                                                       "created": 1, "proposed": 0, "new_entries": 1,
                                                       "unmatched": 0, "links": 2}),
        ("image.export", "export", "/tmp/out.zip", {"format": "zip", "images": 12, "labels": 2}),
        ("glossary.fold", "glossary", "defect.rust", {"source": entry, "forms": ["飛行機"],
                                                      "reason": f"label.merge #{plane}"}),
        ("glossary.update", "glossary", entry, {"changes": {"reading": ["", "ヒコウキ"], "aliases": [[], ["ひこうき"]]}}),
        ("glossary.import", "glossary", None, {"added": 3, "changed": 1}),
        ("label.relink", "label", plane, {"entry_before": entry, "entry_after": "defect.rust",
                                          "embed_before": "飛行機", "embed_after": "錆"}),
        ("label.rename", "label", plane, {"before": "飛行機", "after": "ひこうき", "entry_before": entry,
                                          "entry_after": "defect.rust"}),
        ("label.merge", "label", plane, {"into": plane, "aliases": 1, "images": 4, "glossary_forms": ["飛行機"]}),
        ("label.merged_from", "label", plane, {"source": plane}),
        ("label.alias", "label", plane, {"alias": "ひこうき"}),
        ("user.role", "user", "eri", {"before": "expert", "after": "reviewer"}),
        ("user.password", "user", "eri", {"sessions_ended": 2}),
        ("auth.fail", "user", "eri", {"reason": "locked"}),
        ("auth.fail", "user", "eri", {"failed": 5, "locked": True}),
        ("job.failed", "job", 3, {"error": "Traceback (most recent call last):\n  File ...\nRuntimeError: CUDA out of memory"}),
        ("job.cancel", "job", 3, {"status_before": "queued"}),
        ("job.stale", "job", 3, {"worker": "host-1234", "attempts": 2}),
        ("job.enqueue", "job", 3, {"kind": "train", "run_id": run, "payload": {"task_id": 1, "task_idx": 0,
                                                                                "label_ids": [plane], "overrides": {}}}),
        ("checkpoint.quarantine", "task", 1, {"path": "/x/task-0.pt.corrupt-1", "reason": "EOFError: ran out",
                                              "job_id": 3}),
        ("cli.as_system", "cli", "import-folder", {"os_user": "factory"}),
        ("worker.spawn", "worker", "w-1", {"pid": 4242}),
        ("worker.start", "worker", "w-1", {"device": "cpu", "pid": 4242}),
        ("audit.export", "audit", None, {"rows": 12, "filter": {"action_prefix": "label.", "target_type": "label",
                                                                "since": "2026-11-01"}}),
        ("setting.set", "setting", "holdout_fraction", {"before": 0.2, "after": 0.15000000596046448}),
        ("run.create", "run", run, {"name": "first run", "encoder": "tiny-test",
                                    "config": {"method": "both", "epochs": 4, "lr": 0.01}}),
    ]


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_rows_of_every_kind_show_no_code_id_or_long_float(audit_home, lang):
    from pages.audit_text import Names, action_title, details_text, target_text, what_title

    home, made = audit_home
    store = Store(home)
    names = Names(store, lang)
    seen = {}
    for action, kind, target, details in _rows_of_every_kind(store, made):
        row = {"action": action, "target_type": kind, "target_id": None if target is None else str(target)}
        texts = [action_title(action, lang), what_title(kind, lang), target_text(row, names),
                 details_text(action, details, names, target_type=kind)]
        seen[action] = texts
        for text in texts:
            assert not problems_in(text, lang), (action, text)
            assert made["entry"] not in text and "03a7cfc02a7c" not in text, (action, text)
    store.close()
    assert seen["job.failed"][3].endswith("RuntimeError: CUDA out of memory")
    assert "0.15" in seen["setting.set"][3] and "0.150000" not in seen["setting.set"][3]
    if lang == "ja":
        assert seen["label.relink"][3].startswith("用語（変更前）：飛行機 / 用語（変更後）：錆")
        assert "統合元：飛行機" in seen["glossary.fold"][3] and "ラベルを統合" in seen["glossary.fold"][3]
        assert seen["user.role"][3] == "変更前：エキスパート / 変更後：レビュアー"
        assert seen["job.cancel"][3] == "変更前の状態：待機中"
        assert seen["image.split"][3] == "用途：評価用 / 規則：評価用画像の最低枚数"
        assert "重複：1" in seen["image.upload"][3] and "競合" not in seen["image.upload"][3]
        assert seen["run.create"][3].endswith("設定：エポック数 4")               # differences from the defaults
        assert seen["glossary.update"][3] == "変更内容：読み：— → ヒコウキ、別名：— → ひこうき"
    else:
        assert seen["auth.fail"][3] == "Failures: 5; Locked: yes"
        assert "Task: 1" in seen["job.enqueue"][3] and "Run: first run" in seen["job.enqueue"][3]
        assert seen["checkpoint.quarantine"][1] == "Task" and seen["checkpoint.quarantine"][3].startswith("Path:")
