"""Sessions in a real browser (Debian's chromium + Playwright) against `streamlit run app.py`:
a bookmark of a page while logged out shows the Japanese login (no English "Page not found") and
returns to that page; reload keeps the login and the page; the cookie is HttpOnly and SameSite=Strict;
logout revokes the session, so even a replayed copy of the cookie logs nobody in.
Screenshots go to test-artifacts/browser-sessions/.
"""
from __future__ import annotations

import shutil

import pytest

from core.store import Store
from tests.browser.harness import ARTIFACTS, CHROMIUM_ARGS, App, StreamlitServer, require_browser

ADMIN_PASSWORD = "session test admin phrase"
SHOTS = ARTIFACTS.parent / "browser-sessions"
JA = {"user": "ユーザー名", "password": "パスワード", "login": "ログイン", "logout": "ログアウト",
      "history_title": "学習履歴", "admin_title": "管理", "nav_admin": "管理"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reload_bookmark_and_logout_in_a_real_browser(tmp_path):
    sync_playwright, chromium = require_browser()
    shutil.rmtree(SHOTS, ignore_errors=True)
    home = tmp_path / "home"
    env = {"SGCL_ADMIN_PASSWORD": ADMIN_PASSWORD, "SGCL_ENCODER": "tiny-test"}
    with StreamlitServer(home, env, SHOTS / "streamlit.log") as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1300, "height": 900}, locale="ja-JP")
        page = context.new_page()
        page.set_default_timeout(30_000)
        app = App(page, server.url, artifacts=SHOTS)
        try:
            _flow(app, context, server, Store(home))
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def _main_text(app: App) -> str:
    return app.page.locator('[data-testid="stApp"]').inner_text()


def _session_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == "sgcl_session"), None)


def _flow(app: App, context, server: StreamlitServer, store: Store) -> None:
    page = app.page
    # 1. a bookmark of the History page while logged out: the Japanese login, no English dialog
    page.goto(server.url + "/history")
    app.idle()
    page.get_by_label(JA["user"]).wait_for(state="visible")
    page.wait_for_timeout(1000)                      # a "Page not found" dialog would be up by now
    assert "Page not found" not in _main_text(app) and page.get_by_role("dialog").count() == 0
    app.shot("bookmark-logged-out")

    # 2. log in: back on /history, with an HttpOnly, SameSite=Strict cookie that page scripts cannot read
    app.login("admin", ADMIN_PASSWORD, user_label=JA["user"], password_label=JA["password"], submit=JA["login"])
    page.wait_for_url("**/history", timeout=30_000)
    app.idle()
    app.see(JA["history_title"])
    app.see(JA["logout"])
    cookie = _session_cookie(context)
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert "sgcl_session" not in page.evaluate("document.cookie")
    assert cookie["value"] not in str(store.query("SELECT * FROM sessions"))      # stored as a digest only
    app.shot("logged-in-on-history")

    # 3. reload: still logged in, still on History
    page.reload()
    app.idle()
    app.see(JA["history_title"])
    app.see(JA["logout"])
    assert page.url.endswith("/history")
    assert page.get_by_label(JA["password"]).count() == 0
    app.shot("reloaded-history")

    # 4. another page through the menu, then reload there
    app.nav(JA["nav_admin"])
    page.wait_for_url("**/admin")
    page.reload()
    app.idle()
    app.see(JA["logout"])
    assert page.url.endswith("/admin") and page.get_by_role("tab").count() >= 2      # the Admin page's tabs
    app.shot("reloaded-admin")

    # 5. logout revokes the session: the login form, no cookie, and a replayed cookie is worthless
    app.button(JA["logout"])
    page.get_by_label(JA["user"]).wait_for(state="visible")
    assert _session_cookie(context) is None
    [row] = store.query("SELECT revoked_at, revoked_reason FROM sessions WHERE revoked_at IS NOT NULL")
    assert row["revoked_reason"] == "logout"
    app.shot("logged-out")
    context.add_cookies([{**cookie, "expires": -1}])  # a copy of the old cookie, e.g. from a stolen profile
    page.goto(server.url + "/admin")
    app.idle()
    page.get_by_label(JA["user"]).wait_for(state="visible")
    assert page.get_by_text(JA["logout"]).count() == 0
    app.shot("replayed-cookie-refused")
