"""The whole flow in a real browser (Debian's chromium + Playwright), against `streamlit run app.py`.

admin logs in → creates an expert and a reviewer on the Admin page and lowers a setting → logs out;
the expert proposes ｻﾋﾞ (the glossary folds it onto 錆), キズ (→ 傷) and ﾖｺﾞﾚ (→ 汚れ) and uploads
generated images for them; the reviewer approves them, creates a run and trains task 0 (錆, 傷) and
task 1 (汚れ) with the tiny test encoder in the background worker; History shows the 2×2 accuracy
matrix; the admin finds the reviewer's approvals in the audit log.
Screenshots of every step go to test-artifacts/browser/.
"""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from core import labels as label_service
from core.store import Store
from tests.browser.harness import ARTIFACTS, CHROMIUM_ARGS, App, StreamlitServer, require_browser

ADMIN_PASSWORD = "e2e-admin-password"
EXPERT, REVIEWER = ("eri", "expert-password"), ("rei", "reviewer-password")
IMAGES_PER_LABEL = 6          # the hash split may put 2 in holdout: the admin lowers min_train_images to 3

# The default UI language is Japanese; these are the texts a user clicks on.
LABELS = (("ｻﾋﾞ", "錆"), ("キズ", "傷"), ("ﾖｺﾞﾚ", "汚れ"))      # (typed by the expert, glossary canonical)
TASKS = (("ｻﾋﾞ", "キズ"), ("ﾖｺﾞﾚ",))
COLOURS = {"ｻﾋﾞ": (170, 70, 30), "キズ": (120, 120, 130), "ﾖｺﾞﾚ": (60, 90, 40)}

JA = {
    "user": "ユーザー名", "password": "パスワード", "login": "ログイン", "logout": "ログアウト",
    "nav_labels": "ラベル", "nav_images": "画像", "nav_train": "学習", "nav_history": "履歴",
    "nav_admin": "管理", "nav_audit": "監査ログ", "role_expert": "エキスパート", "role_reviewer": "レビュアー",
    "create": "作成", "matrix": "精度行列", "settings_tab": "設定", "save_settings": "設定を保存",
}


