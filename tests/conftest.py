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
