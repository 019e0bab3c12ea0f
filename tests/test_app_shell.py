"""The app shell (app.py, pages/ui.py) under AppTest: one data home resolver, no session trusted without
an account row, start-up work once per server process, a missing page file is an error, and every page
reached through app.py's navigation."""
from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from core import labels, sessions, users
from core.auth import SYSTEM, Actor
from core.store import Store
from pages.ui import SESSION_KEY
from tests.conftest import REPO, log_in_page

ADMIN_PASSWORD = "admin pass phrase 1"


@pytest.fixture
def app_home(sgcl_home, monkeypatch):
    from tests.browser.harness import stop_workers

    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.delenv("SGCL_ENCODER", raising=False)
    yield sgcl_home
    stop_workers(sgcl_home)


def _app(lang="en") -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.session_state["lang"] = lang
    return at


def _log_in(at: AppTest, username="admin", password=ADMIN_PASSWORD) -> AppTest:
    at.run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    assert not at.exception
    return at


def test_session_state_cannot_choose_the_data_home(sgcl_home, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    at = AppTest.from_file(str(REPO / "pages" / "labels.py"), default_timeout=60)
    log_in_page(at, sgcl_home, Actor("eri", "expert"), lang="en")
    at.session_state["sgcl_home"] = str(elsewhere)         # the old test hook: ignored now
    at.run()
    at.text_input(key="propose_name").input("ｻﾋﾞ").run()
    at.button(key="propose_submit").click().run()
    assert [r["name"] for r in labels.list_labels(Store(sgcl_home))] == ["ｻﾋﾞ"]
    assert not (elsewhere / "sgcl.db").exists()


def test_a_session_without_an_account_row_is_not_trusted(sgcl_home):
    at = AppTest.from_file(str(REPO / "pages" / "labels.py"), default_timeout=60)
    at.session_state["lang"] = "en"
    at.session_state["actor"] = Actor("ghost", "admin")   # what tools and tests used to plant
    at.run()
    assert any("log in" in i.value.lower() for i in at.info) and not at.button

    log_in_page(at, sgcl_home, Actor("eri", "expert"))
    at.run()
    assert not at.info
    store = Store(sgcl_home)
    store.execute("DELETE FROM sessions")
    store.execute("DELETE FROM users WHERE username = 'eri'")      # the account row is gone
    at.run()
    assert any("log in" in i.value.lower() for i in at.info)
    assert SESSION_KEY not in at.session_state


def test_start_up_work_runs_once_per_server_process_not_per_browser_session(app_home, monkeypatch):
    import core.worker

    started = []
    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: started.append(store.home) or False)
    for _ in range(3):                                      # three browser sessions
        at = _app()
        at.run()
        assert not at.exception
    assert started == [app_home]
    assert [u["username"] for u in Store(app_home).query("SELECT username FROM users")] == ["admin"]


def test_a_missing_page_file_is_an_error(tmp_path):
    shutil.copy(REPO / "app.py", tmp_path / "app.py")      # an install whose pages/ folder is incomplete
    (tmp_path / "pages").mkdir()
    shutil.copy(REPO / "pages" / "labels.py", tmp_path / "pages" / "labels.py")
    at = AppTest.from_file(str(tmp_path / "app.py"), default_timeout=60)
    at.run()
    assert at.exception and "page files missing" in at.exception[0].message
    assert "pages/admin.py" in at.exception[0].message


def test_login_through_app_py_keeps_a_server_side_session(app_home):
    at = _log_in(_app())
    session = sessions.resolve(Store(app_home), at.session_state[SESSION_KEY])
    assert session.actor == Actor("admin", "admin")
    assert at.title[0].value == "Labels"                   # the default page, drawn by st.navigation
    at.run()                                               # the next click: still logged in
    assert at.title[0].value == "Labels" and SESSION_KEY in at.session_state


def test_a_wrong_password_in_the_app_shows_the_one_refusal(app_home):
    at = _log_in(_app("ja"), password="not the password")
    assert any("ユーザー名またはパスワードが違います" in e.value for e in at.error)
    assert SESSION_KEY not in at.session_state


@pytest.mark.parametrize("page, title", [
    ("pages/labels.py", "Labels"), ("pages/glossary_terms.py", None), ("pages/neighbours.py", None),
    ("pages/images.py", None), ("pages/train.py", None), ("pages/history.py", None),
    ("pages/predict.py", None), ("pages/audit.py", "Audit log"), ("pages/admin.py", "Admin"),
])
def test_every_page_through_app_py(app_home, monkeypatch, page, title):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)   # no training here
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    at = _log_in(_app())
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert at.title, f"{page} drew nothing"
    if title:
        assert at.title[0].value == title


def test_an_expert_does_not_get_the_admin_pages_in_the_menu(app_home):
    users.ensure_admin(Store(app_home))
    users.create_user(Store(app_home), SYSTEM, "eri", "an expert pass phrase", "expert")
    at = _log_in(_app(), "eri", "an expert pass phrase")
    with pytest.raises(ValueError):                        # registered only as a hidden refusal page
        at.switch_page("pages/admin.py")


def test_every_page_answers_at_its_own_address_when_logged_in(app_home, monkeypatch):
    """Issue 21 point 4: a reload or bookmark of /labels while logged in showed Streamlit's English
    "Page not found": the Labels page was the default page, which Streamlit serves only at "/"."""
    import re

    import streamlit as st

    # the page files app.PAGES lists (importing app.py would build its ASGI app)
    stems = set(re.findall(r'\("pages/(\w+)\.py"', (REPO / "app.py").read_text(encoding="utf-8")))
    seen = {}
    real = st.navigation

    def spy(pages, *a, **k):
        seen["pages"] = pages
        return real(pages, *a, **k)

    monkeypatch.setattr(st, "navigation", spy)
    at = _log_in(_app())
    assert at.title[0].value == "Labels"                   # "/" still opens the Labels page
    paths = {p.url_path for p in seen["pages"]}
    assert len(stems) == 9 and stems <= paths, paths


def test_the_language_is_kept_for_the_user_across_reloads_and_new_tabs(app_home):
    """Issue 21 point 4: the language choice was lost on every reload or new tab."""
    # no language set by the test: a session starts in the default (Japanese) until the user picks one
    at = _log_in(AppTest.from_file(str(REPO / "app.py"), default_timeout=90))
    assert at.title[0].value == "ラベル"
    at.selectbox(key="lang").set_value("en").run()
    assert not at.exception and at.title[0].value == "Labels"
    assert users.preferred_language(Store(app_home), "admin") == "en"
    # a reload / new tab is a new Streamlit session: the same login (cookie), no language in the session
    tab = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    tab.session_state[SESSION_KEY] = at.session_state[SESSION_KEY]
    tab.run()
    assert not tab.exception, tab.exception
    assert tab.title[0].value == "Labels" and tab.selectbox(key="lang").value == "en"
    tab.selectbox(key="lang").set_value("ja").run()
    assert tab.title[0].value == "ラベル" and users.preferred_language(Store(app_home), "admin") == "ja"
    # a choice made on the login page is kept for the account
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    fresh.run()
    fresh.selectbox(key="lang").set_value("en").run()
    _log_in(fresh)
    assert users.preferred_language(Store(app_home), "admin") == "en"