def _make_images(folder: Path, stem: str, colour: tuple[int, int, int], seed: int) -> list[Path]:
    """Small distinct images: a base colour with noise and a stroke, so the two classes are learnable."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(IMAGES_PER_LABEL):
        img = Image.new("RGB", (48, 40), tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(48), rng.randrange(40)
            draw.line((x, y, x + rng.randint(-12, 12), y + rng.randint(-12, 12)), fill=(rng.randrange(256),) * 3)
        path = folder / f"{stem}_{i}.png"          # Japanese file names on purpose
        img.save(path)
        paths.append(path)
    return paths


def _wait_for(predicate, timeout: float, what: str, server: StreamlitServer, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; server log:\n{server.log_tail()}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_flow_in_a_real_browser(tmp_path):
    sync_playwright, chromium = require_browser()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    home = tmp_path / "home"
    env = {"SGCL_ADMIN_PASSWORD": ADMIN_PASSWORD, "SGCL_ENCODER": "tiny-test", "SGCL_LOG_LEVEL": "INFO"}
    with StreamlitServer(home, env, ARTIFACTS / "streamlit.log") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
            page.set_default_timeout(30_000)
            app = App(page, server.url)
            store = Store(home)
            _flow(app, store, server, tmp_path)
        except Exception:
            with_context = ARTIFACTS / "failure.png"
            try:
                page.screenshot(path=str(with_context), full_page=True)
            finally:
                raise
        finally:
            browser.close()


def _login(app: App, username: str, password: str) -> None:
    app.login(username, password, user_label=JA["user"], password_label=JA["password"], submit=JA["login"])
    app.see(JA["logout"])


def _logout(app: App) -> None:
    app.button(JA["logout"])
    app.page.get_by_label(JA["user"]).wait_for(state="visible")


def _flow(app: App, store: Store, server: StreamlitServer, tmp_path: Path) -> None:
    # 1. the first-start admin logs in
    app.open()
    app.page.get_by_label(JA["user"]).wait_for(state="visible")
    app.shot("login-page")
    _login(app, "admin", ADMIN_PASSWORD)
    app.shot("admin-logged-in")

    # 2. the admin creates an expert and a reviewer on the Admin page
    app.nav(JA["nav_admin"])
    for (username, password), role in ((EXPERT, JA["role_expert"]), (REVIEWER, JA["role_reviewer"])):
        app.fill("new_username", username, commit=False)
        app.fill("new_password", password, commit=False)
        app.choose("new_role", role)
        app.page.get_by_role("button", name=JA["create"], exact=True).click()
        app.idle()
        app.see_cell(username)
    _wait_for(lambda: {r["username"]: r["role"] for r in store.query("SELECT username, role FROM users")}
              == {"admin": "admin", "eri": "expert", "rei": "reviewer"}, 30, "the two accounts", server)
    app.shot("admin-created-users")

    # ... and lowers the readiness threshold on the Settings tab (validated, audited)
    app.page.get_by_role("tab", name=JA["settings_tab"]).click()
    app.fill("setting_min_train_images", "3", commit=False)
    app.page.get_by_role("button", name=JA["save_settings"]).click()
    app.idle()
    _wait_for(lambda: store.get_setting("min_train_images") == 3, 30, "the min_train_images setting", server)
    app.shot("admin-settings-saved")
    _logout(app)

    # 3. the expert proposes two Japanese labels; the glossary normalises them
    _login(app, *EXPERT)
    app.nav(JA["nav_labels"])
    for typed, canonical in LABELS:
        app.fill("propose_name", typed)
        app.see(canonical)                              # the live normalisation preview
        if typed == "ｻﾋﾞ":
            app.shot("expert-propose-preview")
        app.click("propose_submit")
        app.see(typed)
    proposed = {r["name"]: r for r in label_service.list_labels(store)}
    assert {n: (r["canonical"], r["status"], r["created_by"]) for n, r in proposed.items()} == {
        typed: (canonical, "proposed", "eri") for typed, canonical in LABELS}
    app.shot("expert-proposed")

    # 4. the expert uploads images generated here for both labels
    app.nav(JA["nav_images"])
    for seed, (typed, canonical) in enumerate(LABELS):
        files = _make_images(tmp_path / "upload" / typed, canonical, COLOURS[typed], seed)
        app.choose("img_label", typed)
        app.upload("img_upload_", files)
        app.click("img_add")
        _wait_for(lambda: store.query_one("SELECT COUNT(*) AS n FROM images WHERE label_id = ?",
                                          (proposed[typed]["id"],))["n"] == IMAGES_PER_LABEL,
                  60, f"{IMAGES_PER_LABEL} images of {typed}", server)
    app.shot("expert-uploaded-images")
    splits = store.query("SELECT label_id, split, COUNT(*) AS n FROM images GROUP BY label_id, split")
    assert all(any(s["label_id"] == r["id"] and s["split"] == "holdout" for s in splits) for r in proposed.values())
    _logout(app)

    # 5. the reviewer approves both
    _login(app, *REVIEWER)
    app.nav(JA["nav_labels"])
    for typed, _ in LABELS:
        app.choose("review_pick", typed)
        app.click("do_approve")
        _wait_for(lambda: label_service.get_label(store, proposed[typed]["id"])["status"] == "approved",
                  30, f"{typed} approved", server)
    app.shot("reviewer-approved")

    # 6. the reviewer creates a run and starts training with the tiny encoder
    app.nav(JA["nav_train"])
    app.fill("tr_new_name", "e2e")
    app.fill("tr_new_epochs", "2")
    app.click("tr_create")
    run = _wait_for(lambda: store.query_one("SELECT id, encoder FROM runs"), 30, "the run", server)
    assert run["encoder"] == "tiny-test"
    for idx, task in enumerate(TASKS):
        for typed in task:
            app.choose(f"tr_labels_{run['id']}", typed)
        app.shot(f"reviewer-task{idx}-composed")
        app.click("tr_start")
        job = _wait_for(lambda: store.query_one("SELECT id FROM jobs WHERE kind = 'train' AND json_extract("
                                                "payload, '$.task_idx') = ?", (idx,)), 30, f"task {idx}'s job", server)
        app.shot(f"task{idx}-training")
        finished = _wait_for(lambda: store.query_one("SELECT status, error FROM jobs WHERE id = ? AND status IN "
                                                     "('done', 'failed', 'cancelled')", (job["id"],)),
                             420, f"task {idx}'s training job to finish", server, every=2)
        assert finished["status"] == "done", finished["error"]
        app.idle()
    app.shot("training-finished")
    assert {label_service.get_label(store, r["id"])["status"] for r in proposed.values()} == {"trained"}

    # 7. History shows the accuracy matrix
    app.nav(JA["nav_history"])
    app.see(JA["matrix"])
    matrix = app.page.locator('[data-testid="stDataFrame"]').first
    matrix.wait_for(state="visible")
    app.page.locator('[data-testid="stVegaLiteChart"], [data-testid="stArrowVegaLiteChart"]').first.wait_for(
        state="visible")
    app.shot("history-matrix")
    cells = store.query("SELECT trained_task, eval_task, acc FROM metrics WHERE run_id = ? ORDER BY 1, 2",
                        (run["id"],))
    assert [(c["trained_task"], c["eval_task"]) for c in cells] == [(0, 0), (1, 0), (1, 1)]
    assert all(0.0 <= c["acc"] <= 1.0 for c in cells)
    app.see_cell("学習後のタスク 1")                 # the matrix table's second row
    _logout(app)

    # 8. the admin reads the reviewer's approvals in the audit log
    _login(app, "admin", ADMIN_PASSWORD)
    app.nav(JA["nav_audit"])
    app.choose("audit_actor", "rei")
    app.see_cell("label.approve")
    app.shot("admin-audit-log")
    trail = [(r["actor"], r["action"]) for r in store.query(
        "SELECT actor, action FROM audit WHERE action IN ('user.create', 'setting.set', 'label.propose', "
        "'label.approve', 'run.create', 'task.request') ORDER BY id")]
    assert trail == [("system", "user.create"), ("admin", "user.create"), ("admin", "user.create"),
                     ("admin", "setting.set"),
                     *[("eri", "label.propose")] * 3, *[("rei", "label.approve")] * 3,
                     ("rei", "run.create"), ("rei", "task.request"), ("rei", "task.request")]
