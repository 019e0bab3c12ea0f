from __future__ import annotations

import os
from pathlib import Path

import pytest

# Any message key missing from the catalogues fails the test that renders it (core/i18n.py).
os.environ.setdefault("SGCL_I18N_STRICT", "1")

from core.auth import Actor
from core.store import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SGCL_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_default_home(tmp_path_factory):
    """Code that falls back to the default data home during tests gets a throw-away one (never the
    developer's ./sgcl-data), and any worker an app run spawned there is stopped at the end."""
    home = tmp_path_factory.mktemp("default-home")
    old = os.environ.get("SGCL_HOME")
    os.environ["SGCL_HOME"] = str(home)
    yield home
    from tests.browser.harness import stop_workers

    stop_workers(home)
    if old is None:
        os.environ.pop("SGCL_HOME", None)
    else:
        os.environ["SGCL_HOME"] = old


@pytest.fixture(autouse=True)
def _sgcl_home_restored(monkeypatch):
    """Whatever a test sets SGCL_HOME to (``sgcl_home``, ``log_in_page``) is undone after it."""
    monkeypatch.setenv("SGCL_HOME", os.environ["SGCL_HOME"])


@pytest.fixture
def sgcl_home(tmp_path, monkeypatch) -> Path:
    """A data home that app code opens by default ($SGCL_HOME), as under `streamlit run`."""
    monkeypatch.setenv("SGCL_HOME", str(tmp_path))
    return tmp_path


def log_in_page(at, home, actor: Actor, lang: str | None = None):
    """Prepare an AppTest ``at`` to run against data home ``home`` with ``actor`` logged in the way the
    login form does it: a real account row (made with a random password when missing, given
    ``actor.role``) and a server-side session whose token the Streamlit session holds. SGCL_HOME is
    set for the app code (restored after the test by ``_sgcl_home_restored``)."""
    import secrets

    from core import sessions, users
    from core.auth import SYSTEM
    from pages.ui import SESSION_KEY

    os.environ["SGCL_HOME"] = str(Path(home).resolve())
    s = Store(home)
    try:
        row = s.query_one("SELECT role FROM users WHERE username = ?", (actor.username,))
        if row is None:
            users.create_user(s, SYSTEM, actor.username, secrets.token_urlsafe(16), actor.role)
        elif row["role"] != actor.role:
            s.execute("UPDATE users SET role = ? WHERE username = ?", (actor.role, actor.username))
        at.session_state[SESSION_KEY] = sessions.start(s, actor.username).token
    finally:
        s.close()
    if lang is not None:
        at.session_state["lang"] = lang
    return at


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
def expert() -> Actor:
    return Actor("eri", "expert")


@pytest.fixture
def reviewer() -> Actor:
    return Actor("rei", "reviewer")


@pytest.fixture
def supervisor() -> Actor:
    return Actor("sora", "supervisor")


@pytest.fixture
def admin() -> Actor:
    return Actor("root", "admin")


def shared_datasets() -> Path:
    """The ../shared datasets, or a skip with the reason (a user's clone has no ../shared)."""
    root = SHARED / "datasets"
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (only present on dev machines and CI)")
    return root
