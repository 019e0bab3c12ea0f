"""The foundation pages render in Streamlit's AppTest and act through the services."""
import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import labels, sessions
from core.auth import Actor
from core.store import Store
from pages.ui import SESSION_KEY
from tests.conftest import log_in_page

REPO = Path(__file__).resolve().parents[1]


def _page(path, home, actor, lang="ja"):
    at = AppTest.from_file(str(REPO / path), default_timeout=60)
    at.session_state["lang"] = lang
    if actor is not None:
        log_in_page(at, home, actor)
    else:
        os.environ["SGCL_HOME"] = str(home)     # restored after the test (tests/conftest.py)
    return at


def test_labels_page_shows_live_normalisation_and_proposes(tmp_path):
    at = _page("pages/labels.py", tmp_path, Actor("eri", "expert"))
    at.run()
    assert not at.exception
    at.text_input(key="propose_name").input("ｻﾋﾞ").run()
    assert any("錆" in s.value for s in at.success), [s.value for s in at.success]
    at.button(key="propose_submit").click().run()
    assert not at.exception
    rows = labels.list_labels(Store(tmp_path))
    assert [(r["name"], r["canonical"], r["status"]) for r in rows] == [("ｻﾋﾞ", "錆", "proposed")]


def test_labels_page_reviewer_approves(tmp_path):
    store = Store(tmp_path)
    label = labels.propose(store, Actor("eri", "expert"), "傷")
    at = _page("pages/labels.py", tmp_path, Actor("rei", "reviewer"), lang="en")
    at.run()
    assert not at.exception
    at.button(key="do_approve").click().run()
    assert labels.get_label(store, label["id"])["status"] == "approved"
    assert at.button(key="do_reject").disabled          # an approved label cannot be rejected
    assert not at.button(key="do_retire").disabled


def test_labels_page_requires_login(tmp_path):
    at = _page("pages/labels.py", tmp_path, None)
    at.run()
    assert not at.exception and any("log in" in i.value.lower() or "ログイン" in i.value for i in at.info)


def test_glossary_page_renders_search_and_lint(tmp_path):
    at = _page("pages/glossary_terms.py", tmp_path, Actor("rei", "reviewer"), lang="en")
    at.run()
    assert not at.exception
    at.text_input(key="gloss_search").input("さび").run()
    assert not at.exception
    assert any("錆" in m.value for m in at.markdown)


def test_app_shows_login_first(sgcl_home, monkeypatch):
    from tests.browser.harness import stop_workers

    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", "admin pass phrase 1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    try:
        _login_as_admin(at, sgcl_home)
    finally:
        stop_workers(sgcl_home)   # the app starts a background worker for its data home


def _login_as_admin(at, home):
    at.run()
    assert not at.exception
    at.text_input[0].input("admin")
    at.text_input[1].input("admin pass phrase 1")
    at.button[0].click().run()
    assert not at.exception
    session = sessions.resolve(Store(home), at.session_state[SESSION_KEY])
    assert session.actor == Actor("admin", "admin")


def test_no_page_file_shadows_an_importable_module():
    # Streamlit puts pages/ first on sys.path when it runs a page, so pages/glossary.py would hide the
    # glossary package from every core module the page imports.
    import importlib.machinery
    import sys

    pages_dir = REPO / "pages"
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != pages_dir]
    shadowing = {page.name: str(spec.origin) if spec else "built-in" for page in pages_dir.glob("*.py") if page.stem != "__init__"
                 for spec in [importlib.machinery.PathFinder.find_spec(page.stem, elsewhere)]
                 if spec is not None or page.stem in sys.builtin_module_names}
    assert shadowing == {}
    # the check can fail: a page named like a package of this project would be reported
    assert importlib.machinery.PathFinder.find_spec("glossary", elsewhere) is not None


def test_role_change_and_deactivation_apply_to_a_logged_in_session(tmp_path):
    from core import users

    store = Store(tmp_path)
    boss = Actor("root", "admin")
    users.create_user(store, boss, "eve", "eve's long password", "reviewer")
    label = labels.propose(store, Actor("eri", "expert"), "傷")
    at = _page("pages/labels.py", tmp_path, users.authenticate(store, "eve", "eve's long password"), lang="en")
    at.run()
    assert not at.button(key="do_approve").disabled
    users.set_role(store, boss, "eve", "supervisor")        # demoted while logged in
    at.run()
    assert not [b for b in at.button if b.key == "do_approve"]   # review actions are gone
    assert not at.exception and not at.info
    users.set_active(store, boss, "eve", False)            # deactivated: the session ends
    at.run()
    assert SESSION_KEY not in at.session_state
    assert any("log in" in i.value.lower() for i in at.info)
    assert labels.get_label(store, label["id"])["status"] == "proposed"


def test_glossary_page_refuses_a_save_over_a_newer_edit_and_keeps_the_typing(tmp_path):
    from core import glossary_store

    store = Store(tmp_path)
    first = _page("pages/glossary_terms.py", tmp_path, Actor("rei", "reviewer"), lang="en")
    first.run()
    entry_id = first.selectbox(key="gloss_pick").value
    second = _page("pages/glossary_terms.py", tmp_path, Actor("ren", "reviewer"), lang="en")
    second.run()
    second.text_input(key=f"edit_entry_en_{entry_id}").input("second wins")
    [b for b in second.button if b.label == "Save"][0].click().run()
    assert glossary_store.get_entry_row(store, entry_id)["en"] == "second wins"

    first.text_input(key=f"edit_entry_en_{entry_id}").input("first is stale")
    [b for b in first.button if b.label == "Save"][0].click().run()
    assert any("changed by someone else" in e.value for e in first.error)
    assert glossary_store.get_entry_row(store, entry_id)["en"] == "second wins"
    assert first.text_input(key=f"edit_entry_en_{entry_id}").value == "first is stale"
